package chaos

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

var (
	soakFor = flag.Duration("chaos.soak", 0,
		"instead of the rounds, inject faults chosen at random for this `duration`, then run the end-of-run checks (make chaos-soak)")
	soakCheckFaults = flag.Int("chaos.soak-check-faults", 100,
		"in a soak, pause the faults and run the mid-way checks after this many `faults`")
	soakCheckEvery = flag.Duration("chaos.soak-check-every", 10*time.Minute,
		"in a soak, run the mid-way checks after this `duration` of faults too, whichever comes first")
)

const (
	// soakGap is the longest random gap between two soak faults, during
	// which only the workload runs.
	soakGap = 3 * time.Second
	// soakMargin is the least time go test's -timeout must leave beyond
	// -chaos.soak for the set-up, the last fault, the end-of-run checks and
	// the negative control.
	soakMargin = 30 * time.Minute
	midwayRow  = "mid-way checks (verify of both sinks; Kafka: each txlog id once; history: one row per change; money)"
)

// soakRun is the record of a soak: what was injected, in which order, the
// mid-way checks that passed, and where the first failure happened.
type soakRun struct {
	length   time.Duration // -chaos.soak
	start    time.Time     // of the injection
	injected time.Duration // how long the injection lasted, once it is over
	weights  map[string]int
	steps    []soakStep
	checks   []soakCheck
	// steps[lastCheck:] are the faults since the last mid-way check that
	// passed: the sequence that led to a failure.
	lastCheck int
	// now says what the soak is doing, for the report of a failure.
	now string
}

// soakStep is one injected fault.
type soakStep struct {
	at       time.Duration // since the injection started
	fault    string
	detail   string // what the fault drew (a duration, a size, a mode)
	inflight int64  // source transactions committed during the fault
	took     time.Duration
	done     bool // the pipeline delivered again after it
}

func (s soakStep) String() string {
	d := s.fault
	if s.detail != "" {
		d += " (" + s.detail + ")"
	}
	if !s.done {
		return fmt.Sprintf("at %s: %s: in progress", s.at.Round(time.Second), d)
	}
	return fmt.Sprintf("at %s: %s: %d transactions in flight, delivering again after %s",
		s.at.Round(time.Second), d, s.inflight, s.took.Round(time.Second))
}

// soakCheck is one mid-way check that passed.
type soakCheck struct {
	afterFault int
	at         time.Duration
	took       time.Duration
	txns       int // source transactions the checks covered
	changes    int
}

// newSoakRun checks that go test's -timeout leaves room for the soak, before
// anything starts.
func newSoakRun(t *testing.T, length time.Duration) *soakRun {
	if dl, ok := t.Deadline(); ok && time.Until(dl) < length+soakMargin {
		t.Fatalf("go test -timeout leaves %s, and a %s soak needs at least %s more than -chaos.soak for the set-up and the "+
			"end-of-run checks (make chaos-soak gives it an hour more)", time.Until(dl).Round(time.Second), length, soakMargin)
	}
	return &soakRun{length: length, weights: map[string]int{}, now: "the set-up"}
}

