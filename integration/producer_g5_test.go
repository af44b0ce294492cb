package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/tributary-cdc/tributary/integration/harness"
	"github.com/tributary-cdc/tributary/schemas"
)

// g5Mark is one move of the slot's confirmed position seen by the test,
// with the transactions topic's end offset read right after it.
type g5Mark struct {
	confirmed pglogrepl.LSN
	end       int64 // read_uncommitted end offset of the frames' partition
	killed    bool  // the producer was killed with SIGKILL right after
}

// TestProducerConfirmsOnlyWhatKafkaHolds tries to break G5 directly: the
// slot's confirmed position may pass a source transaction only once its
// frame is in Kafka. All Kafka traffic of the producer goes through a proxy,
// which holds it for seconds while the first burst of single-row
// transactions streams in, so that the first Kafka transaction hangs while
// the walsender asks for status replies (a session with nothing committed
// yet must not confirm what it received); later bursts arrive while groups
// commit. The test polls confirmed_flush_lsn in a tight loop and, each time
// it moves to C, reads the transactions topic's end offset at once: every
// frame whose source transaction ends at or below C must lie below that
// offset. Three times, right after a move (the first right after the
// hold), the producer is killed with SIGKILL and restarted. In the end
// Kafka holds every written transaction exactly once, so nothing below a
// confirmed position was lost across the kills.
func TestProducerConfirmsOnlyWhatKafkaHolds(t *testing.T) {
	const bursts, perBurst = 6, 40
	e := newEnv(t)
	brokers, proxy := e.kafkaBehindProxy(t)
	// The walsender asks for a status reply after half of this without one,
	// so statuses go out while the first Kafka transaction hangs.
	e.pg.Exec(t, `CREATE TABLE g5 (id int PRIMARY KEY, v int NOT NULL)`, `CREATE PUBLICATION pub FOR TABLE g5`,
		`CREATE TABLE g5_unpublished (b int)`,
		`ALTER SYSTEM SET wal_sender_timeout = '2s'`, `SELECT pg_reload_conf()`)
	args := []string{"producer", "--source", e.pg.DSN, "--publication", "pub", "--slot", "slot",
		"--brokers", brokers, "--registry", e.kafka.RegistryURL, "--prefix", e.prefix, "--snapshot", "never",
		"--heartbeat-interval", "1s", "--group-max-delay", "1500ms", "--log-format", "json", "--log-level", "debug"}
	var (
		procMu sync.Mutex
		procs  []*harness.Proc
	)
	start := func() {
		p := harness.StartTributary(t, nil, args...)
		procMu.Lock()
		procs = append(procs, p)
		procMu.Unlock()
		e.waitSlotActive(t, "slot", p)
	}
	// revive restarts a killed producer (or one that found the slot still
	// held by the killed one's walsender); the test goroutine calls it.
	revive := func() {
		procMu.Lock()
		p := procs[len(procs)-1]
		procMu.Unlock()
		if exited, _ := p.Exited(); exited {
			start()
		}
	}
	output := func() string {
		procMu.Lock()
		defer procMu.Unlock()
		var b strings.Builder
		for i, p := range procs {
			fmt.Fprintf(&b, "--- producer run %d ---\n%s", i+1, p.Output())
		}
		return b.String()
	}
	start()

	// The watcher: a tight loop on the slot's confirmed position; each move
	// is followed at once by a read of the frames' end offset, and the
	// first move after each kill point (a burst count) by a SIGKILL.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	txTopic := schemas.TransactionsTopic(e.prefix)
	adm := e.kafka.Admin(t)
	wc := e.pg.Conn(t)
	var (
		mu       sync.Mutex
		marks    []g5Mark
		written  int              // bursts written so far
		killed   = map[int]bool{} // the kill points the watcher has acted on
		stopping bool
	)
	// Kill after the first move once this many bursts are written: the
	// first is during or right after the hold of the first Kafka transaction.
	killAfter := map[int]bool{1: true, 3: true, 5: true}
	watchErr := make(chan error, 1)
	go func() {
		var last pglogrepl.LSN
		for ctx.Err() == nil {
			var c *string
			if err := wc.QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'slot'`).Scan(&c); err != nil {
				watchErr <- fmt.Errorf("read confirmed_flush_lsn: %w", err)
				return
			}
			if c == nil {
				continue
			}
			lsn, err := pglogrepl.ParseLSN(*c)
			if err != nil {
				watchErr <- err
				return
			}
			if lsn == last {
				continue
			}
			last = lsn
			ends, err := adm.ListEndOffsets(ctx, txTopic)
			if err == nil {
				err = ends.Error()
			}
			if errors.Is(err, kerr.UnknownTopicOrPartition) {
				err = nil // no frame yet
			}
			if err != nil {
				watchErr <- fmt.Errorf("end offsets of %s after confirmation %s: %w", txTopic, lsn, err)
				return
			}
			var end int64
			ends.Each(func(o kadm.ListedOffset) {
				if o.Err == nil {
					end = o.Offset
				}
			})
			m := g5Mark{confirmed: lsn, end: end}
			mu.Lock()
			n, stop := written, stopping
			kill := !stop && killAfter[n] && !killed[n]
			mu.Unlock()
			if kill {
				m.killed = true
				procMu.Lock()
				p := procs[len(procs)-1]
				procMu.Unlock()
				p.Kill()
			}
			mu.Lock()
			marks = append(marks, m)
			killed[n] = killed[n] || kill
			mu.Unlock()
		}
		watchErr <- nil
	}()

	// The workload: bursts of single-row transactions on two connections.
	conns := []*pgx.Conn{e.pg.Conn(t), e.pg.Conn(t)}
	pc := e.pg.Conn(t)
	id := 0
	for b := 0; b < bursts; b++ {
		from := 0
		if b == 0 {
			// The first Kafka transaction hangs for a while: once the first
			// row's table has its topic and schemas (the producer logs
			// "table schema") and while its group is still open
			// (--group-max-delay), the proxy holds all Kafka traffic of the
			// producer (and on the embedded lane the test's too); the rest of
			// the burst streams in meanwhile.
			if _, err := pc.Exec(ctx, `INSERT INTO g5 VALUES (1, 0)`); err != nil {
				t.Fatal(err)
			}
			for !strings.Contains(procs[0].Output(), `"msg":"table schema"`) {
				if exited, err := procs[0].Exited(); exited {
					t.Fatalf("producer exited: %v\n%s", err, output())
				}
				time.Sleep(5 * time.Millisecond)
			}
			proxy.SetBlackhole(true)
			from = 1
		}
		var wg sync.WaitGroup
		for w, hc := range conns {
			wg.Add(1)
			go func(first int) {
				defer wg.Done()
				for i := from + first; i < perBurst; i += len(conns) {
					if _, err := hc.Exec(ctx, `INSERT INTO g5 VALUES ($1, $2)`, id+i+1, b); err != nil {
						t.Errorf("insert %d: %v", id+i+1, err)
						return
					}
				}
			}(w)
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		id += perBurst
		mu.Lock()
		written = b + 1
		mu.Unlock()
		// A commit after the count moved, which the slot's confirmation
		// must pass below: that move, and the kill it may bring, follows
		// the count even when the burst's own group was confirmed before it.
		if _, err := pc.Exec(ctx, `INSERT INTO g5_unpublished VALUES ($1)`, b); err != nil {
			t.Fatal(err)
		}
		if b == 0 {
			// The walsender asks for several status replies while the
			// transaction hangs.
			time.Sleep(4 * time.Second)
			proxy.SetBlackhole(false)
		}
		// Wait for a confirmation between bursts (the first one rides the
		// slow first commit), so that kills follow a move.
		waitConfirmedPast(t, pc, id, revive)
		if killAfter[b+1] {
			// The move past the commit above came after the count did, so
			// the watcher kills on it. The next burst waits for that kill:
			// written must not move on while the watcher is still reading
			// the end offsets of an earlier move.
			for deadline := time.Now().Add(time.Minute); ; {
				mu.Lock()
				done := killed[b+1]
				mu.Unlock()
				if done {
					break
				}
				select {
				case err := <-watchErr:
					t.Fatalf("the watcher stopped before kill point %d: %v", b+1, err)
				default:
				}
				if time.Now().After(deadline) {
					t.Fatalf("no kill at point %d within a minute of the confirmation\n%s", b+1, output())
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	mu.Lock()
	stopping = true
	mu.Unlock()
	cancel()
	if err := <-watchErr; err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err)
	}
	procMu.Lock()
	last := procs[len(procs)-1]
	procMu.Unlock()
	if err := last.Stop(t, time.Minute); err != nil {
		t.Fatalf("producer exit: %v\n%s", err, output())
	}

	for _, m := range marks {
		t.Logf("confirmed %s with the frames ending at offset %d (kill: %v)", m.confirmed, m.end, m.killed)
	}
	log := harness.ReadLog(t, e.kafka, e.reg, e.prefix)
	requireEachRowOnce(t, log, id, func() string {
		return "0: the slot was confirmed past it before Kafka held it, and a kill lost it\n" + output()
	})
	kills := 0
	for _, m := range marks {
		if m.killed {
			kills++
		}
		for _, tx := range log.Txns {
			if tx.Frame.EndLSN <= m.confirmed && tx.Offset >= m.end {
				t.Fatalf("G5: the slot was confirmed at %s while the frame of xid %d (ends %s) was not in Kafka yet: "+
					"it is at offset %d, the topic ended at %d\n%s", m.confirmed, tx.Frame.Xid, tx.Frame.EndLSN, tx.Offset, m.end, output())
			}
		}
	}
	if kills != len(killAfter) {
		t.Fatalf("%d kills, want %d (moves seen: %d)", kills, len(killAfter), len(marks))
	}
	t.Logf("%d transactions, %d confirmation moves checked, %d kills", id, len(marks), kills)
	if os.Getenv("TRIBUTARY_TEST_LOG") != "" {
		t.Log(output())
	}
}

// requireEachRowOnce fails the test unless log holds exactly one event for
// each int id 1..n (the column "id"); more explains a failure.
func requireEachRowOnce(t *testing.T, log *harness.Log, n int, more func() string) {
	t.Helper()
	seen := map[int32]int{}
	for _, tx := range log.Txns {
		for _, ev := range tx.Events {
			seen[ev.After["id"].(int32)]++
		}
	}
	for i := int32(1); i <= int32(n); i++ {
		if seen[i] != 1 {
			t.Fatalf("row %d is in Kafka %d times, want once (%s)", i, seen[i], more())
		}
	}
}

// kafkaBehindProxy returns a bootstrap address whose clients send all their
// Kafka traffic through the returned proxy. On the real lane the broker must
// have kafka.sh's proxied listener; on the embedded lane a new embedded
// broker and registry, which advertise the proxy, replace e's (so the
// test's own reads pass the proxy too).
func (e *env) kafkaBehindProxy(t *testing.T) (string, *harness.Proxy) {
	t.Helper()
	if e.kafka.Real {
		rk := harness.RealKafkaFromEnv(t)
		if rk == nil || rk.ProxiedAdvertise == "" {
			t.Fatal("the real-Kafka lane needs TRIBUTARY_TEST_KAFKA_DIR of a broker started with KAFKA_PROXIED_LISTENER=1 (deploy/local/kafka.sh)")
		}
		return rk.ProxiedAdvertise, harness.StartProxyAt(t, rk.ProxiedAdvertise, rk.ProxiedListen)
	}
	d, p := harness.StartDevStackBehindProxy(t, t.TempDir())
	e.kafka = &harness.Kafka{Brokers: []string{p.Addr}, RegistryURL: d.RegistryURL}
	var err error
	if e.reg, err = schemas.NewRegistry([]string{d.RegistryURL}, testLog(t)); err != nil {
		t.Fatal(err)
	}
	return p.Addr, p
}

// waitConfirmedPast waits until the slot is confirmed past everything
// written so far (n rows), calling revive on each poll.
func waitConfirmedPast(t *testing.T, c *pgx.Conn, n int, revive func()) {
	t.Helper()
	var target string
	if err := c.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&target); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		var ok bool
		err := c.QueryRow(context.Background(), `SELECT coalesce(confirmed_flush_lsn >= $1::pg_lsn, false)
			FROM pg_replication_slots WHERE slot_name = 'slot'`, target).Scan(&ok)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return
		}
		revive()
		if time.Now().After(deadline) {
			t.Fatalf("the slot was not confirmed past %s (%d rows written) within a minute", target, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
