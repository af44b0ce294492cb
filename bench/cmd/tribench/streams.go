package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
)

// Workloads added for issues #6 and #8.
const (
	wMix         = "mix"
	wPgbench     = "pgbench"
	wToastInsert = "toast-insert"
	wToastUpdate = "toast-update"
	wSinks       = "sinks"
	wDuck        = "duckdb"
	wTPS         = "tps"
)

const (
	peerHistory    = "tributary consumer --sink history"
	peerPGSink     = "tributary consumer --sink postgres"
	peerDuck       = "tributary consumer --sink duckdb --flush-rows 100000"
	peerNoCapture  = "no capture"
	capturePrefix  = "capturing: "
	pgbenchScale   = "1"
	pgbenchClients = "4"
)

// phase is one backlog of a streamSpec that every peer drains.
type phase struct {
	wl    string
	build func(ctx context.Context) (end string, rows int64, err error)
	check string // the same query on the source and on both targets must agree
}

// streamSpec is a backlog comparison on its own tables: pg_recvlogical,
// the producer, Debezium Server (when dbz), the consumer and native logical
// replication drain the same WAL, phase after phase.
type streamSpec struct {
	name   string   // slot and publication suffix
	tables []string // public tables in the publication
	setup  func(ctx context.Context) error
	dbz    bool
	dbzWhy string // why Debezium is not run for this workload
	phases []phase
}

func (b *Bench) compareStreams(ctx context.Context, rep int, prefix string, sp streamSpec) error {
	s, n := b.src, b.nat
	recv, trib, dbz, sub := "recv_"+sp.name, "trib_"+sp.name, "dbz_"+sp.name, "nsub_"+sp.name
	pub := "pub_" + sp.name
	_ = n.Exec(ctx, `DROP SUBSCRIPTION IF EXISTS `+sub)
	if err := b.dropSlots(ctx, recv, trib, dbz, sub, "e2e_"+sp.name); err != nil {
		return err
	}
	if err := s.Exec(ctx, `DROP PUBLICATION IF EXISTS `+pub); err != nil {
		return err
	}
	if err := sp.setup(ctx); err != nil {
		return fmt.Errorf("%s setup: %w", sp.name, err)
	}
	slots := []string{recv, trib}
	if sp.dbz {
		slots = append(slots, dbz)
	}
	stmts := []string{`CREATE PUBLICATION ` + pub + ` FOR TABLE ` + strings.Join(sp.tables, ", ")}
	for _, sl := range slots {
		stmts = append(stmts, fmt.Sprintf(`SELECT pg_create_logical_replication_slot('%s', 'pgoutput')`, sl))
	}
	if err := s.Exec(ctx, stmts...); err != nil {
		return err
	}
	if err := n.Exec(ctx, fmt.Sprintf(`CREATE SUBSCRIPTION %s CONNECTION '%s' PUBLICATION %s
			WITH (enabled = false, copy_data = false, create_slot = true, slot_name = '%s')`, sub, s.ConnString(), pub, sub)); err != nil {
		return err
	}
	defer func() {
		_ = n.Exec(context.Background(), `DROP SUBSCRIPTION IF EXISTS `+sub)
		_ = b.dropSlots(context.Background(), recv, trib, dbz)
	}()
	consumer := "c_" + prefix
	e2eSlot := "e2e_" + sp.name
	if err := s.Exec(ctx, fmt.Sprintf(`SELECT pg_create_logical_replication_slot('%s', 'pgoutput')`, e2eSlot)); err != nil {
		return err
	}
	defer func() { _ = b.dropSlots(context.Background(), e2eSlot) }()
	for i, ph := range sp.phases {
		if sp.dbz && i > 0 {
			// The previous phase dropped Debezium's slot; a new one
			// before this backlog gives Debezium this phase's changes.
			if err := s.Exec(ctx, fmt.Sprintf(`SELECT pg_create_logical_replication_slot('%s', 'pgoutput')`, dbz)); err != nil {
				return err
			}
		}
		logf("%s: building the backlog", ph.wl)
		t0 := time.Now()
		end, rows, err := ph.build(ctx)
		if err != nil {
			return fmt.Errorf("%s backlog: %w", ph.wl, err)
		}
		logf("%s: backlog of %d row changes built in %.1fs, end LSN %s", ph.wl, rows, time.Since(t0).Seconds(), end)
		want, err := s.QueryVal(ctx, ph.check)
		if err != nil {
			return err
		}
		b.add(b.recvlogical(ctx, rep, ph.wl, recv, pub, end, rows))
		b.add(b.producer(ctx, rep, ph.wl, prefix, trib, pub, end, rows))
		if sp.dbz {
			// Each phase writes its own topics: Debezium's would exist already.
			b.add(b.debezium(ctx, rep, ph.wl, fmt.Sprintf("%s_%d", prefix, i), dbz, pub, sp.tables, rows))
			_ = b.dropSlots(ctx, dbz) // it would hold WAL back for the next phase
		} else {
			b.add(newResult(rep, ph.wl, peerDbz, rows).fail("not run for this workload: %s", sp.dbzWhy))
		}
		b.add(b.e2e(ctx, rep, ph.wl, prefix+"_e2e", e2eSlot, pub, end, rows, consumer, ph.check, want))
		b.add(b.native(ctx, rep, ph.wl, sub, sub, end, rows, ph.check, want))
	}
	return nil
}

