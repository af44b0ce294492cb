package integration

import (
	"strings"
	"testing"
)

// groupsYAML resolves two column groups of gt by latest commit time.
const groupsYAML = `priority: [A, B]
tables:
  public.gt:
    method: latest
    groups:
      g1: {columns: [g1]}
      g2: {columns: [g2]}
`

// TestMultisiteLatestGroupTimes is the multi-site issue's observation 1:
// sites A and B, latest, column groups, REPLICA IDENTITY FULL. A sets
// g1 = a1 at t1, B sets g1 = b1 at t2, then A writes again at t3: on row 1
// it sets the other group g2 = a2; on row 2 it runs an UPDATE that changes
// nothing (SET c = c, as ORMs issue). Before the per-group times, A took
// its g1 as written at t3 and kept a1 while B kept b1, for good. With
// `tributary setup multisite` at both sites, A's g1 is written at t1: both
// sites converge on b1 (and A's a2), A records the conflict with its local
// time t1, B with t2, and each conflict is on the conflicts topic once.
func TestMultisiteLatestGroupTimes(t *testing.T) {
	ddl := []string{`CREATE TABLE gt (id int PRIMARY KEY, g1 text, g2 text, c text)`, `ALTER TABLE gt REPLICA IDENTITY FULL`,
		`INSERT INTO gt VALUES (1, 'v0', 'v0', 'v0'), (2, 'v0', 'v0', 'v0')`}
	sites, cfg := newSetupSites(t, "gt", groupsYAML, ddl, "A", "B")
	a, b := sites[0], sites[1]

	// The consumers are not running: every change below crosses the other.
	commitTS := func(s *msSite) string {
		return s.query(t, `SELECT pg_xact_commit_timestamp(xmin)::text FROM gt WHERE id = 1`)
	}
	a.env.pg.Exec(t, `UPDATE gt SET g1 = 'a1'`)
	t1 := commitTS(a)
	b.env.pg.Exec(t, `UPDATE gt SET g1 = 'b1'`)
	t2 := commitTS(b)
	a.env.pg.Exec(t, `UPDATE gt SET g2 = 'a2' WHERE id = 1; UPDATE gt SET c = c WHERE id = 2`)
	if t3 := commitTS(a); !(t1 < t2 && t2 < t3) {
		t.Fatalf("commit times t1 %s, t2 %s, t3 %s are not in order", t1, t2, t3)
	}

	pa, pb := a.consumeProc(t, b, cfg), b.consumeProc(t, a, cfg)
	defer func() {
		if t.Failed() {
			t.Logf("consumer at A:\n%s\nconsumer at B:\n%s", lastLines(pa.Output(), 20), lastLines(pb.Output(), 20))
		}
	}()
	waitEqual(t, "gt", a, b)
	if got := a.dump(t, "gt"); got != "[(1,b1,a2,v0) (2,b1,v0,v0)]" {
		t.Fatalf("gt at both sites: %s; want B's later g1 on both rows and A's g2 on row 1", got)
	}
	for _, c := range []struct {
		s                     *msSite
		outcome, local, ltime string
	}{{a, "applied-remote", "A", t1}, {b, "kept-local", "B", t2}} {
		waitValue(t, c.s, "2", `SELECT count(*)::text FROM tributary_conflicts WHERE column_group = 'g1'`)
		got := c.s.query(t, `SELECT string_agg(concat_ws(' ', key->>'id', kind, outcome, local_site, local_commit_ts::text), ', '
			ORDER BY key->>'id') FROM tributary_conflicts`)
		want := "1 update-differs " + c.outcome + " " + c.local + " " + c.ltime + ", 2 update-differs " + c.outcome + " " +
			c.local + " " + c.ltime
		if got != want {
			t.Fatalf("conflicts at %s: %s\nwant %s (the local time of g1 is its own write's, not the row's last)", c.s.name, got, want)
		}
	}
	checkConflictsOnce(t, a, b)
	checkConflictsOnce(t, b, a)
	for _, p := range []struct {
		at   string
		proc interface{ Output() string }
	}{{"A", pa}, {"B", pb}} {
		if out := p.proc.Output(); strings.Contains(out, "no tributary_group_times trigger") {
			t.Fatalf("the consumer at %s warns that the trigger is missing after setup multisite:\n%s", p.at, lastLines(out, 10))
		}
	}
}
