package chaos

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tributary-cdc/tributary/integration/harness"
	"github.com/tributary-cdc/tributary/schemas"
)

// finish stops the workload, drains the pipeline and checks the end state.
func (c *chaos) finish() {
	t := c.t
	final := c.row("end-of-run checks")
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		final.status = "FAILED"
		final.notes = append(final.notes, msg)
		t.Error(msg)
	}
	c.quiesce(final)

	// tributary verify, as a user runs it, while the consumers still run.
	c.checkVerify(fail, "--timeout", "5m")

	if err := c.prod.term(t); err != nil {
		fail("producer exit after SIGTERM: %v: %s", err, lastLines(c.prod.output(), 10))
	}
	c.repl.stop()
	c.hist.stop()
	for _, a := range [][]string{
		c.consumerArgs("replica", "postgres", c.tgt.DSN, c.dev.RegistryURL, "--until-caught-up"),
		c.consumerArgs("hist", "history", c.histDSN, c.dev.RegistryURL, "--until-caught-up"),
	} {
		if out, err := runTributary(t, 10*time.Minute, a...); err != nil {
			fail("%s --until-caught-up: %v\n%s", a[8], err, lastLines(out, 20))
		}
	}
	c.checkVerify(fail, "--sink", "history", "--check-history", "--no-wait")
	c.checkKafka(t, fail)
	c.checkHistory(fail)
	c.checkMoney(fail)
	if final.status == "PASS" {
		final.notes = append(final.notes, "verify exit 0 (replica; history current versions and invariants); "+
			"Kafka: each txlog id once, in commit order; history: one row per change; money total kept")
	}
	final.count = 1
	if !t.Failed() {
		if c.soak != nil {
			c.soak.now = "the negative control"
		}
		c.negativeControl()
	}
}

// quiesce stops the workload, commits a probe, waits until both sinks hold
// it and then until the slot is confirmed past the source's WAL position:
// everything committed is in Kafka and applied by both consumers. A probe
// that does not arrive fails r.
func (c *chaos) quiesce(r *result) {
	c.w.stop()
	c.w.cancel = nil
	c.probe(r)
	c.t.Logf("workload: %d transactions seen committed by the client, %d failed attempts (last: %v)",
		c.w.ok.Load(), c.w.errs.Load(), c.w.lastErr.Load())
	c.waitSlotConfirmed()
}

