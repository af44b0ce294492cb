package integration

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tributary-cdc/tributary/integration/harness"
)

// reseedArgs are the flags of `tributary reseed` re-instantiating lost from
// donor, whose consumer of donor's stream is from_<donor>.
func reseedArgs(donor, lost *msSite, extra ...string) []string {
	return append([]string{"reseed", "--donor", donor.env.pg.DSN, "--target", lost.env.pg.DSN, "--publication", "pub",
		"--brokers", strings.Join(donor.env.kafka.Brokers, ","), "--registry", donor.env.kafka.RegistryURL,
		"--prefix", donor.env.prefix, "--site-prefix", lost.env.prefix, "--consumer", "from_" + donor.name,
		"--donor-site", donor.name, "--log-format", "json"}, extra...)
}

// runReseed runs `tributary reseed` to its end and returns its exit code and output.
func runReseed(t *testing.T, args []string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, harness.Binary(t), args...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatalf("tributary reseed: %v\n%s", err, out)
	}
	return 0, string(out)
}

// TestMultisiteReseedLostSite runs three sites in a full mesh under load.
// Site B loses its data: its processes stop, and its tables, checkpoints,
// conflict records, slot and replication origins are wiped; A had not yet
// applied B's last changes. `tributary reseed` first refuses while a
// consumer of B is connected, and while B's tables have rows; then it waits
// for A's consumer of B to apply B's whole stream, and re-instantiates B
// from A while A and C keep taking writes. B's consumers of A and C and its producer start again, the
// load runs at all three sites, and after catch-up: all sites are equal;
// every balance is 1000 plus its ledger increments (nothing applied twice,
// nothing lost, including C's changes that A had or had not applied when it
// was copied); and B's producer published only B's own new transactions,
// never the copied rows.
func TestMultisiteReseedLostSite(t *testing.T) {
	sites := newSites(t, "accounts, ledger", surviveDDL, "A", "B", "C")
	a, b, c := sites[0], sites[1], sites[2]
	var procs []*harness.Proc
	for _, s := range sites {
		procs = append(procs, s.produceProc(t))
	}
	pb := procs[1]
	defer func() {
		if t.Failed() {
			for i, p := range procs {
				t.Logf("producer %s:\n%s", sites[i].name, lastLines(p.Output(), 15))
			}
		}
	}()
	var stopB []func()
	var stopAofB func()
	for _, s := range sites {
		for _, from := range sites {
			if from == s {
				continue
			}
			_, stop := s.consumeStoppable(t, from, surviveYAML)
			if s == b {
				stopB = append(stopB, stop)
			}
			if s == a && from == b {
				stopAofB = stop
			}
		}
	}
	loads := []*siteLoad{startLoad(t, a, 0, 1), startLoad(t, b, 0, 1), startLoad(t, c, 0, 1)}
	time.Sleep(4 * time.Second)

	// A consumer of B is still connected: reseed refuses.
	if code, out := runReseed(t, reseedArgs(a, b, "--force")); code != 2 || !strings.Contains(out, "consumer is connected") {
		t.Fatalf("reseed with B's consumers running: exit %d, want 2 naming the connected consumer:\n%s", code, out)
	}

	// A's consumer of B stops; B writes on, then stops taking writes, and
	// once its producer has published it all (C has it) B's processes stop
	// and its data is lost. A has not applied B's last changes.
	waitValue(t, a, "true", `SELECT (count(*) > 0)::text FROM ledger WHERE site = 'B'`)
	stopAofB()
	time.Sleep(time.Second)
	if errs := loads[1].stop(); len(errs) > 0 {
		t.Fatalf("load at B: %v", errs[0])
	}
	madeB := b.query(t, `SELECT count(*)::text FROM ledger WHERE site = 'B'`)
	waitValue(t, c, madeB, `SELECT count(*)::text FROM ledger WHERE site = 'B'`)
	pb.Kill()
	for _, stop := range stopB {
		stop()
	}
	if code, out := runReseed(t, reseedArgs(a, b)); code != 2 || !strings.Contains(out, "has rows") {
		t.Fatalf("reseed into B's non-empty tables without --force: exit %d, want 2 naming the table:\n%s", code, out)
	}
	b.env.pg.Exec(t, `TRUNCATE accounts, ledger, tributary_checkpoint, tributary_conflicts, tributary_row_meta`,
		`SELECT pg_drop_replication_slot('slot')`,
		`SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin`)

	// The reseed waits for A to apply B's whole stream before it copies:
	// it is still waiting while A's consumer of B is stopped.
	proc := harness.StartTributary(t, nil, reseedArgs(a, b)...)
	mustWaitOutput(t, proc, "waiting for the donor's consumers of the target's own stream", time.Minute)
	if done, _ := proc.Exited(); done {
		t.Fatalf("reseed should wait for A's consumer of B, but it exited:\n%s", proc.Output())
	}
	a.consumeStoppable(t, b, surviveYAML)
	done, err := proc.Wait(3 * time.Minute)
	if !done {
		t.Fatalf("reseed did not finish in 3 minutes:\n%s", proc.Output())
	}
	if err != nil {
		t.Fatalf("reseed B from A: %v\n%s", err, proc.Output())
	}
	out := proc.Output()
	t.Logf("reseed:\n%s", lastLines(out, 12))
	if got := b.query(t, `SELECT count(DISTINCT consumer)::text FROM tributary_checkpoint`); got != "2" {
		t.Fatalf("B has checkpoints of %s consumers after the reseed, want from_A and from_C", got)
	}
	if got := b.query(t, `SELECT (count(*) > 0)::text FROM tributary_row_meta`); got != "true" {
		t.Fatalf("A's conflict metadata (who wrote the rows its consumers applied) was not copied to B")
	}
	if !strings.Contains(out, "Checkpoints written for consumers from_A, from_C") {
		t.Fatalf("reseed's summary should name the consumers whose checkpoints it wrote:\n%s", out)
	}

	// B comes back: producer (no snapshot: the copy is not B's to publish), consumers, load.
	procs[1] = b.produceProc(t)
	b.consumeStoppable(t, a, surviveYAML)
	b.consumeStoppable(t, c, surviveYAML)
	loads[1] = startLoad(t, b, 1, 1)
	time.Sleep(4 * time.Second)
	for _, l := range loads {
		if errs := l.stop(); len(errs) > 0 {
			t.Fatalf("load: %v", errs[0])
		}
	}
	waitEqual(t, "ledger", a, b, c)
	waitEqual(t, "accounts", a, b, c)
	verifySites(t, a, b)
	verifySites(t, c, b)
	checkLedgerBalances(t, a)
	for _, p := range procs {
		p.Kill()
	}
	// B's log: B's own transactions from before the loss and after the
	// reseed, each once; none of the copied rows.
	for _, s := range sites {
		checkOwnLog(t, s)
	}
}
