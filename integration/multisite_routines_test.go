package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/conflict"
	"github.com/tributary-cdc/tributary/integration/harness"
)

// routinesYAML gives each resolution routine its own column group of one
// table, so that one two-site setup tests them all; keepOrApply is the
// method of group kl at this site (keep-local at A pairs with
// apply-remote at B: A's value wins). errt stops for a person.
func routinesYAML(keepOrApply string) string {
	return `priority: [A, B]
tables:
  public.routines:
    groups:
      ear: {columns: [ear], method: earliest}
      mn: {columns: [mn], method: minimum}
      mx: {columns: [mx], method: maximum}
      kl: {columns: [kl], method: ` + keepOrApply + `}
      cu:
        columns: [cu]
        method: custom
        expr: '{"cu": local.cu + (remote_after.cu - remote_before.cu)}'
      ts: {columns: [tv, tv_at], method: latest, timestamp_column: tv_at}
  public.errt:
    method: error
`
}

// routineGroups are routinesYAML's column groups.
var routineGroups = []string{"ear", "mn", "mx", "kl", "cu", "ts"}

// routineWrite is one site's update of one row in one round.
type routineWrite struct {
	tag    string // written to ear, kl and tv; unique
	mn, mx int    // even at A, odd at B, in the round's own range: never a value written before
	d      int64  // added to cu; even at A, odd at B
	tvAt   time.Time
	before string    // ear before the update, from the producer's log
	ts     time.Time // source commit time, from the producer's log
}