// runSoak injects faults chosen at random, by weight, one at a time with a
// random gap before each, until -chaos.soak has passed. Every
// -chaos.soak-check-faults faults or -chaos.soak-check-every, whichever
// comes first, it pauses and runs the mid-way checks. Every random choice
// comes from the seeded c.rng, so the same seed gives the same fault
// sequence, sizes and gaps (the workload and the timings differ).
func (c *chaos) runSoak() {
	s, t := c.soak, c.t
	var pool []fault
	total := 0
	for _, f := range c.faults() {
		if f.skip != "" {
			c.skipFault(f)
			continue
		}
		c.row(f.name) // the table lists the faults in table order
		pool = append(pool, f)
		s.weights[f.name] = f.weight
		total += f.weight
	}
	var w []string
	for _, f := range pool {
		w = append(w, fmt.Sprintf("%s %d", f.name, f.weight))
	}
	t.Logf("soak: %s of faults, chosen by weight (total %d): %s", s.length, total, strings.Join(w, "; "))

	// A sink creates a table at its first change, and the mid-way checks
	// compare every published table, so bulk gets a row before the huge
	// transaction, which may come late or never in a soak.
	retry(t, "first bulk row", func(ctx context.Context) error {
		return c.w.txn(ctx, nil, "bulk-row", func(tx pgx.Tx) (int, error) {
			tag, err := tx.Exec(ctx, `INSERT INTO bulk VALUES ($1, 'first')`, c.w.id())
			return int(tag.RowsAffected()), err
		})
	})
	c.probe(nil)

	s.start = time.Now()
	end := s.start.Add(s.length)
	sinceCheck := time.Now()
	for {
		time.Sleep(time.Duration(c.rng.Int64N(int64(soakGap))))
		if !time.Now().Before(end) {
			break
		}
		f := pickFault(c.rng, pool, total)
		n := c.row(f.name).count
		i := len(s.steps)
		s.steps = append(s.steps, soakStep{at: time.Since(s.start), fault: f.name})
		s.now = fmt.Sprintf("fault #%d (%s), %s into the soak", i+1, f.name, s.steps[i].at.Round(time.Second))
		t.Logf("soak fault #%d at %s: %s", i+1, s.steps[i].at.Round(time.Second), f.name)
		inflight, took := c.inject(f.name, func() string {
			s.steps[i].detail = f.run(n)
			return s.steps[i].detail
		})
		s.steps[i].inflight, s.steps[i].took, s.steps[i].done = inflight, took, true
		if len(s.steps)-s.lastCheck >= *soakCheckFaults || time.Since(sinceCheck) >= *soakCheckEvery {
			c.midwayCheck()
			sinceCheck = time.Now()
		}
	}
	s.injected = time.Since(s.start)
	s.now = "the end-of-run checks"
	t.Logf("soak: %d faults in %s; %d mid-way checks passed; stopping the workload for the end-of-run checks",
		len(s.steps), s.injected.Round(time.Second), len(s.checks))
}

// pickFault picks a fault from pool with probability weight/total.
func pickFault(rng *rand.Rand, pool []fault, total int) fault {
	x := rng.IntN(total)
	for _, f := range pool {
		if x < f.weight {
			return f
		}
		x -= f.weight
	}
	panic("pickFault: weights do not sum to total")
}

// midwayCheck pauses the workload, lets the pipeline catch up and runs the
// checks that need no stopped component: verify of the replica and of the
// history (with --check-history), each source transaction once in Kafka,
// one history row per change, the money total. It restarts the workload
// when they pass and ends the test when one fails, so that a failure is
// reported near the faults that caused it.
func (c *chaos) midwayCheck() {
	s, t := c.soak, c.t
	r := c.row(midwayRow)
	after := len(s.steps)
	start, exits := time.Now(), c.totalExits()
	s.now = fmt.Sprintf("the mid-way check after fault #%d, %s into the soak", after, time.Since(s.start).Round(time.Second))
	t.Logf("soak: mid-way check after fault #%d: pausing the workload", after)
	failed := false
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		failed = true
		r.status = "FAILED"
		r.notes = append(r.notes, fmt.Sprintf("after fault #%d: %s", after, msg))
		t.Error(msg)
	}

	c.quiesce(r)
	c.checkVerify(fail, "--timeout", "5m")
	c.checkVerify(fail, "--sink", "history", "--check-history", "--timeout", "5m")
	c.waitSlotConfirmed() // verify's barriers are in Kafka: nothing more is written to it
	tb := &scopedTB{TB: t}
	untilStopped(func() { c.checkKafka(&failTB{TB: tb, fail: fail}, fail) })
	tb.close()
	c.checkHistory(fail)
	c.checkMoney(fail)
	r.count++
	r.exits += c.totalExits() - exits
	if failed {
		t.FailNow()
	}
	s.checks = append(s.checks, soakCheck{afterFault: after, at: time.Since(s.start), took: time.Since(start),
		txns: c.sourceTxns, changes: c.sourceChanges})
	s.lastCheck = after
	t.Logf("soak: mid-way check after fault #%d passed in %s (%d source transactions, %d row changes); faults so far: %s",
		after, time.Since(start).Round(time.Second), c.sourceTxns, c.sourceChanges, c.faultCounts())
	c.w.start(c.plan.workers)
}

// faultCounts lists how many times each fault was injected so far.
func (c *chaos) faultCounts() string {
	var out []string
	for _, r := range c.results {
		if _, ok := c.soak.weights[r.fault]; ok {
			out = append(out, fmt.Sprintf("%s %d", r.fault, r.count))
		}
	}
	return strings.Join(out, "; ")
}

// scopedTB runs what is registered with its Cleanup when close is called,
// so that a mid-way check's Kafka clients do not stay open until the test
// ends.
type scopedTB struct {
	testing.TB
	cleanups []func()
}

