package transform

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/schemas"
)

func regionTable(t testing.TB) *consumer.Table {
	return table(t, "people", col{"id", "int4", true}, col{"name", "text", false}, col{"region", "text", false})
}

const regionYAML = `
tables:
  people:
    to: crm.contacts
    steps:
      - filter: region == 'NE'
      - split: {column: name, separator: ' ', into: [first, last]}
      - drop: [region]
`

// TestFilterOps checks how a row filter turns changes into target changes,
// with complete (REPLICA IDENTITY FULL) and partial before images.
func TestFilterOps(t *testing.T) {
	tb := regionTable(t)
	p := mustCompile(t, regionYAML, nil)
	r := func(s ...string) []any { return rowOf(t, tb, s...) }
	keyOnly := r("1", "NULL", "NULL")
	cases := []struct {
		name          string
		op            schemas.Op
		before, after []any
		unchanged     []int
		wantOp        schemas.Op // "" when dropped
		wantBefore    []string
		wantAfter     []string
		wantUnchanged []int
		err           string
	}{
		{name: "insert in", op: schemas.OpInsert, after: r("1", "Ada Lovelace", "NE"), wantOp: schemas.OpInsert, wantAfter: []string{"1", "Ada", "Lovelace"}},
		{name: "snapshot read in", op: schemas.OpRead, after: r("1", "Ada Lovelace", "NE"), wantOp: schemas.OpRead, wantAfter: []string{"1", "Ada", "Lovelace"}},
		{name: "insert out", op: schemas.OpInsert, after: r("1", "Ada Lovelace", "SW")},
		{name: "insert NULL region", op: schemas.OpInsert, after: r("1", "Ada Lovelace", "NULL")},
		{name: "update in to in", op: schemas.OpUpdate, before: r("1", "Ada Lovelace", "NE"), after: r("1", "Ada King", "NE"),
			wantOp: schemas.OpUpdate, wantBefore: []string{"1", "Ada", "Lovelace"}, wantAfter: []string{"1", "Ada", "King"}},
		{name: "update moves out", op: schemas.OpUpdate, before: r("1", "Ada Lovelace", "NE"), after: r("1", "Ada Lovelace", "SW"),
			wantOp: schemas.OpDelete, wantBefore: []string{"1", "Ada", "Lovelace"}},
		{name: "update moves in", op: schemas.OpUpdate, before: r("1", "Ada Lovelace", "SW"), after: r("1", "Ada Lovelace", "NE"),
			wantOp: schemas.OpInsert, wantAfter: []string{"1", "Ada", "Lovelace"}},
		{name: "update out to out", op: schemas.OpUpdate, before: r("1", "Ada Lovelace", "SW"), after: r("1", "Ada", "SE")},
		{name: "update without before, in", op: schemas.OpUpdate, after: r("1", "Ada Lovelace", "NE"),
			wantOp: schemas.OpUpdate, wantAfter: []string{"1", "Ada", "Lovelace"}},
		{name: "update without before, out: delete if there", op: schemas.OpUpdate, after: r("1", "Ada Lovelace", "SW"),
			wantOp: schemas.OpDelete, wantBefore: []string{"1", "Ada", "Lovelace"}},
		{name: "update with key-only before, out", op: schemas.OpUpdate, before: keyOnly, after: r("1", "Ada Lovelace", "SW"),
			wantOp: schemas.OpDelete, wantBefore: []string{"1", "NULL", "NULL"}},
		{name: "delete in", op: schemas.OpDelete, before: r("1", "Ada Lovelace", "NE"), wantOp: schemas.OpDelete, wantBefore: []string{"1", "Ada", "Lovelace"}},
		{name: "delete out", op: schemas.OpDelete, before: r("1", "Ada Lovelace", "SW")},
		{name: "delete key-only: delete if there", op: schemas.OpDelete, before: keyOnly, wantOp: schemas.OpDelete, wantBefore: []string{"1", "NULL", "NULL"}},
		{name: "update with unchanged TOAST name", op: schemas.OpUpdate, before: r("1", "Ada Lovelace", "NE"), after: r("1", "NULL", "NE"), unchanged: []int{1},
			wantOp: schemas.OpUpdate, wantBefore: []string{"1", "Ada", "Lovelace"}, wantAfter: []string{"1", "NULL", "NULL"}, wantUnchanged: []int{1, 2}},
		{name: "move in with unchanged TOAST", op: schemas.OpUpdate, before: r("1", "Ada Lovelace", "SW"), after: r("1", "NULL", "NE"), unchanged: []int{1},
			err: "moves into the filter, but TOASTed columns were not sent"},
		{name: "filter on unchanged TOAST", op: schemas.OpUpdate, before: r("1", "Ada", "NE"), after: r("1", "Ada", "NULL"), unchanged: []int{2},
			err: "a filter reads a TOASTed column whose value was not sent"},
		// The new key's half of an update that changed the key and left
		// TOASTed values unsent (consumer.KeyChange).
		{name: "key change insert with unchanged TOAST name", op: schemas.OpInsert, after: r("1", "NULL", "NE"), unchanged: []int{1},
			wantOp: schemas.OpInsert, wantAfter: []string{"1", "NULL", "NULL"}, wantUnchanged: []int{1, 2}},
		{name: "key change insert, filter on unchanged TOAST", op: schemas.OpInsert, after: r("1", "Ada", "NULL"), unchanged: []int{2},
			err: "a filter reads a TOASTed column whose value was not sent"},
		{name: "truncate", op: schemas.OpTruncate, wantOp: schemas.OpTruncate},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev := event(tb, tc.op, tc.before, tc.after)
			ev.Unchanged = tc.unchanged
			keep, err := p.Transform(ev)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v; want %q", err, tc.err)
				}
				if ev.Table != tb || ev.Op != tc.op {
					t.Fatal("the event changed although Transform failed")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !keep {
				if tc.wantOp != "" {
					t.Fatalf("dropped; want %s", tc.wantOp)
				}
				return
			}
			if tc.wantOp == "" {
				t.Fatalf("kept as %s; want it dropped", ev.Op)
			}
			if ev.Op != tc.wantOp || ev.Table.String() != "crm.contacts" {
				t.Fatalf("op %s table %s; want %s crm.contacts", ev.Op, ev.Table, tc.wantOp)
			}
			if got := texts(t, ev.Table, ev.Before); fmt.Sprint(got) != fmt.Sprint(tc.wantBefore) {
				t.Errorf("before %q; want %q", got, tc.wantBefore)
			}
			if got := texts(t, ev.Table, ev.After); fmt.Sprint(got) != fmt.Sprint(tc.wantAfter) {
				t.Errorf("after %q; want %q", got, tc.wantAfter)
			}
			if fmt.Sprint(ev.Unchanged) != fmt.Sprint(tc.wantUnchanged) && len(ev.Unchanged)+len(tc.wantUnchanged) > 0 {
				t.Errorf("unchanged %v; want %v", ev.Unchanged, tc.wantUnchanged)
			}
		})
	}
}

