package conflict

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The decision core without a database: every method, tie and NULL case
// (TestDecide), two sites applying the same pair of concurrent changes in
// opposite orders (TestDecidePairsConverge), and sites that change a group
// many times in a row and receive each other's changes in any order, in a
// full mesh and through a hub (TestDecideModelConverges).

// dcols is the table of the decision tests: a key and one column per group.
var dcols = []column{{name: "id", sqlType: "integer", class: classInt, key: true}, {name: "v", sqlType: "bigint", class: classInt},
	{name: "w", sqlType: "text", class: classText}, {name: "at", sqlType: "timestamptz", class: classText}}

func sp(s string) *string { return &s }

// drow is a row of dcols; "-" is NULL.
func drow(v, w, at string) []*string {
	r := []*string{sp("1"), sp(v), sp(w), sp(at)}
	for i, x := range r {
		if x != nil && *x == "-" {
			r[i] = nil
		}
	}
	return r
}

func tsp(sec int) *time.Time {
	t := time.Date(2026, 1, 1, 0, 0, sec, 0, time.UTC)
	return &t
}

func dgroup(t *testing.T, m Method, cols ...int) *group {
	g := &group{name: "g", cols: cols, method: m, tsCol: -1}
	if m == MethodCustom {
		p, err := compileCEL(`{"v": local.v + remote_after.v - remote_before.v}`, []string{"local", "remote_before", "remote_after"})
		if err != nil {
			t.Fatal(err)
		}
		g.expr = p
	}
	return g
}

// sets renders a verdict's column writes, e.g. "v=remote w=add".
func sets(v verdict) string {
	names := map[colOp]string{colRemote: "remote", colAdd: "add", colLeast: "least", colGreatest: "greatest", colValue: "value"}
	var out []string
	for _, s := range v.sets {
		x := dcols[s.col].name + "=" + names[s.op]
		if s.op == colValue {
			x += ":" + *s.value
		}
		out = append(out, x)
	}
	return strings.Join(out, " ")
}