// TestMultisiteRoutinesConverge runs earliest, minimum, maximum,
// keep-local/apply-remote, custom (CEL) and latest by a declared timestamp
// column on column groups of one table at two sites. Every row is updated
// once at each site per round: in round 1 before the consumers start, so
// that every pair conflicts; in round 2 while they run, so that some pairs
// race with the apply and some are sequential. After each round the sites
// are equal, each row's values are what each routine's definition gives for
// the two versions read back from the producers' logs, and each site
// recorded exactly one conflict per group for each concurrent pair. In
// round 3 each site changes rows several times in a row, with minimum and
// maximum values moving one way only: the sites converge on the extremes
// and on the sum of all increments. Every record follows its routine. Then
// method error: a conflict stops both consumers with an error naming table,
// key, LSN and both versions; actions declared in
// tributary_conflict_actions resolve it, and the restarted consumers
// converge and record it.
func TestMultisiteRoutinesConverge(t *testing.T) {
	const rows = 150
	ddl := []string{
		`CREATE TABLE routines (id int PRIMARY KEY, ear text, mn int, mx int, kl text, cu bigint, tv text, tv_at timestamptz)`,
		`ALTER TABLE routines REPLICA IDENTITY FULL`,
		fmt.Sprintf(`INSERT INTO routines SELECT g, 'init', 500000, 500000, 'init', 1000, 'init', '2020-01-01 00:00:00+00'
			FROM generate_series(1, %d) g`, rows),
		`CREATE TABLE errt (id int PRIMARY KEY, v text)`,
		`ALTER TABLE errt REPLICA IDENTITY FULL`,
		`INSERT INTO errt VALUES (1, 'init')`,
	}
	sites := newSites(t, "routines, errt", ddl, "A", "B")
	a, b := sites[0], sites[1]
	a.produce(t)
	b.produce(t)
	ymlA, ymlB := routinesYAML("keep-local"), routinesYAML("apply-remote")

	wantConflicts := 0 // per site and group, over the rounds so far
	// digest is id, mn, mx and cu of every row at s; numbers reads it.
	digest := func(s *msSite) string {
		return s.query(t, `SELECT string_agg(concat_ws(' ', id, mn, mx, cu), ',' ORDER BY id) FROM routines`)
	}
	numbers := func(d string) (mn, mx map[int]int, cu map[int]int64) {
		mn, mx, cu = map[int]int{}, map[int]int{}, map[int]int64{}
		for _, r := range strings.Split(d, ",") {
			var id int
			var c int64
			var lo, hi int
			if _, err := fmt.Sscan(r, &id, &lo, &hi, &c); err != nil {
				t.Fatalf("%q: %v", r, err)
			}
			mn[id], mx[id], cu[id] = lo, hi, c
		}
		return mn, mx, cu
	}
	var ra, rb *msRun
	for round := 1; round <= 2; round++ {
		_, _, start := numbers(digest(a)) // cu at the round's start
		writes := routinesWorkload(t, sites, round, rows)
		if round == 1 { // round 2 runs while they apply
			ra, rb = a.startConsumer(t, b, ymlA), b.startConsumer(t, a, ymlB)
		}
		for i, s := range sites {
			s.waitPublished(t)
			readRoutineLog(t, s, round, writes[i])
		}

		concurrent := 0
		want := map[int]string{}
		for id := 1; id <= rows; id++ {
			wa, wb := writes[0][id], writes[1][id]
			var ear, mn, mx, kl, tv string
			switch {
			case wa.before == wb.before: // both on the round's start: a conflict
				concurrent++
				first := wa
				if wb.ts.Before(wa.ts) { // equal times go to A, ranked first
					first = wb
				}
				newer := wa
				if wb.tvAt.After(wa.tvAt) {
					newer = wb
				}
				ear, mn, mx, kl, tv = first.tag, fmt.Sprint(min(wa.mn, wb.mn)), fmt.Sprint(max(wa.mx, wb.mx)), wa.tag, newer.tag
			case wb.before == wa.tag: // B updated A's version: no conflict, B's stands
				ear, mn, mx, kl, tv = wb.tag, fmt.Sprint(wb.mn), fmt.Sprint(wb.mx), wb.tag, wb.tag
			case wa.before == wb.tag:
				ear, mn, mx, kl, tv = wa.tag, fmt.Sprint(wa.mn), fmt.Sprint(wa.mx), wa.tag, wa.tag
			default:
				t.Fatalf("round %d row %d: A's update was on %q, B's on %q: neither on the other's", round, id, wa.before, wb.before)
			}
			cu := start[id] + wa.d + wb.d // custom here is additive: both increments count
			want[id] = fmt.Sprintf("%s %s %s %s %d %s", ear, mn, mx, kl, cu, tv)
		}
		if round == 1 && concurrent != rows {
			t.Fatalf("round 1 ran before the consumers started, yet only %d of %d rows were updated concurrently", concurrent, rows)
		}
		wantConflicts += concurrent
		for _, s := range sites {
			for _, g := range routineGroups {
				waitValue(t, s, fmt.Sprint(wantConflicts), `SELECT count(*)::text FROM tributary_conflicts
					WHERE table_name = 'public.routines' AND column_group = $1`, g)
			}
		}
		waitEqual(t, "routines", a, b)
		for id := 1; id <= rows; id++ {
			got := a.query(t, `SELECT concat_ws(' ', ear, mn, mx, kl, cu, tv) FROM routines WHERE id = $1`, id)
			if got != want[id] {
				t.Fatalf("round %d row %d: ear mn mx kl cu tv = %s, want %s (A %+v, B %+v)", round, id, got, want[id],
					writes[0][id], writes[1][id])
			}
		}
		t.Logf("round %d: %d of %d rows updated concurrently at both sites", round, concurrent, rows)
	}

	// Round 3, chains: each site changes rows several times in a row while
	// the consumers run. minimum and maximum values move one way only
	// (LEAST, GREATEST), so they converge to the extremes of all values
	// written at either site; custom keeps every increment.
	wantMn, wantMx, wantCu := numbers(digest(a))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, s := range sites {
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := s.env.pg.Conn(t)
				for range rows {
					id, lo, hi, d := rand.IntN(rows/5)+1, rand.IntN(3_000_000), rand.IntN(4_000_000), int64(rand.IntN(19)-9)
					if _, err := c.Exec(context.Background(), `UPDATE routines SET mn = LEAST(mn, $1), mx = GREATEST(mx, $2),
						cu = cu + $3 WHERE id = $4`, lo, hi, d, id); err != nil {
						t.Errorf("workload at %s: %v", s.name, err)
						return
					}
					mu.Lock()
					wantMn[id], wantMx[id], wantCu[id] = min(wantMn[id], lo), max(wantMx[id], hi), wantCu[id]+d
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	var parts []string
	for id := 1; id <= rows; id++ {
		parts = append(parts, fmt.Sprintf("%d %d %d %d", id, wantMn[id], wantMx[id], wantCu[id]))
	}
	want := strings.Join(parts, ",")
	for deadline := time.Now().Add(60 * time.Second); digest(a) != want || digest(b) != want; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			ga, gb := strings.Split(digest(a), ","), strings.Split(digest(b), ",")
			var diff []string
			for i, w := range parts {
				if ga[i] != w || gb[i] != w {
					diff = append(diff, fmt.Sprintf("want %s, A %s, B %s", w, ga[i], gb[i]))
				}
			}
			t.Fatalf("round 3: id mn mx cu differ in %d rows:\n%s", len(diff), strings.Join(diff, "\n"))
		}
	}

	// Each recorded conflict follows its routine, at both sites.
	for _, s := range sites {
		for _, c := range []struct{ what, bad string }{
			{"earliest keeps the earlier commit", `column_group = 'ear' AND (outcome = 'applied-remote') <>
				(remote_commit_ts < local_commit_ts OR remote_commit_ts = local_commit_ts AND remote_site = 'A')`},
			{"minimum", `column_group = 'mn' AND (outcome <> 'merged' OR
				(resolved->>'mn')::int <> least((local_row->>'mn')::int, (remote_after->>'mn')::int))`},
			{"maximum", `column_group = 'mx' AND (outcome <> 'merged' OR
				(resolved->>'mx')::int <> greatest((local_row->>'mx')::int, (remote_after->>'mx')::int))`},
			{"keep-local at A, apply-remote at B", `column_group = 'kl' AND outcome <> CASE site WHEN 'A' THEN 'kept-local' ELSE 'applied-remote' END`},
			{"custom", `column_group = 'cu' AND (outcome <> 'merged' OR (resolved->>'cu')::bigint <>
				(local_row->>'cu')::bigint + (remote_after->>'cu')::bigint - (remote_before->>'cu')::bigint)`},
			{"latest by tv_at", `column_group = 'ts' AND ((outcome = 'applied-remote') <>
				((remote_after->>'tv_at')::timestamptz > (local_row->>'tv_at')::timestamptz) OR
				detail IS DISTINCT FROM 'times are the values of timestamp_column tv_at')`},
		} {
			if n := s.query(t, `SELECT count(*)::text FROM tributary_conflicts WHERE `+c.bad); n != "0" {
				t.Fatalf("%s: %s conflicts break %s", s.name, n, c.what)
			}
		}
	}
	ra.stop(t)
	rb.stop(t)
	for _, x := range []struct {
		s *msSite
		r *msRun
	}{{a, ra}, {b, rb}} {
		if n, rec := x.s.query(t, `SELECT count(*)::text FROM tributary_conflicts`), x.r.eng.Records(); n != fmt.Sprint(rec) {
			t.Fatalf("%s: tributary_conflicts holds %s rows, the engine committed %d records", x.s.name, n, rec)
		}
	}

	// Method error: both sites change errt 1 before either change arrives.
	ra, rb = a.startConsumer(t, b, ymlA), b.startConsumer(t, a, ymlB)
	ctx := context.Background()
	ca, cb := a.env.pg.Conn(t), b.env.pg.Conn(t)
	txA, err := ca.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	txB, err := cb.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		tx pgx.Tx
		v  string
	}{{txA, "A-err"}, {txB, "B-err"}} {
		if _, err := x.tx.Exec(ctx, `UPDATE errt SET v = $1 WHERE id = 1`, x.v); err != nil {
			t.Fatal(err)
		}
	}
	if err := txA.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := txB.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	lsns := map[string]string{}
	for _, x := range []struct {
		s, from *msSite
		r       *msRun
		local   string
	}{{a, b, ra, "A-err"}, {b, a, rb, "B-err"}} {
		err := x.r.stopped(t)
		var ee *consumer.EventError
		if !errors.Is(err, conflict.ErrUnresolved) || !errors.As(err, &ee) {
			t.Fatalf("consumer at %s: stopped with %v, want %v", x.s.name, err, conflict.ErrUnresolved)
		}
		remote := strings.Replace(x.local, x.s.name, x.from.name, 1)
		for _, part := range []string{"table public.errt", `{"id":"1"}`, "commit_lsn " + ee.CommitLSN.String(),
			`local row {"id":"1","v":"` + x.local + `"}`, `remote before {"id":"1","v":"init"}`,
			`remote after {"id":"1","v":"` + remote + `"}`, "tributary_conflict_actions"} {
			if !strings.Contains(err.Error(), part) {
				t.Fatalf("consumer at %s: the error does not name %q: %v", x.s.name, part, err)
			}
		}
		lsns[x.s.name] = ee.CommitLSN.String()
	}
	if got := a.query(t, `SELECT v FROM errt WHERE id = 1`) + " " + b.query(t, `SELECT v FROM errt WHERE id = 1`); got != "A-err B-err" {
		t.Fatalf("method error must change nothing; errt at A and B: %s", got)
	}
	// The person decides that B's value stands: A applies B's change, B
	// keeps its own. Then both consumers resume.
	a.env.pg.Exec(t, fmt.Sprintf(`INSERT INTO tributary_conflict_actions (table_name, key, commit_lsn, action)
		VALUES ('public.errt', '{"id":"1"}', '%s', 'apply-remote')`, lsns["A"]))
	b.env.pg.Exec(t, fmt.Sprintf(`INSERT INTO tributary_conflict_actions (table_name, key, commit_lsn, action)
		VALUES ('public.errt', '{"id":"1"}', '%s', 'keep-local')`, lsns["B"]))
	a.startConsumer(t, b, ymlA)
	b.startConsumer(t, a, ymlB)
	for _, x := range []struct {
		s       *msSite
		outcome string
	}{{a, "applied-remote"}, {b, "kept-local"}} {
		waitValue(t, x.s, "1 "+x.outcome, `SELECT count(*) || ' ' || min(outcome) FROM tributary_conflicts
			WHERE table_name = 'public.errt' AND method = 'error' AND detail LIKE 'resolved by the action declared%'`)
		if n := x.s.query(t, `SELECT count(*)::text FROM tributary_conflict_actions`); n != "0" {
			t.Fatalf("%s: the declared action was not used up: %s left", x.s.name, n)
		}
	}
	waitEqual(t, "errt", a, b)
	if got := a.query(t, `SELECT v FROM errt WHERE id = 1`); got != "B-err" {
		t.Fatalf("after the declared resolution errt 1 is %q, want B-err", got)
	}
}

