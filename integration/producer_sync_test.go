package integration

import (
	"context"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tributary-cdc/tributary/integration/harness"
)

// commitLatencies times n single-row insert commits on c.
func commitLatencies(t *testing.T, c *pgx.Conn, table string, from, n int) []time.Duration {
	t.Helper()
	out := make([]time.Duration, 0, n)
	for i := from; i < from+n; i++ {
		start := time.Now()
		if _, err := c.Exec(context.Background(), fmt.Sprintf(`INSERT INTO %s VALUES (%d)`, table, i)); err != nil {
			t.Fatal(err)
		}
		out = append(out, time.Since(start))
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// TestProducerSynchronousMode: with the producer listed in
// synchronous_standby_names (as `tributary setup synchronous` prints) and run
// with --synchronous, a source commit waits while the producer is stopped (a
// SyncRep wait), and returns once the producer is back and the transaction is
// committed in Kafka. The added commit latency is reported, not asserted.
func TestProducerSynchronousMode(t *testing.T) {
	e := newEnv(t)
	e.pg.Exec(t, `CREATE TABLE s (id int PRIMARY KEY)`, `CREATE PUBLICATION pub FOR TABLE s`)
	args := e.producerArgs("--snapshot", "never", "--synchronous")
	proc := harness.StartTributary(t, nil, args...)
	e.waitSlotActive(t, "slot", proc)
	c := e.pg.Conn(t)
	async := commitLatencies(t, c, "s", 0, 200)

	sql, err := exec.Command(harness.Binary(t), "setup", "synchronous", "--slot", "slot").Output()
	if err != nil {
		t.Fatal(err)
	}
	// ALTER SYSTEM cannot run in the implicit transaction of a multi-statement query.
	for _, stmt := range strings.Split(string(sql), ";") {
		if strings.TrimSpace(stmtBody(stmt)) == "" {
			continue
		}
		if _, err := c.Exec(context.Background(), stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	t.Cleanup(func() {
		// Leave the cluster writable for the teardown whatever happened.
		if cc, err := pgx.Connect(context.Background(), e.pg.DSN); err == nil {
			cc.Exec(context.Background(), `ALTER SYSTEM RESET synchronous_standby_names`)
			cc.Exec(context.Background(), `SELECT pg_reload_conf()`)
			cc.Close(context.Background())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		var state string
		if err := c.QueryRow(context.Background(), `SELECT sync_state FROM pg_stat_replication WHERE application_name = 'tributary_slot'`).Scan(&state); err == nil && state == "sync" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the producer never became the synchronous standby")
		}
		time.Sleep(100 * time.Millisecond)
	}
	sync := commitLatencies(t, c, "s", 1000, 200)
	t.Logf("commit latency of a single-row insert, 200 each: asynchronous p50 %v p99 %v; synchronous p50 %v p99 %v",
		async[100], async[197], sync[100], sync[197])

	// Stop the producer: the next commit waits.
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer stop: %v", err)
	}
	done := make(chan error, 1)
	w := e.pg.Conn(t)
	var pid int
	if err := w.QueryRow(context.Background(), `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	go func() {
		_, err := w.Exec(context.Background(), `INSERT INTO s VALUES (-1)`)
		done <- err
	}()
	deadline = time.Now().Add(30 * time.Second)
	for {
		var ev *string
		if err := c.QueryRow(context.Background(), `SELECT wait_event FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&ev); err != nil {
			t.Fatal(err)
		}
		if ev != nil && *ev == "SyncRep" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the commit does not wait for the stopped producer (wait_event %v)", ev)
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("the commit returned (%v) while the producer was down", err)
	case <-time.After(time.Second):
	}
	proc = harness.StartTributary(t, nil, args...)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatalf("the commit still waits after the producer restarted:\n%s", lastLines(proc.Output(), 10))
	}
	// Returned means in Kafka: the frame is there without waiting.
	log := harness.ReadLog(t, e.kafka, e.reg, e.prefix)
	last := log.Txns[len(log.Txns)-1]
	if got := last.Events[0].After["id"]; got != int32(-1) {
		t.Fatalf("the last frame in Kafka holds id %v, want the waiting commit's -1", got)
	}
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer stop: %v", err)
	}
}

// stmtBody drops SQL comment lines.
func stmtBody(stmt string) string {
	var b strings.Builder
	for _, l := range strings.Split(stmt, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "--") {
			b.WriteString(l)
		}
	}
	return b.String()
}

// TestProducerSynchronousConfirmsWhatIsNotPublished: a synchronous source's
// commits that publish nothing (an unpublished table) return at once,
// without waiting for a status interval or a keepalive (both set far off
// here: only a prompt confirmation lets them pass); and a producer that is
// the synchronous standby creates its publication without waiting for
// itself.
func TestProducerSynchronousConfirmsWhatIsNotPublished(t *testing.T) {
	e := newEnv(t)
	e.pg.Exec(t, `CREATE TABLE s (id int PRIMARY KEY)`, `CREATE TABLE other (id int PRIMARY KEY)`)
	args := e.producerArgs("--snapshot", "never", "--synchronous", "--tables", "public.s",
		"--status-interval", "10m", "--heartbeat-interval", "10m")
	proc := harness.StartTributary(t, nil, args...)
	e.waitSlotActive(t, "slot", proc)
	c := e.pg.Conn(t)
	for _, stmt := range []string{`ALTER SYSTEM SET synchronous_standby_names = 'tributary_slot'`, `SELECT pg_reload_conf()`} {
		if _, err := c.Exec(context.Background(), stmt); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if cc, err := pgx.Connect(context.Background(), e.pg.DSN); err == nil {
			cc.Exec(context.Background(), `ALTER SYSTEM RESET synchronous_standby_names`)
			cc.Exec(context.Background(), `SELECT pg_reload_conf()`)
			cc.Close(context.Background())
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; {
		var state string
		if err := c.QueryRow(context.Background(), `SELECT sync_state FROM pg_stat_replication WHERE application_name = 'tributary_slot'`).Scan(&state); err == nil && state == "sync" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the producer never became the synchronous standby")
		}
		time.Sleep(100 * time.Millisecond)
	}
	next := 0
	commits := func(table string, n int) {
		t.Helper()
		done := make(chan error, 1)
		from := next
		next += n
		go func() {
			for i := from; i < from+n; i++ {
				if _, err := c.Exec(context.Background(), fmt.Sprintf(`INSERT INTO %s VALUES (%d)`, table, i)); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(2 * time.Minute):
			t.Fatalf("%d commits to %s still wait for the synchronous standby after 2 minutes:\n%s", n, table, lastLines(proc.Output(), 10))
		}
	}
	commits("s", 20)     // published: confirmed once in Kafka
	commits("other", 20) // not published: confirmed at once
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer stop: %v", err)
	}
	// Without its publication, the producer creates it: that commit must not
	// wait for the producer itself.
	if _, err := c.Exec(context.Background(), `SET synchronous_commit = local`); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(context.Background(), `DROP PUBLICATION pub`); err != nil {
		t.Fatal(err)
	}
	proc = harness.StartTributary(t, nil, args...)
	e.waitSlotActive(t, "slot", proc)
	if _, err := c.Exec(context.Background(), `SET synchronous_commit = on`); err != nil {
		t.Fatal(err)
	}
	commits("s", 5)
	commits("other", 5)
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer stop: %v", err)
	}
}