func TestDecide(t *testing.T) {
	prio := []string{"A", "B"}
	at := func(site string, sec int) attribution {
		if sec < 0 {
			return attribution{site: site}
		}
		return attribution{site: site, ts: tsp(sec)}
	}
	base, mine, theirs := drow("1", "x", "-"), drow("2", "y", "-"), drow("3", "z", "-")
	for _, c := range []struct {
		name     string
		method   Method
		kind     Kind
		local    []*string
		before   []*string
		after    []*string
		localAt  attribution
		remoteAt attribution
		exact    bool
		owner    bool
		action   Method
		tsCol    int // -1: commit times
		// want: "" no conflict, else the outcome; sets; the attribution's site after
		want, wantSets, wantSite string
		wantDetail               string
		stop, attrChanged        bool
	}{
		// latest, exact local times: a last-writer-wins register.
		{name: "latest later remote", method: MethodLatest, local: mine, before: base, after: theirs, localAt: at("A", 10), remoteAt: at("B", 20),
			exact: true, want: "applied-remote", wantSets: "v=remote", wantSite: "B", attrChanged: true},
		{name: "latest earlier remote", method: MethodLatest, local: mine, before: base, after: theirs, localAt: at("A", 20), remoteAt: at("B", 10),
			exact: true, want: "kept-local", wantSite: "A"},
		{name: "latest tie to priority (A first)", method: MethodLatest, local: mine, before: base, after: theirs, localAt: at("B", 10),
			remoteAt: at("A", 10), exact: true, want: "applied-remote", wantSets: "v=remote", wantSite: "A", attrChanged: true},
		{name: "latest tie kept by priority", method: MethodLatest, local: mine, before: base, after: theirs, localAt: at("A", 10),
			remoteAt: at("B", 10), exact: true, want: "kept-local", wantSite: "A"},
		{name: "latest unknown local time is oldest", method: MethodLatest, local: mine, before: base, after: theirs, localAt: at("A", -1),
			remoteAt: at("B", 1), exact: true, want: "applied-remote", wantSets: "v=remote", wantSite: "B", attrChanged: true},
		{name: "latest unknown remote time loses", method: MethodLatest, local: mine, before: base, after: theirs, localAt: at("B", 1),
			remoteAt: at("A", -1), exact: true, want: "kept-local", wantSite: "B"},
		{name: "latest both unknown: priority", method: MethodLatest, local: mine, before: base, after: theirs, localAt: at("B", -1),
			remoteAt: at("A", -1), exact: true, want: "applied-remote", wantSets: "v=remote", wantSite: "A", attrChanged: true},
		{name: "latest same site is later in its stream", method: MethodLatest, local: mine, before: base, after: theirs, localAt: at("B", 20),
			remoteAt: at("B", 20), exact: true, want: "applied-remote", wantSets: "v=remote", wantSite: "B", attrChanged: true},
		{name: "latest over exactly the local values, later: no conflict", method: MethodLatest, local: base, before: base, after: theirs,
			localAt: at("A", 10), remoteAt: at("B", 20), exact: true, wantSets: "v=remote", wantSite: "B", attrChanged: true},
		{name: "latest over exactly the local values, not later: kept", method: MethodLatest, local: base, before: base, after: theirs,
			localAt: at("A", 20), remoteAt: at("B", 10), exact: true, want: "kept-local", wantSite: "A", wantDetail: "clocks are out of step"},
		{name: "latest equal values take the later attribution", method: MethodLatest, local: theirs, before: base, after: theirs,
			localAt: at("A", 10), remoteAt: at("B", 20), exact: true, wantSite: "B", attrChanged: true},
		{name: "latest equal values keep the later attribution", method: MethodLatest, local: theirs, before: base, after: theirs,
			localAt: at("A", 30), remoteAt: at("B", 20), exact: true, wantSite: "A"},
		{name: "latest NULL values compare", method: MethodLatest, local: drow("-", "y", "-"), before: base, after: drow("-", "y", "-"),
			localAt: at("A", 30), remoteAt: at("B", 20), exact: true, wantSite: "A"},
		{name: "latest insert-exists", method: MethodLatest, kind: KindInsertExists, local: mine, after: theirs, localAt: at("A", 10),
			remoteAt: at("B", 20), exact: true, want: "applied-remote", wantSets: "v=remote", wantSite: "B", attrChanged: true},
		{name: "latest from the owner", method: MethodLatest, local: mine, before: base, after: theirs, localAt: at("A", 30),
			remoteAt: at("B", 20), exact: true, owner: true, want: "applied-remote", wantSets: "v=remote", wantSite: "B", attrChanged: true},
		// latest without exact local times: the before-image decides first.
		{name: "latest inexact over the local values", method: MethodLatest, local: base, before: base, after: theirs, localAt: at("A", 20),
			remoteAt: at("B", 10), wantSets: "v=remote", wantSite: "B", attrChanged: true},
		{name: "latest inexact conflict", method: MethodLatest, local: mine, before: base, after: theirs, localAt: at("A", 20),
			remoteAt: at("B", 10), want: "kept-local", wantSite: "A"},
		// latest by timestamp_column: the column's values, NULL oldest.
		{name: "latest by column", method: MethodLatest, tsCol: 3, local: drow("2", "y", "2026-01-01 00:00:05+00"), before: base,
			after: drow("3", "z", "2026-01-01 00:00:06+00"), localAt: at("A", 50), remoteAt: at("B", 1), exact: true,
			want: "applied-remote", wantSets: "v=remote w=remote at=remote", wantSite: "B", attrChanged: true, wantDetail: "timestamp_column at"},
		{name: "latest by column NULL local", method: MethodLatest, tsCol: 3, local: drow("2", "y", "-"), before: base,
			after: drow("3", "z", "2020-01-01 00:00:06+00"), localAt: at("A", 50), remoteAt: at("B", 1), exact: true,
			want: "applied-remote", wantSets: "v=remote w=remote at=remote", wantSite: "B", attrChanged: true},
		{name: "latest by column earlier", method: MethodLatest, tsCol: 3, local: drow("2", "y", "2026-01-01 00:00:07+00"), before: base,
			after: drow("3", "z", "2026-01-01 00:00:06+00"), localAt: at("A", 1), remoteAt: at("B", 50), exact: true,
			want: "kept-local", wantSite: "A"},
		// earliest.
		{name: "earliest earlier remote", method: MethodEarliest, local: mine, before: base, after: theirs, localAt: at("A", 20),
			remoteAt: at("B", 10), want: "applied-remote", wantSets: "v=remote", wantSite: "B", attrChanged: true},
		{name: "earliest later remote", method: MethodEarliest, local: mine, before: base, after: theirs, localAt: at("A", 10),
			remoteAt: at("B", 20), want: "kept-local", wantSite: "A"},
		{name: "earliest unknown remote is oldest", method: MethodEarliest, local: mine, before: base, after: theirs, localAt: at("A", 10),
			remoteAt: at("B", -1), want: "applied-remote", wantSets: "v=remote", wantSite: "B", attrChanged: true},
		{name: "earliest tie to priority", method: MethodEarliest, local: mine, before: base, after: theirs, localAt: at("B", 10),
			remoteAt: at("A", 10), want: "applied-remote", wantSets: "v=remote", wantSite: "A", attrChanged: true},
		{name: "earliest over the local values", method: MethodEarliest, local: base, before: base, after: theirs, localAt: at("A", 10),
			remoteAt: at("B", 20), wantSets: "v=remote", wantSite: "B", attrChanged: true},
		{name: "earliest already equal", method: MethodEarliest, local: theirs, before: base, after: theirs, localAt: at("A", 10),
			remoteAt: at("B", 20), wantSite: "A"},
		// site-priority.
		{name: "site-priority higher remote", method: MethodSitePriority, local: mine, before: base, after: theirs, localAt: at("B", 10),
			remoteAt: at("A", 1), want: "applied-remote", wantSets: "v=remote", wantSite: "A", attrChanged: true},
		{name: "site-priority lower remote", method: MethodSitePriority, local: mine, before: base, after: theirs, localAt: at("A", 1),
			remoteAt: at("B", 10), want: "kept-local", wantSite: "A"},
		{name: "site-priority unranked by name", method: MethodSitePriority, local: mine, before: base, after: theirs, localAt: at("D", 1),
			remoteAt: at("C", 10), want: "applied-remote", wantSets: "v=remote", wantSite: "C", attrChanged: true},
		{name: "site-priority same site", method: MethodSitePriority, local: mine, before: base, after: theirs, localAt: at("B", 1),
			remoteAt: at("B", 10), want: "applied-remote", wantSets: "v=remote", wantSite: "B", attrChanged: true},
		// keep-local, apply-remote.
		{name: "keep-local", method: MethodKeepLocal, local: mine, before: base, after: theirs, localAt: at("B", 1), remoteAt: at("A", 10),
			want: "kept-local", wantSite: "B"},
		{name: "apply-remote", method: MethodApplyRemote, local: mine, before: base, after: theirs, localAt: at("A", 10),
			remoteAt: at("B", 1), want: "applied-remote", wantSets: "v=remote", wantSite: "B", attrChanged: true},
		// merges.
		{name: "additive", method: MethodAdditive, local: mine, before: base, after: theirs, localAt: at("A", 10), remoteAt: at("B", 20),
			want: "merged", wantSets: "v=add", wantSite: "B", attrChanged: true},
		{name: "additive equal sums still count", method: MethodAdditive, local: theirs, before: base, after: theirs, localAt: at("A", 30),
			remoteAt: at("B", 20), want: "merged", wantSets: "v=add", wantSite: "A", attrChanged: true},
		{name: "additive insert-exists", method: MethodAdditive, kind: KindInsertExists, local: mine, after: theirs, localAt: at("A", 10),
			remoteAt: at("B", 20), want: "merged", wantSets: "v=add", wantSite: "B", attrChanged: true},
		{name: "minimum", method: MethodMinimum, local: mine, before: base, after: theirs, localAt: at("A", 10), remoteAt: at("B", 20),
			want: "merged", wantSets: "v=least", wantSite: "B", attrChanged: true},
		{name: "maximum NULL local", method: MethodMaximum, local: drow("-", "y", "-"), before: base, after: theirs, localAt: at("A", 10),
			remoteAt: at("B", 20), want: "merged", wantSets: "v=greatest", wantSite: "B", attrChanged: true},
		{name: "maximum over the local values", method: MethodMaximum, local: base, before: base, after: theirs, localAt: at("A", 10),
			remoteAt: at("B", 20), wantSets: "v=remote", wantSite: "B", attrChanged: true},
		{name: "custom", method: MethodCustom, local: mine, before: base, after: theirs, localAt: at("A", 10), remoteAt: at("B", 20),
			want: "merged", wantSets: "v=value:4", wantSite: "B", attrChanged: true},
		{name: "custom update equal to the after-image still merges", method: MethodCustom, local: theirs, before: base, after: theirs,
			localAt: at("A", 10), remoteAt: at("B", 20), want: "merged", wantSets: "v=value:5", wantSite: "B", attrChanged: true},
		// method error.
		{name: "error stops", method: MethodError, local: mine, before: base, after: theirs, localAt: at("A", 10), remoteAt: at("B", 20),
			stop: true, wantSite: "A"},
		{name: "error declared apply-remote", method: MethodError, local: mine, before: base, after: theirs, localAt: at("A", 10),
			remoteAt: at("B", 20), action: MethodApplyRemote, want: "applied-remote", wantSets: "v=remote", wantSite: "B", attrChanged: true,
			wantDetail: declaredDetail},
		{name: "error declared keep-local", method: MethodError, local: mine, before: base, after: theirs, localAt: at("A", 10),
			remoteAt: at("B", 20), action: MethodKeepLocal, want: "kept-local", wantSite: "A", wantDetail: declaredDetail},
		{name: "error over the local values", method: MethodError, local: base, before: base, after: theirs, localAt: at("A", 10),
			remoteAt: at("B", 20), wantSets: "v=remote", wantSite: "B", attrChanged: true},
		// ownership decides every method but latest's register.
		{name: "ownership", method: MethodSitePriority, local: mine, before: base, after: theirs, localAt: at("A", 10),
			remoteAt: at("B", 20), owner: true, want: "applied-remote", wantSets: "v=remote", wantSite: "B", attrChanged: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			kind := c.kind
			if kind == "" {
				kind = KindUpdateDiffers
			}
			cols := []int{1}
			g := dgroup(t, c.method, cols...)
			if c.tsCol > 0 {
				g.cols, g.tsCol = []int{1, 2, 3}, c.tsCol
			}
			v := decide(input{kind: kind, group: g, cols: dcols, local: c.local, before: c.before, after: c.after,
				localAt: c.localAt, remoteAt: c.remoteAt, exact: c.exact, owner: c.owner, action: c.action, priority: prio})
			if v.err != nil {
				t.Fatal(v.err)
			}
			got := ""
			if v.conflict {
				got = string(v.outcome)
			}
			if got != c.want || sets(v) != c.wantSets || v.attr.site != c.wantSite || v.stop != c.stop ||
				v.attrChanged != c.attrChanged || !strings.Contains(v.detail, c.wantDetail) {
				t.Fatalf("got outcome %q sets %q site %s stop %v changed %v detail %q; want %q %q %s %v %v %q",
					got, sets(v), v.attr.site, v.stop, v.attrChanged, v.detail, c.want, c.wantSets, c.wantSite, c.stop, c.attrChanged, c.wantDetail)
			}
			if c.owner && v.conflict && v.method != MethodOwnership {
				t.Fatalf("a conflict the owner decides is recorded with method %s", v.method)
			}
		})
	}
}