// loopBacklog runs body (PL/pgSQL using i) for i in 1..n, committing after
// each iteration, then last as one transaction, and returns last's end LSN.
func (b *Bench) loopBacklog(ctx context.Context, pub string, n int, body, last string) (string, error) {
	c, err := b.src.Conn(ctx)
	if err != nil {
		return "", err
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, `SET synchronous_commit = off`); err != nil {
		return "", err
	}
	if n > 0 {
		if _, err := c.Exec(ctx, fmt.Sprintf(`DO $$ BEGIN FOR i IN 1..%d LOOP %s END LOOP; END $$`, n, body)); err != nil {
			return "", err
		}
	}
	return b.lastTxEnd(ctx, c, pub, last)
}

// mixSpec: single-row transactions on one table, in groups of four: insert
// two rows, update the first, delete the second.
func (b *Bench) mixSpec() streamSpec {
	groups := max(b.cfg.MixN/4, 1)
	ddl := []string{`DROP TABLE IF EXISTS mix`, `CREATE TABLE mix ` + tableDDL}
	return streamSpec{
		name: "mix", tables: []string{"mix"}, dbz: true,
		setup: func(ctx context.Context) error {
			return b.onAll(ctx, ddl...)
		},
		phases: []phase{{
			wl:    wMix,
			check: `SELECT count(*)::text || '/' || coalesce(sum(k), 0)::text FROM mix`,
			build: func(ctx context.Context) (string, int64, error) {
				body := fmt.Sprintf(`INSERT INTO mix VALUES (%s); COMMIT; INSERT INTO mix VALUES (%s); COMMIT;
					UPDATE mix SET k = k + 1, ts = clock_timestamp() WHERE id = 2*i-1; COMMIT;
					DELETE FROM mix WHERE id = 2*i; COMMIT;`, rowExpr("(2*i-1)"), rowExpr("(2*i)"))
				end, err := b.loopBacklog(ctx, "pub_mix", groups, body, `UPDATE mix SET k = k + 1 WHERE id = 1`)
				return end, int64(4*groups + 1), err
			},
		}},
	}
}

// onAll runs sql on the source and both targets.
func (b *Bench) onAll(ctx context.Context, sql ...string) error {
	for _, p := range []*PG{b.src, b.tgt, b.nat} {
		if err := p.Exec(ctx, sql...); err != nil {
			return err
		}
	}
	return nil
}

var pgbenchTables = []string{"pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"}

// pgbenchInit runs `pgbench -i` on p and gives pgbench_history a primary key
// (its inserts name their columns, so pgbench is unaffected); every peer
// replicates it the same way.
func (b *Bench) pgbenchInit(ctx context.Context, p *PG) error {
	if _, err := run(ctx, b.root, nil, filepath.Join(b.pgbin, "pgbench"), "-i", "-q", "-s", pgbenchScale,
		"-h", "127.0.0.1", "-p", strconv.Itoa(p.Port), "-U", "postgres", "postgres"); err != nil {
		return err
	}
	return p.Exec(ctx, `ALTER TABLE pgbench_history ADD COLUMN hid bigserial PRIMARY KEY`)
}

func (b *Bench) pgbenchArgs(p *PG, extra ...string) []string {
	return append([]string{filepath.Join(b.pgbin, "pgbench"), "-n", "-c", pgbenchClients, "-j", "2",
		"-h", "127.0.0.1", "-p", strconv.Itoa(p.Port), "-U", "postgres"}, append(extra, "postgres")...)
}

