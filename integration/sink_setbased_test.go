package integration

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/postgres"
	"github.com/tributary-cdc/tributary/schemas"
)

// keyOnly is a REPLICA IDENTITY DEFAULT before image: the key, then NULLs.
func keyOnly(id int) []any { return []any{int32(id), nil, nil} }

// TestSinkSetBasedApply drives the PostgreSQL sink's set-based flush (runs of
// updates and deletes as one statement per table and wave, inserts merged
// with later updates, several tables interleaved) with a random workload of
// many small source transactions, applied in large groups, and checks the
// target against a model of the source. A UNIQUE constraint on another
// column makes some groups fail set-based (a value moves from one row to
// another), which must fall back to event order, and some changes move a
// row to a new key (a delete and an insert, as the producer sends them);
// the target has no triggers, so the set-based path is taken, and the test
// checks that it was.
func TestSinkSetBasedApply(t *testing.T) {
	e := newConsumerEnv(t)
	e.target.Exec(t, `CREATE TABLE sb_a (id int PRIMARY KEY, balance bigint NOT NULL, note text UNIQUE);
CREATE TABLE sb_b (id int PRIMARY KEY, balance bigint NOT NULL, note text)`)
	e.prod.addTable(accountTable("sb_a"), 3)
	e.prod.addTable(accountTable("sb_b"), 2)
	type row struct {
		bal  int64
		note string
	}
	model := map[string]map[int]row{"sb_a": {}, "sb_b": {}}
	r := rand.New(rand.NewPCG(7, 17))
	notes := 0
	newNote := func() string { notes++; return fmt.Sprintf("n%d", notes) }
	for tx := 0; tx < 600; tx++ {
		var chs []change
		for range 1 + r.IntN(6) {
			tbl := []string{"sb_a", "sb_b"}[r.IntN(2)]
			m := model[tbl]
			id := r.IntN(60)
			old, exists := m[id]
			free := 60 + r.IntN(60) // a key no other change uses
			_, taken := m[free]
			switch {
			case exists && !taken && r.IntN(8) == 0:
				// A change of the key, which the producer sends as a delete
				// of the old key and an insert of the new one.
				delete(m, id)
				m[free] = old
				chs = append(chs, change{table: tbl, op: schemas.OpDelete, before: keyOnly(id)},
					change{table: tbl, op: schemas.OpInsert, after: acct(free, old.bal, old.note)})
			case !exists:
				v := row{int64(r.IntN(1000)), newNote()}
				m[id] = v
				chs = append(chs, change{table: tbl, op: schemas.OpInsert, after: acct(id, v.bal, v.note)})
			case r.IntN(4) == 0:
				delete(m, id)
				chs = append(chs, change{table: tbl, op: schemas.OpDelete, before: keyOnly(id)})
			default:
				v := row{old.bal + int64(r.IntN(10)), old.note}
				if tbl == "sb_a" && r.IntN(15) == 0 {
					// Take another row's note: that row gets a new one first,
					// in the same source transaction (the order matters to
					// the UNIQUE constraint).
					for oid, o := range m {
						if oid != id {
							o2 := row{o.bal, newNote()}
							m[oid] = o2
							chs = append(chs, change{table: tbl, op: schemas.OpUpdate, before: keyOnly(oid), after: acct(oid, o2.bal, o2.note)})
							v.note = o.note
							break
						}
					}
				}
				m[id] = v
				chs = append(chs, change{table: tbl, op: schemas.OpUpdate, before: keyOnly(id), after: acct(id, v.bal, v.note)})
			}
		}
		e.prod.commit(chs)
	}
	// Groups of 15 source transactions make many flushes: some hold a
	// move of a note and fall back, the others apply set-based.
	must(t, e.catchUp("setbased", func(cc *consumer.Config, _ *postgres.Config) { cc.GroupMaxTxns = 15 }))
	applied, fellBack := e.sink.SetBasedStats()
	t.Logf("set-based flushes: %d applied, %d rolled back to event order", applied, fellBack)
	if applied == 0 {
		t.Error("no flush was applied set-based")
	}
	if fellBack == 0 {
		t.Error("no flush fell back to event order, though notes moved between rows under a UNIQUE constraint")
	}
	c := e.target.Conn(t)
	for tbl, m := range model {
		rows, err := c.Query(t.Context(), "SELECT id, balance, note FROM "+tbl+" ORDER BY id")
		must(t, err)
		got := map[int]row{}
		for rows.Next() {
			var id int
			var v row
			must(t, rows.Scan(&id, &v.bal, &v.note))
			got[id] = v
		}
		must(t, rows.Err())
		if len(got) != len(m) {
			t.Errorf("%s: %d rows at the target, %d at the source", tbl, len(got), len(m))
		}
		for id, want := range m {
			if got[id] != want {
				t.Errorf("%s id %d: target %+v, source %+v", tbl, id, got[id], want)
			}
		}
	}
}

