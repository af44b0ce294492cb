package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/conflict"
	"github.com/tributary-cdc/tributary/integration/harness"
	"github.com/tributary-cdc/tributary/schemas"
)

// ownershipYAML declares primary-site, vertical (column list) and
// horizontal (CEL predicate) ownership, and the two converging delete
// policies, one table each.
const ownershipYAML = `priority: [A, B]
tables:
  public.prices:
    ownership: {primary: A}
  public.stock:
    groups:
      descr: {columns: [description]}
    ownership:
      columns: {A: [description]}
  public.branch:
    ownership:
      owner: 'row.region == "east" ? "A" : "B"'
  public.dw:
    delete: delete-wins
  public.uw:
    delete: update-wins
`

// TestMultisiteOwnershipAndDeletePolicies runs two sites whose consumers
// apply in per-key mode (parallel sessions, one origin instance each). Both
// sites make every change below before the consumers start, so that each
// races the other site's, and the outcome is determined:
//   - primary site: prices is writable at A only; B's insert and update are
//     not applied at A and are recorded there; A's changes reach B, and
//     override B's change of the same row;
//   - vertical: only A may change stock.description; B's update of
//     description and qty applies qty at A, not description, and is
//     recorded; A's change of description overrides B's at B;
//   - horizontal: branch rows of region east belong to A, the others to B;
//     each site's change to its own rows is applied at the other, and wins
//     over the non-owner's; a change to the other's rows is rejected and
//     recorded;
//   - delete policies: an update at one site against a delete at the other,
//     both ways, and a delete at both sites; delete-wins deletes the row
//     everywhere, update-wins keeps the updated row everywhere (re-inserted
//     where it was deleted); deletes of a missing row are skipped and
//     recorded.
//
// The sites converge, every conflict is recorded with the expected kind and
// outcome, and no producer publishes what a consumer applied.
func TestMultisiteOwnershipAndDeletePolicies(t *testing.T) {
	const n = 40 // rows per delete-policy table: 1..n/2 updated at A and deleted at B, then the reverse; n+1..n+5 deleted at both
	ddl := []string{
		`CREATE TABLE prices (id int PRIMARY KEY, price int)`,
		`CREATE TABLE stock (id int PRIMARY KEY, description text, qty int)`,
		`CREATE TABLE branch (id int PRIMARY KEY, region text NOT NULL, amount int)`,
		`INSERT INTO prices VALUES (1, 100), (2, 200)`,
		`INSERT INTO stock VALUES (1, 'bolt', 10)`,
		`INSERT INTO branch VALUES (1, 'east', 10), (2, 'west', 20)`,
	}
	for _, tb := range []string{"dw", "uw"} {
		ddl = append(ddl, fmt.Sprintf(`CREATE TABLE %s (id int PRIMARY KEY, v text)`, tb),
			fmt.Sprintf(`INSERT INTO %s SELECT g, 'init' FROM generate_series(1, %d) g`, tb, n+5))
	}
	for _, tb := range []string{"prices", "stock", "branch", "dw", "uw"} {
		ddl = append(ddl, `ALTER TABLE `+tb+` REPLICA IDENTITY FULL`)
	}
	sites := newSites(t, "prices, stock, branch, dw, uw", ddl, "A", "B")
	a, b := sites[0], sites[1]
	a.produce(t)
	b.produce(t)

	for _, tb := range []string{"dw", "uw"} {
		a.env.pg.Exec(t,
			fmt.Sprintf(`UPDATE %s SET v = 'A-upd' WHERE id <= %d`, tb, n/2),
			fmt.Sprintf(`DELETE FROM %s WHERE id > %d AND id <= %d`, tb, n/2, n),
			fmt.Sprintf(`DELETE FROM %s WHERE id > %d`, tb, n))
		b.env.pg.Exec(t,
			fmt.Sprintf(`DELETE FROM %s WHERE id <= %d`, tb, n/2),
			fmt.Sprintf(`UPDATE %s SET v = 'B-upd' WHERE id > %d AND id <= %d`, tb, n/2, n),
			fmt.Sprintf(`DELETE FROM %s WHERE id > %d`, tb, n))
	}
	b.env.pg.Exec(t, `INSERT INTO prices VALUES (3, 300)`, `UPDATE prices SET price = 222 WHERE id = 2`,
		`UPDATE stock SET description = 'B bolt', qty = 11 WHERE id = 1`,
		`UPDATE branch SET amount = 12 WHERE id = 1`, `UPDATE branch SET amount = 22 WHERE id = 2`)
	a.env.pg.Exec(t, `UPDATE prices SET price = 111 WHERE id = 1`, `UPDATE stock SET description = 'A bolt' WHERE id = 1`,
		`UPDATE branch SET amount = 11 WHERE id = 1`)
	// Every table's topic exists now, so the per-key consumers find them all
	// when they start.
	a.waitPublished(t)
	b.waitPublished(t)
	ea := a.startConsumer(t, b, ownershipYAML, consumer.ModePerKey).eng
	eb := b.startConsumer(t, a, ownershipYAML, consumer.ModePerKey).eng

	for _, tb := range []string{"dw", "uw", "stock", "branch"} {
		waitEqual(t, tb, a, b)
	}
	if got := a.query(t, `SELECT count(*)::text FROM dw`); got != "0" {
		t.Fatalf("delete-wins: %s rows left, want every raced row deleted", got)
	}
	want := fmt.Sprintf("%d A-upd, %d B-upd", n/2, n/2)
	if got := a.query(t, `SELECT count(*) FILTER (WHERE v = 'A-upd') || ' A-upd, ' || count(*) FILTER (WHERE v = 'B-upd') || ' B-upd'
		FROM uw WHERE id <= $1`, n); got != want {
		t.Fatalf("update-wins: %s, want %s", got, want)
	}
	if got := a.query(t, `SELECT count(*)::text FROM uw WHERE id > $1`, n); got != "0" {
		t.Fatalf("update-wins: %s rows deleted at both sites came back", got)
	}
	// Each site saw, for each table: the other's delete of a row it updated
	// (n/2), the other's update of a row it deleted (n/2), and the other's
	// delete of a row it deleted too (5).
	for _, s := range sites {
		for _, c := range []struct{ table, kind, outcome string }{
			{"dw", "delete-differs", "deleted"}, {"dw", "update-missing", "skipped"}, {"dw", "delete-missing", "skipped"},
			{"uw", "delete-differs", "kept-local"}, {"uw", "update-missing", "inserted"}, {"uw", "delete-missing", "skipped"},
		} {
			want := fmt.Sprint(n / 2)
			if c.kind == "delete-missing" {
				want = "5"
			}
			if got := s.query(t, `SELECT count(*)::text FROM tributary_conflicts WHERE table_name = $1 AND kind = $2 AND outcome = $3`,
				"public."+c.table, c.kind, c.outcome); got != want {
				t.Fatalf("%s: %s %s %s recorded %s times, want %s", s.name, c.table, c.kind, c.outcome, got, want)
			}
		}
	}

	// Vertical: A has B's qty and its own description; so has B, where A's
	// description overrode B's by ownership.
	if got := a.query(t, `SELECT description || ' ' || qty FROM stock WHERE id = 1`); got != "A bolt 11" {
		t.Fatalf("stock at both sites: %s, want A's description and B's qty", got)
	}
	waitValue(t, a, "1", `SELECT count(*)::text FROM tributary_conflicts WHERE table_name = 'public.stock'
		AND kind = 'ownership' AND outcome = 'rejected' AND remote_site = 'B' AND detail LIKE '%description (owned by A)%'`)
	waitValue(t, b, "1", `SELECT count(*)::text FROM tributary_conflicts WHERE table_name = 'public.stock'
		AND kind = 'update-differs' AND method = 'ownership' AND outcome = 'applied-remote' AND column_group = 'descr'`)

	// Horizontal: row 1 (east) is A's, row 2 B's.
	if got := a.dump(t, "branch"); got != "[(1,east,11) (2,west,22)]" {
		t.Fatalf("branch: %s, want each region's owner's amount", got)
	}
	waitValue(t, a, "1", `SELECT count(*)::text FROM tributary_conflicts WHERE table_name = 'public.branch'
		AND kind = 'ownership' AND outcome = 'rejected' AND remote_site = 'B' AND key->>'id' = '1'`)
	waitValue(t, b, "1", `SELECT count(*)::text FROM tributary_conflicts WHERE table_name = 'public.branch'
		AND method = 'ownership' AND outcome = 'applied-remote' AND key->>'id' = '1'`)

	// Primary site: B's writes did not reach A and are recorded there; A's
	// reached B.
	waitValue(t, a, "2", `SELECT count(*)::text FROM tributary_conflicts WHERE table_name = 'public.prices'
		AND kind = 'ownership' AND outcome = 'rejected' AND remote_site = 'B'`)
	waitValue(t, b, "111", `SELECT price::text FROM prices WHERE id = 1`)
	if got := a.dump(t, "prices"); got != "[(1,111) (2,200)]" {
		t.Fatalf("prices at A, the primary site: %s; B's writes must not apply", got)
	}
	// The owner's next change of row 2 overrides B's at B; B's own insert
	// stays at B only, for a person to fix there.
	a.env.pg.Exec(t, `UPDATE prices SET price = 250 WHERE id = 2`)
	waitValue(t, b, "250", `SELECT price::text FROM prices WHERE id = 2`)
	waitValue(t, b, "1", `SELECT count(*)::text FROM tributary_conflicts WHERE table_name = 'public.prices'
		AND kind = 'update-differs' AND method = 'ownership' AND outcome = 'applied-remote'`)
	if got := b.dump(t, "prices"); got != "[(1,111) (2,250) (3,300)]" {
		t.Fatalf("prices at B: %s", got)
	}

	// No loop: each producer published only its own site's changes. Only
	// the consumers insert (update-wins re-inserts), save B's own insert
	// into prices; and every origin instance the consumers used stands for
	// the other site.
	a.waitPublished(t)
	b.waitPublished(t)
	for _, s := range sites {
		for _, tx := range harness.ReadLog(t, s.env.kafka, s.env.reg, s.env.prefix).Txns {
			if tx.Frame.Origin != "" {
				t.Fatalf("%s's producer published a transaction of origin %s", s.name, tx.Frame.Origin)
			}
			for _, ev := range tx.Events {
				if ev.Op == schemas.OpInsert && !(s == b && strings.HasSuffix(ev.Topic, ".prices")) {
					t.Fatalf("%s's producer published an insert the consumer applied: %s %v", s.name, ev.Topic, ev.After)
				}
			}
		}
	}
	for _, x := range []struct{ s, from *msSite }{{a, b}, {b, a}} {
		if bad := x.s.query(t, `SELECT count(*)::text FROM pg_replication_origin WHERE split_part(roname, '#', 1) <> $1`,
			conflict.OriginPrefix+x.from.name); bad != "0" {
			t.Fatalf("%s has %s replication origins that are not instances of %s%s", x.s.name, bad, conflict.OriginPrefix, x.from.name)
		}
		t.Logf("%s applied under %s origin instances", x.s.name, x.s.query(t, `SELECT count(*)::text FROM pg_replication_origin`))
	}

	for _, x := range []struct {
		s   *msSite
		eng interface{ Records() int64 }
	}{{a, ea}, {b, eb}} {
		// Records counts right after each commit; give it that moment.
		for i := 0; ; i++ {
			n := x.s.query(t, `SELECT count(*)::text FROM tributary_conflicts`)
			if n == fmt.Sprint(x.eng.Records()) {
				break
			}
			if i == 50 {
				t.Fatalf("%s: %s rows in tributary_conflicts, the engine committed %d records", x.s.name, n, x.eng.Records())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}
