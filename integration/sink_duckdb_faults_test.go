package integration

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tributary-cdc/tributary/integration/harness"
)

// The warehouse fault tests run `tributary consumer --sink duckdb` as a
// subprocess, as users do, and check the DuckDB file against the source and
// against every change the workload made.

// duckTable is one source table of the fault tests, with the same row
// rendered as one canonical string by PostgreSQL and by DuckDB, so that
// every column is compared exactly: numeric and text as text, timestamptz as
// epoch microseconds, bytea as hex, text[] joined, jsonb as its text.
type duckTable struct {
	name, ddl  string
	key        []string // key columns
	pgRow      string   // PostgreSQL expression: the canonical row
	duckRow    string   // DuckDB expression: the same string
	insert     string   // INSERT ... RETURNING key, canonical row; $1.. as in args
	update     []string // UPDATE ... WHERE key RETURNING key, canonical row
	delete     string   // DELETE ... WHERE key RETURNING key, canonical row
	keys       func(r *rand.Rand) []any
	insertArgs func(key []any, r *rand.Rand, big bool) []any
}

var duckTables = []*duckTable{
	{
		name: "accounts",
		ddl: `CREATE TABLE accounts (id int PRIMARY KEY, balance numeric(12,2) NOT NULL, owner text, tags text[],
			updated timestamptz, blob bytea)`,
		key: []string{"id"},
		pgRow: `id::text || '|' || balance::text || '|' || coalesce(owner, '<null>') || '|' ||
			coalesce(array_to_string(tags, ','), '<null>') || '|' ||
			coalesce(((extract(epoch FROM updated) * 1000000)::bigint)::text, '<null>') || '|' || coalesce(encode(blob, 'hex'), '<null>')`,
		duckRow: `id::VARCHAR || '|' || balance::VARCHAR || '|' || coalesce(owner, '<null>') || '|' ||
			coalesce(array_to_string(tags, ','), '<null>') || '|' ||
			coalesce(epoch_us(updated)::VARCHAR, '<null>') || '|' || coalesce(lower(hex(blob)), '<null>')`,
		insert: `INSERT INTO accounts VALUES ($1::int, $2::text::numeric, $3::text, ARRAY['t' || $1::int::text, 'x'], clock_timestamp(),
			sha256(convert_to($3::text, 'UTF8'))) RETURNING id::text, %s`,
		update: []string{
			`UPDATE accounts SET balance = balance + $2::text::numeric WHERE id = $1 RETURNING id::text, %s`,
			`UPDATE accounts SET owner = $2::text, tags = tags || $2::text, updated = clock_timestamp() WHERE id = $1
				RETURNING id::text, %s`,
			`UPDATE accounts SET blob = NULL, updated = NULL, owner = NULL WHERE id = $1 AND $2::text IS NOT NULL RETURNING id::text, %s`,
		},
		delete: `DELETE FROM accounts WHERE id = $1 RETURNING id::text, %s`,
		keys:   func(r *rand.Rand) []any { return []any{1 + r.IntN(40)} },
		insertArgs: func(key []any, r *rand.Rand, big bool) []any {
			owner := fmt.Sprintf("owner-%d", r.IntN(1000))
			if big {
				owner = strings.Repeat(fmt.Sprintf("%016x", r.Uint64()), 512) // 8 KB that does not compress much
			}
			return []any{key[0], fmt.Sprintf("%d.%02d", r.IntN(100000), r.IntN(100)), owner}
		},
	},
	{
		name:    "orders",
		ddl:     `CREATE TABLE orders (region text, id int, qty int NOT NULL, doc jsonb, PRIMARY KEY (region, id))`,
		key:     []string{"region", "id"},
		pgRow:   `region || '|' || id::text || '|' || qty::text || '|' || coalesce(doc::text, '<null>')`,
		duckRow: `region || '|' || id::VARCHAR || '|' || qty::VARCHAR || '|' || coalesce(doc::VARCHAR, '<null>')`,
		insert: `INSERT INTO orders VALUES ($1::text, $2::int, $3::int, jsonb_build_object('n', $3::int, 'tags', jsonb_build_array('a', $1::text)))
			RETURNING region || '/' || id::text, %s`,
		update: []string{
			`UPDATE orders SET qty = qty + $3::text::int WHERE region = $1 AND id = $2 RETURNING region || '/' || id::text, %s`,
			`UPDATE orders SET doc = doc || jsonb_build_object('u', $3::text::int) WHERE region = $1 AND id = $2
				RETURNING region || '/' || id::text, %s`,
		},
		delete: `DELETE FROM orders WHERE region = $1 AND id = $2 RETURNING region || '/' || id::text, %s`,
		keys: func(r *rand.Rand) []any {
			return []any{[]string{"eu", "us", "ap"}[r.IntN(3)], 1 + r.IntN(15)}
		},
		insertArgs: func(key []any, r *rand.Rand, big bool) []any { return []any{key[0], key[1], r.IntN(100)} },
	},
}

