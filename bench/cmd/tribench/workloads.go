package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Workload names, in report order.
const (
	wDrain     = "drain"
	wE2EInsert = "e2e-insert"
	wE2EUpdate = "e2e-update"
	wBigTx     = "bigtx"
	wLatency   = "latency"
	wSnapshot  = "snapshot"
)

const (
	peerRecv     = "pg_recvlogical (decode ceiling)"
	peerProducer = "tributary producer"
	peerDbz      = "Debezium Server"
	peerE2E      = "tributary end-to-end (producer + consumer, running together)"
	peerNative   = "native logical replication"
)

const tableDDL = `(id bigint PRIMARY KEY, k int NOT NULL, ts timestamptz NOT NULL, payload text NOT NULL)`

// rowExpr makes one ~200-byte row from the integer i.
func rowExpr(i string) string {
	return fmt.Sprintf("%s, (%s %% 1000)::int, clock_timestamp(), repeat(md5(%s::text), 5)", i, i, i)
}

// Selectors for --only and --reps-for, in the order a repetition runs them.
var selectors = []string{"drain", "e2e", "sinks", "bigtx", "mix", "pgbench", "toast", "duckdb", "latency", "snapshot", "tps"}

// selector is the --only name that produces a workload's results.
func selector(workload string) string {
	switch {
	case workload == wE2EInsert || workload == wE2EUpdate:
		return "e2e"
	case strings.HasPrefix(workload, wLatency):
		return "latency"
	case strings.HasPrefix(workload, "toast"):
		return "toast"
	}
	return workload
}

