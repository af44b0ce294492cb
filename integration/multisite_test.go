package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tributary-cdc/tributary/consumer/conflict"
	"github.com/tributary-cdc/tributary/integration/harness"
	"github.com/tributary-cdc/tributary/schemas"
)

const customersDDL = `CREATE TABLE customers (id int PRIMARY KEY, name text, street text, city text, credit_limit numeric(12,2))`

// TestMultisiteNoLoopColumnGroupsWebhook runs two sites with the binary's
// consumers (--site, --remote-site, --conflicts, --conflict-webhook): a
// change made at A reaches B once and is never published by B's producer;
// non-overlapping updates of two column groups both survive with no
// conflict; a conflicting update converges by latest and is recorded in
// tributary_conflicts, on <prefix>.conflicts and at the webhook.
func TestMultisiteNoLoopColumnGroupsWebhook(t *testing.T) {
	sites := newSites(t, "customers", []string{customersDDL, `ALTER TABLE customers REPLICA IDENTITY FULL`}, "A", "B")
	a, b := sites[0], sites[1]
	a.produce(t)
	b.produce(t)

	var mu sync.Mutex
	var hooked []conflict.Record
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var recs []conflict.Record
		if err := json.Unmarshal(body, &recs); err != nil {
			t.Errorf("webhook body: %v: %s", err, body)
		}
		mu.Lock()
		hooked = append(hooked, recs...)
		mu.Unlock()
	}))
	defer srv.Close()
	cfgFile := filepath.Join(t.TempDir(), "conflicts.yaml")
	os.WriteFile(cfgFile, []byte(`priority: [A, B]
tables:
  public.customers:
    method: latest
    groups:
      address: {columns: [street, city], method: latest}
      credit: {columns: [credit_limit], method: maximum}
`), 0o600)
	start := func(at, from *msSite) *harness.Proc {
		return harness.StartTributary(t, nil, "consumer", "--brokers", strings.Join(at.env.kafka.Brokers, ","),
			"--registry", at.env.kafka.RegistryURL, "--prefix", from.env.prefix, "--name", "from_"+from.name,
			"--target", at.env.pg.DSN, "--site", at.name, "--remote-site", from.name, "--conflicts", cfgFile,
			"--conflict-webhook", srv.URL, "--log-format", "json")
	}
	pb, pa := start(b, a), start(a, b)
	defer func() {
		if t.Failed() {
			t.Logf("consumer at B:\n%s\nconsumer at A:\n%s", lastLines(pb.Output(), 20), lastLines(pa.Output(), 20))
		}
	}()

	a.env.pg.Exec(t, `INSERT INTO customers VALUES (1, 'Ada', 'Elm St 1', 'Springfield', 1000)`)
	waitEqual(t, "customers", a, b)

	// Column groups: A changes the address while B changes the credit limit.
	ca, cb := a.env.pg.Conn(t), b.env.pg.Conn(t)
	ctx := context.Background()
	if _, err := ca.Exec(ctx, `UPDATE customers SET street = 'Oak Ave 9', city = 'Shelbyville' WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	if _, err := cb.Exec(ctx, `UPDATE customers SET credit_limit = 2500 WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	waitEqual(t, "customers", a, b)
	if got := a.query(t, `SELECT t::text FROM customers t WHERE id = 1`); got != "(1,Ada,\"Oak Ave 9\",Shelbyville,2500.00)" {
		t.Fatalf("both column-group updates should survive, got %s", got)
	}
	for _, s := range sites {
		if n := s.query(t, `SELECT count(*)::text FROM tributary_conflicts`); n != "0" {
			t.Fatalf("non-overlapping updates recorded %s conflicts at %s", n, s.name)
		}
	}

	// A real conflict on the default group (name): both sites change it
	// before either change arrives; the later commit wins everywhere.
	tx1, _ := ca.Begin(ctx)
	tx2, _ := cb.Begin(ctx)
	tx1.Exec(ctx, `UPDATE customers SET name = 'Ada at A' WHERE id = 1`)
	tx2.Exec(ctx, `UPDATE customers SET name = 'Ada at B' WHERE id = 1`)
	if err := tx1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tx2.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	waitEqual(t, "customers", a, b)
	if got := a.query(t, `SELECT name FROM customers WHERE id = 1`); got != "Ada at B" {
		t.Fatalf("latest: B committed last, got %q", got)
	}
	for _, s := range sites {
		waitValue(t, s, "1", `SELECT count(*)::text FROM tributary_conflicts WHERE kind = 'update-differs' AND column_group = 'default'`)
	}
	if got := b.query(t, `SELECT outcome FROM tributary_conflicts`); got != "kept-local" {
		t.Fatalf("at B the local (later) name should be kept, got %s", got)
	}
	if got := a.query(t, `SELECT outcome || ' ' || (resolved->>'name') FROM tributary_conflicts`); got != "applied-remote Ada at B" {
		t.Fatalf("at A the remote (later) name should be applied, got %s", got)
	}

	// Notifications: the webhook got both sites' records; the conflicts topics hold them.
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(hooked)
		mu.Unlock()
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook received %d records, want 2", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, s := range sites {
		from := a
		if s == a {
			from = b
		}
		recs := waitConflictTopic(t, s.env.kafka, s.env.reg, conflict.ConflictsTopic(from.env.prefix))
		if len(recs) != 1 || recs[0].Site != s.name || recs[0].Kind != conflict.KindUpdateDiffers {
			t.Fatalf("%s.conflicts: %+v", from.env.prefix, recs)
		}
	}

	// No loop: each producer published only its own site's transactions.
	// A: insert, address update, name update. B: credit update, name update.
	for _, c := range []struct {
		s    *msSite
		want []string
	}{{a, []string{"c", "u", "u"}}, {b, []string{"u", "u"}}} {
		log := harness.ReadLog(t, c.s.env.kafka, c.s.env.reg, c.s.env.prefix)
		var ops []string
		for _, tx := range log.Txns {
			if tx.Frame.Origin != "" {
				t.Fatalf("%s published a transaction of origin %s", c.s.name, tx.Frame.Origin)
			}
			for _, ev := range tx.Events {
				ops = append(ops, string(ev.Op))
			}
		}
		if fmt.Sprint(ops) != fmt.Sprint(c.want) {
			t.Fatalf("%s's producer published %v, want only its own changes %v", c.s.name, ops, c.want)
		}
	}
	// The origin's progress at B records A's last applied commit.
	waitValue(t, b, "true", `SELECT (remote_lsn > '0/0')::text FROM pg_replication_origin_status s
		JOIN pg_replication_origin o ON o.roident = s.local_id WHERE o.roname = 'tributary_A'`)
}