// waitSlotConfirmed waits until the slot's confirmed position passes the
// source's current WAL insert position: everything written before the call
// is in Kafka (G5), non-transactional logical messages too (verify's
// barrier), which no commit flushes, so that the WAL write position can
// still be short of them. Heartbeats are not published, so on an idle
// source nothing more reaches Kafka once it returns.
func (c *chaos) waitSlotConfirmed() {
	t := c.t
	var endLSN string
	retry(t, "wal lsn", func(ctx context.Context) error {
		return c.queryRow(c.src.DSN, `SELECT pg_current_wal_insert_lsn()::text`, nil, &endLSN)
	})
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var ok bool
		err := c.queryRow(c.src.DSN, `SELECT confirmed_flush_lsn >= $1::pg_lsn FROM pg_replication_slots WHERE slot_name = 'slot'`, []any{endLSN}, &ok)
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot not confirmed past %s after 5 minutes (%v):\n%s", endLSN, err, lastLines(c.prod.output(), 15))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// checkVerify runs tributary verify of the replica (or, with --sink history
// in extra, of the history database) as a user runs it.
func (c *chaos) checkVerify(fail func(string, ...any), extra ...string) {
	target, consumer := c.tgt.DSN, "replica"
	for _, a := range extra {
		if a == "history" {
			target, consumer = c.histDSN, "hist"
		}
	}
	args := append([]string{"verify", "--source", c.src.DSN, "--target", target,
		"--publication", "pub", "--consumer", consumer, "--log-format", "json"}, extra...)
	if out, err := runTributary(c.t, 10*time.Minute, args...); err != nil {
		fail("tributary verify %s: %v\n%s", strings.Join(extra, " "), err, lastLines(out, 30))
	}
}

type txRow struct {
	kind    string
	changes int
}

// sourceTxlog reads the source's txlog on a connection of its own, closed
// on return (a soak's mid-way checks call it many times).
func (c *chaos) sourceTxlog() map[int64]txRow {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.src.DSN)
	if err != nil {
		c.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT id, kind, changes FROM txlog`)
	if err != nil {
		c.t.Fatal(err)
	}
	out := map[int64]txRow{}
	for rows.Next() {
		var id int64
		var r txRow
		if err := rows.Scan(&id, &r.kind, &r.changes); err != nil {
			c.t.Fatal(err)
		}
		out[id] = r
	}
	if err := rows.Err(); err != nil {
		c.t.Fatal(err)
	}
	return out
}

// checkKafka: every committed source transaction is in Kafka exactly once,
// whole, in commit order (ReadLog checks order, framing and positions).
// ReadLog's own contract checks fail through tb.
func (c *chaos) checkKafka(tb testing.TB, fail func(string, ...any)) {
	src := c.sourceTxlog()
	log := harness.ReadLog(tb, c.kafka, c.reg, c.prefix)
	dataTopic := map[string]string{}
	for _, tb := range dataTables {
		dataTopic[c.prefix+".public."+tb] = tb
	}
	seen := map[int64]int{}
	events := map[string]int{}
	var bad []string
	for _, tx := range log.Txns {
		if tx.Frame.Snapshot != nil {
			bad = append(bad, "unexpected snapshot frame "+tx.String())
			continue
		}
		var ids []int64
		n := 0
		for _, ev := range tx.Events {
			tb, ok := dataTopic[ev.Topic]
			if !ok {
				continue
			}
			n++
			events[tb]++
			if tb == "txlog" && ev.Op == schemas.OpInsert {
				ids = append(ids, ev.After["id"].(int64))
			}
		}
		switch {
		case n == 0:
		case len(ids) != 1:
			bad = append(bad, fmt.Sprintf("%v holds %d txlog inserts, want 1", tx, len(ids)))
		default:
			seen[ids[0]]++
			if want, ok := src[ids[0]]; ok && want.changes != n {
				bad = append(bad, fmt.Sprintf("%v (txlog %d, %s): %d data events, the source transaction made %d changes", tx, ids[0], want.kind, n, want.changes))
			}
		}
		if len(bad) > 10 {
			break
		}
	}
	missing, dup, extra := 0, 0, 0
	for id := range src {
		switch seen[id] {
		case 0:
			missing++
		case 1:
		default:
			dup++
		}
	}
	for id := range seen {
		if _, ok := src[id]; !ok {
			extra++
		}
	}
	if len(bad) > 0 || missing+dup+extra > 0 {
		fail("Kafka vs source: %d source transactions missing, %d duplicated, %d not in the source; %s", missing, dup, extra, strings.Join(bad, "; "))
	}
	total := 0
	for _, r := range src {
		total += r.changes
	}
	c.t.Logf("Kafka: %d frames, %d source transactions, %d row changes %v", len(log.Txns), len(src), total, events)
	c.kafkaEvents = events
	c.sourceTxns, c.sourceChanges = len(src), total
}

// checkHistory: exactly one history row per change, versions 1..n per key,
// complete TOASTed values.
func (c *chaos) checkHistory(fail func(string, ...any)) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.histDSN)
	if err != nil {
		c.t.Fatal(err)
	}
	defer conn.Close(ctx)
	src := c.sourceTxlog()
	want := 0
	for _, r := range src {
		want += r.changes
	}
	got := 0
	tables := append([]string(nil), dataTables...)
	sort.Strings(tables)
	for _, tb := range tables {
		var n, dupChanges, badVersions int
		err := conn.QueryRow(ctx, fmt.Sprintf(`SELECT count(*), count(*) - count(DISTINCT (commit_lsn, position)),
			(SELECT count(*) FROM (SELECT id FROM public.%[1]s_history GROUP BY id
			   HAVING min(version) <> 1 OR max(version) <> count(*) OR count(DISTINCT version) <> count(*)) x)
			FROM public.%[1]s_history`, tb)).Scan(&n, &dupChanges, &badVersions)
		if err != nil {
			fail("history of %s: %v", tb, err)
			continue
		}
		got += n
		if dupChanges != 0 || badVersions != 0 {
			fail("history of %s: %d rows repeat a change, %d keys with versions not 1..n", tb, dupChanges, badVersions)
		}
		if c.kafkaEvents != nil && c.kafkaEvents[tb] != n {
			fail("history of %s: %d rows, Kafka holds %d changes of it", tb, n, c.kafkaEvents[tb])
		}
	}
	if got != want {
		fail("history holds %d rows, the source made %d changes (sum of txlog.changes)", got, want)
	}
	var badDoc int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM public.customers_history WHERE doc IS NULL OR length(doc) <> 8000`).Scan(&badDoc); err != nil {
		fail("customers_history: %v", err)
	} else if badDoc != 0 {
		fail("%d customers_history rows lack the TOASTed doc (unchanged TOAST not carried forward?)", badDoc)
	}
	c.t.Logf("history: %d rows for %d source changes", got, want)
}