func TestDecideErrors(t *testing.T) {
	g := dgroup(t, MethodLatest, 1, 2, 3)
	g.tsCol = 3
	v := decide(input{kind: KindUpdateDiffers, group: g, cols: dcols, local: drow("1", "x", "01/02/2026"), before: drow("0", "x", "-"),
		after: drow("2", "x", "2026-01-01 00:00:00+00")})
	if v.err == nil || !strings.Contains(v.err.Error(), "timestamp_column at") {
		t.Fatalf("a non-ISO timestamp_column value: %v", v.err)
	}
	p, err := compileCEL(`{"w": 1}`, []string{"local", "remote_before", "remote_after"})
	if err != nil {
		t.Fatal(err)
	}
	g = &group{name: "g", cols: []int{1}, method: MethodCustom, expr: p, tsCol: -1}
	v = decide(input{kind: KindUpdateDiffers, group: g, cols: dcols, local: drow("1", "x", "-"), before: drow("0", "x", "-"),
		after: drow("2", "x", "-")})
	if v.err == nil || !strings.Contains(v.err.Error(), `column "w" is not in the group`) {
		t.Fatalf("a custom expression that sets another group's column: %v", v.err)
	}
	// An after value that is unknown (unchanged TOAST) is never written.
	g = dgroup(t, MethodApplyRemote, 1, 2)
	v = decide(input{kind: KindUpdateDiffers, group: g, cols: dcols, local: drow("1", "x", "-"), before: drow("0", "x", "-"),
		after: drow("2", "x", "-"), unknown: map[int]bool{2: true}})
	if sets(v) != "v=remote" {
		t.Fatalf("unknown after values: sets %q, want v only", sets(v))
	}
}

