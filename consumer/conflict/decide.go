package conflict

import (
	"fmt"
	"slices"
	"time"
)

// The decision core: what happens to one column group of one row when a
// remote change touches it. decide is a pure function of its input (the
// group's local values and who wrote them when, the remote change, the
// method, ownership and a declared action); Session.resolve gathers the
// inputs from the target, calls it for each touched group, and writes what
// it returns. Keeping the decision apart from SQL is what lets
// decide_test.go check every method, tie and NULL case, and simulate sites
// that apply the same changes in different orders.

// attribution is who wrote a version of a group's values, and when: the
// source commit time of a remote change, the commit time of a local write,
// or, for a group with a timestamp_column, that column's value. A nil time
// is unknown, and older than every known time.
type attribution struct {
	site string
	ts   *time.Time
}

// colOp is how one column of a resolved group is written.
type colOp uint8

const (
	// colRemote writes the remote after-image's value.
	colRemote colOp = iota + 1
	// colAdd writes local + (remote after − remote before), or, for an
	// insert whose key exists, local + remote after (NULL counts as 0).
	colAdd
	// colLeast and colGreatest write LEAST and GREATEST of the local value
	// and the remote after-image's (NULL is ignored, as SQL does).
	colLeast
	colGreatest
	// colValue writes a computed value (custom).
	colValue
)

// colSet is one column write of a decision.
type colSet struct {
	col   int     // index into the table's columns
	op    colOp   // how
	value *string // the value of colValue (nil is NULL)
}

// input is everything decide needs about one touched group.
type input struct {
	// kind is KindInsertExists (an insert whose key exists) or
	// KindUpdateDiffers (an update that touches the group).
	kind  Kind
	group *group
	cols  []column
	// local, before and after are whole rows of canonical texts: the local
	// row, the remote before-image (nil for an insert) and after-image.
	local, before, after []*string
	// unknown marks columns whose after value is unknown (unchanged TOAST):
	// they are never written.
	unknown map[int]bool
	// localAt is who wrote the group's local values; remoteAt is the remote
	// change's site and source commit time.
	localAt, remoteAt attribution
	// exact: localAt is the group's own last write (the group-times
	// trigger), not the row's (see change.attr).
	exact bool
	// owner: the remote site owns the row, or every column of the group.
	owner bool
	// action is the declared action for this change (method error):
	// MethodKeepLocal, MethodApplyRemote, or "" when none is declared.
	action Method
	// priority ranks sites, highest first (site-priority and ties).
	priority []string
}

// verdict is decide's result for one group.
type verdict struct {
	// conflict: the decision is recorded in tributary_conflicts.
	conflict bool
	method   Method // as recorded: ownership when the owner decided
	outcome  Outcome
	sets     []colSet
	// attr is who wrote the group's values afterwards; attrChanged says
	// that it differs from the input's localAt (the row metadata is then
	// written even when no column is).
	attr        attribution
	attrChanged bool
	// local is the local attribution the decision compared (recorded).
	local attribution
	// usedAction: the declared action decided it (and is used up).
	usedAction bool
	// stop: method error and no declared action: the consumer stops.
	stop   bool
	detail string
	err    error // a timestamp_column value or a custom expression failed
}

// decide resolves one touched group. It reads nothing and writes nothing.
//
// The rules, per method (docs/MULTISITE.md has the reasons):
//   - latest by commit time, with exact local times, is a last-writer-wins
//     register: the remote values win exactly
//     when the remote version is later than the local one (later time, an
//     unknown time being the oldest; equal times go to the better-ranked
//     site), or comes from the site that wrote the local version (a later
//     change in that site's stream). The before-image only says whether a
//     loss is a conflict: a remote change made over exactly the local
//     values yet not later than them is recorded with a detail that names
//     clocks out of step. Equal values take the later attribution.
//   - Every other method (and latest without exact local times, or by a
//     timestamp_column, whose values are part of the group): local values equal to the after-image are no
//     conflict (except additive, and custom on an update); local values
//     equal to the before-image take the remote values, no conflict;
//     otherwise the method decides and the conflict is recorded.
//   - A change from the owner of the row (or of every column of the group)
//     wins any conflict, recorded with method ownership.
func decide(in input) verdict {
	g := in.group
	v := verdict{method: g.method, attr: in.localAt, local: in.localAt}
	if in.owner {
		v.method = MethodOwnership
	}
	localAt, remoteAt := in.localAt, in.remoteAt
	if g.tsCol >= 0 && g.method.usesTime() {
		var err error
		if localAt.ts, err = columnTime(g, in.cols, in.local); err == nil {
			remoteAt.ts, err = columnTime(g, in.cols, in.after)
		}
		if err != nil {
			v.err = err
			return v
		}
		v.local = localAt
		v.detail = "times are the values of timestamp_column " + in.cols[g.tsCol].name
	}
	eqAfter := groupEq(g, in.local, in.after)
	eqBefore := in.kind == KindUpdateDiffers && groupEq(g, in.local, in.before)
	remote := in.remoteAt

	if v.method == MethodLatest && in.exact && g.tsCol < 0 {
		wins := in.remoteAt.site == in.localAt.site || later(in.priority, remoteAt, localAt)
		switch {
		case eqAfter:
			if wins {
				v.attr, v.attrChanged = remote, true
			}
			return v
		case eqBefore && wins:
			v.sets, v.attr, v.attrChanged = remoteSets(in), remote, true
			return v
		case eqBefore:
			v.detail = joinDetail(v.detail, "the change was made over exactly this site's values but is not later than them: "+
				"the sites' clocks are out of step, or the same values were written twice")
		}
		v.conflict = true
		if wins {
			v.sets, v.outcome, v.attr, v.attrChanged = remoteSets(in), OutcomeRemote, remote, true
		} else {
			v.outcome = OutcomeLocal
		}
		return v
	}

	switch {
	case g.method != MethodAdditive && (g.method != MethodCustom || in.kind != KindUpdateDiffers) && eqAfter:
		// Already the same: nothing to do, no conflict. Not for additive,
		// nor for a custom update, whose expression may merge: equal sums
		// of different increments must both count.
		return v
	case eqBefore:
		// No conflict: the remote site changed what this site has.
		v.sets, v.attr, v.attrChanged = remoteSets(in), remote, true
		return v
	}
	v.conflict = true
	remoteWins := false
	switch v.method {
	case MethodOwnership:
		// The row's (or the group's columns') owner made the change: the
		// local change it conflicts with was not the site's to make.
		remoteWins = true
	case MethodLatest:
		remoteWins = later(in.priority, remoteAt, localAt)
	case MethodEarliest:
		remoteWins = earlier(in.priority, remoteAt, localAt)
	case MethodSitePriority:
		remoteWins = in.remoteAt.site == in.localAt.site || better(in.priority, in.remoteAt.site, in.localAt.site)
	case MethodApplyRemote:
		remoteWins = true
	case MethodKeepLocal:
	case MethodError:
		if in.action == "" {
			v.stop = true
			return v
		}
		remoteWins, v.usedAction, v.detail = in.action == MethodApplyRemote, true, declaredDetail
	case MethodAdditive, MethodMinimum, MethodMaximum, MethodCustom:
		if v.sets, v.err = mergeSets(in); v.err != nil {
			return v
		}
		v.outcome, v.attr, v.attrChanged = OutcomeMerged, laterOf(in.priority, in.localAt, remote), true
		return v
	}
	if remoteWins {
		v.sets, v.outcome, v.attr, v.attrChanged = remoteSets(in), OutcomeRemote, remote, true
	} else {
		v.outcome = OutcomeLocal
	}
	return v
}