// waitConflictTopic waits until topic holds conflict records and returns them.
func waitConflictTopic(t *testing.T, k *harness.Kafka, reg *schemas.Registry, topic string) []conflict.Record {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		recs := readConflictTopic(t, k, reg, topic)
		if len(recs) > 0 || time.Now().After(deadline) {
			return recs
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// convergenceYAML declares the three routines the convergence test checks.
const convergenceYAML = `priority: [A, B]
tables:
  public.accounts:
    method: latest
    groups:
      money: {columns: [balance], method: additive}
      owner: {columns: [pick], method: site-priority}
`

// TestMultisiteConvergenceUnderConcurrentConflicts runs hundreds of
// concurrent conflicting updates at two sites, each touching three column
// groups resolved by latest, additive and site-priority, then checks that
// the sites are equal and that the results follow each routine.
func TestMultisiteConvergenceUnderConcurrentConflicts(t *testing.T) {
	const rows, workers, perWorker = 8, 2, 100
	ddl := []string{`CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, label text, pick text)`,
		`ALTER TABLE accounts REPLICA IDENTITY FULL`,
		fmt.Sprintf(`INSERT INTO accounts SELECT g, 1000, 'init', 'init' FROM generate_series(1, %d) g`, rows)}
	sites := newSites(t, "accounts", ddl, "A", "B")
	a, b := sites[0], sites[1]
	a.produce(t)
	b.produce(t)
	ea := a.consume(t, b, convergenceYAML)
	eb := b.consume(t, a, convergenceYAML)

	var mu sync.Mutex
	deltas := map[int]int64{}
	var wg sync.WaitGroup
	for _, s := range sites {
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := s.env.pg.Conn(t)
				for i := range perWorker {
					id := rand.IntN(rows) + 1
					d := int64(rand.IntN(19) - 9)
					if d == 0 {
						d = 10
					}
					tag := fmt.Sprintf("%s-%d-%d", s.name, w, i)
					if _, err := c.Exec(context.Background(), `UPDATE accounts SET balance = balance + $1, label = $2, pick = $2 WHERE id = $3`,
						d, tag, id); err != nil {
						t.Errorf("workload at %s: %v", s.name, err)
						return
					}
					mu.Lock()
					deltas[id] += d
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	waitEqual(t, "accounts", a, b)

	// additive: every increment at either site counts.
	for id := 1; id <= rows; id++ {
		want := fmt.Sprint(1000 + deltas[id])
		if got := a.query(t, `SELECT balance::text FROM accounts WHERE id = $1`, id); got != want {
			t.Fatalf("additive: row %d balance %s, want %s (1000 + the sum of both sites' increments)", id, got, want)
		}
	}
	// latest: each row's label is the one with the latest source commit,
	// read from both producers' logs (site name breaks ties: A first).
	type write struct {
		ts   time.Time
		site string
		tag  string
	}
	last := map[int]write{}
	for _, s := range sites {
		for _, tx := range harness.ReadLog(t, s.env.kafka, s.env.reg, s.env.prefix).Txns {
			for _, ev := range tx.Events {
				id := int(ev.After["id"].(int32))
				w := write{ts: tx.Frame.CommitTime, site: s.name, tag: ev.After["label"].(string)}
				if l, ok := last[id]; !ok || w.ts.After(l.ts) || w.ts.Equal(l.ts) && w.site < l.site {
					last[id] = w
				}
			}
		}
	}
	for id, w := range last {
		if got := a.query(t, `SELECT label FROM accounts WHERE id = $1`, id); got != w.tag {
			t.Fatalf("latest: row %d label %s, want %s (committed last, at %s %s)", id, got, w.tag, w.site, w.ts)
		}
	}
	// Every conflict is in tributary_conflicts (the engine's count of
	// committed records equals the table), and each outcome follows its routine.
	for _, c := range []struct {
		s   *msSite
		eng *conflict.Engine
	}{{a, ea}, {b, eb}} {
		n := c.s.query(t, `SELECT count(*)::text FROM tributary_conflicts`)
		if n != fmt.Sprint(c.eng.Records()) {
			t.Fatalf("%s: %s rows in tributary_conflicts, the engine recorded %d", c.s.name, n, c.eng.Records())
		}
		for _, m := range []string{"latest", "additive", "site-priority"} {
			if k := c.s.query(t, `SELECT count(*)::text FROM tributary_conflicts WHERE method = $1`, m); k == "0" {
				t.Fatalf("%s: no %s conflict recorded; the workload should conflict", c.s.name, m)
			}
		}
		// site-priority: A's values win. At A a conflict keeps A's value
		// when A wrote it; at B, A's change is applied over B's.
		bad := c.s.query(t, `SELECT count(*)::text FROM tributary_conflicts WHERE method = 'site-priority' AND NOT (
			(local_site = 'A' AND outcome = 'kept-local') OR (remote_site = 'A' AND outcome = 'applied-remote') OR
			(local_site = remote_site AND outcome = 'applied-remote'))`)
		if bad != "0" {
			t.Fatalf("%s: %s site-priority conflicts did not pick site A", c.s.name, bad)
		}
		// latest: the remote change is applied exactly when it committed later.
		bad = c.s.query(t, `SELECT count(*)::text FROM tributary_conflicts WHERE method = 'latest' AND
			(outcome = 'applied-remote') <> (local_commit_ts IS NULL OR remote_commit_ts > local_commit_ts OR
				(remote_commit_ts = local_commit_ts AND remote_site < local_site))`)
		if bad != "0" {
			t.Fatalf("%s: %s latest conflicts did not keep the later commit", c.s.name, bad)
		}
		if k := c.s.query(t, `SELECT count(*)::text FROM tributary_conflicts WHERE method = 'additive' AND outcome <> 'merged'`); k != "0" {
			t.Fatalf("%s: %s additive conflicts were not merged", c.s.name, k)
		}
	}
	t.Logf("%d updates per site; conflicts recorded: A %d, B %d", workers*perWorker, ea.Records(), eb.Records())
}
