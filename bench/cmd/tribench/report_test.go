package main

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestBrokerMarkTo checks the broker's CPU between two readings: a compiler
// thread started in between counts from zero, one that ended counts
// nothing, and a broker without compiler threads has no JIT part.
func TestBrokerMarkTo(t *testing.T) {
	m0 := brokerMark{total: 10, jit: map[int]float64{1: 2, 2: 3}}
	m1 := brokerMark{total: 14.5, jit: map[int]float64{1: 2.5, 3: 1}}
	if total, jit := m0.to(m1); total != 4.5 || jit != 1.5 {
		t.Errorf("to = %v, %v; want 4.5, 1.5", total, jit)
	}
	if total, jit := (brokerMark{total: 1}).to(brokerMark{total: 3}); total != 2 || jit != -1 {
		t.Errorf("without compiler threads: to = %v, %v; want 2, -1", total, jit)
	}
	if total, _ := (brokerMark{total: -1}).to(m1); total != -1 {
		t.Errorf("from an unknown reading: total = %v, want -1", total)
	}
}

// TestPartsTableCountsJITOnce checks that the components table shows the
// broker's JIT compiler as a column of its own but leaves it out of the
// total, since the broker's figure already holds it.
func TestPartsTableCountsJITOnce(t *testing.T) {
	r := &Result{Workload: wPgbench, Peer: peerProducer, Rows: 1_000_000,
		Parts: map[string]float64{partProducer: 2, partProdWS: 1, partBroker: 4, partBrokerJIT: 1.5}}
	g := &group{workload: wPgbench, peers: []string{peerProducer}, by: map[string][]*Result{peerProducer: {r}}}
	var w strings.Builder
	partsTable(&w, g)
	out := w.String()
	if !strings.Contains(out, "| "+partBroker+" | "+partBrokerJIT+" |") {
		t.Fatalf("no JIT column after the broker's:\n%s", out)
	}
	if !strings.Contains(out, "| "+peerProducer+" | 2.00 | 1.00 | 4.00 | 1.50 | 7.00 |") {
		t.Errorf("want the JIT shown and the total 7.00 (not 8.50):\n%s", out)
	}
}

// TestPartsTablePerRepetitionRows checks that each repetition's CPU is
// divided by its own row count before the median: latency runs end with
// slightly different counts, and a repetition without a component is left
// out of that component's median.
func TestPartsTablePerRepetitionRows(t *testing.T) {
	rs := []*Result{
		{Rows: 100_000, Parts: map[string]float64{partProducer: 1, partConsumer: 3}}, // 10 and 30 per 1M
		{Rows: 50_000, Parts: map[string]float64{partProducer: 1}},                   // 20 per 1M
		{Rows: 200_000, Parts: map[string]float64{partProducer: 6, partConsumer: 4}}, // 30 and 20 per 1M
	}
	if v := medPart(rs, partProducer); v != 20 {
		t.Errorf("producer: median %v per 1M rows, want 20", v)
	}
	if v := medPart(rs, partConsumer); v != 25 {
		t.Errorf("consumer: median %v per 1M rows, want 25 (two repetitions have it)", v)
	}
	if v := medPart(rs, partBroker); v != -1 {
		t.Errorf("broker: %v, want -1 (no repetition has it)", v)
	}
}

// TestProcPeakRSSIsTheChilds checks that a child's peak RSS is its own,
// not the runner's: the runner holds 200 MB while it starts a sleep.
func TestProcPeakRSSIsTheChilds(t *testing.T) {
	held := make([]byte, 200<<20)
	for i := range held {
		held[i] = 1
	}
	p, err := startProc("sleep", t.TempDir(), filepath.Join(t.TempDir(), "sleep.log"), nil, "sleep", "0.3")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(time.Minute); err != nil {
		t.Fatal(err)
	}
	runtime.KeepAlive(held)
	if _, rss := p.Rusage(); rss <= 0 || rss > 50 {
		t.Errorf("peak RSS of sleep = %.1f MB, want its own few MB (the runner holds 200 MB)", rss)
	}
}

// TestTributaryEnv checks that --gomaxprocs reaches a process started as
// the tributary processes are, and that the command line in the report
// says so; 0 leaves the runner's environment alone.
func TestTributaryEnv(t *testing.T) {
	t.Setenv("GOMAXPROCS", "")
	for _, tc := range []struct {
		procs   int
		env     string
		cmdLine string
	}{{1, "1", "GOMAXPROCS=1 sh -c 'printf %s \"$GOMAXPROCS\"'"}, {0, "", "sh -c 'printf %s \"$GOMAXPROCS\"'"}} {
		b := &Bench{cfg: Config{GoMaxProcs: tc.procs}}
		args := []string{"sh", "-c", `printf %s "$GOMAXPROCS"`}
		if got := b.tributaryCmd(args); got != tc.cmdLine {
			t.Errorf("--gomaxprocs %d: command line %q, want %q", tc.procs, got, tc.cmdLine)
		}
		log := filepath.Join(t.TempDir(), "env.log")
		p, err := startProc("env", t.TempDir(), log, b.tributaryEnv(), args...)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Wait(time.Minute); err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(log); err != nil || string(got) != tc.env {
			t.Errorf("--gomaxprocs %d: the process saw GOMAXPROCS=%q (%v), want %q", tc.procs, got, err, tc.env)
		}
	}
}
