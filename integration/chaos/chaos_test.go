package chaos

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tributary-cdc/tributary/integration/harness"
	"github.com/tributary-cdc/tributary/schemas"
)

var (
	fullRun = flag.Bool("chaos.full", false, "inject every fault several times with longer outages (make chaos)")
	report  = flag.String("chaos.report", "", "write the results table, in Markdown, to this `file`")
	seedArg = flag.Uint64("chaos.seed", 0, "`seed` of the random choices (fault order and sizes in a soak, pauses); 0 picks one, printed at the start")
)

// plan is how hard a run pushes. The rounds use fixed sizes (lo == hi in
// each span); a soak draws each injection's size from its spans.
type plan struct {
	rounds         int                 // times each fault is injected (the rounds)
	registryOutage span[time.Duration] // how long the registry is unreachable
	netFault       span[time.Duration] // each network fault phase's duration
	hugeRows       span[int]           // rows of the huge transaction
	ddlColumns     span[int]           // columns the DDL burst adds
	workers        int
	pace           time.Duration // each worker's pause between its transactions
}

func currentPlan() plan {
	switch {
	case *soakFor > 0:
		// A lighter workload and smaller huge transactions than the
		// rounds': the Kafka check decodes the whole log into memory
		// (harness.ReadLog keeps every event, a few KB each), so a soak of
		// hours must keep the log well under a million events.
		return plan{registryOutage: span[time.Duration]{10 * time.Second, 30 * time.Second},
			netFault: span[time.Duration]{3 * time.Second, 8 * time.Second}, hugeRows: span[int]{10_000, 50_000},
			ddlColumns: span[int]{1, 6}, workers: 3, pace: 200 * time.Millisecond}
	case *fullRun:
		return plan{rounds: 3, registryOutage: fixed(30 * time.Second), netFault: fixed(8 * time.Second), hugeRows: fixed(200_000),
			ddlColumns: fixed(6), workers: 4, pace: 15 * time.Millisecond}
	}
	return plan{rounds: 1, registryOutage: fixed(10 * time.Second), netFault: fixed(3 * time.Second), hugeRows: fixed(50_000),
		ddlColumns: fixed(3), workers: 3, pace: 15 * time.Millisecond}
}

// span is the range a fault's size is drawn from: lo..hi inclusive.
type span[T ~int | ~int64] struct{ lo, hi T }

func fixed[T ~int | ~int64](v T) span[T] { return span[T]{v, v} }

func (s span[T]) String() string {
	if s.hi <= s.lo {
		return fmt.Sprint(s.lo)
	}
	return fmt.Sprintf("%v-%v", s.lo, s.hi)
}

// draw returns a size from s; a fixed span draws nothing from rng.
func draw[T ~int | ~int64](rng *rand.Rand, s span[T]) T {
	if s.hi <= s.lo {
		return s.lo
	}
	return s.lo + T(rng.Int64N(int64(s.hi-s.lo)+1))
}

// result is one row of the results table.
type result struct {
	fault    string
	count    int
	inflight int64 // source transactions committed during the fault windows
	exits    int   // times a component exited on its own (and was restarted)
	status   string
	notes    []string
}

type chaos struct {
	t        *testing.T
	plan     plan
	src, tgt *harness.Postgres
	histDSN  string // the history sink's database on the target cluster
	dev      *harness.DevStack
	real     *harness.RealKafka // the real broker, when it can be restarted
	realLane bool
	kafka    *harness.Kafka
	reg      *schemas.Registry
	prefix   string

	regProxy, srcProxy, tgtProxy *harness.Proxy
	// kafkaProxy carries every Kafka connection of the producer, the
	// consumers and the checks (the broker advertises it); nil on a real
	// lane whose broker has no proxied listener.
	kafkaProxy       *harness.Proxy
	prod, repl, hist *supervised
	w                *workload
	results          []*result
	ddlN             int
	kafkaEvents      map[string]int
	sourceTxns       int // source transactions (txlog rows) at the last Kafka check
	sourceChanges    int // their row changes

	seed uint64
	rng  *rand.Rand // the run's random choices; used by the test goroutine only
	soak *soakRun   // nil unless -chaos.soak
}