// site is one site's state of the group (column v of one row) in the
// property and model tests.
type simSite struct {
	name string
	v    *string
	at   attribution
}

// msg is a change as another site receives it.
type simMsg struct {
	from          string // the sending site (for a hub, the hub)
	before, after *string
	at            attribution // the origin site and commit time
}

func num(s *string) int64 {
	if s == nil {
		return 0
	}
	n, _ := strconv.ParseInt(*s, 10, 64)
	return n
}

// applyRemote applies m at s through decide, interpreting its column
// writes as the target's SQL would over bigint values. It reports whether
// the value changed (a hub forwards such changes) and the value before.
func applyRemote(t *testing.T, g *group, s *simSite, m simMsg, exact bool, prio []string) (changed bool, old *string) {
	t.Helper()
	row := func(v *string) []*string { return []*string{sp("1"), v, sp("w"), nil} }
	v := decide(input{kind: KindUpdateDiffers, group: g, cols: dcols, local: row(s.v), before: row(m.before), after: row(m.after),
		localAt: s.at, remoteAt: m.at, exact: exact, priority: prio})
	if v.err != nil || v.stop {
		t.Fatalf("decide: %v stop %v", v.err, v.stop)
	}
	old = s.v
	for _, cs := range v.sets {
		switch cs.op {
		case colRemote:
			s.v = m.after
		case colAdd:
			s.v = sp(strconv.FormatInt(num(s.v)+num(m.after)-num(m.before), 10))
		case colLeast, colGreatest:
			switch {
			case s.v == nil:
				s.v = m.after
			case m.after != nil && (cs.op == colLeast) == (num(m.after) < num(s.v)):
				s.v = m.after
			}
		case colValue:
			s.v = cs.value
		}
	}
	if v.attrChanged {
		s.at = v.attr
	}
	return !eqText(old, s.v), old
}

