// Command tribench is Tributary's benchmark runner (`make bench`). It starts
// throw-away PostgreSQL 15 clusters and one Apache Kafka broker, runs every
// workload against Tributary and its peers side by side (pg_recvlogical,
// Debezium Server, native logical replication, COPY), repeats each run and
// writes the medians to docs/BENCHMARKS.md with SVG charts in docs/bench/.
//
//	go run ./bench/cmd/tribench            # full run: 3 repetitions, 500,000-row backlogs
//	go run ./bench/cmd/tribench --quick    # smoke run: 1 repetition, small sizes
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Result is one measurement of one peer in one repetition.
type Result struct {
	Workload  string
	Peer      string
	Rep       int
	Rows      int64
	Secs      float64 // wall seconds from process start (or ENABLE) to done
	StartSecs float64 // seconds until the first output was seen; -1 unknown
	CPU       float64 // CPU seconds of the measured client process; -1 unknown
	SrvCPU    float64 // CPU seconds of the server-side process (walsender / apply worker); -1 unknown
	RSSMB     float64 // peak RSS of the client process in MB; -1 unknown
	Load0     string
	Load1     string
	Cmd       string
	Err       string
	Note      string
	// latency workloads
	P50, P99, Max float64 // ms, source commit -> target commit
	AP50, AP99    float64 // ms, source commit -> target apply (trigger)
	Rate          float64 // achieved source tx/s (latency), pgbench TPS (tps)
	Samples       int
	// source commit -> committed frame readable in Kafka (latency workloads), ms
	KP50, KP99, KMax float64
	LagMB            float64 // tps: slot lag behind the WAL insert position when pgbench ended, MB
	Run              string  // the run (Bench.runID) that measured it
	// Parts is the CPU seconds of each component of an end-to-end run
	// (producer, its walsender, broker, consumer, its target backend; native:
	// walsender and apply worker); PartsRSS the peak RSS in MB of some.
	Parts    map[string]float64 `json:",omitempty"`
	PartsRSS map[string]float64 `json:",omitempty"`

	loadStart time.Time // latency: when the paced load began
}

func (r *Result) RowsPerSec() float64 {
	if r.Err != "" || r.Secs <= 0 {
		return -1
	}
	return float64(r.Rows) / r.Secs
}

type Config struct {
	Quick      bool
	Reps       int
	N          int
	BigRows    int
	SnapRows   int
	LatSecs    int
	LatRates   string
	Out        string
	SkipDbz    bool
	Only       string
	DbzVersion string
	Timeout    time.Duration
	Bin        string
	GoMaxProcs int
	MixN       int
	PgbenchTx  int
	ToastRows  int
	DuckRows   int
	TPSSecs    int
	RepsFor    string
	Deadline   string
}

type Bench struct {
	cfg      Config
	root     string
	cache    string
	bin      string
	pgbin    string
	kafka    *Kafka
	reg      string
	src      *PG
	tgt      *PG
	nat      *PG
	dbzHome  string
	dbzJava  string
	dbzJavaV string
	dbzErr   string
	results  []*Result
	prev     *resultSet // results.json as it was before this run
	duck     *duckBacklog
	took     map[string]time.Duration // each step's time in repetition 1
	skipped  []string                 // steps that --deadline left out of a repetition
	started  time.Time
	ended    time.Time
	runID    string
	load0    string
	commitOf map[string]string // a backlog's end LSN -> its last transaction's commit LSN
}

