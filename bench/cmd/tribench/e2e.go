package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// CPU components of an end-to-end run, in report order. Result.Parts maps
// them to CPU seconds (and Result.PartsRSS to peak RSS in MB).
const (
	partProducer  = "producer"
	partProdWS    = "producer's walsender"
	partBroker    = "Kafka broker"
	partBrokerJIT = "of which the broker's JIT compiler"
	partConsumer  = "consumer"
	partBackend   = "consumer's target backend"
	partSrcReader = "producer's source backends"
	partNativeWS  = "native walsender"
	partApply     = "native apply worker"
	e2eAppName    = "tribench_e2e"
	e2ePollPeriod = 100 * time.Millisecond
)

// partWithin are the components already counted in another one's figure,
// which the total leaves out.
var partWithin = map[string]bool{partBrokerJIT: true}

var partOrder = []string{partProducer, partProdWS, partSrcReader, partBroker, partBrokerJIT, partConsumer, partBackend, partNativeWS, partApply}

// pidSet samples the CPU of a changing set of server processes (the target
// backends of the consumer's pool): the last reading of every pid seen.
type pidSet struct {
	last map[int]float64
	find func() []int
}

func (s *pidSet) sample() {
	if s.last == nil {
		s.last = map[int]float64{}
	}
	for _, pid := range s.find() {
		if c := procCPU(pid); c >= 0 {
			s.last[pid] = c
		}
	}
	for pid := range s.last {
		if c := procCPU(pid); c >= 0 {
			s.last[pid] = c
		}
	}
}

func (s *pidSet) value() float64 {
	if len(s.last) == 0 {
		return -1
	}
	var sum float64
	for _, c := range s.last {
		sum += c
	}
	return sum
}

// withParam adds key=value to a URL-form DSN.
func withParam(dsn, key, value string) string {
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	return dsn + sep + key + "=" + value
}

// e2e runs the producer (on slot, publication pub, into prefix's topics)
// and a consumer (name, into the target) at the same time, as they are
// deployed, until the consumer's checkpoint in the target holds the
// backlog's last transaction (the one whose commit ends at end); then it
// stops both and checks the target. Time runs from the start of both
// processes. The CPU of every component is read when the target is done:
// the producer, its walsender, the broker (its CPU during the run), the
// consumer and its target backend(s).
func (b *Bench) e2e(ctx context.Context, rep int, wl, prefix, slot, pub, end string, rows int64, name, check, want string) *Result {
	r := newResult(rep, wl, peerE2E, rows)
	commit := b.commitOf[end]
	if commit == "" {
		return r.fail("no commit LSN recorded for the backlog ending at %s", end)
	}
	tag := fmt.Sprintf("%s-%d", strings.TrimSuffix(chartName(wl), ".svg"), rep)
	pargs := append(b.producerArgs(prefix, slot, pub, "never"), b.producerExtra("e2e-"+tag)...)
	cargs := []string{b.bin, "consumer", "--brokers", b.kafka.Brokers, "--registry", b.reg, "--prefix", prefix,
		"--name", name, "--target", withParam(b.tgt.DSN, "application_name", e2eAppName), "--create-tables", "--log-format", "json"}
	cargs = append(cargs, b.consumerExtra("e2e-"+tag)...)
	r.Cmd = b.tributaryCmd(pargs) + "\n" + b.tributaryCmd(cargs) + "\n# both started together; done when the consumer's checkpoint reaches commit LSN " + commit
	broker0 := b.kafka.mark()
	t0 := time.Now()
	cp, err := startProc("consumer", b.root, b.logPath("e2e-consumer-"+tag), b.tributaryEnv(), cargs...)
	if err != nil {
		return r.fail("%v", err)
	}
	defer cp.Stop()
	pp, err := startProc("producer", b.root, b.logPath("e2e-producer-"+tag), b.tributaryEnv(), pargs...)
	if err != nil {
		return r.fail("%v", err)
	}
	defer pp.Stop()
	ws := &srvSampler{find: func() int { return b.slotPID(ctx, slot) }}
	be := &pidSet{find: func() []int { return backends(ctx, b.tgt, e2eAppName) }}
	q := `SELECT coalesce((SELECT max(commit_lsn) >= $1::pg_lsn FROM public.tributary_checkpoint WHERE consumer = $2), false)::text`
	err = pollUntil(b.cfg.Timeout, e2ePollPeriod, func() (bool, error) {
		if pp.Exited() {
			return false, fmt.Errorf("producer exited: %v\n%s", pp.err, pp.Tail(15))
		}
		if cp.Exited() {
			return false, fmt.Errorf("consumer exited: %v\n%s", cp.err, cp.Tail(15))
		}
		ws.sample()
		be.sample()
		v, err := b.tgt.QueryVal(ctx, q, commit, name)
		if err != nil && strings.Contains(err.Error(), "does not exist") {
			return false, nil // the consumer has not created its checkpoint table yet
		}
		return v == "true", err
	})
	r.Secs = time.Since(t0).Seconds()
	ws.sample()
	be.sample()
	r.Parts = map[string]float64{
		partProducer: treeCPU(pp.Pid()),
		partProdWS:   ws.value(),
		partConsumer: treeCPU(cp.Pid()),
		partBackend:  be.value(),
	}
	b.kafka.addBrokerCPU(r.Parts, broker0)
	r.PartsRSS = map[string]float64{partProducer: procHWM(pp.Pid()), partConsumer: procHWM(cp.Pid())}
	r.CPU = r.Parts[partProducer] + r.Parts[partConsumer]
	r.SrvCPU = ws.value()
	r.RSSMB = max(r.PartsRSS[partProducer], r.PartsRSS[partConsumer])
	r.Load1 = loadavg()
	if err != nil {
		return r.fail("%v", err)
	}
	got, err := b.tgt.QueryVal(ctx, check)
	if err != nil {
		return r.fail("%v", err)
	}
	if got != want {
		return r.fail("target check %q: got %s, want %s", check, got, want)
	}
	r.Note = "producer and consumer running together; target verified: " + check + " = " + want
	return r
}

