package integration

import (
	"strconv"
	"testing"

	"github.com/tributary-cdc/tributary/integration/harness"
)

// TestMultisiteConflictsExactlyOnce is what the team left open: conflict
// notifications were sent again after a target crash. Sites A and B run
// under load that conflicts all the time (additive balances, latest
// labels), their consumers as processes. At B, once enough conflicts are
// recorded, the consumer (which publishes them) is killed with SIGKILL and
// started again; later B's PostgreSQL is stopped with mode immediate while
// its consumer applies and publishes (the apply commits asynchronously, so
// the crash loses its last applies and their conflict records, which it
// applies and records again), and started again. After quiescence the
// sites are equal, every balance is the sum of its increments, and each
// conflicts topic holds every conflict its writer recorded, once, and no
// conflict that the crash lost.
func TestMultisiteConflictsExactlyOnce(t *testing.T) {
	sites := newSites(t, "accounts, ledger", surviveDDL, "A", "B")
	a, b := sites[0], sites[1]
	cfg := conflictsFile(t, surviveYAML)
	for _, s := range sites {
		s.setupMultisite(t, cfg)
	}
	pa, pb := a.produceProc(t), b.produceProc(t)
	ca, cb := a.consumeProc(t, b, cfg), b.consumeProc(t, a, cfg)
	defer func() {
		if t.Failed() {
			for _, p := range []struct {
				what string
				p    *harness.Proc
			}{{"producer A", pa}, {"producer B", pb}, {"consumer at A", ca}, {"consumer at B", cb}} {
				t.Logf("%s:\n%s", p.what, lastLines(p.p.Output(), 15))
			}
		}
	}()
	recorded := func(s *msSite) int {
		n, err := strconv.Atoi(s.query(t, `SELECT count(*)::text FROM tributary_conflicts`))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	loadA, loadB := startLoad(t, a, 0, 2), startLoad(t, b, 0, 2)

	waitFor(t, "50 conflicts at B", func() bool { return recorded(b) >= 50 })
	cb.Kill()
	cb = b.consumeProc(t, a, cfg)
	first := recorded(b)
	waitFor(t, "100 more conflicts at B", func() bool { return recorded(b) >= first+100 })
	// The crash: the load at B fails with it (kept errors are expected).
	b.c.Close(t.Context())
	b.c = nil
	b.env.pg.Stop(t, "immediate")
	loadB.stop()
	kept := recorded
	b.env.pg.Start(t)
	t.Logf("B's crash kept %d conflict records", kept(b))
	if done, _ := pb.Exited(); done {
		pb = b.produceProc(t)
	}
	loadB = startLoad(t, b, 1, 2)
	second := recorded(b)
	waitFor(t, "100 conflicts at B after its crash", func() bool { return recorded(b) >= second+100 })
	for _, l := range []*siteLoad{loadA, loadB} {
		if errs := l.stop(); len(errs) > 0 {
			t.Fatalf("load: %v", errs[0])
		}
	}
	waitEqual(t, "ledger", a, b)
	waitEqual(t, "accounts", a, b)
	checkLedgerBalances(t, a)
	na, nb := checkConflictsOnce(t, a, b), checkConflictsOnce(t, b, a)
	t.Logf("conflicts published once each: %d by A, %d by B", na, nb)
	if done, err := cb.Exited(); done {
		t.Fatalf("the consumer at B stopped: %v", err)
	}
}