// checkMoney: transfers never create or destroy money, and each balance in
// the target is explained by the target's transfers.
func (c *chaos) checkMoney(fail func(string, ...any)) {
	for _, db := range []struct{ name, dsn string }{{"source", c.src.DSN}, {"target", c.tgt.DSN}} {
		var total, unexplained int64
		err := c.queryRow(db.dsn, fmt.Sprintf(`SELECT (SELECT sum(balance) FROM accounts),
			(SELECT count(*) FROM accounts a WHERE a.balance <> %d
				+ coalesce((SELECT sum(amount) FROM transfers WHERE to_acct = a.id), 0)
				- coalesce((SELECT sum(amount) FROM transfers WHERE from_acct = a.id), 0))`, initialBalance), nil, &total, &unexplained)
		if err != nil {
			fail("money check on %s: %v", db.name, err)
			continue
		}
		if total != accounts*initialBalance || unexplained != 0 {
			fail("money on the %s: total %d, want %d; %d balances not explained by transfers", db.name, total, accounts*initialBalance, unexplained)
		}
	}
}

// writeReport prints the results table and writes it to -chaos.report.
func (c *chaos) writeReport() {
	if c.t.Failed() {
		for _, r := range c.results {
			if r.status == "PASS" && r.fault == "end-of-run checks" {
				r.status = "FAILED"
			}
		}
	}
	if c.soak != nil {
		c.soakRowStatus()
	}
	lane := "embedded broker (tributary dev subprocess, kfake with DataDir)"
	if c.realLane {
		lane = "real Apache Kafka (" + strings.Join(c.kafka.Brokers, ",") + ")"
	}
	mode, workload := "short", fmt.Sprintf("workload %d workers", c.plan.workers)
	switch {
	case c.soak != nil:
		mode = fmt.Sprintf("soak (-chaos.soak %s, -chaos.seed %d)", c.soak.length, c.seed)
		workload += fmt.Sprintf(" (%s between a worker's transactions)", c.plan.pace)
	case *fullRun:
		mode = "full (-chaos.full)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Run: %s, %s, %s, %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), mode, lane, workload)
	b.WriteString("| fault | count injected | changes in flight (source txns committed during the fault windows) | component self-exits (restarted) | result |\n")
	b.WriteString("| --- | ---: | ---: | ---: | --- |\n")
	for _, r := range c.results {
		status := r.status
		if len(r.notes) > 0 {
			status += ": " + strings.ReplaceAll(strings.Join(r.notes, "; "), "\n", " ")
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %s |\n", r.fault, r.count, r.inflight, r.exits, strings.ReplaceAll(status, "|", "\\|"))
	}
	if c.soak != nil {
		b.WriteString(c.soakSection())
	}
	c.t.Log("results\n" + b.String())
	if *report != "" {
		if err := os.WriteFile(*report, []byte(b.String()), 0o644); err != nil {
			c.t.Errorf("write %s: %v", *report, err)
		}
	}
}
