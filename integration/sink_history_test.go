package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/history"
	"github.com/tributary-cdc/tributary/integration/harness"
)

// moment is the source's state after a recorded commit.
type moment struct {
	at   time.Time // clock time after the commit, before the next one
	lsn  string    // pg_current_wal_lsn() then
	rows []string  // "id|name|address|md5(doc)" in id order
}

// sinkWorkload is the history tests' source: customers with a 100-KB
// TOASTed doc, changed by inserts, updates (some only of name, so that doc
// is an unchanged TOAST value) and deletes, with the number of changes per
// key counted and the state saved at several moments.
type sinkWorkload struct {
	changes map[int]int // changes per id
	total   int
	txns    int
	moments []moment
}

const sinkWorkloadSQL = `CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, address text, doc text);
ALTER TABLE customers ALTER COLUMN doc SET STORAGE EXTERNAL`

func sinkState(t *testing.T, c *pgx.Conn, query string, args ...any) []string {
	t.Helper()
	rows, err := c.Query(context.Background(), query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id int
		var name string
		var addr, doc *string
		if err := rows.Scan(&id, &name, &addr, &doc); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%d|%s|%s|%s", id, name, deref(addr), deref(doc)))
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return out
}

func deref(s *string) string {
	if s == nil {
		return "<null>"
	}
	return *s
}

const sourceStateSQL = `SELECT id, name, address, md5(doc) FROM customers ORDER BY id`

// run performs rounds of transactions on the source; onRound is called
// after each round (to kill a consumer, say).
func (w *sinkWorkload) run(t *testing.T, src *harness.Postgres, rounds int, onRound func(round int)) {
	t.Helper()
	ctx := context.Background()
	c := src.Conn(t)
	w.changes = map[int]int{}
	live := map[int]bool{}
	exec := func(sql string, args ...any) {
		if _, err := c.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	const keys = 24
	for r := 0; r < rounds; r++ {
		for i := 0; i < 6; i++ {
			exec("BEGIN")
			for j := 0; j < 1+rand.IntN(4); j++ {
				id := rand.IntN(keys) + 1
				switch {
				case !live[id]:
					// md5 chains make 100 KB that pglz cannot compress below the TOAST threshold.
					exec(`INSERT INTO customers SELECT $1::int, 'n' || $1::int, 'addr ' || $2::bigint,
						string_agg(md5($2::bigint || '-' || g), '') FROM generate_series(1, 3125) g`, id, rand.Int())
					live[id] = true
				case rand.IntN(6) == 0:
					exec(`DELETE FROM customers WHERE id = $1`, id)
					live[id] = false
				case rand.IntN(3) == 0:
					exec(`UPDATE customers SET address = 'addr ' || $2::bigint WHERE id = $1::int`, id, rand.Int())
				default: // doc unchanged: a TOAST value not sent
					exec(`UPDATE customers SET name = 'n' || $1::int || '-' || $2::int WHERE id = $1::int`, id, rand.IntN(1000))
				}
				w.changes[id]++
				w.total++
			}
			exec("COMMIT")
			w.txns++
		}
		var m moment
		if err := c.QueryRow(ctx, `SELECT clock_timestamp(), pg_current_wal_lsn()::text`).Scan(&m.at, &m.lsn); err != nil {
			t.Fatal(err)
		}
		m.rows = sinkState(t, c, sourceStateSQL)
		w.moments = append(w.moments, m)
		time.Sleep(5 * time.Millisecond)
		if onRound != nil {
			onRound(r)
		}
	}
}

// restartingConsumer runs build() consumers in the background; restart
// cancels the running one at once (as a crash would, mid-batch) and starts
// another.
type restartingConsumer struct {
	t      *testing.T
	build  func() *consumer.Consumer
	cancel context.CancelFunc
	done   chan error
}

func (r *restartingConsumer) start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan error, 1)
	c := r.build()
	go func() { r.done <- c.Run(ctx) }()
}

func (r *restartingConsumer) stop() {
	r.t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			r.t.Fatalf("consumer: %v", err)
		}
	case <-time.After(30 * time.Second):
		r.t.Fatal("consumer did not stop within 30s of cancel")
	}
}

