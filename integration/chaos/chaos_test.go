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
)

// plan is how hard a run pushes.
type plan struct {
	rounds         int           // times each fault is injected
	registryOutage time.Duration // how long the registry is unreachable
	netFault       time.Duration // each network fault's duration
	hugeRows       int           // rows of the huge transaction
	ddlColumns     int           // columns the DDL burst adds
	workers        int
}

func currentPlan() plan {
	if *fullRun {
		return plan{rounds: 3, registryOutage: 30 * time.Second, netFault: 8 * time.Second, hugeRows: 200_000, ddlColumns: 6, workers: 4}
	}
	return plan{rounds: 1, registryOutage: 10 * time.Second, netFault: 3 * time.Second, hugeRows: 50_000, ddlColumns: 3, workers: 3}
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
}

func TestChaos(t *testing.T) {
	c := &chaos{t: t, plan: currentPlan()}
	defer c.writeReport()
	c.setup()

	p := c.plan
	for round := 0; round < p.rounds; round++ {
		t.Logf("round %d of %d", round+1, p.rounds)
		c.inject("kill -9 producer", func() { c.pause(); c.prod.kill9() })
		c.inject("kill -9 PostgreSQL consumer", func() { c.pause(); c.repl.kill9() })
		c.inject("kill -9 history consumer", func() { c.pause(); c.hist.kill9() })
		c.brokerRestart(round)
		c.inject("source PostgreSQL restart (fast)", func() {
			c.pause()
			c.src.Stop(t, "fast")
			time.Sleep(2 * time.Second)
			c.src.Start(t)
		})
		c.inject("source PostgreSQL restart (immediate)", func() {
			c.pause()
			c.src.Stop(t, "immediate")
			time.Sleep(2 * time.Second)
			c.src.Start(t)
		})
		mode := []string{"fast", "immediate"}[round%2]
		c.inject("target PostgreSQL restart (fast, immediate alternately)", func() {
			c.pause()
			c.tgt.Stop(t, mode)
			time.Sleep(2 * time.Second)
			c.tgt.Start(t)
		})
		c.inject(fmt.Sprintf("registry unavailable %s (+ a new schema, a consumer restart)", p.registryOutage), func() {
			c.regProxy.Down()
			// The producer must register a new schema version, and a
			// restarted consumer must fetch schemas, while it is away.
			c.addColumn("transfers")
			c.hist.kill9()
			time.Sleep(p.registryOutage)
			c.regProxy.Up(t)
		})
		c.inject("network: producer <-> source PostgreSQL (latency, bandwidth, blackhole, reset)", func() { c.netFaults(c.srcProxy) })
		c.inject("network: consumers <-> target PostgreSQL (latency, bandwidth, blackhole, reset)", func() { c.netFaults(c.tgtProxy) })
		c.kafkaNetFaults(round)
		c.inject(fmt.Sprintf("huge transaction (%d rows)", p.hugeRows), func() { c.hugeTxn() })
		c.inject(fmt.Sprintf("DDL burst (%d x ADD COLUMN while writing)", p.ddlColumns), func() {
			for i := 0; i < p.ddlColumns; i++ {
				c.addColumn([]string{"orders", "customers", "accounts"}[i%3])
				time.Sleep(200 * time.Millisecond)
			}
		})
	}
	c.finish()
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

	c.w = newWorkload(t, c.src.DSN)
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
// must reach both sinks.
func (c *chaos) inject(fault string, f func()) {
	c.t.Helper()
	r := c.row(fault)
	before, exits := c.txlogCount(), c.totalExits()
	e0 := [3]int{c.prod.exitCount(), c.repl.exitCount(), c.hist.exitCount()}
	start := time.Now()
	f()
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
	c.t.Logf("%s #%d: %d transactions committed during the fault, pipeline delivering again after %s",
		fault, r.count, after-before, time.Since(start).Round(time.Second))
}

// pause lets the workload run a random while before a fault, so that faults
// land at different points of the stream.
func (c *chaos) pause() { time.Sleep(time.Duration(500+rand.IntN(1500)) * time.Millisecond) }

func (c *chaos) brokerRestart(round int) {
	name := "broker restart (same data dir and ports)"
	if c.realLane && *fullRun {
		name = "broker restart (same data dir and ports; SIGTERM, SIGKILL alternately)"
	}
	switch {
	case !c.realLane:
		c.inject(name, func() { c.pause(); c.dev.Restart(c.t, false, 2*time.Second) })
	case c.real != nil:
		// Odd rounds (the full run) kill the JVM: Apache Kafka must survive
		// SIGKILL with its page-cache writes; kfake's DataDir is a dev store
		// and is only stopped cleanly.
		c.inject(name, func() { c.pause(); c.real.Restart(c.t, round%2 == 1, 2*time.Second) })
	default:
		if round == 0 {
			c.t.Log("broker restart not injected: the real-Kafka lane needs TRIBUTARY_TEST_KAFKA_DIR (the directory of deploy/local/kafka.sh) to restart the broker")
			r := c.row(name)
			r.status = "SKIPPED"
			r.notes = append(r.notes, "real lane without TRIBUTARY_TEST_KAFKA_DIR")
		}
	}
}

// kafkaNetFaults injects the network faults between Kafka and all its
// clients: the producer, both consumers (and the registry-independent
// checks), whose Kafka connections all pass kafkaProxy.
func (c *chaos) kafkaNetFaults(round int) {
	name := "network: producer and consumers <-> Kafka (latency, bandwidth, blackhole, reset)"
	if c.kafkaProxy == nil {
		if round == 0 {
			c.t.Log("Kafka network faults not injected: start the real broker with KAFKA_PROXIED_LISTENER=1 deploy/local/kafka.sh start DIR " +
				"and set TRIBUTARY_TEST_KAFKA_DIR=DIR, so that its clients can be routed through a proxy")
			r := c.row(name)
			r.status = "SKIPPED"
			r.notes = append(r.notes, "real lane without a proxied listener (KAFKA_PROXIED_LISTENER)")
		}
		return
	}
	c.inject(name, func() { c.netFaults(c.kafkaProxy) })
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

func (c *chaos) netFaults(p *harness.Proxy) {
	d := c.plan.netFault
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

// hugeTxn commits one transaction of plan.hugeRows rows while the workload runs.
func (c *chaos) hugeTxn() {
	n := int64(c.plan.hugeRows)
	retry(c.t, "huge transaction", func(ctx context.Context) error {
		base := c.w.nextID.Add(n) - n + 1 // fresh ids on every attempt
		return c.w.txn(ctx, nil, "huge", func(tx pgx.Tx) (int, error) {
			tag, err := tx.Exec(ctx, `INSERT INTO bulk SELECT g, md5(g::text) FROM generate_series($1::bigint, $2::bigint) g`, base, base+n-1)
			return int(tag.RowsAffected()), err
		})
	})
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