// A fault is one kind of fault the suite injects. The rounds inject every
// fault that is not soakOnly, in table order, once per round; a soak picks
// faults at random, in proportion to weight. Both call the same run.
type fault struct {
	name     string
	weight   int  // relative frequency in a soak
	soakOnly bool // a cheap fault that only the soak injects
	// skip says why this lane cannot inject the fault ("" when it can);
	// skipLog is the log line that says what to do about it.
	skip, skipLog string
	// run injects the fault for the n-th time (from 0; the round, in the
	// rounds) and returns what it drew or chose, for the log ("" for nothing).
	run func(n int) string
}

func TestChaos(t *testing.T) {
	c := &chaos{t: t, plan: currentPlan(), seed: *seedArg}
	if c.seed == 0 {
		c.seed = rand.Uint64()
	}
	c.rng = rand.New(rand.NewPCG(c.seed, 0))
	t.Logf("seed %d (repeat the run's random choices with -chaos.seed %d)", c.seed, c.seed)
	if *soakFor > 0 {
		c.soak = newSoakRun(t, *soakFor)
	}
	defer c.writeReport()
	c.setup()

	if c.soak != nil {
		c.runSoak()
	} else {
		c.runRounds()
	}
	c.finish()
}

// runRounds injects every fault of the table in order, plan.rounds times.
func (c *chaos) runRounds() {
	faults := c.faults()
	for round := 0; round < c.plan.rounds; round++ {
		c.t.Logf("round %d of %d", round+1, c.plan.rounds)
		for _, f := range faults {
			switch {
			case f.soakOnly:
			case f.skip != "":
				if round == 0 {
					c.skipFault(f)
				}
			default:
				c.inject(f.name, func() string { return f.run(round) })
			}
		}
	}
}

// skipFault logs why a fault is not injected on this lane and gives it a
// SKIPPED row.
func (c *chaos) skipFault(f fault) {
	c.t.Log(f.skipLog)
	r := c.row(f.name)
	r.status = "SKIPPED"
	r.notes = append(r.notes, f.skip)
}

// faults is the suite's fault table, in the order the rounds inject it.
// Weights make a soak's cheap faults (kills, connection resets) common and
// its expensive ones (outages, network fault sequences, huge transactions)
// rare; see docs/CHAOS.md for the rates they give.
func (c *chaos) faults() []fault {
	t, p := c.t, c.plan
	restart := func(pg *harness.Postgres, mode string) {
		c.pause()
		pg.Stop(t, mode)
		time.Sleep(2 * time.Second)
		pg.Start(t)
	}
	reset := func(px *harness.Proxy) string {
		c.pause()
		return fmt.Sprintf("%d connections", px.Reset())
	}
	return []fault{
		{name: "kill -9 producer", weight: 20, run: func(int) string { c.pause(); c.prod.kill9(); return "" }},
		{name: "kill -9 PostgreSQL consumer", weight: 20, run: func(int) string { c.pause(); c.repl.kill9(); return "" }},
		{name: "kill -9 history consumer", weight: 20, run: func(int) string { c.pause(); c.hist.kill9(); return "" }},
		c.brokerRestart(),
		{name: "source PostgreSQL restart (fast)", weight: 3, run: func(int) string { restart(c.src, "fast"); return "" }},
		{name: "source PostgreSQL restart (immediate)", weight: 3, run: func(int) string { restart(c.src, "immediate"); return "" }},
		{name: "target PostgreSQL restart (fast, immediate alternately)", weight: 4,
			run: func(n int) string {
				mode := []string{"fast", "immediate"}[n%2]
				restart(c.tgt, mode)
				return mode
			}},
		{name: fmt.Sprintf("registry unavailable %s (+ a new schema, a consumer restart)", p.registryOutage), weight: 1,
			run: func(int) string { return c.registryOutage() }},
		{name: "network: producer <-> source PostgreSQL (latency, bandwidth, blackhole, reset)", weight: 1,
			run: func(int) string { return c.netFaults(c.srcProxy) }},
		{name: "network: consumers <-> target PostgreSQL (latency, bandwidth, blackhole, reset)", weight: 1,
			run: func(int) string { return c.netFaults(c.tgtProxy) }},
		c.kafkaNetFaults(),
		{name: fmt.Sprintf("huge transaction (%s rows)", p.hugeRows), weight: 1, run: func(int) string { return c.hugeTxn() }},
		{name: fmt.Sprintf("DDL burst (%s x ADD COLUMN while writing)", p.ddlColumns), weight: 4,
			run: func(int) string { return c.ddlBurst() }},
		// The network faults' last phase on its own: every open connection
		// of the link reset at a random point.
		{name: "connection reset: producer <-> source PostgreSQL", weight: 6, soakOnly: true,
			run: func(int) string { return reset(c.srcProxy) }},
		{name: "connection reset: consumers <-> target PostgreSQL", weight: 6, soakOnly: true,
			run: func(int) string { return reset(c.tgtProxy) }},
		c.kafkaReset(reset),
	}
}