func TestHistorySinkCompletenessAsOfAndRestarts(t *testing.T) {
	e := newEnv(t)
	target := harness.StartPostgres(t)
	e.pg.Exec(t, sinkWorkloadSQL, `CREATE PUBLICATION pub FOR TABLE customers`)
	e.runProducer(t, e.producerConfig(t))

	newSink := func() *consumer.Consumer {
		s, err := history.New(history.Config{DSN: target.DSN, Consumer: "hist", FlushRows: 7, Logger: testLog(t)})
		must(t, err)
		c, err := consumer.New(consumer.Config{Kafka: []kgo.Opt{kgo.SeedBrokers(e.kafka.Brokers...)}, Registry: e.reg,
			Prefix: e.prefix, Name: "hist", Sink: s, Logger: testLog(t), RetryMaxElapsed: 20 * time.Second, GroupMaxTxns: 5})
		must(t, err)
		return c
	}
	rc := &restartingConsumer{t: t, build: newSink}
	rc.start()
	var w sinkWorkload
	restarts := 0
	w.run(t, e.pg, 8, func(round int) {
		if round%2 == 1 { // cancel at a random point of the apply stream
			time.Sleep(time.Duration(rand.IntN(150)) * time.Millisecond)
			rc.stop()
			rc.start()
			restarts++
		}
	})
	rc.stop()
	e.waitFrameCount(t, w.txns)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	final, err := history.New(history.Config{DSN: target.DSN, Consumer: "hist", Logger: testLog(t)})
	must(t, err)
	fc, err := consumer.New(consumer.Config{Kafka: []kgo.Opt{kgo.SeedBrokers(e.kafka.Brokers...)}, Registry: e.reg,
		Prefix: e.prefix, Name: "hist", Sink: final, Logger: testLog(t), UntilCaughtUp: true})
	must(t, err)
	must(t, fc.Run(ctx))

	tc := target.Conn(t)
	checkHistory(t, tc, &w)
	for i, m := range w.moments {
		got := sinkState(t, tc, `SELECT id, name, address, md5(doc) FROM public.customers_as_of($1) ORDER BY id`, m.at)
		if strings.Join(got, "\n") != strings.Join(m.rows, "\n") {
			t.Fatalf("customers_as_of(%s) (moment %d) differs from the source then:\n got %v\nwant %v", m.at, i, got, m.rows)
		}
		got = sinkState(t, tc, `SELECT id, name, address, md5(doc) FROM public.customers_as_of_lsn($1::pg_lsn) ORDER BY id`, m.lsn)
		if strings.Join(got, "\n") != strings.Join(m.rows, "\n") {
			t.Fatalf("customers_as_of_lsn(%s) (moment %d) differs from the source then", m.lsn, i)
		}
	}
	runDocQueries(t, func(q string) error { _, err := tc.Exec(context.Background(), q); return err }, historyDocQueries)
	t.Logf("%d changes in %d source transactions, %d consumer restarts: one history row per change, as-of exact at %d moments",
		w.total, w.txns, restarts, len(w.moments))
}