const pgbenchCheck = `SELECT (SELECT sum(abalance) FROM pgbench_accounts)::text || '/' || (SELECT sum(tbalance) FROM pgbench_tellers)::text
	|| '/' || (SELECT sum(bbalance) FROM pgbench_branches)::text || '/' || (SELECT count(*) FROM pgbench_history)::text`

// pgbenchSpec: `pgbench -i` on all three clusters (identical data), then a
// fixed number of TPC-B-like transactions as the backlog.
func (b *Bench) pgbenchSpec() streamSpec {
	perClient := max(b.cfg.PgbenchTx/4, 1)
	return streamSpec{
		name: "pgb", tables: pgbenchTables, dbz: true,
		setup: func(ctx context.Context) error {
			for _, p := range []*PG{b.src, b.tgt, b.nat} {
				if err := b.pgbenchInit(ctx, p); err != nil {
					return err
				}
			}
			return nil
		},
		phases: []phase{{
			wl:    wPgbench,
			check: pgbenchCheck,
			build: func(ctx context.Context) (string, int64, error) {
				args := b.pgbenchArgs(b.src, "-t", strconv.Itoa(perClient))
				out, err := run(ctx, b.root, []string{"PGOPTIONS=-c synchronous_commit=off"}, args...)
				if err != nil {
					return "", 0, err
				}
				logf("pgbench: %s", tpsLine(out))
				c, err := b.src.Conn(ctx)
				if err != nil {
					return "", 0, err
				}
				defer c.Close(ctx)
				end, err := b.lastTxEnd(ctx, c, "pub_pgb", `UPDATE pgbench_branches SET bbalance = bbalance WHERE bid = 1`)
				// TPC-B-like: 3 updates and 1 insert per transaction, plus the marker.
				return end, int64(4*4*perClient + 1), err
			},
		}},
	}
}

var tpsRE = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

func tpsLine(out string) string {
	if m := tpsRE.FindString(out); m != "" {
		return m
	}
	return lastLine(out)
}

// toastSpec: single-row INSERTs of rows with a 16-KB jsonb (stored out of
// line: md5 text does not compress), then UPDATEs of another column that
// leave the jsonb unchanged (pgoutput sends it as "unchanged TOAST").
func (b *Bench) toastSpec() streamSpec {
	m := b.cfg.ToastRows
	doc := func(i string) string {
		return fmt.Sprintf(`jsonb_build_object('id', %s, 'blob', (SELECT string_agg(md5(%s::text || '-' || g::text), '') FROM generate_series(1, 500) g))`, i, i)
	}
	check := `SELECT count(*)::text || '/' || coalesce(sum(k), 0)::text || '/' || coalesce(sum(hashtext(doc::text)::bigint), 0)::text FROM wide`
	return streamSpec{
		name: "toast", tables: []string{"wide"}, dbz: true,
		setup: func(ctx context.Context) error {
			return b.onAll(ctx, `DROP TABLE IF EXISTS wide`, `CREATE TABLE wide (id bigint PRIMARY KEY, k int NOT NULL, doc jsonb NOT NULL)`)
		},
		phases: []phase{{
			wl: wToastInsert, check: check,
			build: func(ctx context.Context) (string, int64, error) {
				end, err := b.loopBacklog(ctx, "pub_toast", m-1, fmt.Sprintf(`INSERT INTO wide VALUES (i, 0, %s); COMMIT;`, doc("i")),
					fmt.Sprintf(`INSERT INTO wide VALUES (%d, 0, %s)`, m, doc(strconv.Itoa(m))))
				return end, int64(m), err
			},
		}, {
			wl: wToastUpdate, check: check,
			build: func(ctx context.Context) (string, int64, error) {
				end, err := b.loopBacklog(ctx, "pub_toast", m-1, `UPDATE wide SET k = k + 1 WHERE id = i; COMMIT;`,
					fmt.Sprintf(`UPDATE wide SET k = k + 1 WHERE id = %d`, m))
				return end, int64(m), err
			},
		}},
	}
}

// ---------------------------------------------------------------- sinks