func (c *chaos) setup() {
	t := c.t
	c.src, c.tgt = harness.StartPostgres(t), harness.StartPostgres(t)
	c.tgt.Exec(t, `CREATE DATABASE hist`)
	c.histDSN = strings.Replace(c.tgt.DSN, "/postgres?", "/hist?", 1)
	c.src.Exec(t, schemaSQL...)

	// The registry always, and on the embedded lane the broker too, run as a
	// `tributary dev` subprocess that a fault can restart.
	// Kafka clients reach the broker through a proxy that it advertises:
	// on the embedded lane `tributary dev --advertise`, on the real lane
	// kafka.sh's proxied listener (KAFKA_PROXIED_LISTENER=1).
	var brokers string
	if b := os.Getenv("TRIBUTARY_TEST_BROKERS"); b != "" {
		c.dev = harness.StartDevStack(t, t.TempDir())
		brokers, c.realLane = b, true
		c.real = harness.RealKafkaFromEnv(t)
		if c.real != nil && c.real.ProxiedAdvertise != "" {
			c.kafkaProxy = harness.StartProxyAt(t, c.real.ProxiedAdvertise, c.real.ProxiedListen)
			brokers = c.real.ProxiedAdvertise
		}
	} else {
		c.dev, c.kafkaProxy = harness.StartDevStackBehindProxy(t, t.TempDir())
		brokers = c.kafkaProxy.Addr
	}
	c.kafka = &harness.Kafka{Brokers: strings.Split(brokers, ","), RegistryURL: c.dev.RegistryURL, Real: c.realLane}
	var err error
	if c.reg, err = schemas.NewRegistry([]string{c.dev.RegistryURL}, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	c.prefix = harness.Prefix(t)

	c.regProxy = harness.StartProxy(t, c.dev.RegistryAddr)
	c.srcProxy = harness.StartProxy(t, fmt.Sprintf("127.0.0.1:%d", c.src.Port))
	c.tgtProxy = harness.StartProxy(t, fmt.Sprintf("127.0.0.1:%d", c.tgt.Port))
	srcVia := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", c.srcProxy.Addr)
	tgtVia := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", c.tgtProxy.Addr)
	histVia := fmt.Sprintf("postgres://postgres@%s/hist?sslmode=disable", c.tgtProxy.Addr)
	regVia := "http://" + c.regProxy.Addr

	c.prod = supervise(t, "producer", "producer", "--source", srcVia, "--publication", "pub", "--slot", "slot",
		"--brokers", brokers, "--registry", regVia, "--prefix", c.prefix, "--snapshot", "never",
		"--heartbeat-interval", "1s", "--log-format", "json")
	c.waitSlotActive()
	c.repl = supervise(t, "postgres consumer", c.consumerArgs("replica", "postgres", tgtVia, regVia)...)
	c.hist = supervise(t, "history consumer", c.consumerArgs("hist", "history", histVia, regVia)...)

	c.w = newWorkload(t, c.src.DSN, c.plan.pace)
	retry(t, "seed", c.w.seed)
	c.w.start(c.plan.workers)
	t.Cleanup(func() {
		if c.w.cancel != nil {
			c.w.stop()
		}
	})
	c.probe(nil) // everything flows before the first fault
}

func (c *chaos) consumerArgs(name, sink, target, registry string, extra ...string) []string {
	return append([]string{"consumer", "--brokers", strings.Join(c.kafka.Brokers, ","), "--registry", registry,
		"--prefix", c.prefix, "--name", name, "--sink", sink, "--target", target, "--create-tables",
		"--log-format", "json"}, extra...)
}

func (c *chaos) waitSlotActive() {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var active bool
		err := c.queryRow(c.src.DSN, `SELECT active FROM pg_replication_slots WHERE slot_name = 'slot'`, nil, &active)
		if err == nil && active {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("slot not active after 2 minutes (%v):\n%s", err, lastLines(c.prod.output(), 15))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// queryRow runs one query on a fresh connection.
func (c *chaos) queryRow(dsn, sql string, args []any, dest ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.QueryRow(ctx, sql, args...).Scan(dest...)
}

func (c *chaos) txlogCount() int64 {
	var n int64
	retry(c.t, "count txlog", func(ctx context.Context) error {
		return c.queryRow(c.src.DSN, `SELECT count(*) FROM txlog`, nil, &n)
	})
	return n
}

func (c *chaos) row(fault string) *result {
	for _, r := range c.results {
		if r.fault == fault {
			return r
		}
	}
	r := &result{fault: fault, status: "PASS"}
	c.results = append(c.results, r)
	return r
}

func (c *chaos) totalExits() int {
	return c.prod.exitCount() + c.repl.exitCount() + c.hist.exitCount()
}

// inject runs one fault while the workload runs, then checks that the
// pipeline still delivers: a probe transaction committed after the fault
// must reach both sinks. f returns what the fault drew, for the log. It
// returns the source transactions committed during the fault and how long
// the fault and the recovery took.
func (c *chaos) inject(fault string, f func() string) (inflight int64, took time.Duration) {
	c.t.Helper()
	r := c.row(fault)
	before, exits := c.txlogCount(), c.totalExits()
	e0 := [3]int{c.prod.exitCount(), c.repl.exitCount(), c.hist.exitCount()}
	start := time.Now()
	detail := f()
	after := c.txlogCount()
	r.count++
	r.inflight += after - before
	c.probe(r)
	r.exits += c.totalExits() - exits
	for i, s := range []*supervised{c.prod, c.repl, c.hist} {
		for _, e := range s.exitsSince(e0[i]) {
			c.t.Logf("  %s exited on its own (restarted): %s", s.name, e)
		}
	}
	if detail != "" {
		detail = " (" + detail + ")"
	}
	took = time.Since(start)
	c.t.Logf("%s #%d%s: %d transactions committed during the fault, pipeline delivering again after %s",
		fault, r.count, detail, after-before, took.Round(time.Second))
	return after - before, took
}

// pause lets the workload run a random while before a fault, so that faults
// land at different points of the stream.
func (c *chaos) pause() { time.Sleep(time.Duration(500+c.rng.IntN(1500)) * time.Millisecond) }

// brokerRestart is the broker restart fault of this lane.
func (c *chaos) brokerRestart() fault {
	f := fault{name: "broker restart (same data dir and ports)", weight: 4}
	if c.realLane && (*fullRun || c.soak != nil) {
		f.name = "broker restart (same data dir and ports; SIGTERM, SIGKILL alternately)"
	}
	switch {
	case !c.realLane:
		f.run = func(int) string { c.pause(); c.dev.Restart(c.t, false, 2*time.Second); return "" }
	case c.real != nil:
		f.weight = 2 // a JVM restart with log recovery takes up to a minute
		// Odd injections (the full run's odd rounds, every second one in a
		// soak) kill the JVM: Apache Kafka must survive SIGKILL with its
		// page-cache writes; kfake's DataDir is a dev store and is only
		// stopped cleanly. The short run's single round uses SIGTERM.
		f.run = func(n int) string {
			kill := n%2 == 1 && (*fullRun || c.soak != nil)
			c.pause()
			c.real.Restart(c.t, kill, 2*time.Second)
			if kill {
				return "SIGKILL"
			}
			return "SIGTERM"
		}
	default:
		f.skip = "real lane without TRIBUTARY_TEST_KAFKA_DIR"
		f.skipLog = "broker restart not injected: the real-Kafka lane needs TRIBUTARY_TEST_KAFKA_DIR (the directory of deploy/local/kafka.sh) to restart the broker"
	}
	return f
}

// kafkaNetFaults is the network fault between Kafka and all its clients:
// the producer, both consumers (and the registry-independent checks), whose
// Kafka connections all pass kafkaProxy.
func (c *chaos) kafkaNetFaults() fault {
	f := fault{name: "network: producer and consumers <-> Kafka (latency, bandwidth, blackhole, reset)", weight: 1}
	if c.kafkaProxy == nil {
		f.skip, f.skipLog = noKafkaProxy()
		return f
	}
	f.run = func(int) string { return c.netFaults(c.kafkaProxy) }
	return f
}

// kafkaReset resets every Kafka connection of the producer and consumers.
func (c *chaos) kafkaReset(reset func(*harness.Proxy) string) fault {
	f := fault{name: "connection reset: producer and consumers <-> Kafka", weight: 6, soakOnly: true}
	if c.kafkaProxy == nil {
		f.skip, f.skipLog = noKafkaProxy()
		return f
	}
	f.run = func(int) string { return reset(c.kafkaProxy) }
	return f
}

func noKafkaProxy() (skip, skipLog string) {
	return "real lane without a proxied listener (KAFKA_PROXIED_LISTENER)",
		"Kafka network faults not injected: start the real broker with KAFKA_PROXIED_LISTENER=1 deploy/local/kafka.sh start DIR " +
			"and set TRIBUTARY_TEST_KAFKA_DIR=DIR, so that its clients can be routed through a proxy"
}

// probe commits a marked transaction and waits until both sinks hold it.
func (c *chaos) probe(r *result) {
	c.t.Helper()
	var id int64
	retry(c.t, "probe", func(ctx context.Context) error {
		id = c.w.id()
		conn, err := pgx.Connect(ctx, c.src.DSN)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		_, err = conn.Exec(ctx, `INSERT INTO txlog VALUES ($1, 'probe', 1)`, id)
		return err
	})
	deadline := time.Now().Add(5 * time.Minute)
	for _, s := range []struct{ dsn, table, who string }{
		{c.tgt.DSN, "txlog", "PostgreSQL consumer"}, {c.histDSN, "txlog_history", "history consumer"}} {
		for {
			var one int
			err := c.queryRow(s.dsn, `SELECT 1 FROM `+s.table+` WHERE id = $1`, []any{id}, &one)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				msg := fmt.Sprintf("the %s did not apply a transaction committed after the fault within 5 minutes (%v); pipeline: %s; producer: %s; postgres consumer: %s; history consumer: %s",
					s.who, err, c.stallReport(), lastLines(c.prod.output(), 6), lastLines(c.repl.output(), 6), lastLines(c.hist.output(), 6))
				if r != nil {
					r.status = "FAILED"
					r.notes = append(r.notes, msg)
				}
				c.t.Fatal(msg)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
}

// netFaults runs the four network fault phases on one link, each for a
// duration drawn from plan.netFault: latency, a bandwidth limit, a
// blackhole ended by resets, and another reset of all connections.
func (c *chaos) netFaults(p *harness.Proxy) string {
	d := draw(c.rng, c.plan.netFault).Round(100 * time.Millisecond)
	p.SetLatency(150 * time.Millisecond)
	time.Sleep(d)
	p.Clear()
	p.SetBandwidth(16 << 10)
	time.Sleep(d)
	p.Clear()
	p.SetBlackhole(true) // a timeout: connections open, nothing passes
	time.Sleep(d)
	p.Reset()
	p.Clear()
	time.Sleep(time.Second)
	p.Reset()
	return fmt.Sprintf("4 phases of %s", d)
}

// registryOutage makes the registry unreachable for a while drawn from
// plan.registryOutage. The producer must register a new schema version,
// and a restarted consumer must fetch schemas, while it is away.
func (c *chaos) registryOutage() string {
	d := draw(c.rng, c.plan.registryOutage).Round(100 * time.Millisecond)
	c.regProxy.Down()
	c.addColumn("transfers")
	c.hist.kill9()
	time.Sleep(d)
	c.regProxy.Up(c.t)
	return fmt.Sprintf("down %s", d)
}

// ddlBurst adds columns (as many as drawn from plan.ddlColumns) to orders,
// customers and accounts in turn while the workload writes, each followed
// by a transaction that writes it.
func (c *chaos) ddlBurst() string {
	n := draw(c.rng, c.plan.ddlColumns)
	for i := 0; i < n; i++ {
		c.addColumn([]string{"orders", "customers", "accounts"}[i%3])
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Sprintf("%d columns", n)
}

// addColumn adds a column to table and writes it in a workload transaction.
func (c *chaos) addColumn(table string) {
	c.ddlN++
	col := fmt.Sprintf("extra_%d", c.ddlN)
	retry(c.t, "ALTER TABLE "+table, func(ctx context.Context) error {
		conn, err := pgx.Connect(ctx, c.src.DSN)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		_, err = conn.Exec(ctx, fmt.Sprintf(`SET lock_timeout = '5s'; ALTER TABLE %s ADD COLUMN IF NOT EXISTS %s text`, table, col))
		return err
	})
	retry(c.t, "write "+table+"."+col, func(ctx context.Context) error {
		return c.w.txn(ctx, nil, "ddl-write", func(tx pgx.Tx) (int, error) {
			tag, err := tx.Exec(ctx, fmt.Sprintf(`UPDATE %s SET %s = 'v%d' WHERE id IN (SELECT id FROM %s ORDER BY id DESC LIMIT 5)`,
				table, col, c.ddlN, table))
			return int(tag.RowsAffected()), err
		})
	})
}

// hugeTxn commits one transaction of as many rows as drawn from
// plan.hugeRows while the workload runs.
func (c *chaos) hugeTxn() string {
	n := int64(draw(c.rng, c.plan.hugeRows))
	retry(c.t, "huge transaction", func(ctx context.Context) error {
		base := c.w.nextID.Add(n) - n + 1 // fresh ids on every attempt
		return c.w.txn(ctx, nil, "huge", func(tx pgx.Tx) (int, error) {
			tag, err := tx.Exec(ctx, `INSERT INTO bulk SELECT g, md5(g::text) FROM generate_series($1::bigint, $2::bigint) g`, base, base+n-1)
			return int(tag.RowsAffected()), err
		})
	})
	return fmt.Sprintf("%d rows", n)
}

// runTributary runs a tributary command to its end and returns its exit
// error and output.
func runTributary(t *testing.T, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, harness.Binary(t), args...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = errors.Join(err, fmt.Errorf("did not finish within %s", timeout))
	}
	return string(out), err
}