// checkHistory checks the history table against the workload: one row per
// change, versions 1..n, non-overlapping validity, complete values.
func checkHistory(t *testing.T, c *pgx.Conn, w *sinkWorkload) {
	t.Helper()
	ctx := context.Background()
	rows, err := c.Query(ctx, `SELECT id, count(*), min(version), max(version), count(DISTINCT version),
		count(DISTINCT (commit_lsn, position)) FROM public.customers_history GROUP BY id`)
	must(t, err)
	got := map[int]int{}
	for rows.Next() {
		var id int
		var n, lo, hi, distinct, changes int
		must(t, rows.Scan(&id, &n, &lo, &hi, &distinct, &changes))
		if lo != 1 || hi != n || distinct != n || changes != n {
			t.Fatalf("id %d: %d rows, versions %d..%d (%d distinct), %d distinct changes: want versions 1..%d, each once", id, n, lo, hi, distinct, changes, n)
		}
		got[id] = n
	}
	must(t, rows.Err())
	for id, n := range w.changes {
		if got[id] != n {
			t.Fatalf("id %d: %d history rows, want %d (one per source change)", id, got[id], n)
		}
	}
	if len(got) != len(w.changes) {
		t.Fatalf("history has %d keys, the workload changed %d", len(got), len(w.changes))
	}
	var bad int
	must(t, c.QueryRow(ctx, `SELECT count(*) FROM (SELECT *, lead(valid_from) OVER (PARTITION BY id ORDER BY version) AS next_from
		FROM public.customers_history) h
		WHERE valid_to < valid_from OR (next_from IS NULL) <> (valid_to IS NULL AND op NOT IN ('d', 't')) AND op NOT IN ('d', 't')
		   OR (op NOT IN ('d', 't') AND next_from IS NOT NULL AND valid_to <> next_from)
		   OR (op IN ('d', 't') AND valid_to <> valid_from)
		   OR (next_from IS NOT NULL AND next_from < valid_to)`).Scan(&bad))
	if bad != 0 {
		t.Fatalf("%d history rows have overlapping or open validity ranges they should not have", bad)
	}
	must(t, c.QueryRow(ctx, `SELECT count(*) FROM public.customers_history WHERE doc IS NULL OR length(doc) <> 100000
		OR name IS NULL OR address IS NULL`).Scan(&bad))
	if bad != 0 {
		t.Fatalf("%d history rows lack a value (an unchanged TOAST value was not carried forward?)", bad)
	}
}

// historyDocQueries are docs/SINKS.md's example queries for the history sink.
var historyDocQueries = []string{
	`SELECT * FROM public.customers_as_of(date_trunc('week', now()) - interval '6 days')`,
	`SELECT date_trunc('hour', commit_ts) AS hour, op, count(*) AS changes FROM public.customers_history GROUP BY 1, 2 ORDER BY 1, 2`,
	`SELECT id FROM (SELECT id, address, lag(address) OVER (PARTITION BY id ORDER BY version) AS before, op
	   FROM public.customers_history) h WHERE op = 'u' AND address IS DISTINCT FROM before GROUP BY id HAVING count(*) = 2`,
	`SELECT * FROM public.customers_versions(1)`,
}

func runDocQueries(t *testing.T, exec func(string) error, queries []string) {
	t.Helper()
	for _, q := range queries {
		if err := exec(q); err != nil {
			t.Fatalf("docs/SINKS.md query fails: %v\n%s", err, q)
		}
	}
}

func TestHistorySinkBadInput(t *testing.T) {
	e := newConsumerEnv(t)
	// A source column named like a history column is a clear, permanent error.
	tbl := accountTable("clash")
	tbl.Columns[2].Name = "version"
	e.prod.addTable(tbl, 1)
	e.prod.commit([]change{{table: "clash", op: "c", after: acct(1, 10, "x")}})
	s, err := history.New(history.Config{DSN: e.target.DSN, Consumer: "bad", Logger: e.log})
	must(t, err)
	c, err := consumer.New(consumer.Config{Kafka: []kgo.Opt{kgo.SeedBrokers(e.k.Brokers...)}, Registry: e.reg,
		Prefix: e.prefix, Name: "bad", Sink: s, Logger: e.log, UntilCaughtUp: true, RetryMaxElapsed: 5 * time.Second})
	must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err = c.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), `"version"`) || !strings.Contains(err.Error(), "public.clash") ||
		!strings.Contains(err.Error(), "commit_lsn") {
		t.Fatalf("want an error naming the table, the column and the commit LSN, got %v", err)
	}
	// Nothing was recorded, and the checkpoint did not move past it.
	var n int64
	must(t, e.target.Conn(t).QueryRow(context.Background(), `SELECT count(*) FROM tributary_checkpoint WHERE consumer = 'bad'`).Scan(&n))
	if n != 0 {
		t.Fatalf("the checkpoint moved past a transaction that was not recorded")
	}
	// An empty DSN or name is refused by New.
	if _, err := history.New(history.Config{Consumer: "x"}); err == nil || !strings.Contains(err.Error(), "--target") {
		t.Fatalf("New without DSN: %v", err)
	}
}