// localWrite is a local application's write of x at s at time ts: minimum
// and maximum columns move one way (the monotone trigger), additive adds x.
func localWrite(g *group, s *simSite, x int64, ts time.Time) (before, after *string) {
	before = s.v
	switch g.method {
	case MethodAdditive, MethodCustom:
		s.v = sp(strconv.FormatInt(num(s.v)+x, 10))
	case MethodMinimum:
		if s.v == nil || x < num(s.v) {
			s.v = sp(strconv.FormatInt(x, 10))
		}
	case MethodMaximum:
		if s.v == nil || x > num(s.v) {
			s.v = sp(strconv.FormatInt(x, 10))
		}
	default:
		s.v = sp(strconv.FormatInt(x, 10))
	}
	if !eqText(before, s.v) { // the trigger records only groups a write changes
		s.at = attribution{site: s.name, ts: &ts}
	}
	return before, s.v
}

// TestDecidePairsConverge: two sites start equal, each changes the group
// once, and each then applies the other's change; whatever the values
// (NULL, equal or not), times (equal, unknown) and priorities, both end
// with the same values for every method, and, for a register, the same
// attribution. keep-local pairs with apply-remote at the other site.
func TestDecidePairsConverge(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	nulls := true
	val := func() *string {
		if rng.IntN(6) == 0 && nulls {
			return nil
		}
		return sp(strconv.Itoa(rng.IntN(4)))
	}
	when := func() *time.Time {
		if rng.IntN(6) == 0 {
			return nil
		}
		return tsp(rng.IntN(3))
	}
	type pair struct{ a, b Method }
	all := []pair{{MethodLatest, MethodLatest}, {MethodEarliest, MethodEarliest}, {MethodSitePriority, MethodSitePriority},
		{MethodAdditive, MethodAdditive}, {MethodMinimum, MethodMinimum}, {MethodMaximum, MethodMaximum},
		{MethodCustom, MethodCustom}, {MethodKeepLocal, MethodApplyRemote}, {MethodApplyRemote, MethodKeepLocal}}
	for _, p := range all {
		for _, exact := range []bool{true, false} {
			// NULL has no sum: additive counts it as 0, custom expressions fail.
			nulls = p.a != MethodAdditive && p.a != MethodCustom
			for i := 0; i < 3000; i++ {
				prio := [][]string{{"A", "B"}, {"B", "A"}, nil}[rng.IntN(3)]
				base, baseAt := val(), attribution{site: []string{"A", "B", "C"}[rng.IntN(3)], ts: when()}
				va, vb := val(), val()
				if eqText(va, base) || eqText(vb, base) {
					continue // not a change of the group
				}
				ta, tb := when(), when()
				if p.a == MethodAdditive || p.a == MethodCustom { // deltas: x is what the site adds
					va, vb = sp(strconv.FormatInt(num(base)+num(va), 10)), sp(strconv.FormatInt(num(base)+num(vb), 10))
				}
				a := &simSite{name: "A", v: va, at: attribution{site: "A", ts: ta}}
				b := &simSite{name: "B", v: vb, at: attribution{site: "B", ts: tb}}
				ga, gb := dgroup(t, p.a, 1), dgroup(t, p.b, 1)
				applyRemote(t, ga, a, simMsg{from: "B", before: base, after: vb, at: b.at}, exact, prio)
				applyRemote(t, gb, b, simMsg{from: "A", before: base, after: va, at: attribution{site: "A", ts: ta}}, exact, prio)
				if !eqText(a.v, b.v) {
					t.Fatalf("%s/%s exact %v: base %v (%+v), A wrote %v at %v, B wrote %v at %v, priority %v: A ends %v, B ends %v",
						p.a, p.b, exact, show(base), baseAt, show(va), showT(ta), show(vb), showT(tb), prio, show(a.v), show(b.v))
				}
				if p.a == MethodLatest && exact && (a.at.site != b.at.site || !sameTime(a.at.ts, b.at.ts)) {
					t.Fatalf("latest: the sites end with attributions %+v and %+v", a.at, b.at)
				}
			}
		}
	}
}

