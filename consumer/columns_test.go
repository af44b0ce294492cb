package consumer

import (
	"fmt"
	"slices"
	"testing"

	"github.com/tributary-cdc/tributary/schemas"
)

func TestTableColumnHelpers(t *testing.T) {
	str := func(v any) (string, error) { return fmt.Sprint(v), nil }
	tb := &Table{Schema: "s", Name: "t", Topic: "p.s.t", Key: []int{2, 0}, Columns: []Column{
		{Name: "a", Encode: str}, {Name: "B", Encode: str}, {Name: "c", Encode: str}, {Name: "d", Encode: str}}}
	if got := tb.NonKey(); !slices.Equal(got, []int{1, 3}) {
		t.Errorf("NonKey = %v", got)
	}
	if got, want := tb.ColumnList("p.", "::text"), `p."a"::text, p."B"::text, p."c"::text, p."d"::text`; got != want {
		t.Errorf("ColumnList = %s, want %s", got, want)
	}
	if got, want := tb.KeyList("s."), `s."c", s."a"`; got != want {
		t.Errorf("KeyList = %s, want %s", got, want)
	}
	if got, want := tb.KeyJoin("x", "y"), `x."c" = y."c" AND x."a" = y."a"`; got != want {
		t.Errorf("KeyJoin = %s, want %s", got, want)
	}
	for _, c := range []struct {
		unchanged []int
		deleted   bool
		want      string
		ok        bool
	}{{nil, false, "", false}, {[]int{3}, false, "0001", true}, {nil, true, "0101", true}} {
		if got, ok := tb.UnchangedFlags(c.unchanged, c.deleted); got != c.want || ok != c.ok {
			t.Errorf("UnchangedFlags(%v, %v) = %q, %v; want %q, %v", c.unchanged, c.deleted, got, ok, c.want, c.ok)
		}
	}

	versions := func(ev *Event) []string {
		var out []string
		if err := ev.Versions(func(op string, row []any, deleted bool) error {
			out = append(out, fmt.Sprint(op, row, deleted))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	before, after := []any{1, "x", 3, nil}, []any{1, "y", 3, nil}
	moved := []any{1, "y", 4, nil}
	for _, c := range []struct {
		ev   *Event
		want []string
	}{
		{&Event{Op: schemas.OpInsert, Table: tb, After: after}, []string{"c[1 y 3 <nil>] false"}},
		{&Event{Op: schemas.OpDelete, Table: tb, Before: before}, []string{"d[1 x 3 <nil>] true"}},
		{&Event{Op: schemas.OpUpdate, Table: tb, Before: before, After: after}, []string{"u[1 y 3 <nil>] false"}},
		{&Event{Op: schemas.OpUpdate, Table: tb, Before: before, After: moved}, []string{"d[1 x 3 <nil>] true", "u[1 y 4 <nil>] false"}},
	} {
		if got := versions(c.ev); !slices.Equal(got, c.want) {
			t.Errorf("Versions(%s) = %q, want %q", c.ev.Op, got, c.want)
		}
	}

	var once TruncateOnce
	tx1, tx2 := &Txn{}, &Txn{}
	trunc := func(tx *Txn) *Event { return &Event{Op: schemas.OpTruncate, Txn: tx, Table: tb} }
	if !once.First(trunc(tx1)) || once.First(trunc(tx1)) || !once.First(trunc(tx2)) {
		t.Error("TruncateOnce does not pass exactly the first truncate of each transaction")
	}
	once.Reset()
	if !once.First(trunc(tx2)) {
		t.Error("TruncateOnce after Reset: a truncate is a repeat")
	}
}
