package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tributary-cdc/tributary/integration/harness"
)

// siteOutage is how long site B stays down in the survivability test
// (issue #9: "stop site B for a minute under load at both sites").
const siteOutage = 60 * time.Second

// surviveAccounts is how many accounts the survivability load updates.
const surviveAccounts = 20

// surviveDDL is the schema of the survivability and reseed tests: accounts
// that both sites update (balance additive, label latest), and a ledger of
// one insert-only row per load transaction recording its increment, which is
// the truth the balances are checked against whatever commits a crash lost
// or kept.
var surviveDDL = []string{
	`CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, label text)`,
	`ALTER TABLE accounts REPLICA IDENTITY FULL`,
	`CREATE TABLE ledger (id bigint PRIMARY KEY, site text NOT NULL, acct int NOT NULL, amount bigint NOT NULL)`,
	fmt.Sprintf(`INSERT INTO accounts SELECT g, 1000, 'init' FROM generate_series(1, %d) g`, surviveAccounts),
}

// surviveYAML resolves accounts by latest commit, with the balance additive.
const surviveYAML = `priority: [A, B, C]
tables:
  public.accounts:
    method: latest
    groups:
      money: {columns: [balance], method: additive}
`

// siteLoad runs workers that each commit, until stopped, transactions that
// add a random amount to an account's balance, set its label, and insert a
// ledger row (ids unique per site and worker) with the amount.
type siteLoad struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	errs   []error
}

