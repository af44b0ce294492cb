package integration

import (
	"fmt"
	"testing"
	"time"
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

// TestMultisiteOwnershipAndDeletePolicies runs two sites and checks, end to
// end:
//   - primary site: prices is writable at A only; B's insert and update are
//     not applied at A and are recorded there;
//   - vertical: only A may change stock.description; B's update of
//     description and qty applies qty at A, not description, and is
//     recorded; A's change of description reaches B;
//   - horizontal: branch rows of region east belong to A, the others to B;
//     each site's change to its own rows is applied at the other, a change
//     to the other's rows is rejected and recorded;
//   - delete policies, with every change made before the consumers start so
//     that each one races the other site's: an update at one site against a
//     delete at the other, both ways, and a delete at both sites; delete-wins
//     deletes the row everywhere, update-wins keeps the updated row
//     everywhere (re-inserted where it was deleted); deletes of a missing row
//     are skipped and recorded. The sites converge and every conflict is
//     recorded, with the expected kind and outcome.
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

	// The delete-policy races, before any consumer runs.
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
	ea := a.consume(t, b, ownershipYAML)
	eb := b.consume(t, a, ownershipYAML)

	for _, tb := range []string{"dw", "uw"} {
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

	// Primary site: B writes prices, which A owns.
	b.env.pg.Exec(t, `INSERT INTO prices VALUES (3, 300)`, `UPDATE prices SET price = 222 WHERE id = 2`)
	a.env.pg.Exec(t, `UPDATE prices SET price = 111 WHERE id = 1`)
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

	// Vertical: B changes description (A's) and qty (anyone's) together;
	// then A, the owner, changes description.
	b.env.pg.Exec(t, `UPDATE stock SET description = 'B bolt', qty = 11 WHERE id = 1`)
	waitValue(t, a, "bolt 11", `SELECT description || ' ' || qty FROM stock WHERE id = 1`)
	waitValue(t, a, "1", `SELECT count(*)::text FROM tributary_conflicts WHERE table_name = 'public.stock'
		AND kind = 'ownership' AND remote_site = 'B' AND detail LIKE '%description (owned by A)%'`)
	a.env.pg.Exec(t, `UPDATE stock SET description = 'A bolt' WHERE id = 1`)
	waitEqual(t, "stock", a, b)
	if got := b.query(t, `SELECT description || ' ' || qty FROM stock WHERE id = 1`); got != "A bolt 11" {
		t.Fatalf("stock at both sites: %s, want A's description and B's qty", got)
	}

	// Horizontal: east rows are A's, the others B's. B changes both rows:
	// its own reaches A, A's is rejected there. Then A, the owner, changes
	// row 1, which overrides B's change at B.
	b.env.pg.Exec(t, `UPDATE branch SET amount = 12 WHERE id = 1`, `UPDATE branch SET amount = 22 WHERE id = 2`)
	waitValue(t, a, "22", `SELECT amount::text FROM branch WHERE id = 2`)
	waitValue(t, a, "1", `SELECT count(*)::text FROM tributary_conflicts WHERE table_name = 'public.branch'
		AND kind = 'ownership' AND outcome = 'rejected' AND remote_site = 'B' AND key->>'id' = '1'`)
	if got := a.query(t, `SELECT amount::text FROM branch WHERE id = 1`); got != "10" {
		t.Fatalf("B's change of A's row reached A: amount %s", got)
	}
	a.env.pg.Exec(t, `UPDATE branch SET amount = 11 WHERE id = 1`)
	waitEqual(t, "branch", a, b)
	if got := a.dump(t, "branch"); got != "[(1,east,11) (2,west,22)]" {
		t.Fatalf("branch: %s, want each region's owner's amount", got)
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