func TestPassThroughAndSchemaRename(t *testing.T) {
	tb := regionTable(t)
	other := table(t, "other", col{"id", "int4", true})
	p := mustCompile(t, "schemas: {public: replica}\n", nil)
	ev := event(tb, schemas.OpInsert, nil, rowOf(t, tb, "1", "x", "NE"))
	if keep, err := p.Transform(ev); err != nil || !keep || ev.Table.String() != "replica.people" || len(ev.After) != 3 {
		t.Fatalf("schema rename: %v %v %s", keep, err, ev.Table)
	}
	p = mustCompile(t, regionYAML, nil)
	ev = event(other, schemas.OpInsert, nil, rowOf(t, other, "1"))
	if keep, err := p.Transform(ev); err != nil || !keep || ev.Table != other {
		t.Fatal("a table without steps must pass through unchanged")
	}
	msg := &consumer.Event{Message: &consumer.Message{Prefix: "x"}}
	if keep, err := p.Transform(msg); err != nil || !keep {
		t.Fatal("messages pass through")
	}
}

// TestBadConfig: errors at start-up name the file line, and for expressions
// the position inside the expression.
func TestBadConfig(t *testing.T) {
	cases := []struct{ yaml, err string }{
		{"tables:\n  people:\n    steps:\n      - filter: \"region == \"\n", `test.yaml: table public.people step 1 "filter" (test.yaml line 4): line 4 column 17: expression does not parse: ERROR: <input>:1:11: Syntax error`},
		{"tables:\n  people:\n    steps:\n      - split: {column: name, into: [a]}\n", "split: give separator, regex or json: true"},
		{"tables:\n  people:\n    steps:\n      - hash: {column: name, salt: abc}\n", "a salt must not be written in the config"},
		{"tables:\n  people:\n    steps:\n      - hash: {column: name, salt_env: NOPE}\n", "environment variable NOPE is empty or not set"},
		{"tables:\n  people:\n    steps:\n      - frobnicate: x\n", `unknown step "frobnicate"`},
		{"tables:\n  people:\n    steps:\n      - convert: {column: name, to: integr}\n", `to: unknown type "integr"`},
		{"tables:\n  people:\n    steps:\n      - convert: {column: name, too: integer}\n", `line 4 column 33: unknown setting "too"`},
		{"tables:\n  people:\n    stpes: []\n", `line 3 column 5: unknown key "stpes"`},
		{"tables:\n  people:\n    steps:\n      - timezone: {column: ts, to: Mars/Olympus}\n", "unknown time zone Mars/Olympus"},
		{"tables:\n  people:\n    steps:\n      - custom: mine\n", `no step "mine"`},
	}
	for _, tc := range cases {
		_, err := compileYAML(t, tc.yaml, nil)
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s\nerror %v\nwant %q", tc.yaml, err, tc.err)
		}
	}
}