// TestSinkSetBasedSchemaVersions: one flush holds changes of one row under
// two versions of its table's schema (a column added at the source; the
// target has it already). Each version's changes form waves of their own,
// and the updates that leave a TOASTed value unchanged are never merged, so
// waves taken version by version would apply the row's last change before
// its earlier ones. The set-based flush must keep the row's order.
func TestSinkSetBasedSchemaVersions(t *testing.T) {
	e := newConsumerEnv(t)
	e.target.Exec(t, `CREATE TABLE sb_v (id int PRIMARY KEY, balance bigint NOT NULL, note text, extra text)`)
	v1 := accountTable("sb_v")
	e.prod.addTable(v1, 1)
	for id := range 8 {
		e.prod.commit([]change{{table: "sb_v", op: schemas.OpInsert, after: acct(id, 1, "big")}})
	}
	for bal := int64(2); bal <= 3; bal++ {
		var chs []change
		for id := range 8 {
			chs = append(chs, change{table: "sb_v", op: schemas.OpUpdate, before: keyOnly(id), after: []any{int32(id), bal, nil},
				toast: []string{"note"}})
		}
		e.prod.commit(chs)
	}
	v2 := accountTable("sb_v")
	v2.Columns = append(v2.Columns, schemas.Column{Name: "extra", Type: pgText, Typmod: -1, SQLType: "text"})
	e.prod.alterTable(v2)
	var chs []change
	for id := range 8 {
		chs = append(chs, change{table: "sb_v", op: schemas.OpUpdate, before: []any{int32(id), nil, nil, nil},
			after: []any{int32(id), int64(4), "new", "e"}})
	}
	e.prod.commit(chs)
	must(t, e.catchUp("setversions", nil))
	c := e.target.Conn(t)
	var got string
	must(t, c.QueryRow(t.Context(), `SELECT string_agg(concat_ws('/', id, balance, note, extra), ' ' ORDER BY id) FROM sb_v`).Scan(&got))
	var want []string
	for id := range 8 {
		want = append(want, fmt.Sprintf("%d/4/new/e", id))
	}
	if got != strings.Join(want, " ") {
		t.Errorf("target holds %s, want %s", got, strings.Join(want, " "))
	}
}

// TestSinkSetBasedMissingRow: an update of a missing row inside a run that
// goes set-based still stops with an error that names that row's key.
func TestSinkSetBasedMissingRow(t *testing.T) {
	e := newConsumerEnv(t)
	e.target.Exec(t, `CREATE TABLE sb_m (id int PRIMARY KEY, balance bigint NOT NULL, note text)`)
	e.prod.addTable(accountTable("sb_m"), 1)
	var chs []change
	for i := range 20 {
		chs = append(chs, change{table: "sb_m", op: schemas.OpInsert, after: acct(i, 1, "x")})
	}
	e.prod.commit(chs)
	for i := range 20 {
		id := i
		if i == 13 {
			id = 99 // not there
		}
		e.prod.commit([]change{{table: "sb_m", op: schemas.OpUpdate, before: keyOnly(id), after: acct(id, 2, "y")}})
	}
	err := e.catchUp("setmiss", nil)
	if err == nil {
		t.Fatal("Run returned nil for an update of a missing row")
	}
	for _, want := range []string{"public.sb_m", "(id)=(99)", "matched no row"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %q: %v", want, err)
		}
	}
	c := e.target.Conn(t)
	// The transactions before the failing one are applied, the rest not.
	if got := e.queryInt(c, "SELECT count(*) FROM sb_m WHERE balance = 2"); got != 13 {
		t.Errorf("%d rows updated; want the 13 before the failing transaction", got)
	}
}