// routinesWorkload updates every row once at each site, concurrently (two
// workers per site, rows in random order), and returns what each site
// wrote, by row.
func routinesWorkload(t *testing.T, sites []*msSite, round, rows int) []map[int]*routineWrite {
	out := make([]map[int]*routineWrite, len(sites))
	// Each round writes minimum and maximum values of its own range, so
	// that no update writes back the value it replaces: a group whose
	// local values equal the other site's before-image is, rightly, no
	// conflict, and an expected count of one per concurrent pair would then
	// be off by one.
	vals := round * 1_000_000
	var wg sync.WaitGroup
	for si, s := range sites {
		out[si] = map[int]*routineWrite{}
		base := time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC)
		for id := 1; id <= rows; id++ {
			out[si][id] = &routineWrite{tag: fmt.Sprintf("%s-r%d-%d", s.name, round, id),
				mn: vals + rand.IntN(500000)*2 + si, mx: vals + rand.IntN(500000)*2 + si, d: int64(rand.IntN(50)+1)*2 + int64(si),
				tvAt: base.Add(time.Duration(rand.IntN(1_000_000)*2+si) * time.Second)}
		}
		order := rand.Perm(rows)
		for w := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := s.env.pg.Conn(t)
				for j := w; j < rows; j += 2 {
					id := order[j] + 1
					x := out[si][id]
					if _, err := c.Exec(context.Background(), `UPDATE routines SET ear = $1, mn = $2, mx = $3, kl = $1, cu = cu + $4,
						tv = $1, tv_at = $5 WHERE id = $6`, x.tag, x.mn, x.mx, x.d, x.tvAt, id); err != nil {
						t.Errorf("workload at %s: %v", s.name, err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return out
}

// readRoutineLog fills in, from s's producer's log, the before-image and
// commit time of each of s's updates in round.
func readRoutineLog(t *testing.T, s *msSite, round int, writes map[int]*routineWrite) {
	t.Helper()
	mark := fmt.Sprintf("-r%d-", round)
	found := 0
	for _, tx := range harness.ReadLog(t, s.env.kafka, s.env.reg, s.env.prefix).Txns {
		for _, ev := range tx.Events {
			tag, _ := ev.After["ear"].(string)
			if !strings.HasPrefix(tag, s.name+mark) || !strings.HasSuffix(ev.Topic, ".routines") {
				continue
			}
			id := int(ev.After["id"].(int32))
			w := writes[id]
			w.before, _ = ev.Before["ear"].(string)
			w.ts = tx.Frame.CommitTime
			found++
		}
	}
	if found != len(writes) {
		t.Fatalf("%s's log holds %d of its %d round-%d updates", s.name, found, len(writes), round)
	}
}