// TestSchemaErrors: a step that does not fit the table fails when it is
// bound (Check at start-up, or a schema change), naming table, step and
// column; the consumer stops on it whatever its error policy.
func TestSchemaErrors(t *testing.T) {
	tb := regionTable(t)
	cases := []struct{ steps, err string }{
		{"      - filter: regin == 'NE'\n", `transform public.people step 1 "filter" (test.yaml line 4): expression does not type-check against public.people: ERROR: <input>:1:1: undeclared reference to 'regin'`},
		{"      - filter: region + 1 == 2\n", "found no matching overload for '_+_'"},
		{"      - combine: {columns: [street, city], into: address}\n", `step 1 "combine" (test.yaml line 4) column "street": unknown column (the table has: id, name, region)`},
		{"      - drop: [region]\n      - filter: region == 'NE'\n", "undeclared reference to 'region'"},
	}
	for _, tc := range cases {
		p := mustCompile(t, "tables:\n  people:\n    steps:\n"+tc.steps, nil)
		err := p.Check(context.Background(), func(context.Context, string, string) (*consumer.Table, error) { return tb, nil })
		if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrSchema) {
			t.Errorf("%s\nCheck: %v\nwant %q", tc.steps, err, tc.err)
			continue
		}
		// An event of that table version gets the same error, marked to halt.
		ev := event(tb, schemas.OpInsert, nil, rowOf(t, tb, "1", "x", "NE"))
		if _, err := p.Transform(ev); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("Transform: %v", err)
		}
	}
	// A column the source no longer has: bound when the new version appears.
	p := mustCompile(t, regionYAML, nil)
	if _, err := p.Bind(tb); err != nil {
		t.Fatal(err)
	}
	v2 := table(t, "people", col{"id", "int4", true}, col{"name", "text", false}, col{"zone", "text", false})
	ev := event(v2, schemas.OpInsert, nil, rowOf(t, v2, "1", "x", "NE"))
	_, err := p.Transform(ev)
	if err == nil || !strings.Contains(err.Error(), "undeclared reference to 'region'") || !errors.Is(err, ErrSchema) {
		t.Fatalf("schema change: %v", err)
	}
}

// TestConcurrent runs one pipeline from several goroutines (per-key mode).
func TestConcurrent(t *testing.T) {
	tb := regionTable(t)
	p := mustCompile(t, regionYAML, nil)
	done := make(chan error)
	for g := 0; g < 8; g++ {
		go func() {
			for i := 0; i < 2000; i++ {
				name := fmt.Sprintf("F%d L%d", g, i)
				ev := event(tb, schemas.OpInsert, nil, []any{int32(i), name, "NE"})
				if _, err := p.Transform(ev); err != nil {
					done <- err
					return
				}
				if ev.After[1] != fmt.Sprintf("F%d", g) || ev.After[2] != fmt.Sprintf("L%d", i) {
					done <- fmt.Errorf("row %v from %q", ev.After, name)
					return
				}
			}
			done <- nil
		}()
	}
	for g := 0; g < 8; g++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