// duckKeyExpr is the key as the workload's RETURNING renders it.
func (dt *duckTable) duckKeyExpr() string {
	if len(dt.key) == 1 {
		return dt.key[0] + "::VARCHAR"
	}
	return "region || '/' || id::VARCHAR"
}

// duckLoad is the fault tests' workload: single-connection source
// transactions over both tables, recording every change per key in order
// as "op|canonical row" (a delete records the row's last values, as the
// history must).
type duckLoad struct {
	t       *testing.T
	pg      *harness.Postgres
	r       *rand.Rand
	mu      sync.Mutex
	changes map[string][]string // "table:key" -> changes in commit order
	live    map[string]bool
	total   int
	txns    int
}

func newDuckLoad(t *testing.T, pg *harness.Postgres) *duckLoad {
	return &duckLoad{t: t, pg: pg, r: rand.New(rand.NewPCG(rand.Uint64(), 1)), changes: map[string][]string{}, live: map[string]bool{}}
}

// run commits n source transactions of 1 to 5 changes, every tenth one of
// 20 to 40 changes (larger than the tests' micro-batches); big makes
// inserted rows 8 KB. It stops early when stop returns
// true (checked between transactions).
func (l *duckLoad) run(n int, big bool, stop func() bool) {
	l.t.Helper()
	ctx := context.Background()
	c := l.pg.Conn(l.t)
	for i := 0; i < n && (stop == nil || !stop()); i++ {
		tx, err := c.Begin(ctx)
		if err != nil {
			l.t.Fatal(err)
		}
		size := 1 + l.r.IntN(5)
		if l.r.IntN(10) == 0 {
			size = 20 + l.r.IntN(21)
		}
		type rec struct{ id, ch string }
		var recs []rec
		for j := 0; j < size; j++ {
			dt := duckTables[l.r.IntN(len(duckTables))]
			key := dt.keys(l.r)
			id := dt.name + ":" + fmt.Sprint(key...)
			if len(key) == 2 {
				id = fmt.Sprintf("%s:%v/%v", dt.name, key[0], key[1])
			}
			var op, sql string
			args := key
			switch {
			case !l.live[id]:
				op, sql, args = "c", dt.insert, dt.insertArgs(key, l.r, big)
			case l.r.IntN(6) == 0:
				op, sql = "d", dt.delete
			default:
				op, sql = "u", dt.update[l.r.IntN(len(dt.update))]
				args = append(slices.Clone(key), fmt.Sprint(1+l.r.IntN(50)))
			}
			var k, row string
			if err := tx.QueryRow(ctx, fmt.Sprintf(sql, dt.pgRow), args...).Scan(&k, &row); err != nil {
				l.t.Fatalf("workload %s %s: %v", op, id, err)
			}
			l.live[id] = op != "d"
			recs = append(recs, rec{dt.name + ":" + k, op + "|" + row})
		}
		if err := tx.Commit(ctx); err != nil {
			l.t.Fatal(err)
		}
		l.mu.Lock()
		for _, r := range recs {
			l.changes[r.id] = append(l.changes[r.id], r.ch)
		}
		l.total += len(recs)
		l.txns++
		l.mu.Unlock()
	}
}