// repHistory applies the INSERT backlog's topics, which the plain PostgreSQL
// sink also applies in this repetition, with the history sink into its own
// schema of the solo database.
func (b *Bench) repHistory(ctx context.Context, rep int, prefix string, rows int64) {
	solo := b.solo()
	if err := solo.Exec(ctx, `DROP SCHEMA IF EXISTS hist CASCADE`, `CREATE SCHEMA hist`); err != nil {
		b.add(newResult(rep, wSinks, peerHistory, rows).fail("%v", err))
		return
	}
	b.add(b.consumerSink(ctx, rep, wSinks, peerHistory, prefix, "h_"+prefix, rows,
		[]string{"--sink", "history", "--target", solo.DSN, "--history-schema", "hist"},
		b.check(ctx, solo, `SELECT count(*)::text FROM hist.bench_history`, strconv.FormatInt(rows, 10))))
}

// duckBacklog is the DuckDB sink's backlog, written to Kafka once per run.
type duckBacklog struct {
	prefix string
	rows   int64
	txns   int64
	end    pglogrepl.LSN
	err    error
}

// repDuckDB: the first repetition writes a backlog of alternating 1,000-row
// INSERT and UPDATE transactions to Kafka with the producer; every
// repetition applies all of it with a new consumer into a new DuckDB file.
func (b *Bench) repDuckDB(ctx context.Context, rep int) error {
	if b.duck == nil {
		d := &duckBacklog{prefix: b.runID + "_duck"}
		b.duck = d
		groups := max(b.cfg.DuckRows/2000, 1)
		_ = b.dropSlots(ctx, "trib_duck")
		if err := b.src.Exec(ctx, `DROP PUBLICATION IF EXISTS pub_duck`, `DROP TABLE IF EXISTS duck`,
			`CREATE TABLE duck `+tableDDL+` WITH (autovacuum_enabled = false)`,
			`CREATE PUBLICATION pub_duck FOR TABLE duck`,
			`SELECT pg_create_logical_replication_slot('trib_duck', 'pgoutput')`); err != nil {
			return err
		}
		logf("duckdb: building a backlog of %d row changes", 2000*groups)
		body := fmt.Sprintf(`INSERT INTO duck SELECT %s FROM generate_series((i-1)*1000+1, i*1000) g; COMMIT;
			UPDATE duck SET k = k + 1, ts = clock_timestamp() WHERE id BETWEEN (i-1)*1000+1 AND i*1000; COMMIT;`, rowExpr("g"))
		end, err := b.loopBacklog(ctx, "pub_duck", groups, body, `UPDATE duck SET k = k + 1 WHERE id = 1`)
		if err != nil {
			return fmt.Errorf("duckdb backlog: %w", err)
		}
		d.rows, d.txns = int64(2000*groups+1), int64(2*groups+1)
		d.end, _ = pglogrepl.ParseLSN(end)
		pr := b.producer(ctx, rep, wDuck, d.prefix, "trib_duck", "pub_duck", end, d.rows)
		pr.Peer = "tributary producer (writes the backlog to Kafka once; not the measured sink)"
		b.add(pr)
		_ = b.dropSlots(ctx, "trib_duck")
		if pr.Err != "" {
			d.err = fmt.Errorf("the producer could not write the backlog: %s", pr.Err)
		}
	}
	d := b.duck
	if d.err != nil {
		b.add(newResult(rep, wDuck, peerDuck, d.rows).fail("%v", d.err))
		return nil
	}
	file := filepath.Join(b.cache, fmt.Sprintf("%s-duck-%d.duckdb", b.runID, rep))
	_ = os.Remove(file)
	_ = os.Remove(file + ".wal")
	defer func() { _ = os.Remove(file); _ = os.Remove(file + ".wal") }()
	b.add(b.consumerSink(ctx, rep, wDuck, peerDuck, d.prefix, fmt.Sprintf("duck_%s_%d", b.runID, rep), d.rows,
		[]string{"--sink", "duckdb", "--duckdb-file", file, "--flush-rows", "100000"},
		func(p *Proc) (string, error) { return caughtUp(p.logPath, d.txns, d.end) }))
	return nil
}