func main() {
	var c Config
	flag.BoolVar(&c.Quick, "quick", false, "smoke run: 1 repetition and small sizes")
	flag.IntVar(&c.Reps, "reps", 0, "repetitions per comparison (default 3, or 1 with --quick)")
	flag.IntVar(&c.N, "n", 0, "single-row transactions in each backlog (default 500000, or 20000 with --quick)")
	flag.IntVar(&c.BigRows, "big-rows", 0, "rows in the one big transaction (default 1000000, or 100000 with --quick)")
	flag.IntVar(&c.SnapRows, "snapshot-rows", 0, "rows in the snapshot table (default 5000000, or 200000 with --quick)")
	flag.IntVar(&c.LatSecs, "latency-secs", 0, "seconds of steady load per latency run (default 20, or 10 with --quick)")
	flag.StringVar(&c.LatRates, "latency-rates", "", "latency runs as TXPS[xROWS],... (default 1000,1000x5,1000x10 = 1k, 5k, 10k rows/s; quick 1000,1000x5)")
	flag.IntVar(&c.MixN, "mix-n", 0, "single-row INSERT/UPDATE/DELETE transactions in the mixed backlog (default 200000, or 20000 with --quick)")
	flag.IntVar(&c.PgbenchTx, "pgbench-tx", 0, "pgbench TPC-B-like transactions in the pgbench backlog (default 50000, or 4000 with --quick)")
	flag.IntVar(&c.ToastRows, "toast-rows", 0, "rows with a 16-KB TOASTed jsonb in the wide-row backlogs (default 20000, or 2000 with --quick)")
	flag.IntVar(&c.DuckRows, "duckdb-rows", 0, "row changes in the DuckDB sink's backlog, half inserts, half updates (default 2000000, or 200000 with --quick)")
	flag.IntVar(&c.TPSSecs, "tps-secs", 0, "seconds of pgbench per source-TPS measurement (default 20, or 5 with --quick)")
	flag.StringVar(&c.RepsFor, "reps-for", "", "fewer repetitions for some workloads, e.g. tps=1,pgbench=2 (selectors as for --only)")
	flag.StringVar(&c.Deadline, "deadline", "", "HH:MM UTC: after repetition 1, skip a repetition of a new workload (mix, pgbench, toast, duckdb, tps) when it and the rest of the original workloads would not finish by then, and of an original one when it alone would not")
	flag.StringVar(&c.Out, "out", "docs/BENCHMARKS.md", "report file (charts go to docs/bench/)")
	flag.BoolVar(&c.SkipDbz, "skip-debezium", false, "do not run Debezium Server")
	flag.StringVar(&c.Only, "only", "", "run only these workloads: "+strings.Join(selectors, ","))
	flag.StringVar(&c.DbzVersion, "debezium-version", envOr("DEBEZIUM_VERSION", "3.0.0.Final"), "io.debezium:debezium-server-dist version")
	flag.StringVar(&c.Bin, "bin", "bin/tributary", "the tributary binary under test (relative to the repository root, or absolute)")
	flag.IntVar(&c.GoMaxProcs, "gomaxprocs", 1, "GOMAXPROCS of the tributary processes under test: 1, as deploy/README.md advises where they share "+
		"a machine's cores with PostgreSQL and Kafka; 0 leaves the Go runtime's default (one per core)")
	flag.Parse()
	def := func(v *int, full, quick int) {
		if *v <= 0 {
			if c.Quick {
				*v = quick
			} else {
				*v = full
			}
		}
	}
	def(&c.Reps, 3, 1)
	def(&c.N, 500000, 20000)
	def(&c.BigRows, 1000000, 100000)
	def(&c.SnapRows, 5000000, 200000)
	def(&c.LatSecs, 20, 10)
	def(&c.MixN, 200000, 20000)
	def(&c.PgbenchTx, 50000, 4000)
	def(&c.ToastRows, 20000, 2000)
	def(&c.DuckRows, 2000000, 200000)
	def(&c.TPSSecs, 20, 5)
	if c.LatRates == "" {
		if c.Quick {
			c.LatRates = "1000,1000x5"
		} else {
			c.LatRates = "1000,1000x5,1000x10"
		}
	}
	if c.GoMaxProcs < 0 {
		fatal(fmt.Errorf("--gomaxprocs %d: want 0 (the Go runtime's default) or more", c.GoMaxProcs))
	}
	c.Timeout = 20 * time.Minute
	if c.Quick {
		c.Timeout = 5 * time.Minute
	}
	root, err := os.Getwd()
	if err != nil {
		fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		fatal(fmt.Errorf("run tribench from the repository root: %v", err))
	}
	b := &Bench{cfg: c, root: root, cache: filepath.Join(root, ".cache", "bench"),
		bin: c.Bin, pgbin: envOr("PG_BINDIR", "/usr/lib/postgresql/15/bin"),
		runID: fmt.Sprintf("b%d", time.Now().Unix()%100000), took: map[string]time.Duration{}, commitOf: map[string]string{}}
	if c.Deadline != "" {
		if _, err := time.Parse("15:04", c.Deadline); err != nil {
			fatal(fmt.Errorf("--deadline %q: want HH:MM (UTC)", c.Deadline))
		}
	}
	if !filepath.IsAbs(b.bin) {
		b.bin = filepath.Join(root, b.bin)
	}
	if _, err := os.Stat(b.bin); err != nil {
		fatal(fmt.Errorf("%s missing: run `make build` first", b.bin))
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	go func() { <-ctx.Done(); stopping.Store(true) }()
	if err := b.run(ctx); err != nil {
		logf("FAILED: %v", err)
		b.cleanup()
		os.Exit(1)
	}
	b.cleanup()
}

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "tribench:", err)
	os.Exit(1)
}

func (b *Bench) want(w string) bool {
	if b.cfg.Only == "" {
		return true
	}
	if w == "" {
		return false
	}
	for _, x := range strings.Split(b.cfg.Only, ",") {
		if strings.TrimSpace(x) == w {
			return true
		}
	}
	return false
}

func (b *Bench) cleanup() {
	ctx := context.Background()
	for _, p := range []*PG{b.src, b.tgt, b.nat} {
		if p != nil {
			p.Stop(ctx)
		}
	}
	if b.kafka != nil && b.kafka.stop != nil {
		b.kafka.stop()
	}
}

