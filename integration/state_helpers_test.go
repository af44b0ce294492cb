package integration

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/tributary-cdc/tributary/integration/harness"
	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog"
)

// producerState reads the producer's durable state (slot "slot") from
// Kafka.
func (e *env) producerState(t *testing.T) *txlog.State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := txlog.ReadState(ctx, e.kafka.Opts(), kadm.NewClient(e.kafka.Client(t)), schemas.StateTopic(e.prefix), "slot")
	if err != nil {
		t.Fatalf("read the producer state: %v", err)
	}
	return st
}

// waitSnapshotsDone waits until the producer's state has no active snapshot
// and every table in tables has a snapshot that is done. proc is the
// producer, whose output explains a failure.
func (e *env) waitSnapshotsDone(t *testing.T, proc *harness.Proc, tables ...string) *txlog.State {
	t.Helper()
	deadline := time.Now().Add(4 * time.Minute)
	for {
		st := e.producerState(t)
		done := true
		for _, tb := range st.Tables {
			if tb.Snapshot != nil && tb.Snapshot.Status.Active() {
				done = false
			}
		}
		for _, name := range tables {
			if tb := st.Tables[name]; tb == nil || tb.Snapshot == nil || tb.Snapshot.Status != txlog.SnapshotDone {
				done = false
			}
		}
		if done {
			return st
		}
		if exited, err := proc.Exited(); exited {
			t.Fatalf("producer exited (%v):\n%s", err, lastLines(proc.Output(), 20))
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, tb := range st.SortedTables() {
				fmt.Fprintf(&b, "  %s %s snapshot %+v\n", tb.Name(), tb.Status, tb.Snapshot)
			}
			t.Fatalf("snapshots not done after 4 minutes:\n%s\n%s", b.String(), lastLines(proc.Output(), 20))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// ledgerLoad writes transactions to the source until stopped: each one
// changes random rows of the given tables (all "id int PRIMARY KEY, v int",
// keys 1..keys: an upsert, an update or a delete) and inserts one row with
// a unique id into ledger ("id bigint PRIMARY KEY, w int"), which nothing
// else changes: the source's ledger is then the list of committed source
// transactions. Workers run concurrently and reconnect when the source
// restarts.
type ledgerLoad struct {
	stop context.CancelFunc
	wg   sync.WaitGroup
	n    atomic.Int64 // transactions committed (as far as the workers know)
}

// ledgerIDs makes ledger ids unique across the loads of a test binary.
var ledgerIDs atomic.Int64

func startLedgerLoad(t *testing.T, pg *harness.Postgres, workers, keys int, tables ...string) *ledgerLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &ledgerLoad{stop: cancel}
	for w := 0; w < workers; w++ {
		l.wg.Add(1)
		go func(w int) {
			defer l.wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			var c *pgx.Conn
			defer func() {
				if c != nil {
					c.Close(context.Background())
				}
			}()
			for i := 0; ctx.Err() == nil; i++ {
				if c == nil {
					var err error
					if c, err = pgx.Connect(ctx, pg.DSN); err != nil {
						time.Sleep(100 * time.Millisecond) // the source is restarting
						continue
					}
				}
				var b strings.Builder
				b.WriteString("BEGIN;")
				for n := 0; n < 1+r.IntN(3); n++ {
					tb := tables[r.IntN(len(tables))]
					k := r.IntN(keys) + 1
					switch r.IntN(4) {
					case 0, 1:
						fmt.Fprintf(&b, "INSERT INTO %s VALUES (%d, %d) ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v;", tb, k, i)
					case 2:
						fmt.Fprintf(&b, "UPDATE %s SET v = v + 1 WHERE id = %d;", tb, k)
					case 3:
						fmt.Fprintf(&b, "DELETE FROM %s WHERE id = %d;", tb, k)
					}
				}
				fmt.Fprintf(&b, "INSERT INTO ledger VALUES (%d, %d); COMMIT", ledgerIDs.Add(1), w)
				if _, err := c.Exec(ctx, b.String()); err != nil {
					if ctx.Err() != nil {
						return
					}
					var pe *pgconn.PgError
					if errors.As(err, &pe) && pe.Code == "40P01" { // deadlock: try another
						_, _ = c.Exec(context.Background(), "ROLLBACK")
						continue
					}
					if c.IsClosed() || pgconn.SafeToRetry(err) || errors.As(err, &pe) && strings.HasPrefix(pe.Code, "57P") {
						c.Close(context.Background())
						c = nil
						continue
					}
					t.Errorf("workload: %v", err)
					return
				}
				l.n.Add(1)
			}
		}(w)
	}
	return l
}

// end stops the load and waits for its workers.
func (l *ledgerLoad) end() { l.stop(); l.wg.Wait() }

// requireLedgerOnce checks that every source transaction of the load (every
// row of the source's ledger) is in log: exactly once as a streamed insert,
// or, when it committed before the initial snapshot's consistent point,
// as a snapshot read. A snapshot may also read a row that was streamed.
func (l *ledgerLoad) requireLedgerOnce(t *testing.T, pg *harness.Postgres, log *harness.Log, prefix string) {
	t.Helper()
	topic := schemas.TopicName(prefix, "public", "ledger")
	inserts, reads := map[int64]int{}, map[int64]int{}
	for _, tx := range log.Txns {
		for _, ev := range tx.Events {
			if ev.Topic != topic {
				continue
			}
			switch ev.Op {
			case schemas.OpInsert:
				inserts[ev.After["id"].(int64)]++
			case schemas.OpRead:
				reads[ev.After["id"].(int64)]++
			}
		}
	}
	rows, err := pg.Conn(t).Query(context.Background(), `SELECT id FROM ledger`)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	source := map[int64]bool{}
	missing, dup := 0, 0
	for _, id := range ids {
		source[id] = true
		switch {
		case inserts[id] > 1:
			dup++
		case inserts[id] == 0 && reads[id] == 0:
			missing++
		}
	}
	extra := 0
	for id := range inserts {
		if !source[id] {
			extra++
		}
	}
	if missing > 0 || dup > 0 || extra > 0 {
		t.Fatalf("of %d source transactions, %d are missing from Kafka and %d are there more than once; %d in Kafka never committed",
			len(ids), missing, dup, extra)
	}
}

// snapshotReads counts the snapshot reads (op r) of each key of table, by
// snapshot ID.
func snapshotReads(log *harness.Log, prefix, table string) map[string]map[string]int {
	topic := schemas.TopicName(prefix, "public", table)
	out := map[string]map[string]int{}
	for _, tx := range log.Txns {
		if tx.Frame.Snapshot == nil {
			continue
		}
		for _, ev := range tx.Events {
			if ev.Topic != topic || ev.Op != schemas.OpRead {
				continue
			}
			k := fmt.Sprint(ev.Key)
			if out[k] == nil {
				out[k] = map[string]int{}
			}
			out[k][tx.Frame.Snapshot.ID]++
		}
	}
	return out
}

// requireReadOncePerSnapshot fails when a snapshot read one key twice: a
// chunk written twice, or a snapshot repeated.
func requireReadOncePerSnapshot(t *testing.T, log *harness.Log, prefix string, tables ...string) {
	t.Helper()
	for _, tb := range tables {
		for k, by := range snapshotReads(log, prefix, tb) {
			for id, n := range by {
				if n > 1 {
					t.Fatalf("%s key %s read %d times by snapshot %s", tb, k, n, id)
				}
			}
		}
	}
}

// catchUp runs `tributary consumer --until-caught-up` with args and fails
// the test unless it exits 0.
func catchUp(t *testing.T, args ...string) string {
	t.Helper()
	out, code := runConsumerOnce(t, args...)
	if code != 0 {
		t.Fatalf("consumer --until-caught-up: exit %d\n%s", code, lastLines(out, 20))
	}
	return out
}

// runConsumerOnce runs `tributary consumer --until-caught-up` and returns
// its output and exit code.
func runConsumerOnce(t *testing.T, args ...string) (string, int) {
	t.Helper()
	p := harness.StartTributary(t, nil, append(append([]string{"consumer"}, args...), "--until-caught-up")...)
	select {
	case <-waitExit(p):
	case <-time.After(4 * time.Minute):
		t.Fatalf("consumer --until-caught-up did not finish in 4 minutes:\n%s", lastLines(p.Output(), 20))
	}
	_, err := p.Exited()
	code := 0
	if err != nil {
		code = 1
		if ee, ok := err.(interface{ ExitCode() int }); ok {
			code = ee.ExitCode()
		}
	}
	return p.Output(), code
}

// duckCount runs a count query on the DuckDB file at path.
func duckCount(t *testing.T, path, query string) int64 {
	t.Helper()
	db, err := sql.Open("duckdb", path+"?access_mode=READ_ONLY")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int64
	if err := db.QueryRow(query).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// requireEqualTables compares tables of two databases row by row.
func requireEqualTables(t *testing.T, src, dst *harness.Postgres, tables ...string) {
	t.Helper()
	for _, tb := range tables {
		a, b := tableDump(t, src, tb), tableDump(t, dst, tb)
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Fatalf("%s differs: source has %d rows, target %d\nsource %.300v\ntarget %.300v", tb, len(a), len(b), a, b)
		}
	}
}

// connect opens a connection to dsn that is closed when the test ends.
func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}