// caughtUp checks the consumer's JSON log: its "caught up" line must report
// txns applied transactions and a commit LSN at or past end. (The runner
// links no DuckDB client; the consumer's own count is the check.)
func caughtUp(logPath string, txns int64, end pglogrepl.LSN) (string, error) {
	f, err := os.Open(logPath)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var last map[string]any
	var events, rows int64
	for sc.Scan() {
		var m map[string]any
		d := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		d.UseNumber()
		if d.Decode(&m) != nil {
			continue
		}
		switch m["msg"] {
		case "caught up":
			last = m
		case "micro-batch loaded":
			events += jsonInt(m["events"])
			rows += jsonInt(m["rows"])
		}
	}
	if last == nil {
		return "", fmt.Errorf("no \"caught up\" line in %s", logPath)
	}
	applied := jsonInt(last["applied_txns"])
	lsn, err := pglogrepl.ParseLSN(fmt.Sprint(last["commit_lsn"]))
	if err != nil {
		return "", fmt.Errorf("\"caught up\" line in %s: commit_lsn: %w", logPath, err)
	}
	// end is the last transaction's end LSN; its commit record starts just before it.
	if applied != txns || lsn > end || end-lsn > 4096 {
		return "", fmt.Errorf("consumer caught up at commit_lsn %s with %d transactions applied, want the commit that ends at %s and %d",
			lsn, applied, end, txns)
	}
	return fmt.Sprintf("checked: the consumer reported caught up at commit_lsn %s with %d transactions applied; its micro-batches loaded %d events, %d rows",
		lsn, txns, events, rows), nil
}

func jsonInt(v any) int64 {
	n, _ := v.(json.Number)
	i, _ := n.Int64()
	return i
}

// ---------------------------------------------------------------- source TPS

// repTPS measures pgbench TPS on the source with no capture, then while each
// capture peer streams the same tables (started first, its slot active).
func (b *Bench) repTPS(ctx context.Context, rep int, prefix string) error {
	_ = b.nat.Exec(ctx, `DROP SUBSCRIPTION IF EXISTS tps_sub`)
	_ = b.dropSlots(ctx, "tps_slot", "tps_sub")
	if err := b.src.Exec(ctx, `DROP PUBLICATION IF EXISTS pub_tps`); err != nil {
		return err
	}
	for _, p := range []*PG{b.src, b.nat} {
		if err := b.pgbenchInit(ctx, p); err != nil {
			return err
		}
	}
	if err := b.src.Exec(ctx, `CREATE PUBLICATION pub_tps FOR TABLE `+strings.Join(pgbenchTables, ", "), `CHECKPOINT`); err != nil {
		return err
	}
	type capture struct {
		peer  string
		start func() (stop func(), pid func() int, cmd string, err error)
	}
	slot := func() error {
		return b.src.Exec(ctx, `SELECT pg_create_logical_replication_slot('tps_slot', 'pgoutput')`)
	}
	procPID := func(p *Proc) func() int { return p.Pid }
	caps := []capture{
		{peerNoCapture, func() (func(), func() int, string, error) { return func() {}, nil, "", nil }},
		{capturePrefix + peerProducer, func() (func(), func() int, string, error) {
			if err := slot(); err != nil {
				return nil, nil, "", err
			}
			args := b.producerArgs(prefix, "tps_slot", "pub_tps", "never")
			p, err := startProc("producer", b.root, b.logPath(fmt.Sprintf("producer-tps-%d", rep)), b.tributaryEnv(), args...)
			if err != nil {
				return nil, nil, "", err
			}
			return p.Stop, procPID(p), b.tributaryCmd(args), nil
		}},
		{capturePrefix + peerRecv, func() (func(), func() int, string, error) {
			if err := slot(); err != nil {
				return nil, nil, "", err
			}
			args := []string{filepath.Join(b.pgbin, "pg_recvlogical"), "-d", b.src.ConnString(), "--slot", "tps_slot", "--start",
				"--status-interval", "1", "--fsync-interval", "1", "-o", "proto_version=1", "-o", "publication_names=pub_tps", "-f", "/dev/null"}
			p, err := startProc("pg_recvlogical", b.root, b.logPath(fmt.Sprintf("recv-tps-%d", rep)), nil, args...)
			if err != nil {
				return nil, nil, "", err
			}
			return p.Stop, procPID(p), shellQuote(args), nil
		}},
		{capturePrefix + peerNative, func() (func(), func() int, string, error) {
			create := fmt.Sprintf(`CREATE SUBSCRIPTION tps_sub CONNECTION '%s' PUBLICATION pub_tps WITH (copy_data = false)`, b.src.ConnString())
			if err := b.nat.Exec(ctx, create); err != nil {
				return nil, nil, "", err
			}
			pid := func() int { return b.applyPID(ctx, "tps_sub") }
			return func() { _ = b.nat.Exec(context.Background(), `DROP SUBSCRIPTION IF EXISTS tps_sub`) }, pid, create, nil
		}},
		{capturePrefix + peerDbz, func() (func(), func() int, string, error) {
			if err := slot(); err != nil {
				return nil, nil, "", err
			}
			p, _, cmd, err := b.startDebezium(ctx, fmt.Sprintf("tps-%d", rep), "dbz_"+prefix, "tps_slot", "pub_tps", pgbenchTables)
			if err != nil {
				return nil, nil, cmd, err
			}
			return p.Stop, procPID(p), cmd, nil
		}},
	}
	for _, c := range caps {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		b.add(b.tpsRun(ctx, rep, c.peer, c.start))
		_ = b.dropSlots(ctx, "tps_slot")
	}
	return nil
}