func (s *scopedTB) Cleanup(f func()) { s.cleanups = append(s.cleanups, f) }

func (s *scopedTB) close() {
	for i := len(s.cleanups) - 1; i >= 0; i-- {
		s.cleanups[i]()
	}
	s.cleanups = nil
}

// soakRowStatus gives the results table's rows the soak's view: a fault
// in progress when the test stopped failed, and a fault never drawn did
// not pass anything.
func (c *chaos) soakRowStatus() {
	s := c.soak
	if n := len(s.steps); n > 0 && !s.steps[n-1].done && c.t.Failed() {
		r := c.row(s.steps[n-1].fault)
		if r.status == "PASS" {
			r.status = "FAILED"
		}
		r.notes = append(r.notes, fmt.Sprintf("the test stopped during fault #%d", n))
	}
	for _, r := range c.results {
		if _, ok := s.weights[r.fault]; ok && r.count == 0 && r.status == "PASS" {
			r.status = "not drawn"
		}
	}
}

// soakSection is the soak's part of the report, in Markdown.
func (c *chaos) soakSection() string {
	s := c.soak
	var b strings.Builder
	b.WriteString("\nSoak:\n\n")
	injected := s.injected
	if injected == 0 && !s.start.IsZero() {
		injected = time.Since(s.start) // the soak ended early
	}
	fmt.Fprintf(&b, "- duration: %s of fault injection (-chaos.soak %s)\n", injected.Round(time.Second), s.length)
	fmt.Fprintf(&b, "- seed: %d (`-chaos.seed %d` repeats the fault sequence, sizes and gaps; the workload and timings differ)\n", c.seed, c.seed)
	perHour := 0.0
	if injected > 0 {
		perHour = float64(len(s.steps)) / injected.Hours()
	}
	fmt.Fprintf(&b, "- faults: %d, one at a time, each after a random gap of 0-%s (%.0f per hour of injection, mid-way checks included)\n",
		len(s.steps), soakGap, perHour)
	b.WriteString("\n| fault | weight | injected |\n| --- | ---: | ---: |\n")
	for _, r := range c.results {
		if w, ok := s.weights[r.fault]; ok {
			fmt.Fprintf(&b, "| %s | %d | %d |\n", r.fault, w, r.count)
		}
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "- source transactions: %d (%d row changes), at the last Kafka check\n", c.sourceTxns, c.sourceChanges)
	end := "not reached"
	for _, r := range c.results {
		if r.fault == "end-of-run checks" {
			end = r.status
		}
	}
	fmt.Fprintf(&b, "- checks passed: %d mid-way, end-of-run %s\n", len(s.checks), end)
	for i, ch := range s.checks {
		fmt.Fprintf(&b, "  %d. after fault #%d, %s into the soak: %d source transactions, %d row changes; took %s\n",
			i+1, ch.afterFault, ch.at.Round(time.Second), ch.txns, ch.changes, ch.took.Round(time.Second))
	}
	fmt.Fprintf(&b, "- component self-exits (restarted by the supervisor): producer %d, PostgreSQL consumer %d, history consumer %d\n",
		exitsOf(c.prod), exitsOf(c.repl), exitsOf(c.hist))
	if !c.t.Failed() {
		b.WriteString("- first failure: none\n")
		return b.String()
	}
	var msgs []string
	for _, r := range c.results {
		if r.status == "FAILED" && len(r.notes) > 0 {
			msg := strings.ReplaceAll(strings.Join(r.notes, "; "), "\n", " ")
			if len(msg) > 1500 { // the whole text is in the table above
				msg = msg[:500] + " ... " + msg[len(msg)-1000:]
			}
			msgs = append(msgs, r.fault+": "+msg)
		}
	}
	if len(msgs) == 0 {
		msgs = append(msgs, "the message is in the test log (a helper stopped the test)")
	}
	fmt.Fprintf(&b, "- first failure: during %s, seed %d: %s\n", s.now, c.seed, strings.Join(msgs, "; "))
	fmt.Fprintf(&b, "- the faults since the last passed check (#%d to #%d):\n", s.lastCheck+1, len(s.steps))
	for i := s.lastCheck; i < len(s.steps); i++ {
		fmt.Fprintf(&b, "  %d. %s\n", i+1, s.steps[i])
	}
	return b.String()
}

func exitsOf(s *supervised) int {
	if s == nil {
		return 0
	}
	return s.exitCount()
}
