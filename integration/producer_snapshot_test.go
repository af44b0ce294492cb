package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tributary-cdc/tributary/integration/harness"
	"github.com/tributary-cdc/tributary/schemas"
)

// TestSnapshotResumesAfterKillThenStreams snapshots a large table, kills the
// producer in the middle of the snapshot while a workload changes rows all
// over the key space, restarts it, and checks that replaying Kafka gives the
// source table exactly: every row arrives once, as a snapshot read or as the
// changes after its read, and no row is read twice.
func TestSnapshotResumesAfterKillThenStreams(t *testing.T) {
	const rows = 1_000_000
	e := newEnv(t)
	e.pg.Exec(t,
		`CREATE TABLE big (id int PRIMARY KEY, v text NOT NULL, n int NOT NULL)`,
		fmt.Sprintf(`INSERT INTO big SELECT g, md5(g::text), 0 FROM generate_series(1, %d) g`, rows),
		`CREATE TABLE small (k text PRIMARY KEY, v int)`,
		`INSERT INTO small SELECT 'k' || g, g FROM generate_series(1, 1000) g`,
		`CREATE PUBLICATION pub FOR TABLE big, small`)
	args := e.producerArgs("--snapshot", "initial", "--snapshot-chunk-rows", "20000")
	proc := harness.StartTributary(t, nil, args...)

	// The workload runs through the snapshot, the kill and the resume.
	ctx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c := e.pg.Conn(t)
		next := rows + 1
		for i := 0; ctx.Err() == nil; i++ {
			id := rand.IntN(rows) + 1
			var sql string
			switch i % 4 {
			case 0, 1:
				sql = fmt.Sprintf(`UPDATE big SET n = n + 1, v = 'u%d' WHERE id = %d`, i, id)
			case 2:
				sql = fmt.Sprintf(`DELETE FROM big WHERE id = %d`, id)
			case 3:
				sql = fmt.Sprintf(`INSERT INTO big VALUES (%d, 'new', 0); UPDATE small SET v = v + 1 WHERE k = 'k%d'`, next, id%1000+1)
				next++
			}
			if _, err := c.Exec(context.Background(), sql); err != nil {
				t.Errorf("workload: %v", err)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()

	// Kill once part of the snapshot is in Kafka. Frames are counted
	// before the kill only: a read_committed count after it would wait for
	// the killed producer's open transaction, which only the restarted
	// producer's fencing (or the 10-minute transaction timeout) ends.
	deadline := time.Now().Add(3 * time.Minute)
	before := 0
	for {
		if before = harness.CountFrames(t, e.kafka, e.prefix); before >= 8 {
			break
		}
		if exited, err := proc.Exited(); exited {
			t.Fatalf("producer exited (%v):\n%s", err, lastLines(proc.Output(), 15))
		}
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot progress in 3 minutes:\n%s", lastLines(proc.Output(), 15))
		}
		time.Sleep(100 * time.Millisecond)
	}
	proc.Kill()
	t.Logf("killed the producer with at least %d snapshot chunks in Kafka", before)
	time.Sleep(500 * time.Millisecond)
	proc = harness.StartTributary(t, nil, args...)
	time.Sleep(3 * time.Second)
	stopLoad()
	wg.Wait()

	// The rest of the snapshot is read online, while the stream goes on:
	// wait for it, then until everything committed so far is in Kafka.
	e.waitSnapshotsDone(t, proc, "public.big", "public.small")
	e.waitConfirmed(t, "slot", proc)
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer exit after SIGTERM: %v\n%s", err, lastLines(proc.Output(), 15))
	}
	if !strings.Contains(proc.Output(), "resuming the interrupted initial snapshot") {
		t.Fatalf("the restarted producer did not resume the snapshot:\n%s", lastLines(proc.Output(), 20))
	}

	log := harness.ReadLog(t, e.kafka, e.reg, e.prefix)
	for _, table := range []string{"big", "small"} {
		replica := map[string]string{}
		reads := map[string]int{}
		readAt := map[string]uint64{} // consistent point of each key's snapshot read
		for _, tx := range log.Txns {
			for _, ev := range tx.Events {
				if ev.Topic != schemas.TopicName(e.prefix, "public", table) {
					continue
				}
				key := fmt.Sprint(ev.Key)
				if ev.Op != schemas.OpRead && uint64(ev.CommitLSN) <= readAt[key] {
					t.Fatalf("%s: key %s changed by a transaction committed at %s, which its snapshot read at %x already holds: the change arrives twice",
						table, key, ev.CommitLSN, readAt[key])
				}
				switch ev.Op {
				case schemas.OpRead:
					reads[key]++
					readAt[key] = uint64(ev.CommitLSN)
					replica[key] = rowText(ev.After)
				case schemas.OpInsert, schemas.OpUpdate:
					replica[key] = rowText(ev.After)
				case schemas.OpDelete:
					delete(replica, key)
				}
			}
		}
		for k, n := range reads {
			if n > 1 {
				t.Fatalf("%s: key %s read %d times by the snapshot", table, k, n)
			}
		}
		source := e.sourceRows(t, table)
		if len(source) != len(replica) {
			t.Fatalf("%s: source has %d rows, replaying Kafka gives %d", table, len(source), len(replica))
		}
		for k, v := range source {
			if replica[k] != v {
				var hist strings.Builder
				for _, tx := range log.Txns {
					for _, ev := range tx.Events {
						if ev.Topic == schemas.TopicName(e.prefix, "public", table) && fmt.Sprint(ev.Key) == k {
							id := ""
							if tx.Frame.Snapshot != nil {
								id = tx.Frame.Snapshot.ID
							}
							fmt.Fprintf(&hist, "  frame offset %d xid %d commit %s snapshot %q: %s %v\n", tx.Offset, tx.Frame.Xid, tx.Frame.CommitLSN, id, ev.Op, ev.After)
						}
					}
				}
				t.Fatalf("%s: key %s is %q at the source, %q from Kafka; its events in Kafka:\n%s", table, k, v, replica[k], hist.String())
			}
		}
		t.Logf("%s: %d rows equal; %d snapshot reads", table, len(source), len(reads))
	}
}

