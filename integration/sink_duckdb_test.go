package integration

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/duckdb"
)

// TestDuckDBLockHolder is not a test: run as a subprocess with
// TRIBUTARY_DUCKDB_LOCK set, it opens that DuckDB file and holds it (and its
// lock) until killed.
func TestDuckDBLockHolder(t *testing.T) {
	path := os.Getenv("TRIBUTARY_DUCKDB_LOCK")
	if path == "" {
		return
	}
	db, err := sql.Open("duckdb", path)
	must(t, err)
	_, err = db.Exec(`CREATE TABLE IF NOT EXISTS held (x int)`)
	must(t, err)
	fmt.Println("holding")
	time.Sleep(10 * time.Minute)
}

func duckRows(t *testing.T, db *sql.DB, query string, args ...any) []string {
	t.Helper()
	rows, err := db.Query(query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id int
		var name string
		var addr, doc sql.NullString
		must(t, rows.Scan(&id, &name, &addr, &doc))
		a, d := "<null>", "<null>"
		if addr.Valid {
			a = addr.String
		}
		if doc.Valid {
			d = doc.String
		}
		out = append(out, fmt.Sprintf("%d|%s|%s|%s", id, name, a, d))
	}
	must(t, rows.Err())
	return out
}

func TestDuckDBSinkCurrentHistoryAsOfRestartsAndFaults(t *testing.T) {
	e := newEnv(t)
	e.pg.Exec(t, sinkWorkloadSQL, `CREATE PUBLICATION pub FOR TABLE customers`)
	e.runProducer(t, e.producerConfig(t))
	dir := t.TempDir()
	path := filepath.Join(dir, "wh.duckdb")
	parquet := filepath.Join(dir, "parquet")

	var failNext atomic.Bool
	build := func(untilCaughtUp bool) *consumer.Consumer {
		s, err := duckdb.New(duckdb.Config{Path: path, Consumer: "wh", FlushRows: 9, ExportParquet: parquet,
			ExportInterval: time.Millisecond, Logger: testLog(t), Knobs: &duckdb.TestingKnobs{BeforeCommit: func() error {
				if failNext.CompareAndSwap(true, false) {
					return errors.New("injected write error: no space left on device")
				}
				return nil
			}}})
		must(t, err)
		c, err := consumer.New(consumer.Config{Kafka: []kgo.Opt{kgo.SeedBrokers(e.kafka.Brokers...)}, Registry: e.reg,
			Prefix: e.prefix, Name: "wh", Sink: s, Logger: testLog(t), GroupMaxEvents: s.GroupMaxEvents(), GroupMaxTxns: 4,
			UntilCaughtUp: untilCaughtUp, RetryMaxElapsed: 20 * time.Second})
		must(t, err)
		return c
	}
	rc := &restartingConsumer{t: t, build: func() *consumer.Consumer { return build(false) }}
	rc.start()
	var w sinkWorkload
	restarts := 0
	w.run(t, e.pg, 8, func(round int) {
		if round%2 == 0 {
			time.Sleep(time.Duration(rand.IntN(150)) * time.Millisecond)
			rc.stop()
			rc.start()
			restarts++
		}
	})
	rc.stop()
	e.waitFrameCount(t, w.txns)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// A write error stops the consumer with an error naming the file;
	// nothing of the failed micro-batch is kept.
	failNext.Store(true)
	err := build(true).Run(ctx)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("want the injected write error naming %s, got %v", path, err)
	}
	// A file locked by another process stops it with an error naming it.
	holder := exec.Command(os.Args[0], "-test.run", "^TestDuckDBLockHolder$")
	holder.Env = append(os.Environ(), "TRIBUTARY_DUCKDB_LOCK="+path)
	out, err := holder.StdoutPipe()
	must(t, err)
	must(t, holder.Start())
	buf := make([]byte, 7)
	if _, err := out.Read(buf); err != nil || string(buf) != "holding" {
		t.Fatalf("lock holder did not start: %q %v", buf, err)
	}
	err = build(true).Run(ctx)
	_ = holder.Process.Kill()
	_ = holder.Wait()
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(strings.ToLower(err.Error()), "lock") {
		t.Fatalf("want an error naming the locked file %s, got %v", path, err)
	}
	// After the fix, it resumes and catches up.
	must(t, build(true).Run(ctx))

	db, err := sql.Open("duckdb", path+"?access_mode=READ_ONLY")
	must(t, err)
	defer db.Close()
	const cur = `SELECT id, name, address, md5(doc) FROM public.customers ORDER BY id`
	src := sinkState(t, e.pg.Conn(t), sourceStateSQL)
	if got := duckRows(t, db, cur); strings.Join(got, "\n") != strings.Join(src, "\n") {
		t.Fatalf("DuckDB current state differs from the source:\n got %v\nwant %v", got, src)
	}
	var n, distinct, incomplete int
	must(t, db.QueryRow(`SELECT count(*), count(DISTINCT (id, commit_lsn, position)),
		count(*) FILTER (WHERE doc IS NULL OR length(doc) <> 100000 OR address IS NULL)
		FROM public.customers_history`).Scan(&n, &distinct, &incomplete))
	if n != w.total || distinct != n || incomplete != 0 {
		t.Fatalf("history: %d rows (%d distinct changes, %d incomplete), want %d rows, one per change, all complete",
			n, distinct, incomplete, w.total)
	}
	for id, want := range w.changes {
		var got int
		must(t, db.QueryRow(`SELECT max(version) FROM public.customers_versions(?)`, id).Scan(&got))
		if got != want {
			t.Fatalf("id %d: %d versions, want %d", id, got, want)
		}
	}
	for i, m := range w.moments {
		got := duckRows(t, db, `SELECT id, name, address, md5(doc) FROM public.customers_as_of(?::TIMESTAMPTZ) ORDER BY id`, m.at)
		if strings.Join(got, "\n") != strings.Join(m.rows, "\n") {
			t.Fatalf("customers_as_of(%s) (moment %d) differs from the source then:\n got %v\nwant %v", m.at, i, got, m.rows)
		}
	}
	// The Parquet export holds the whole history once, partitioned by table and day.
	var exported int
	must(t, db.QueryRow(fmt.Sprintf(`SELECT count(*) FROM (SELECT DISTINCT id, commit_lsn, position FROM
		read_parquet('%s/table=public.customers/day=*/*.parquet', hive_partitioning = true))`, parquet)).Scan(&exported))
	var files int
	must(t, db.QueryRow(fmt.Sprintf(`SELECT count(*) FROM read_parquet('%s/**/*.parquet')`, parquet)).Scan(&files))
	if exported != n || files != n {
		t.Fatalf("parquet export: %d distinct changes in %d rows, want %d once each", exported, files, n)
	}
	runDocQueries(t, func(q string) error { _, err := db.Exec(q); return err }, duckdbDocQueries)
	t.Logf("%d changes, %d consumer restarts, an injected write error and a locked file: current state equals the source, "+
		"history complete without duplicates, as-of exact at %d moments, parquet export whole", w.total, restarts, len(w.moments))
}

// duckdbDocQueries are docs/SINKS.md's example queries for the DuckDB sink.
var duckdbDocQueries = []string{
	`SELECT * FROM public.customers_as_of(date_trunc('week', now()) - INTERVAL 6 DAYS)`,
	`SELECT date_trunc('hour', commit_ts) AS hour, op, count(*) AS changes FROM public.customers_history GROUP BY ALL ORDER BY ALL`,
	`SELECT id FROM (SELECT id, op, address, lag(address) OVER (PARTITION BY id ORDER BY commit_lsn, position) AS before
	   FROM public.customers_history) WHERE op = 'u' AND address IS DISTINCT FROM before GROUP BY id HAVING count(*) = 2`,
	`SELECT * FROM public.customers_versions(1)`,
	`SELECT commit_ts, now() - commit_ts AS lag FROM main.tributary_checkpoint WHERE kind = 'transactions'`,
}