// startLoad starts workers at s; round keeps ledger ids unique across loads.
// Errors are kept (see stop): a site that is stopped under load makes its
// in-flight transactions fail, which is expected.
func startLoad(t *testing.T, s *msSite, round, workers int) *siteLoad {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &siteLoad{cancel: cancel}
	base := int64(s.name[0]-'A'+1)*1e9 + int64(round)*1e7
	for w := range workers {
		c := s.env.pg.Conn(t)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				id := base + int64(w)*1e6 + int64(i)
				acct := rand.IntN(surviveAccounts) + 1
				d := int64(rand.IntN(19) - 9)
				if d == 0 {
					d = 10
				}
				_, err := c.Exec(context.Background(), fmt.Sprintf(`BEGIN;
					UPDATE accounts SET balance = balance + %d, label = '%s-%d' WHERE id = %d;
					INSERT INTO ledger VALUES (%d, '%s', %d, %d);
					COMMIT`, d, s.name, id, acct, id, s.name, acct, d))
				var pe *pgconn.PgError
				if errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001") {
					// A deadlock with a consumer's apply rolled the whole
					// transaction back: retry it, as an application would.
					c.Exec(context.Background(), "ROLLBACK")
					continue
				}
				if err != nil {
					l.mu.Lock()
					l.errs = append(l.errs, err)
					l.mu.Unlock()
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	return l
}

// stop ends the workers and waits for them; it returns their errors.
func (l *siteLoad) stop() []error {
	l.cancel()
	l.wg.Wait()
	return l.errs
}

// checkLedgerBalances checks at s that every balance is 1000 plus the sum of
// the ledger amounts of its account: each increment, from either site, was
// applied exactly once.
func checkLedgerBalances(t *testing.T, s *msSite) {
	t.Helper()
	bad := s.query(t, `SELECT count(*)::text FROM accounts a WHERE balance <> 1000 +
		coalesce((SELECT sum(amount) FROM ledger l WHERE l.acct = a.id), 0)`)
	if bad != "0" {
		t.Fatalf("at %s, %s balances are not 1000 + their ledger increments:\n%s", s.name, bad, s.dump(t, "accounts"))
	}
}

// verifySites runs `tributary verify` with site src as the source and site
// dst as the target, waiting for dst's consumer of src, and fails the test
// unless the published tables are equal.
func verifySites(t *testing.T, src, dst *msSite) {
	t.Helper()
	code, out, errOut := runVerifyCLI(t, "--source", src.env.pg.DSN, "--target", dst.env.pg.DSN,
		"--consumer", "from_"+src.name, "--publication", "pub")
	if code != 0 {
		t.Fatalf("tributary verify %s against %s: exit %d\n%s\n%s", src.name, dst.name, code, out, lastLines(errOut, 10))
	}
}

// checkOwnLog reads s's producer log (ReadLog validates it: every source
// transaction once, in commit order, whole) and checks that it holds
// exactly the ledger rows made at s, each once, and nothing applied from
// another site.
func checkOwnLog(t *testing.T, s *msSite) *harness.Log {
	t.Helper()
	log := harness.ReadLog(t, s.env.kafka, s.env.reg, s.env.prefix)
	seen := map[int64]bool{}
	for _, tx := range log.Txns {
		if tx.Frame.Origin != "" {
			t.Fatalf("%s's producer published a transaction of origin %s (commit %s)", s.name, tx.Frame.Origin, tx.Frame.CommitLSN)
		}
		for _, ev := range tx.Events {
			if ev.Topic != s.env.prefix+".public.ledger" {
				continue
			}
			id := ev.After["id"].(int64)
			if seen[id] {
				t.Fatalf("%s's log holds ledger row %d twice", s.name, id)
			}
			seen[id] = true
			if site := ev.After["site"].(string); site != s.name {
				t.Fatalf("%s's log holds ledger row %d made at %s", s.name, id, site)
			}
		}
	}
	made, err := strconv.Atoi(s.query(t, `SELECT count(*)::text FROM ledger WHERE site = $1`, s.name))
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != made {
		t.Fatalf("%s committed %d ledger rows; its producer published %d", s.name, made, len(seen))
	}
	return log
}

// TestMultisiteSurviveSiteDown runs two sites under load, each with a
// producer and a consumer of the other's stream, with latest and additive
// resolution. Site B fails: its producer is killed, B commits more (those
// changes wait in its slot), then its consumer stops and its PostgreSQL is
// shut down with mode immediate. For siteOutage A keeps committing and
// publishing. B then restarts, with its producer and consumer, the load
// runs at both sites again, and after catch-up: both sites are equal; every
// balance is 1000 plus its ledger increments from both sites (each applied
// once, additive merging every conflict); B's changes from before the
// failure reached A through B's slot; both producers' logs hold each of
// their own transactions once and nothing applied from the other site; and
// every conflict is in tributary_conflicts at the site that resolved it
// (at B: those of transactions the crash kept, and all after the restart).
func TestMultisiteSurviveSiteDown(t *testing.T) {
	sites := newSites(t, "accounts, ledger", surviveDDL, "A", "B")
	a, b := sites[0], sites[1]
	pa := a.produceProc(t)
	pb := b.produceProc(t)
	defer func() {
		if t.Failed() {
			t.Logf("producer A:\n%s\nproducer B:\n%s", lastLines(pa.Output(), 20), lastLines(pb.Output(), 20))
		}
	}()
	ea, _ := a.consumeStoppable(t, b, surviveYAML)
	eb1, stopB1 := b.consumeStoppable(t, a, surviveYAML)

	loadA := startLoad(t, a, 0, 1)
	loadB := startLoad(t, b, 0, 1)
	time.Sleep(5 * time.Second)

	// B fails: the producer first, once it has published some of B's
	// changes (A has them), so that B's last commits stay in its slot.
	waitValue(t, a, "true", `SELECT (count(*) > 0)::text FROM ledger WHERE site = 'B'`)
	pb.Kill()
	time.Sleep(2 * time.Second)
	if errs := loadB.stop(); len(errs) > 0 {
		t.Fatalf("load at B before the failure: %v", errs[0])
	}
	// Where B's transactions topic ends now that its producer is dead, and
	// where B's WAL ends: frames of commits below walEnd written past
	// txEnd come from what waited in the slot.
	madeB := b.query(t, `SELECT count(*)::text FROM ledger WHERE site = 'B'`)
	ends, err := b.env.kafka.Admin(t).ListEndOffsets(context.Background(), b.env.prefix+".transactions")
	if err != nil {
		t.Fatal(err)
	}
	txEnd, ok := ends.Lookup(b.env.prefix+".transactions", 0)
	if !ok || txEnd.Err != nil {
		t.Fatalf("end offset of B's transactions topic: %+v", txEnd)
	}
	walEnd, err := pglogrepl.ParseLSN(b.query(t, `SELECT pg_current_wal_lsn()::text`))
	if err != nil {
		t.Fatal(err)
	}
	stopB1()
	// The consumer may commit asynchronously (synchronous_commit off): an
	// immediate shutdown can lose its last transactions, their conflict
	// records and its checkpoint together, and it applies them again after
	// the restart. Count what B's table holds before and after the crash.
	recordedB1 := b.query(t, `SELECT count(*)::text FROM tributary_conflicts`)
	if recordedB1 != fmt.Sprint(eb1.Records()) {
		t.Fatalf("B: %s rows in tributary_conflicts, its consumer recorded %d", recordedB1, eb1.Records())
	}
	b.c.Close(context.Background())
	b.c = nil
	b.env.pg.Stop(t, "immediate")
	t.Logf("site B down: %s ledger rows committed at B; its transactions topic ends at %d, its WAL at %s", madeB, txEnd.Offset, walEnd)

	// A keeps working: it commits and its producer publishes.
	framesA0 := harness.CountFrames(t, a.env.kafka, a.env.prefix)
	madeA0 := a.query(t, `SELECT count(*)::text FROM ledger WHERE site = 'A'`)
	time.Sleep(siteOutage)
	framesA1 := harness.CountFrames(t, a.env.kafka, a.env.prefix)
	madeA1 := a.query(t, `SELECT count(*)::text FROM ledger WHERE site = 'A'`)
	if framesA1 <= framesA0 || madeA1 == madeA0 {
		t.Fatalf("while B was down A committed %s -> %s ledger rows and published %d -> %d frames; it should keep working",
			madeA0, madeA1, framesA0, framesA1)
	}
	t.Logf("while B was down A committed %s -> %s ledger rows and published %d -> %d frames", madeA0, madeA1, framesA0, framesA1)

	// B returns; its producer publishes what waited in the slot, its consumer catches up.
	b.env.pg.Start(t)
	keptB1, err := strconv.ParseInt(b.query(t, `SELECT count(*)::text FROM tributary_conflicts`), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("B's crash kept %d of the %s conflict records of its consumer's committed transactions", keptB1, recordedB1)
	pb = b.produceProc(t)
	eb2, _ := b.consumeStoppable(t, a, surviveYAML)
	loadB = startLoad(t, b, 1, 1)
	time.Sleep(5 * time.Second)
	for _, l := range []*siteLoad{loadA, loadB} {
		if errs := l.stop(); len(errs) > 0 {
			t.Fatalf("load: %v", errs[0])
		}
	}
	waitEqual(t, "ledger", a, b)
	waitEqual(t, "accounts", a, b)
	verifySites(t, a, b)
	verifySites(t, b, a)

	checkLedgerBalances(t, a)
	// Round 0 of B's load (ids below 2e9 + 1e7) is what B made before it failed.
	pre := a.query(t, `SELECT count(*)::text FROM ledger WHERE site = 'B' AND id < 2010000000`)
	if pre != madeB {
		t.Fatalf("B committed %s ledger rows before it failed; %s reached A", madeB, pre)
	}
	pa.Kill()
	pb.Kill()
	checkOwnLog(t, a)
	fromSlot, before := 0, 0
	for _, tx := range checkOwnLog(t, b).Txns {
		if tx.Offset >= txEnd.Offset && tx.Frame.CommitLSN < walEnd {
			fromSlot++
		} else if tx.Offset < txEnd.Offset {
			before++
		}
	}
	if before == 0 {
		t.Fatalf("B's producer published nothing before it was killed")
	}
	if fromSlot == 0 {
		t.Fatalf("no transaction B committed before it failed (WAL %s) was published after it returned: "+
			"the test must leave some in the slot", walEnd)
	}
	t.Logf("%d of B's transactions were published before it failed, %d waited in its slot and were published after it", before, fromSlot)

	// Every conflict is recorded once, at the site that resolved it.
	for _, c := range []struct {
		s    *msSite
		want int64
	}{{a, ea.Records()}, {b, keptB1 + eb2.Records()}} {
		n := c.s.query(t, `SELECT count(*)::text FROM tributary_conflicts`)
		if n != fmt.Sprint(c.want) {
			t.Fatalf("%s: %s rows in tributary_conflicts, its consumers recorded %d", c.s.name, n, c.want)
		}
		if c.want == 0 {
			t.Fatalf("%s resolved no conflict; concurrent updates of %d accounts should conflict", c.s.name, surviveAccounts)
		}
		if bad := c.s.query(t, `SELECT count(*)::text FROM tributary_conflicts WHERE site <> $1 OR
			(method = 'additive' AND outcome <> 'merged')`, c.s.name); bad != "0" {
			t.Fatalf("%s: %s conflicts recorded for another site, or additive ones not merged", c.s.name, bad)
		}
	}
	t.Logf("conflicts resolved: A %d, B %d", ea.Records(), keptB1+eb2.Records())
}