// consumerExtra are extra consumer flags from TRIBENCH_CONSUMER_FLAGS, for
// experiments and profiles (recorded in the result's command line); {tag}
// in them becomes the workload, peer and repetition, e.g.
// TRIBENCH_CONSUMER_FLAGS='--cpu-profile /tmp/prof/{tag}.pprof'.
func (b *Bench) consumerExtra(tag string) []string { return extraFlags("TRIBENCH_CONSUMER_FLAGS", tag) }

// producerExtra is consumerExtra for the producer of the drain, end to end,
// snapshot and latency runs: TRIBENCH_PRODUCER_FLAGS.
func (b *Bench) producerExtra(tag string) []string { return extraFlags("TRIBENCH_PRODUCER_FLAGS", tag) }

func extraFlags(env, tag string) []string {
	f := strings.Fields(os.Getenv(env))
	for i := range f {
		f[i] = strings.ReplaceAll(f[i], "{tag}", tag)
	}
	return f
}

// backends are the pids of pg's backends whose application_name is app.
func backends(ctx context.Context, pg *PG, app string) []int {
	c, err := pg.Conn(ctx)
	if err != nil {
		return nil
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE application_name = $1`, app)
	if err != nil {
		return nil
	}
	defer rows.Close()
	var out []int
	for rows.Next() {
		var pid int32
		if rows.Scan(&pid) == nil {
			out = append(out, int(pid))
		}
	}
	return out
}

// brokerMark is a reading of the broker's CPU seconds: its whole process
// (-1 when unknown), and each of its JVM's JIT compiler threads by thread id.
type brokerMark struct {
	total float64
	jit   map[int]float64
}

// mark reads the broker's CPU now.
func (k *Kafka) mark() brokerMark {
	if k.pid == nil {
		return brokerMark{total: -1}
	}
	pid := k.pid()
	if pid <= 0 {
		return brokerMark{total: -1}
	}
	return brokerMark{total: procCPU(pid), jit: jitThreadsCPU(pid)}
}

// to is the CPU the broker used from m to the later reading now: all of
// it, and the part its JIT compiler threads used (-1 when the broker has
// none, as the embedded broker has not). A compiler thread that the JVM
// ended in between takes its share with it, so jit is at least what the
// JIT used.
func (m brokerMark) to(now brokerMark) (total, jit float64) {
	if m.total < 0 || now.total < 0 {
		return -1, -1
	}
	if len(now.jit) == 0 {
		return now.total - m.total, -1
	}
	for tid, c := range now.jit {
		jit += c - m.jit[tid]
	}
	return now.total - m.total, jit
}

// addBrokerCPU records in parts the broker's CPU since m, and its JIT
// compiler's part of it.
func (k *Kafka) addBrokerCPU(parts map[string]float64, m brokerMark) {
	total, jit := m.to(k.mark())
	if total < 0 {
		return
	}
	parts[partBroker] = total
	if jit >= 0 {
		parts[partBrokerJIT] = jit
	}
}

// jitThreadsCPU is the CPU seconds of each HotSpot JIT compiler thread of
// pid ("C1 CompilerThread0", "C2 CompilerThread1", ...: the kernel keeps
// the first 15 bytes of a thread's name).
func jitThreadsCPU(pid int) map[int]float64 {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	out := map[int]float64{}
	for _, t := range tasks {
		comm, err := os.ReadFile(filepath.Join(t, "comm"))
		if err != nil || !strings.Contains(string(comm), "CompilerThre") {
			continue
		}
		tid, err := strconv.Atoi(filepath.Base(t))
		if err != nil {
			continue
		}
		if c := statCPU(filepath.Join(t, "stat"), false); c >= 0 {
			out[tid] = c
		}
	}
	return out
}

// kafkaPID reads the pid file that deploy/local/kafka.sh writes.
func kafkaPID(dir string) func() int {
	return func() int {
		data, err := os.ReadFile(filepath.Join(dir, "run", "kafka.pid"))
		if err != nil {
			return 0
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
		return pid
	}
}