// waitConfirmed waits until the slot's confirmed position passes the
// source's current WAL position: every transaction committed before the call
// is then committed in Kafka (the producer confirms nothing earlier). proc,
// when not nil, is the producer subprocess whose output explains a failure.
func (e *env) waitConfirmed(t *testing.T, slot string, proc *harness.Proc) {
	t.Helper()
	c := e.pg.Conn(t)
	var target string
	if err := c.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&target); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var done bool
		err := c.QueryRow(context.Background(), `SELECT confirmed_flush_lsn >= $1::pg_lsn FROM pg_replication_slots WHERE slot_name = $2`, target, slot).Scan(&done)
		if err != nil {
			t.Fatal(err)
		}
		if done {
			return
		}
		if proc != nil {
			if exited, err := proc.Exited(); exited {
				t.Fatalf("producer exited (%v):\n%s", err, lastLines(proc.Output(), 15))
			}
		}
		if time.Now().After(deadline) {
			out := ""
			if proc != nil {
				out = lastLines(proc.Output(), 15)
			}
			t.Fatalf("slot %s not confirmed past %s after 5 minutes:\n%s", slot, target, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// sourceRows returns a table's rows keyed like harness.Event keys.
func (e *env) sourceRows(t *testing.T, table string) map[string]string {
	t.Helper()
	c := e.pg.Conn(t)
	out := map[string]string{}
	switch table {
	case "big":
		rows, err := c.Query(context.Background(), `SELECT id, v, n FROM big`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id, n int32
			var v string
			if err := rows.Scan(&id, &v, &n); err != nil {
				t.Fatal(err)
			}
			out[fmt.Sprint(map[string]any{"id": id})] = rowText(map[string]any{"id": id, "v": v, "n": n})
		}
	case "small":
		rows, err := c.Query(context.Background(), `SELECT k, v FROM small`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var k string
			var v int32
			if err := rows.Scan(&k, &v); err != nil {
				t.Fatal(err)
			}
			out[fmt.Sprint(map[string]any{"k": k})] = rowText(map[string]any{"k": k, "v": v})
		}
	}
	return out
}

func rowText(m map[string]any) string { return fmt.Sprint(m) }