// later reports whether version a is later than version b: the later time,
// an unknown time being the oldest; equal (or both unknown) times go to the
// better-ranked site.
func later(priority []string, a, b attribution) bool {
	c := cmpTime(a.ts, b.ts)
	return c > 0 || c == 0 && better(priority, a.site, b.site)
}

// earlier reports whether version a is earlier than version b: the earlier
// time, an unknown time being the oldest; equal (or both unknown) times go
// to the better-ranked site.
func earlier(priority []string, a, b attribution) bool {
	c := cmpTime(a.ts, b.ts)
	return c < 0 || c == 0 && better(priority, a.site, b.site)
}

// cmpTime compares two times, an unknown (nil) time being the oldest.
func cmpTime(a, b *time.Time) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	}
	return a.Compare(*b)
}

// laterOf is the later of two attributions (a merged result's attribution).
func laterOf(priority []string, a, b attribution) attribution {
	if later(priority, b, a) {
		return b
	}
	return a
}

// better reports whether site a ranks before site b: by place in priority,
// unranked sites after ranked ones, then by name.
func better(priority []string, a, b string) bool {
	ra, rb := slices.Index(priority, a), slices.Index(priority, b)
	if ra < 0 {
		ra = len(priority)
	}
	if rb < 0 {
		rb = len(priority)
	}
	if ra != rb {
		return ra < rb
	}
	return a < b
}

// remoteSets writes the remote after-values of the group, leaving columns
// whose after value is unknown alone.
func remoteSets(in input) []colSet {
	var out []colSet
	for _, i := range in.group.cols {
		if !in.unknown[i] {
			out = append(out, colSet{col: i, op: colRemote})
		}
	}
	return out
}

// mergeSets merges the remote change into the local values: additive,
// minimum, maximum per column, custom by its expression.
func mergeSets(in input) ([]colSet, error) {
	g := in.group
	if g.method == MethodCustom {
		sets, err := customSets(in)
		if err != nil {
			return nil, fmt.Errorf("group %s: custom resolution: %w", g.name, err)
		}
		return sets, nil
	}
	op := map[Method]colOp{MethodAdditive: colAdd, MethodMinimum: colLeast, MethodMaximum: colGreatest}[g.method]
	var out []colSet
	for _, i := range g.cols {
		if !in.unknown[i] {
			out = append(out, colSet{col: i, op: op})
		}
	}
	return out, nil
}

// customSets evaluates a custom group's expression over the three rows.
func customSets(in input) ([]colSet, error) {
	g := in.group
	if g.expr == nil {
		return nil, fmt.Errorf("no expression")
	}
	vals, err := g.expr.evalGroup(in.cols, g, in.local, in.before, in.after)
	if err != nil {
		return nil, err
	}
	out := make([]colSet, 0, len(vals))
	for _, cv := range vals {
		out = append(out, colSet{col: cv.col, op: colValue, value: cv.value})
	}
	return out, nil
}

// columnTime is the value of group g's timestamp_column in row (nil for
// NULL).
func columnTime(g *group, cols []column, row []*string) (*time.Time, error) {
	v := row[g.tsCol]
	if v == nil {
		return nil, nil
	}
	t, err := parseTimestamp(*v)
	if err != nil {
		return nil, fmt.Errorf("group %s: timestamp_column %s: %w", g.name, cols[g.tsCol].name, err)
	}
	return &t, nil
}

// groupEq reports whether rows x and y hold the same values in group g.
func groupEq(g *group, x, y []*string) bool {
	for _, i := range g.cols {
		if !eqText(x[i], y[i]) {
			return false
		}
	}
	return true
}

func eqText(a, b *string) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

func joinDetail(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