func show(s *string) string {
	if s == nil {
		return "NULL"
	}
	return *s
}

func showT(t *time.Time) string {
	if t == nil {
		return "unknown"
	}
	return strconv.Itoa(int(t.Sub(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) / time.Second))
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Equal(*b)
}

// TestDecideModelConverges simulates three sites that each change the
// group many times in a row and exchange changes over FIFO streams that
// deliver in random interleavings, in a full mesh and through a hub (B)
// that forwards what it applies with the origin's site and time. Commit
// clocks respect causality (a site's write is later than everything it
// has applied). After every stream is drained, every site holds the same
// value, and it is the value a model predicts: the latest write for
// latest, the sum of every increment for additive and custom, the extreme
// of every write for minimum and maximum.
func TestDecideModelConverges(t *testing.T) {
	type cfg struct {
		method Method
		values int // the domain of written values (small: equal values, A-B-A)
	}
	cases := []cfg{{MethodLatest, 3}, {MethodLatest, 1 << 30}, {MethodAdditive, 10}, {MethodCustom, 10},
		{MethodMinimum, 50}, {MethodMaximum, 50}}
	for _, hub := range []bool{false, true} {
		for _, c := range cases {
			if hub && c.method == MethodLatest && c.values < 100 {
				// Through a hub, equal values written concurrently can leave
				// a spoke with the older attribution (docs/MULTISITE.md,
				// "Three sites and more"): only distinct values here.
				continue
			}
			name := fmt.Sprintf("%s/values=%d/hub=%v", c.method, c.values, hub)
			t.Run(name, func(t *testing.T) {
				for seed := uint64(0); seed < 300; seed++ {
					simulate(t, c.method, c.values, hub, seed)
				}
			})
		}
	}
}

var simDebug bool

