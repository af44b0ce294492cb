package integration

import (
	"testing"

	"github.com/tributary-cdc/tributary/integration/harness"
)

// workflowYAML gives each order status an owning site (dynamic ownership,
// seed 001 "Work Flow"): A enters and approves, H ships, C bills.
const workflowYAML = `tables:
  orders:
    ownership:
      owner: 'row.status == "entered" ? "A" : row.status == "approved" ? "H" : row.status == "shipped" ? "C" : "nobody"'
`

// TestMultisiteCascadeWorkflowOwnership runs three sites through a hub H:
// A and C each replicate only with H, whose producer forwards every origin
// (--forward-origins all). An order moves entered -> approved -> shipped ->
// billed, each step made at the site that owns it, and reaches every site
// once; a change from a site that does not own the row is rejected at the
// hub and recorded, and goes no further; no site's producer republishes
// what its consumer applied, and the hub's forwarded changes never apply
// again at the site they came from.
func TestMultisiteCascadeWorkflowOwnership(t *testing.T) {
	ddl := []string{`CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL, note text)`,
		`ALTER TABLE orders REPLICA IDENTITY FULL`}
	sites := newSites(t, "orders", ddl, "A", "H", "C")
	a, h, c := sites[0], sites[1], sites[2]
	a.produce(t)
	h.produce(t, "all")
	c.produce(t)
	h.consume(t, a, workflowYAML)
	eh := h.consume(t, c, workflowYAML)
	a.consume(t, h, workflowYAML)
	c.consume(t, h, workflowYAML)

	status := `SELECT status FROM orders WHERE id = $1`
	a.env.pg.Exec(t, `INSERT INTO orders VALUES (1, 'entered', 'n')`)
	waitValue(t, c, "entered", status, 1)
	a.env.pg.Exec(t, `UPDATE orders SET status = 'approved' WHERE id = 1`)
	waitValue(t, c, "approved", status, 1)
	h.env.pg.Exec(t, `UPDATE orders SET status = 'shipped' WHERE id = 1`)
	waitValue(t, c, "shipped", status, 1)
	waitValue(t, a, "shipped", status, 1)
	c.env.pg.Exec(t, `UPDATE orders SET status = 'billed' WHERE id = 1`)
	waitValue(t, a, "billed", status, 1)
	waitEqual(t, "orders", a, h, c)

	// C changes an approved order, which H owns: rejected at H, recorded there.
	a.env.pg.Exec(t, `INSERT INTO orders VALUES (2, 'entered', 'n')`, `UPDATE orders SET status = 'approved' WHERE id = 2`)
	waitValue(t, c, "approved", status, 2)
	c.env.pg.Exec(t, `UPDATE orders SET note = 'C meddles' WHERE id = 2`)
	waitValue(t, h, "1", `SELECT count(*)::text FROM tributary_conflicts WHERE kind = 'ownership' AND outcome = 'rejected'
		AND remote_site = 'C' AND key->>'id' = '2'`)
	if eh.Records() != 1 {
		t.Fatalf("the hub's consumer of C recorded %d records, want the one violation", eh.Records())
	}
	// Then H, the owner, ships it; every site converges (C's note loses to
	// H's later change by the default method, latest).
	h.env.pg.Exec(t, `UPDATE orders SET status = 'shipped' WHERE id = 2`)
	waitEqual(t, "orders", a, h, c)
	if got := a.query(t, `SELECT note FROM orders WHERE id = 2`); got != "n" {
		t.Fatalf("the rejected change reached A: note %q", got)
	}
	for _, s := range []*msSite{a, c} {
		if n := s.query(t, `SELECT count(*)::text FROM tributary_conflicts WHERE kind = 'ownership'`); n != "0" {
			t.Fatalf("%s recorded %s ownership violations, want none", s.name, n)
		}
	}

	// No loop: A's and C's producers published only their own transactions;
	// the hub forwarded theirs with their origins (counted in changes: the
	// hub's consumer may group several source transactions into one).
	origins := map[string]int{}
	for _, tx := range harness.ReadLog(t, h.env.kafka, h.env.reg, h.env.prefix).Txns {
		origins[tx.Frame.Origin] += len(tx.Events)
	}
	if origins["tributary_A"] != 4 || origins["tributary_C"] != 1 || origins[""] != 2 {
		t.Fatalf("hub changes by origin %v, want 4 from A, 1 from C, 2 of its own", origins)
	}
	for _, x := range []struct {
		s    *msSite
		want int
	}{{a, 4}, {c, 2}} {
		log := harness.ReadLog(t, x.s.env.kafka, x.s.env.reg, x.s.env.prefix)
		for _, tx := range log.Txns {
			if tx.Frame.Origin != "" {
				t.Fatalf("%s's producer published a transaction of origin %s", x.s.name, tx.Frame.Origin)
			}
		}
		if len(log.Txns) != x.want {
			t.Fatalf("%s's producer published %d transactions, want its own %d", x.s.name, len(log.Txns), x.want)
		}
	}
}
