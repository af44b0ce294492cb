package integration

import (
	"context"
	"strings"
	"testing"

	"github.com/tributary-cdc/tributary/integration/harness"
)

// topicsYAML resolves acc by latest, its counter n additively.
const topicsYAML = `priority: [A, B]
tables:
  public.acc:
    method: latest
    groups:
      counter: {columns: [n], method: additive}
`

// TestMultisitePrefixReaders is the multi-site issue's observation 3: a
// multi-site prefix has a conflicts topic beside its data topics, and every
// reader of the prefix must skip it or read it as what it is (Avro through
// the registry). Sites A and B record conflicts both ways, so that
// <a>.conflicts and <b>.conflicts hold records; a per-key consumer of A's
// prefix, started before any conflict, runs to the end of the test, and
// consumers of A's prefix in every mode and sink run to its end
// (--until-caught-up): per-key and transactional into PostgreSQL, and the
// history sink. They apply A's stream alike. Each conflicts
// topic holds, decoded through the registry, exactly the conflicts its
// writer recorded.
func TestMultisitePrefixReaders(t *testing.T) {
	ddl := []string{`CREATE TABLE acc (id int PRIMARY KEY, v text, n bigint NOT NULL)`, `ALTER TABLE acc REPLICA IDENTITY FULL`}
	sites, _ := newSetupSites(t, "acc", topicsYAML, ddl, "A", "B")
	a, b := sites[0], sites[1]
	dbs := map[string]string{}
	for _, db := range []string{"obs_live", "obs_pk", "obs_tx", "obs_hist"} {
		a.env.pg.Exec(t, "CREATE DATABASE "+db)
		dbs[db] = strings.Replace(a.env.pg.DSN, "/postgres?", "/"+db+"?", 1)
		if db != "obs_hist" {
			// Not --create-tables: per-key workers that create one table
			// at once can collide in PostgreSQL's catalog (pg_type).
			if _, err := connect(t, dbs[db]).Exec(context.Background(), ddl[0]); err != nil {
				t.Fatal(err)
			}
		}
	}
	reader := func(name, db string, extra ...string) []string {
		return append([]string{"--brokers", strings.Join(a.env.kafka.Brokers, ","), "--registry", a.env.kafka.RegistryURL,
			"--prefix", a.env.prefix, "--name", name, "--target", dbs[db], "--log-format", "json"}, extra...)
	}
	live := harness.StartTributary(t, nil, append([]string{"consumer"}, reader("live", "obs_live", "--mode", "per-key")...)...)

	a.env.pg.Exec(t, `INSERT INTO acc SELECT g, 'a', 0 FROM generate_series(1, 20) g`)
	a.consume(t, b, topicsYAML)
	b.consume(t, a, topicsYAML)
	waitEqual(t, "acc", a, b)
	// Both sites change every row before either change arrives.
	ctx := context.Background()
	ta, err := a.conn(t).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := b.conn(t).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ta.Exec(ctx, `UPDATE acc SET v = 'A', n = n + 1`); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Exec(ctx, `UPDATE acc SET v = 'B', n = n + 10`); err != nil {
		t.Fatal(err)
	}
	if err := ta.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tb.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	waitEqual(t, "acc", a, b)
	if got := a.query(t, `SELECT string_agg(DISTINCT v || ' ' || n, ',') FROM acc`); got != "B 11" {
		t.Fatalf("acc: %s, want B's later v and both increments", got)
	}
	for _, x := range []struct{ s, from *msSite }{{a, b}, {b, a}} {
		if n := checkConflictsOnce(t, x.s, x.from); n != 40 {
			t.Fatalf("%s recorded %d conflicts, want 20 rows × 2 groups", x.s.name, n)
		}
	}

	a.waitPublished(t)
	catchUp(t, reader("pk", "obs_pk", "--mode", "per-key")...)
	catchUp(t, reader("tx", "obs_tx")...)
	// The history sink in transactional mode: in per-key mode its workers
	// can collide creating the history table (as --create-tables above).
	catchUp(t, reader("hist", "obs_hist", "--sink", "history")...)
	want := "[(1,A,1)"
	for _, db := range []string{"obs_live", "obs_pk", "obs_tx"} {
		c := connect(t, dbs[db])
		waitFor(t, db+" has A's stream", func() bool {
			var got string
			if err := c.QueryRow(ctx, `SELECT string_agg(t::text, ' ' ORDER BY id) FROM acc t`).Scan(&got); err != nil {
				return false
			}
			return strings.HasPrefix("["+got, want) && strings.Count(got, ",A,1)") == 20
		})
	}
	hc := connect(t, dbs["obs_hist"])
	var versions int
	if err := hc.QueryRow(ctx, `SELECT count(*) FROM acc_history`).Scan(&versions); err != nil || versions != 40 {
		t.Fatalf("the history of A's stream holds %d versions (%v), want 20 inserts and 20 updates", versions, err)
	}
	if done, err := live.Exited(); done {
		t.Fatalf("the per-key consumer of A's prefix stopped: %v\n%s", err, lastLines(live.Output(), 20))
	}
}