func (l *duckLoad) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

const duckFaultSchemaSQL = `CREATE PUBLICATION pub FOR TABLE accounts, orders`

func (e *env) duckArgs(path string, extra ...string) []string {
	return append([]string{"consumer", "--brokers", e.kafka.Brokers[0], "--registry", e.kafka.RegistryURL,
		"--prefix", e.prefix, "--name", "wh", "--sink", "duckdb", "--duckdb-file", path, "--log-format", "json"}, extra...)
}

func newDuckFaultEnv(t *testing.T) *env {
	e := newEnv(t)
	for _, dt := range duckTables {
		e.pg.Exec(t, dt.ddl)
	}
	e.pg.Exec(t, duckFaultSchemaSQL)
	e.runProducer(t, e.producerConfig(t))
	return e
}

// waitBatches waits until p has logged more than n loaded micro-batches and
// returns how many it has logged; it fails the test if p exits first.
func waitBatches(t *testing.T, p *harness.Proc, n int) int {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		got := strings.Count(p.Output(), `"micro-batch loaded"`)
		if got > n {
			return got
		}
		if exited, err := p.Exited(); exited {
			t.Fatalf("consumer exited (%v) before loading a micro-batch:\n%s", err, lastLines(p.Output(), 10))
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer loaded no micro-batch in a minute:\n%s", lastLines(p.Output(), 10))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// catchUpDuck runs the consumer with --until-caught-up and returns its last
// line and its exit error.
func catchUpDuck(t *testing.T, args []string) (last string, err error) {
	t.Helper()
	p := harness.StartTributary(t, nil, append(slices.Clone(args), "--until-caught-up")...)
	select {
	case <-waitExit(p):
	case <-time.After(2 * time.Minute):
		t.Fatalf("consumer --until-caught-up did not finish in 2 minutes:\n%s", lastLines(p.Output(), 10))
	}
	_, err = p.Exited()
	return lastLines(p.Output(), 1), err
}

// checkDuckWarehouse checks the DuckDB file against the source and the
// workload: each current-state table equals the source table in every row
// and column; each key's history is exactly the workload's changes of it,
// in order, with their values, one row per change, versions 1..n.
func checkDuckWarehouse(t *testing.T, e *env, path string, l *duckLoad) {
	t.Helper()
	db, err := sql.Open("duckdb", path+"?access_mode=READ_ONLY")
	must(t, err)
	defer db.Close()
	strs := func(q string, args ...any) []string {
		t.Helper()
		rows, err := db.Query(q, args...)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var s string
			must(t, rows.Scan(&s))
			out = append(out, s)
		}
		must(t, rows.Err())
		return out
	}
	src := e.pg.Conn(t)
	hist := map[string][]string{}
	rows := 0
	for _, dt := range duckTables {
		want := pgStrings(t, src, fmt.Sprintf(`SELECT %s FROM %s ORDER BY %s`, dt.pgRow, dt.name, strings.Join(dt.key, ", ")))
		got := strs(fmt.Sprintf(`SELECT %s FROM public.%s ORDER BY %s`, dt.duckRow, dt.name, strings.Join(dt.key, ", ")))
		if !slices.Equal(got, want) {
			t.Fatalf("DuckDB public.%s differs from the source (%d rows, source %d):\n%s", dt.name, len(got), len(want), firstDiff(got, want))
		}
		// The as-of macro at the latest LSN is the current state too.
		got = strs(fmt.Sprintf(`SELECT %s FROM public.%s_as_of_lsn(18446744073709551615::UBIGINT) ORDER BY %s`,
			dt.duckRow, dt.name, strings.Join(dt.key, ", ")))
		if !slices.Equal(got, want) {
			t.Fatalf("public.%s_as_of_lsn(max) differs from the source:\n%s", dt.name, firstDiff(got, want))
		}
		var n, distinct int
		must(t, db.QueryRow(fmt.Sprintf(`SELECT count(*), count(DISTINCT (%s, commit_lsn, position)) FROM public.%s_history`,
			strings.Join(dt.key, ", "), dt.name)).Scan(&n, &distinct))
		if n != distinct {
			t.Fatalf("public.%s_history: %d rows but %d distinct (key, commit_lsn, position): a change was loaded twice", dt.name, n, distinct)
		}
		rows += n
		for _, s := range strs(fmt.Sprintf(`SELECT %s || '#' || op || '|' || %s FROM public.%s_history ORDER BY %s, commit_lsn, position`,
			dt.duckKeyExpr(), dt.duckRow, dt.name, strings.Join(dt.key, ", "))) {
			k, ch, _ := strings.Cut(s, "#")
			hist[dt.name+":"+k] = append(hist[dt.name+":"+k], ch)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if rows != l.total {
		t.Fatalf("history holds %d rows, the source made %d changes", rows, l.total)
	}
	for id, want := range l.changes {
		if got := hist[id]; !slices.Equal(got, want) {
			t.Fatalf("history of %s differs from its %d source changes:\n%s", id, len(want), firstDiff(got, want))
		}
	}
	// Versions are 1..n without gaps, per key, through the versions macro.
	for id, want := range l.changes {
		table, key, _ := strings.Cut(id, ":")
		var q string
		var args []any
		if table == "orders" {
			region, n, _ := strings.Cut(key, "/")
			q, args = `SELECT list(version ORDER BY version)::VARCHAR FROM public.orders_versions(?, ?::INTEGER)`, []any{region, n}
		} else {
			q, args = `SELECT list(version ORDER BY version)::VARCHAR FROM public.accounts_versions(?::INTEGER)`, []any{key}
		}
		var got string
		must(t, db.QueryRow(q, args...).Scan(&got))
		wantV := make([]string, len(want))
		for i := range want {
			wantV[i] = fmt.Sprint(i + 1)
		}
		if got != "["+strings.Join(wantV, ", ")+"]" {
			t.Fatalf("versions of %s: %s, want 1..%d", id, got, len(want))
		}
	}
}

// pgStrings runs a one-column query on the source.
func pgStrings(t *testing.T, c *pgx.Conn, q string) []string {
	t.Helper()
	rows, err := c.Query(context.Background(), q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return out
}

func firstDiff(got, want []string) string {
	for i := 0; i < len(got) || i < len(want); i++ {
		var g, w string
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			return fmt.Sprintf("  first difference at #%d:\n   got  %q\n   want %q", i, g, w)
		}
	}
	return "  (equal)"
}

// TestDuckDBConsumerKillNineMidBatch kills `tributary consumer --sink duckdb`
// with SIGKILL four times while a mixed workload runs over two tables, each
// time while it works through a backlog in micro-batches of 7 rows (source
// transactions of up to 40 changes are micro-batches of their own), restarts
// it, and finally
// catches up: the warehouse equals the source, and the history holds each
// change exactly once.
func TestDuckDBConsumerKillNineMidBatch(t *testing.T) {
	e := newDuckFaultEnv(t)
	path := filepath.Join(t.TempDir(), "wh.duckdb")
	args := e.duckArgs(path, "--flush-rows", "7", "--flush-interval", "20ms", "--duckdb-memory-limit", "256MB", "--duckdb-threads", "1")
	l := newDuckLoad(t, e.pg)
	// A backlog first, so that each life of the consumer is busy loading
	// micro-batches when it is killed, then more while the kills happen
	// (at most 400 transactions in all, to keep the test short).
	l.run(60, false, nil)
	stop := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		l.run(340, false, func() bool {
			select {
			case <-stop:
				return true
			case <-time.After(20 * time.Millisecond):
				return false
			}
		})
	}()
	const kills = 4
	start := time.Now()
	proc := harness.StartTributary(t, nil, args...)
	waitBatches(t, proc, 0)
	// DuckDB took the memory and thread settings (256 MB is 244.1 MiB).
	if out := proc.Output(); !strings.Contains(out, `"memory_limit":"244.1 MiB"`) || !strings.Contains(out, `"threads":1`) {
		t.Fatalf("the database open log does not show memory_limit 244.1 MiB and 1 thread:\n%s", lastLines(out, 20))
	}
	for i := 0; i < kills; i++ {
		// Kill while it loads: after it has loaded a micro-batch in this
		// life, at a random moment within the next ones.
		waitBatches(t, proc, 0)
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
		if exited, err := proc.Exited(); exited {
			t.Fatalf("consumer exited (%v):\n%s", err, lastLines(proc.Output(), 10))
		}
		proc.Kill() // SIGKILL
		t.Logf("kill %d at %s: %d changes so far; the killed consumer had loaded %d micro-batches", i+1,
			time.Since(start).Round(time.Millisecond), l.count(), strings.Count(proc.Output(), `"micro-batch loaded"`))
		proc = harness.StartTributary(t, nil, args...)
	}
	waitBatches(t, proc, 0)
	close(stop)
	<-loadDone
	proc.Kill()
	e.waitFrameCount(t, l.txns)
	// The last catch-up uses bigger micro-batches: the batch size is free
	// to change across restarts.
	if last, err := catchUpDuck(t, e.duckArgs(path, "--flush-rows", "2000")); err != nil {
		t.Fatalf("final catch-up: %v: %s", err, last)
	}
	checkDuckWarehouse(t, e, path, l)
	t.Logf("%d changes in %d source transactions, %d kill -9s mid-load: current state equals the source, "+
		"history holds each change once, in order, versions 1..n", l.total, l.txns, kills)
}

// mountTmpfs mounts a tmpfs of size at dir, unmounted when the test ends;
// it returns why it cannot (mount is not permitted on this machine).
func mountTmpfs(t *testing.T, dir, size string) error {
	t.Helper()
	must(t, os.MkdirAll(dir, 0o755))
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		return fmt.Errorf("mount a tmpfs at %s: %v: %s", dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return nil
}

// fileSize is the size of path, 0 when it does not exist.
func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

func remount(t *testing.T, dir, opts string) {
	t.Helper()
	if out, err := exec.Command("mount", "-o", "remount,"+opts, dir).CombinedOutput(); err != nil {
		t.Fatalf("remount %s %s: %v: %s", dir, opts, err, out)
	}
}

// usedKB is how much of the file system at dir is used, in KiB.
func usedKB(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	must(t, syscall.Statfs(dir, &st))
	return int64(st.Blocks-st.Bfree) * st.Bsize / 1024
}

// wantStop checks that a consumer stopped with a non-zero exit and that its
// last line is its error, naming every one of parts.
func wantStop(t *testing.T, what string, err error, last string, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: the consumer exited 0, want a non-zero exit; last line: %s", what, last)
	}
	if !strings.HasPrefix(last, "tributary consumer: ") {
		t.Fatalf("%s: exit %v, and the last line is not the consumer's error: %s", what, err, last)
	}
	for _, p := range parts {
		if !strings.Contains(last, p) {
			t.Fatalf("%s: the error does not name %q:\n%s", what, p, last)
		}
	}
	t.Logf("%s: %s", what, last)
}

// TestDuckDBConsumerFileFaults puts the DuckDB file on a tmpfs and breaks
// it three ways while a workload runs: the file locked by another consumer,
// the file system full mid-load, and the file system read-only. Each time
// the consumer exits non-zero with one line naming the file and the cause,
// and, after the fix, resumes from its checkpoint: the warehouse equals the
// source and the history holds each change once.
//
// Where mount is not permitted (or TRIBUTARY_TEST_DUCKDB_RLIMIT is set), the
// full disk is a file-size limit instead (RLIMIT_FSIZE on the running
// consumer: writes past it fail with EFBIG); the read-only case needs a
// mount and then fails the test, saying so.
func TestDuckDBConsumerFileFaults(t *testing.T) {
	e := newDuckFaultEnv(t)
	mnt := filepath.Join(t.TempDir(), "mnt")
	mountErr := mountTmpfs(t, mnt, "64m")
	rlimit := mountErr != nil || os.Getenv("TRIBUTARY_TEST_DUCKDB_RLIMIT") != ""
	if mountErr != nil {
		t.Logf("%v: the disk-full case uses RLIMIT_FSIZE", mountErr)
	}
	path := filepath.Join(mnt, "wh.duckdb")
	args := e.duckArgs(path, "--flush-rows", "5", "--flush-interval", "20ms")
	l := newDuckLoad(t, e.pg)
	start := time.Now()
	caughtUp := func(what string) {
		t.Helper()
		e.waitFrameCount(t, l.txns)
		if last, err := catchUpDuck(t, e.duckArgs(path, "--flush-rows", "2000")); err != nil {
			t.Fatalf("%s: catch-up after the fix: %v: %s", what, err, last)
		}
		checkDuckWarehouse(t, e, path, l)
		t.Logf("%s: resumed after the fix and caught up at %s: %d changes, the warehouse equals the source", what,
			time.Since(start).Round(time.Millisecond), l.count())
	}

	// A memory limit DuckDB cannot parse stops the consumer, naming the flag.
	last, err := catchUpDuck(t, append(slices.Clone(args), "--duckdb-memory-limit", "12parsecs"))
	wantStop(t, "bad memory limit", err, last, path, "--duckdb-memory-limit 12parsecs")

	// Locked: a second consumer on the file of a running one.
	l.run(30, false, nil)
	first := harness.StartTributary(t, nil, args...)
	waitBatches(t, first, 0)
	l.run(30, false, nil)
	e.waitFrameCount(t, l.txns)
	last, err = catchUpDuck(t, args)
	wantStop(t, "locked", err, last, path, "locked by another process")
	first.Kill()
	caughtUp("locked")

	// Disk full: the file system has 512 KiB left while a running consumer
	// loads 8-KB rows. It runs with --on-error dead-letter: a full disk is
	// not the transaction's fault, so it must stop rather than skip it.
	running := harness.StartTributary(t, nil, append(slices.Clone(args), "--on-error", "dead-letter")...)
	l.run(5, false, nil)
	waitBatches(t, running, 0)
	if rlimit {
		limit := max(fileSize(path), fileSize(path+".wal")) + 512<<10
		if out, err := exec.Command("prlimit", "--pid", fmt.Sprint(running.Cmd.Process.Pid),
			fmt.Sprintf("--fsize=%d:%d", limit, limit)).CombinedOutput(); err != nil {
			t.Fatalf("prlimit --fsize on the consumer: %v: %s", err, out)
		}
	} else {
		remount(t, mnt, fmt.Sprintf("size=%dk", usedKB(t, mnt)+512))
	}
	l.run(400, true, func() bool { exited, _ := running.Exited(); return exited })
	select {
	case <-waitExit(running):
	case <-time.After(90 * time.Second):
		t.Fatalf("the consumer did not stop on a full file system (%d KiB used of the tmpfs):\n%s", usedKB(t, mnt),
			lastLines(running.Output(), 10))
	}
	_, err = running.Exited()
	wantStop(t, "disk full", err, lastLines(running.Output(), 1), path, "no space left", "micro-batch of",
		"commit_lsn", "tables public.", " of "+e.prefix+".transactions")
	if !rlimit {
		remount(t, mnt, "size=256m")
	} // else the limit ended with the process
	caughtUp("disk full")

	// Read-only: the file system is remounted read-only while no consumer
	// runs (a file open for writing would keep the remount from happening).
	if mountErr != nil {
		t.Fatalf("the read-only case needs a read-only mount: %v", mountErr)
	}
	l.run(30, false, nil)
	remount(t, mnt, "ro")
	e.waitFrameCount(t, l.txns)
	last, err = catchUpDuck(t, args)
	wantStop(t, "read-only", err, last, path, "read-only")
	remount(t, mnt, "rw")
	caughtUp("read-only")
	t.Logf("%d changes in %d source transactions through a locked, a full and a read-only file: "+
		"the warehouse equals the source, each change once", l.total, l.txns)
}

// TestDuckDBLargeTransactionBoundedMemory loads source transactions far
// larger than --flush-rows under a small --duckdb-memory-limit: 300,000
// inserts in one transaction, then one update of every row that leaves a
// TOASTed column unchanged in 3,000 of them. Merging such a transaction in
// --flush-rows pieces inside its DuckDB transaction needed memory that grew
// with the transaction (DuckDB's out-of-memory error part way through the
// inserts); the warehouse must load both, equal to the source, with the
// unchanged values carried forward.
func TestDuckDBLargeTransactionBoundedMemory(t *testing.T) {
	e := newEnv(t)
	e.pg.Exec(t, `CREATE TABLE bulk (id int PRIMARY KEY, n numeric NOT NULL, label text, doc text)`,
		`ALTER TABLE bulk ALTER COLUMN doc SET STORAGE EXTERNAL`, // TOASTed beyond 2 KB, uncompressed
		`CREATE PUBLICATION pub FOR TABLE bulk`)
	e.runProducer(t, e.producerConfig(t))
	const rows = 300000
	e.pg.Exec(t, fmt.Sprintf(`INSERT INTO bulk SELECT g, g / 7.0, md5(g::text) || md5((g + 1)::text) || md5((g + 2)::text),
		CASE WHEN g %% 100 = 0 THEN repeat(md5(g::text), 100) ELSE 'd' || g END FROM generate_series(1, %d) g`, rows),
		`UPDATE bulk SET n = n + 1`)
	e.waitFrameCount(t, 2)
	path := filepath.Join(t.TempDir(), "wh.duckdb")
	args := e.duckArgs(path, "--flush-rows", "1000", "--duckdb-memory-limit", "64MB", "--duckdb-threads", "2")
	if last, err := catchUpDuck(t, args); err != nil {
		t.Fatalf("consumer over two %d-row source transactions, --flush-rows 1000, 64 MB: %v: %s", rows, err, last)
	}
	db, err := sql.Open("duckdb", path+"?access_mode=READ_ONLY")
	must(t, err)
	defer db.Close()
	// n is unconstrained numeric, which the warehouse holds as its text.
	const summary = `SELECT count(*) || '/' || sum(id) || '/' || sum(length(n::%[1]s)) || '/' || count(DISTINCT n::%[1]s) || '/' ||
		sum(length(label)) || '/' || sum(length(doc)) || '/' || count(DISTINCT md5(doc)) FROM %[2]s`
	var got string
	must(t, db.QueryRow(fmt.Sprintf(summary, "VARCHAR", "public.bulk")).Scan(&got))
	want := pgStrings(t, e.pg.Conn(t), fmt.Sprintf(summary, "text", "bulk"))
	if got != want[0] {
		t.Errorf("current state count/sum(id)/sum(length(n))/distinct n/sum(length(label))/sum(length(doc))/distinct docs = %s, source %s", got, want[0])
	}
	var hist string
	must(t, db.QueryRow(`SELECT count(*) || '/' || count(*) FILTER (WHERE doc IS NULL) FROM public.bulk_history`).Scan(&hist))
	if hist != fmt.Sprintf("%d/0", 2*rows) {
		t.Errorf("history rows/rows without doc = %s, want %d/0 (every update carries the unchanged doc)", hist, 2*rows)
	}
}