func (b *Bench) tpsRun(ctx context.Context, rep int, peer string, start func() (func(), func() int, string, error)) *Result {
	r := newResult(rep, wTPS, peer, 0)
	args := b.pgbenchArgs(b.src, "-T", strconv.Itoa(b.cfg.TPSSecs))
	stop, pid, cmd, err := start()
	r.Cmd = shellQuote(args)
	if cmd != "" {
		r.Cmd = "capture: " + cmd + "\nload: " + r.Cmd
	}
	if err != nil {
		return r.fail("%v", err)
	}
	defer stop()
	slotName := "tps_slot"
	if strings.Contains(peer, peerNative) {
		slotName = "tps_sub"
	}
	if peer != peerNoCapture {
		// Streaming: the capture has confirmed a transaction that touches every
		// table, written after it started (the JVM, the producer's topics and the
		// subscription worker take a while). The transaction is repeated every
		// 2 s, because Debezium skips what was written before it started.
		marker := `UPDATE pgbench_branches SET bbalance = bbalance WHERE bid = 1;
			UPDATE pgbench_tellers SET tbalance = tbalance WHERE tid = 1;
			UPDATE pgbench_accounts SET abalance = abalance WHERE aid = 1;
			INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 0, now())`
		if err := b.src.Exec(ctx, marker); err != nil {
			return r.fail("%v", err)
		}
		lsn, err := b.src.QueryVal(ctx, `SELECT pg_current_wal_lsn()::text`)
		if err != nil {
			return r.fail("%v", err)
		}
		polls := 0
		if err := pollUntil(180*time.Second, 200*time.Millisecond, func() (bool, error) {
			if polls++; polls%10 == 0 {
				if err := b.src.Exec(ctx, marker); err != nil {
					return false, err
				}
			}
			v, err := b.src.QueryVal(ctx, `SELECT (confirmed_flush_lsn >= $1::pg_lsn)::text FROM pg_replication_slots WHERE slot_name = $2`, lsn, slotName)
			return v == "true", err
		}); err != nil {
			return r.fail("capture on slot %s never confirmed a change written after it started: %v", slotName, err)
		}
	}
	cpu0 := -1.0
	if pid != nil {
		cpu0 = treeCPU(pid())
	}
	r.Load0 = loadavg()
	out, err := run(ctx, b.root, nil, args...)
	if err != nil {
		return r.fail("pgbench: %v", err)
	}
	m := tpsRE.FindStringSubmatch(out)
	if m == nil {
		return r.fail("no tps line in pgbench output: %s", tail(out, 5))
	}
	r.Rate, _ = strconv.ParseFloat(m[1], 64)
	r.Secs = float64(b.cfg.TPSSecs)
	r.LagMB = -1
	if peer != peerNoCapture {
		if v, err := b.src.QueryVal(ctx, `SELECT (pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) / 1048576.0)::text
			FROM pg_replication_slots WHERE slot_name = $1`, slotName); err == nil && v != "" {
			r.LagMB, _ = strconv.ParseFloat(v, 64)
		}
		if pid != nil && cpu0 >= 0 {
			if c := treeCPU(pid()); c >= 0 {
				r.CPU = c - cpu0
			}
		}
	}
	r.Load1 = loadavg()
	r.Note = fmt.Sprintf("pgbench TPC-B-like, scale %s, %s clients, %d s, synchronous_commit on", pgbenchScale, pgbenchClients, b.cfg.TPSSecs)
	return r
}