func simulate(t *testing.T, m Method, values int, hub bool, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 99))
	prio := []string{"C", "A", "B"}
	names := []string{"A", "B", "C"}
	g := dgroup(t, m, 1)
	sites := map[string]*simSite{}
	clock := map[string]int{}
	for _, n := range names {
		sites[n] = &simSite{name: n, v: sp("100"), at: attribution{site: "A", ts: tsp(0)}}
	}
	// links[from+to] is a FIFO stream.
	links := map[string][]simMsg{}
	var linkNames []string
	peers := func(n string) []string {
		var out []string
		for _, p := range names {
			if p != n && (!hub || n == "B" || p == "B") {
				out = append(out, p)
			}
		}
		return out
	}
	for _, n := range names {
		for _, p := range peers(n) {
			linkNames = append(linkNames, n+p)
		}
	}
	type write struct {
		v  int64
		ts int
		at string
	}
	var writes []write
	sum := int64(0)
	extreme := int64(100)
	deliver := func(l string) {
		m := links[l][0]
		links[l] = links[l][1:]
		to := sites[l[1:]]
		if m.at.ts != nil && m.at.ts.Second()+60*m.at.ts.Minute() > clock[to.name] {
			clock[to.name] = m.at.ts.Second() + 60*m.at.ts.Minute()
		}
		pre := *to
		changed, old := applyRemote(t, g, to, m, true, prio)
		if simDebug {
			t.Logf("%s <- %s: before %s after %s at %s/%s; local %s at %s/%s -> %s at %s/%s", to.name, l[:1], show(m.before), show(m.after), m.at.site, showT(m.at.ts),
				show(pre.v), pre.at.site, showT(pre.at.ts), show(to.v), to.at.site, showT(to.at.ts))
		}
		if hub && to.name == "B" && changed {
			// The hub forwards what it applied, with the origin's site and
			// time, to the other spoke (not back to where it came from).
			for _, p := range peers("B") {
				if p != m.at.site {
					links["B"+p] = append(links["B"+p], simMsg{from: "B", before: old, after: to.v, at: m.at})
				}
			}
		}
	}
	for step := 0; step < 120; step++ {
		if rng.IntN(2) == 0 {
			n := names[rng.IntN(3)]
			s := sites[n]
			clock[n] += 1 + rng.IntN(2)
			x := int64(rng.IntN(values))
			if m == MethodAdditive || m == MethodCustom {
				x -= int64(values / 2)
			}
			ts := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(clock[n]) * time.Second)
			before, after := localWrite(g, s, x, ts)
			if eqText(before, after) {
				continue // an update that changes nothing touches no group
			}
			writes = append(writes, write{num(after), clock[n], n})
			if simDebug {
				t.Logf("%s writes %s -> %s at %d", n, show(before), show(after), clock[n])
			}
			sum += x
			if m == MethodMinimum {
				extreme = min(extreme, x)
			} else {
				extreme = max(extreme, x)
			}
			for _, p := range peers(n) {
				links[n+p] = append(links[n+p], simMsg{from: n, before: before, after: after, at: s.at})
			}
			continue
		}
		var ready []string
		for _, l := range linkNames {
			if len(links[l]) > 0 {
				ready = append(ready, l)
			}
		}
		if len(ready) > 0 {
			deliver(ready[rng.IntN(len(ready))])
		}
	}
	for {
		var ready []string
		for _, l := range linkNames {
			if len(links[l]) > 0 {
				ready = append(ready, l)
			}
		}
		if len(ready) == 0 {
			break
		}
		deliver(ready[rng.IntN(len(ready))])
	}
	want := ""
	switch m {
	case MethodLatest:
		best := write{v: 100, ts: 0, at: "A"}
		for _, w := range writes {
			if w.ts > best.ts || w.ts == best.ts && better(prio, w.at, best.at) {
				best = w
			}
		}
		want = strconv.FormatInt(best.v, 10)
	case MethodAdditive, MethodCustom:
		want = strconv.FormatInt(100+sum, 10)
	default:
		want = strconv.FormatInt(extreme, 10)
	}
	for _, n := range names {
		if got := show(sites[n].v); got != want {
			t.Fatalf("seed %d: %s ends with %s, want %s (A %s, B %s, C %s; %d writes)", seed, n, got, want,
				show(sites["A"].v), show(sites["B"].v), show(sites["C"].v), len(writes))
		}
	}
}