func (b *Bench) run(ctx context.Context) error {
	b.started = time.Now()
	b.load0 = loadavg()
	if err := os.MkdirAll(filepath.Join(b.cache, "logs"), 0o755); err != nil {
		return err
	}
	logf("config: %+v", b.cfg)
	for _, x := range strings.Split(b.cfg.Only, ",") {
		if x = strings.TrimSpace(x); x != "" && !slices.Contains(selectors, x) {
			return fmt.Errorf("--only %s: unknown workload; choose from %s", x, strings.Join(selectors, ","))
		}
	}
	if _, err := b.repsFor(""); err != nil {
		return err
	}
	var err error
	if b.prev, err = loadResults(b.resultsPath()); err != nil {
		return err
	}
	if !b.cfg.SkipDbz && (b.want("drain") || b.want("mix") || b.want("pgbench") || b.want("toast") || b.want("tps")) {
		if b.dbzHome, err = b.fetchDebezium(ctx); err == nil {
			b.dbzJava, b.dbzJavaV, err = javaForDebezium()
		}
		if err != nil {
			b.dbzHome = ""
			b.dbzErr = err.Error()
			logf("Debezium Server unavailable: %v", err)
		}
	} else {
		b.dbzErr = "not run (--skip-debezium or not selected)"
	}
	if b.kafka, err = startKafka(ctx, b.root, b.bin, b.cache); err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	logf("kafka: %s at %s", b.kafka.Kind, b.kafka.Brokers)
	t0 := time.Now()
	if err := b.kafka.WarmUp(ctx); err != nil {
		return fmt.Errorf("kafka warm-up: %w", err)
	}
	logf("kafka: internal topics created in %.1fs", time.Since(t0).Seconds())
	var stopReg func()
	if b.reg, stopReg, err = startRegistry(); err != nil {
		return err
	}
	defer stopReg()
	if b.src, err = startPG(ctx, b.root, "source", "/tmp/tb-"+b.runID+"-src"); err != nil {
		return err
	}
	if b.tgt, err = startPG(ctx, b.root, "target (tributary consumer)", "/tmp/tb-"+b.runID+"-tgt"); err != nil {
		return err
	}
	if b.nat, err = startPG(ctx, b.root, "target (native subscription)", "/tmp/tb-"+b.runID+"-nat"); err != nil {
		return err
	}
	// A re-enabled subscription's worker otherwise waits up to 5 s to start.
	if err := b.nat.Exec(ctx, `ALTER SYSTEM SET wal_retrieve_retry_interval = '200ms'`, `SELECT pg_reload_conf()`); err != nil {
		return err
	}
	for rep := 1; rep <= b.cfg.Reps; rep++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		logf("===== repetition %d of %d =====", rep, b.cfg.Reps)
		if err := b.rep(ctx, rep); err != nil {
			// Keep what this run finished; the failed workload keeps its partial rows.
			b.ended = time.Now()
			if werr := b.writeReport(); werr != nil {
				logf("writing the report: %v", werr)
			}
			return fmt.Errorf("repetition %d: %w", rep, err)
		}
		// Write the report after every repetition so a long run leaves something behind.
		b.ended = time.Now()
		if err := b.writeReport(); err != nil {
			return err
		}
	}
	if b.duck != nil {
		b.kafka.DeletePrefix(ctx, b.duck.prefix)
	}
	b.ended = time.Now()
	logf("done in %s; report in %s", b.ended.Sub(b.started).Round(time.Second), b.cfg.Out)
	return b.writeReport()
}

func (b *Bench) add(r *Result) {
	r.Run = b.runID
	b.results = append(b.results, r)
	if r.Err != "" {
		logf("%s / %s rep %d: ERROR %s", r.Workload, r.Peer, r.Rep, oneLine(r.Err))
		return
	}
	if r.Workload == wTPS {
		logf("%s / %s rep %d: %.0f TPS, slot lag %.1f MB, capture CPU %.2fs", r.Workload, r.Peer, r.Rep, r.Rate, r.LagMB, r.CPU)
		return
	}
	if r.Samples > 0 {
		logf("%s / %s rep %d: p50 %.1f ms p99 %.1f ms max %.1f ms (%d samples, %.0f tx/s)", r.Workload, r.Peer, r.Rep, r.P50, r.P99, r.Max, r.Samples, r.Rate)
		return
	}
	logf("%s / %s rep %d: %d rows in %.2fs = %.0f rows/s, cpu %.2fs, srv cpu %.2fs, rss %.0f MB (load %s -> %s)",
		r.Workload, r.Peer, r.Rep, r.Rows, r.Secs, r.RowsPerSec(), r.CPU, r.SrvCPU, r.RSSMB, r.Load0, r.Load1)
}