// repsFor is the number of repetitions of selector sel (--reps-for, else --reps).
func (b *Bench) repsFor(sel string) (int, error) {
	n := b.cfg.Reps
	for _, kv := range strings.Split(b.cfg.RepsFor, ",") {
		if strings.TrimSpace(kv) == "" {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		r, err := strconv.Atoi(v)
		if !ok || err != nil || r < 1 || !slices.Contains(selectors, k) {
			return 0, fmt.Errorf("--reps-for %q: want selector=N with a selector of %s", kv, strings.Join(selectors, ","))
		}
		if k == sel {
			n = min(r, n)
		}
	}
	return n, nil
}

// runs reports whether selector sel is selected and still has repetition rep to do.
func (b *Bench) runs(sel string, rep int) bool {
	n, _ := b.repsFor(sel)
	return b.want(sel) && rep <= n
}

// step is one part of a repetition; sels are the selectors it serves.
type step struct {
	sels []string
	run  func(ctx context.Context, rep int, prefix string) error
	// skippable steps may lose repetitions after the first when --deadline
	// is near (the workloads added for issues #6 and #8).
	skippable bool
}

func (b *Bench) steps() []step {
	return []step{
		{sels: []string{"drain", "e2e", "sinks"}, run: b.repStreams},
		{sels: []string{"bigtx"}, run: func(ctx context.Context, rep int, prefix string) error {
			return b.repBigTx(ctx, rep, prefix+"_big")
		}},
		{sels: []string{"mix"}, skippable: true, run: func(ctx context.Context, rep int, prefix string) error {
			return b.compareStreams(ctx, rep, prefix+"_mix", b.mixSpec())
		}},
		{sels: []string{"pgbench"}, skippable: true, run: func(ctx context.Context, rep int, prefix string) error {
			return b.compareStreams(ctx, rep, prefix+"_pgb", b.pgbenchSpec())
		}},
		{sels: []string{"toast"}, skippable: true, run: func(ctx context.Context, rep int, prefix string) error {
			return b.compareStreams(ctx, rep, prefix+"_toast", b.toastSpec())
		}},
		{sels: []string{"duckdb"}, skippable: true, run: func(ctx context.Context, rep int, _ string) error {
			return b.repDuckDB(ctx, rep)
		}},
		{sels: []string{"latency"}, run: func(ctx context.Context, rep int, prefix string) error {
			for i, spec := range strings.Split(b.cfg.LatRates, ",") {
				txps, rows := parseRate(spec)
				tag := fmt.Sprintf("r%d_%d", rep, i)
				b.add(b.latencyTributary(ctx, rep, tag, prefix+"_lat"+strconv.Itoa(i), txps, rows))
				b.add(b.latencyNative(ctx, rep, tag, txps, rows))
			}
			return nil
		}},
		{sels: []string{"snapshot"}, run: func(ctx context.Context, rep int, prefix string) error {
			return b.repSnapshot(ctx, rep, prefix+"_snap")
		}},
		{sels: []string{"tps"}, skippable: true, run: func(ctx context.Context, rep int, prefix string) error {
			return b.repTPS(ctx, rep, prefix+"_tps")
		}},
	}
}

func (s step) selected(b *Bench, rep int) bool {
	for _, sel := range s.sels {
		if b.runs(sel, rep) {
			return true
		}
	}
	return false
}

func (b *Bench) rep(ctx context.Context, rep int) error {
	prefix := fmt.Sprintf("%s_r%d", b.runID, rep)
	steps := b.steps()
	for i, st := range steps {
		if !st.selected(b, rep) {
			continue
		}
		key := strings.Join(st.sels, "+")
		if rep > 1 && b.cfg.Deadline != "" {
			// New workloads give way to the original ones; an original one is
			// left out only when it alone would not finish in time.
			need := b.took[key]
			if st.skippable {
				need = b.stillNeeded(steps, i, rep)
			}
			if left := b.timeLeft(); left < need {
				logf("%s: repetition %d skipped: %s left before --deadline %s, and about %s are needed (from repetition 1)",
					key, rep, left.Round(time.Second), b.cfg.Deadline, need.Round(time.Second))
				b.skipped = append(b.skipped, fmt.Sprintf("%s rep %d", key, rep))
				continue
			}
		}
		t0 := time.Now()
		if err := st.run(ctx, rep, prefix); err != nil {
			return err
		}
		if rep == 1 {
			b.took[key] = time.Since(t0)
		}
	}
	b.kafka.DeletePrefix(ctx, prefix)
	return nil
}

// stillNeeded estimates, from repetition 1, the time that steps[i] plus every
// non-skippable step still to run (in this and the later repetitions) take.
func (b *Bench) stillNeeded(steps []step, i, rep int) time.Duration {
	need := b.took[strings.Join(steps[i].sels, "+")]
	for r := rep; r <= b.cfg.Reps; r++ {
		for j, st := range steps {
			if (r == rep && j <= i) || st.skippable || !st.selected(b, r) {
				continue
			}
			need += b.took[strings.Join(st.sels, "+")]
		}
	}
	return need
}

// timeLeft is the time until --deadline (HH:MM UTC, today or tomorrow).
func (b *Bench) timeLeft() time.Duration {
	t, err := time.Parse("15:04", b.cfg.Deadline)
	if err != nil {
		return time.Duration(1<<62 - 1)
	}
	now := time.Now().UTC()
	d := time.Date(now.Year(), now.Month(), now.Day(), t.Hour(), t.Minute(), 0, 0, time.UTC)
	if d.Before(b.started.UTC()) {
		d = d.Add(24 * time.Hour)
	}
	return d.Sub(now)
}

func parseRate(spec string) (txps, rows int) {
	spec = strings.TrimSpace(spec)
	rows = 1
	if a, r, ok := strings.Cut(spec, "x"); ok {
		spec = a
		rows, _ = strconv.Atoi(r)
	}
	txps, _ = strconv.Atoi(spec)
	return txps, max(rows, 1)
}

func latWorkload(txps, rows int) string {
	return fmt.Sprintf("%s %d tx/s x %d row (%d rows/s)", wLatency, txps, rows, txps*rows)
}

// repStreams: slots for every peer first, then a backlog of N single-row
// INSERT transactions that each peer drains: pg_recvlogical and the producer
// alone (drain), the producer and a consumer running together (end to end),
// a consumer alone on the drain's topics with the plain and the history sink
// (sinks), Debezium Server, and native logical replication. Then N
// single-row UPDATEs, the same way without Debezium and the sinks.
func (b *Bench) repStreams(ctx context.Context, rep int, prefix string) error {
	s, t, n := b.src, b.tgt, b.nat
	// Clean the previous repetition.
	_ = n.Exec(ctx, `DROP SUBSCRIPTION IF EXISTS nsub`)
	if err := b.dropSlots(ctx, "recv_slot", "trib_slot", "e2e_slot", "dbz_slot", "nsub_slot"); err != nil {
		return err
	}
	if err := s.Exec(ctx,
		`DROP PUBLICATION IF EXISTS pub_all`, `DROP PUBLICATION IF EXISTS pub_bench`,
		`DROP TABLE IF EXISTS bench, big`,
		`CREATE TABLE bench `+tableDDL+` WITH (autovacuum_enabled = false)`,
		`CREATE TABLE big `+tableDDL+` WITH (autovacuum_enabled = false)`,
		`CREATE PUBLICATION pub_all FOR TABLE bench, big`,
		`CREATE PUBLICATION pub_bench FOR TABLE bench`,
		`SELECT pg_create_logical_replication_slot('recv_slot', 'pgoutput')`,
		`SELECT pg_create_logical_replication_slot('trib_slot', 'pgoutput')`,
		`SELECT pg_create_logical_replication_slot('e2e_slot', 'pgoutput')`,
		`SELECT pg_create_logical_replication_slot('dbz_slot', 'pgoutput')`,
	); err != nil {
		return err
	}
	if err := t.Exec(ctx, `DROP TABLE IF EXISTS bench, big`, `CREATE TABLE bench `+tableDDL, `CREATE TABLE big `+tableDDL,
		`DROP DATABASE IF EXISTS solo WITH (FORCE)`, `CREATE DATABASE solo`); err != nil {
		return err
	}
	if err := n.Exec(ctx, `DROP TABLE IF EXISTS bench`, `CREATE TABLE bench `+tableDDL,
		fmt.Sprintf(`CREATE SUBSCRIPTION nsub CONNECTION '%s' PUBLICATION pub_bench
			WITH (enabled = false, copy_data = false, create_slot = true, slot_name = 'nsub_slot')`, s.ConnString())); err != nil {
		return err
	}
	N := b.cfg.N
	logf("building a backlog of %d single-row INSERT transactions", N)
	end, secs, err := b.backlog(ctx, "INSERT", N)
	if err != nil {
		return err
	}
	logf("backlog built in %.1fs (%.0f tx/s), end LSN %s", secs, float64(N)/secs, end)
	consumer := "c_" + prefix
	wantDrain, wantE2E, wantSinks := b.runs("drain", rep), b.runs("e2e", rep), b.runs("sinks", rep)
	if wantDrain {
		b.add(b.recvlogical(ctx, rep, wDrain, "recv_slot", "pub_all", end, int64(N)))
	}
	if wantDrain || wantSinks {
		// The drain's topics are what the sinks comparison applies.
		b.add(b.producer(ctx, rep, wDrain, prefix, "trib_slot", "pub_all", end, int64(N)))
	}
	countCheck := `SELECT count(*)::text FROM bench`
	if wantE2E {
		b.add(b.e2e(ctx, rep, wE2EInsert, prefix+"_e2e", "e2e_slot", "pub_all", end, int64(N), consumer, countCheck, strconv.Itoa(N)))
	}
	if wantSinks {
		// A consumer alone on the drain's topics, into its own database:
		// the plain sink, and the history sink; which goes first alternates.
		plain := func() {
			b.add(b.consumerSink(ctx, rep, wSinks, peerPGSink, prefix, "s_"+prefix, int64(N),
				[]string{"--target", b.solo().DSN, "--create-tables"}, b.check(ctx, b.solo(), countCheck, strconv.Itoa(N))))
		}
		if rep%2 == 0 {
			b.repHistory(ctx, rep, prefix, int64(N))
			plain()
		} else {
			plain()
			b.repHistory(ctx, rep, prefix, int64(N))
		}
	}
	if wantDrain {
		b.add(b.debezium(ctx, rep, wDrain, prefix, "dbz_slot", "pub_bench", []string{"bench"}, int64(N)))
	}
	_ = b.dropSlots(ctx, "dbz_slot")
	if wantE2E {
		b.add(b.native(ctx, rep, wE2EInsert, "nsub", "nsub_slot", end, int64(N), countCheck, strconv.Itoa(N)))
	}
	if !wantE2E {
		_ = n.Exec(ctx, `DROP SUBSCRIPTION IF EXISTS nsub`)
		return nil
	}
	logf("building a backlog of %d single-row UPDATE transactions", N)
	end, secs, err = b.backlog(ctx, "UPDATE", N)
	if err != nil {
		return err
	}
	logf("backlog built in %.1fs (%.0f tx/s), end LSN %s", secs, float64(N)/secs, end)
	b.add(b.recvlogical(ctx, rep, wE2EUpdate, "recv_slot", "pub_all", end, int64(N)))
	b.add(b.producer(ctx, rep, wE2EUpdate, prefix, "trib_slot", "pub_all", end, int64(N)))
	check := `SELECT count(*)::text FROM bench WHERE k = (id % 1000)::int + 1`
	b.add(b.e2e(ctx, rep, wE2EUpdate, prefix+"_e2e", "e2e_slot", "pub_all", end, int64(N), consumer, check, strconv.Itoa(N)))
	b.add(b.native(ctx, rep, wE2EUpdate, "nsub", "nsub_slot", end, int64(N), check, strconv.Itoa(N)))
	_ = n.Exec(ctx, `DROP SUBSCRIPTION IF EXISTS nsub`)
	return nil
}

// solo is the target cluster's database "solo", where consumers measured
// alone (the sinks comparison) write.
func (b *Bench) solo() *PG {
	p := *b.tgt
	p.Name = "target database solo"
	p.DSN = strings.Replace(b.tgt.DSN, "/postgres?", "/solo?", 1)
	return &p
}

// dropSlots drops the named slots, waiting up to 30 s for a stopped
// client's walsender to release each one.
func (b *Bench) dropSlots(ctx context.Context, names ...string) error {
	for _, n := range names {
		err := pollUntil(30*time.Second, 200*time.Millisecond, func() (bool, error) {
			// A slot that does not exist (a fresh cluster) counts as released.
			v, err := b.src.QueryVal(ctx, `SELECT coalesce((SELECT active::text FROM pg_replication_slots WHERE slot_name = $1), 'absent')`, n)
			return err == nil && v != "true", err
		})
		if err != nil {
			return fmt.Errorf("slot %s still active: %w", n, err)
		}
		if err := b.src.Exec(ctx, fmt.Sprintf(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '%s'`, n)); err != nil {
			return err
		}
	}
	return nil
}

// backlog writes n single-row transactions (INSERT ids 1..n, or UPDATE each of
// them) with synchronous_commit off (the WAL is the same), and returns the
// exact end LSN of the last transaction, read through a marker slot created
// just before it.
func (b *Bench) backlog(ctx context.Context, kind string, n int) (string, float64, error) {
	c, err := b.src.Conn(ctx)
	if err != nil {
		return "", 0, err
	}
	defer c.Close(ctx)
	t0 := time.Now()
	stmt := func(i string) string {
		if kind == "INSERT" {
			return fmt.Sprintf(`INSERT INTO bench VALUES (%s)`, rowExpr(i))
		}
		return fmt.Sprintf(`UPDATE bench SET k = k + 1, ts = clock_timestamp() WHERE id = %s`, i)
	}
	if _, err := c.Exec(ctx, `SET synchronous_commit = off`); err != nil {
		return "", 0, err
	}
	if _, err := c.Exec(ctx, fmt.Sprintf(`DO $$ BEGIN FOR i IN 1..%d LOOP %s; COMMIT; END LOOP; END $$`, n-1, stmt("i"))); err != nil {
		return "", 0, fmt.Errorf("backlog: %w", err)
	}
	end, err := b.lastTxEnd(ctx, c, "pub_all", stmt(strconv.Itoa(n)))
	return end, time.Since(t0).Seconds(), err
}

// lastTxEnd runs sql as one transaction and returns its commit's end LSN, as
// pgoutput reports it (the LSN that pg_recvlogical --endpos, the producer's
// frame EndLSN and the subscriber's origin progress use). A marker slot created
// just before the transaction decodes only that transaction. Its commit LSN
// (the start of the commit record, which a consumer's checkpoint records)
// is kept in b.commitOf[end].
func (b *Bench) lastTxEnd(ctx context.Context, c *pgx.Conn, pub, sql string) (string, error) {
	// The SQL decoding functions read only flushed WAL: commit this one synchronously.
	if _, err := c.Exec(ctx, `SET synchronous_commit = on`); err != nil {
		return "", err
	}
	if _, err := c.Exec(ctx, `SELECT pg_create_logical_replication_slot('bench_marker', 'pgoutput')`); err != nil {
		return "", fmt.Errorf("marker slot: %w", err)
	}
	defer c.Exec(context.Background(), `SELECT pg_drop_replication_slot('bench_marker')`)
	if _, err := c.Exec(ctx, sql); err != nil {
		return "", fmt.Errorf("last transaction: %w", err)
	}
	// pgoutput's Commit message: 'C', flags (1 byte), commit LSN (8), end LSN (8), time (8).
	var end, commit string
	err := c.QueryRow(ctx, fmt.Sprintf(`SELECT max(lsn)::text,
		max(CASE WHEN get_byte(data, 0) = 67 THEN '0/0'::pg_lsn + ('x' || encode(substr(data, 3, 8), 'hex'))::bit(64)::bigint END)::text
		FROM pg_logical_slot_get_binary_changes('bench_marker', NULL, NULL, 'proto_version', '1', 'publication_names', '%s')`, pub)).Scan(&end, &commit)
	if err != nil {
		return "", fmt.Errorf("marker slot changes: %w", err)
	}
	b.commitOf[end] = commit
	return end, nil
}