// TestHistorySinkChunkFailureFailsTheApply: the history writer sends an
// Apply's rows in chunks of FlushRows. A chunk that the target refuses, with
// chunks before and after it in the same Apply, must fail that Apply with an
// error naming the chunk's table and commit LSN, roll all of it back (rows
// and checkpoint), and leave the consumer to resume there and record every
// change exactly once when the cause is gone.
func TestHistorySinkChunkFailureFailsTheApply(t *testing.T) {
	e := newConsumerEnv(t)
	e.prod.addTable(accountTable("hacct"), 1)
	run := func(name string) error {
		s, err := history.New(history.Config{DSN: e.target.DSN, Consumer: name, Logger: e.log, FlushRows: 4})
		must(t, err)
		c, err := consumer.New(consumer.Config{Kafka: []kgo.Opt{kgo.SeedBrokers(e.k.Brokers...)}, Registry: e.reg,
			Prefix: e.prefix, Name: name, Sink: s, Logger: e.log, UntilCaughtUp: true, RetryMaxElapsed: time.Second})
		must(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		return c.Run(ctx)
	}
	// The history table exists before the poison is laid in it.
	e.prod.commit([]change{{table: "hacct", op: "c", after: acct(0, 0, "first")}})
	must(t, run("h"))
	tc := e.target.Conn(t)
	ctx := context.Background()
	for _, q := range []string{
		`CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
		 BEGIN IF NEW.id = 25 THEN RAISE EXCEPTION 'poisoned row %', NEW.id; END IF; RETURN NEW; END $$`,
		`CREATE TRIGGER poison BEFORE INSERT ON public.hacct_history FOR EACH ROW EXECUTE FUNCTION poison()`,
		// The sink writes as session_replication_role = replica.
		`ALTER TABLE public.hacct_history ENABLE ALWAYS TRIGGER poison`,
	} {
		if _, err := tc.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// One source transaction of 40 rows is one Apply of 10 chunks of 4
	// rows: id 25 is in the seventh, and chunks follow it.
	var ch []change
	for i := 1; i <= 40; i++ {
		ch = append(ch, change{table: "hacct", op: "c", after: acct(i, int64(i), "n")})
	}
	bad := e.prod.commit(ch)
	var cpBefore string
	must(t, tc.QueryRow(ctx, `SELECT string_agg(next_offset::text, ',' ORDER BY topic, partition) FROM tributary_checkpoint WHERE consumer = 'h'`).Scan(&cpBefore))
	err := run("h")
	if err == nil || !strings.Contains(err.Error(), "poisoned row 25") || !strings.Contains(err.Error(), `"hacct_history"`) ||
		!strings.Contains(err.Error(), bad.String()) {
		t.Fatalf("want the refused chunk's error naming its table and commit LSN %s, got %v", bad, err)
	}
	var n int64
	var cpAfter string
	must(t, tc.QueryRow(ctx, `SELECT count(*) FROM public.hacct_history`).Scan(&n))
	must(t, tc.QueryRow(ctx, `SELECT string_agg(next_offset::text, ',' ORDER BY topic, partition) FROM tributary_checkpoint WHERE consumer = 'h'`).Scan(&cpAfter))
	if n != 1 || cpAfter != cpBefore {
		t.Fatalf("the failed Apply left %d history rows (want the 1 from before) and checkpoint %s (want %s)", n, cpAfter, cpBefore)
	}
	if _, err := tc.Exec(ctx, `DROP TRIGGER poison ON public.hacct_history`); err != nil {
		t.Fatal(err)
	}
	must(t, run("h"))
	var rows, keys, maxVersion int64
	must(t, tc.QueryRow(ctx, `SELECT count(*), count(DISTINCT id), max(version) FROM public.hacct_history`).Scan(&rows, &keys, &maxVersion))
	if rows != 41 || keys != 41 || maxVersion != 1 {
		t.Fatalf("after the restart: %d rows of %d keys, max version %d; want 41 rows of 41 keys, each version 1", rows, keys, maxVersion)
	}
}
