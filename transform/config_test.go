package transform

import (
	"strings"
	"testing"
)

// TestConfigErrorsNamePlaces: the typed settings reject what the file gets
// wrong with the line and column of the offending key or value (the same
// places and words as the yaml.Node walk they replaced).
func TestConfigErrorsNamePlaces(t *testing.T) {
	steps := func(s string) string { return "tables:\n  people:\n    steps:\n      - " + s + "\n" }
	for _, c := range []struct{ yaml, err string }{
		{"tabels: {}\n", `test.yaml: line 1 column 1: unknown key "tabels" (want schemas, tables)`},
		{"tables:\n  people: {}\n  public.people: {}\n", "line 3 column 3: table public.people listed twice"},
		{"tables:\n", "line 1 column 8: want a map"},
		{"tables:\n  people:\n", "test.yaml: line 2 column 10: want a map"},
		{"tables:\n  people:\n    steps: filter\n", "line 3 column 5: steps: want a list"},
		{"tables:\n  people:\n    steps:\n", "line 3 column 5: steps: want a list"},
		{"tables:\n  people:\n    steps:\n      - {filter: x, drop: [a]}\n", "line 4 column 9: a step is a map with one key"},
		{"schemas: [a]\n", "line 1 column 1: yaml: unmarshal errors"},
		{steps("rename: {a: b, c: [d]}"), `line 4 column 24: want a column name`},
		{steps("rename: [a]"), "line 4 column 17: rename: want a map of old: new column names"},
		{steps("json: {column: doc, fields: {a: x, b: ''}}"), "line 4 column 44: want a JSON path"},
		{steps("json: {column: doc, fields: [a]}"), "line 4 column 37: want a map"},
		{steps("json: {column: doc}"), "fields: required"},
		{steps("mask: {column: name, keep_first: -1}"), "line 4 column 42: keep_first: want a count"},
		{steps("mask: {column: name, keep_last: x}"), "keep_last: want a count"},
		{steps("hash: {column: name, salt_env: S, salt: x}"), "line 4 column 43: a salt must not be written"},
		{steps("filter: {expr: }"), "line 4 column 24: expr: want an expression"},
		{steps("filter: {}"), "expr: required"},
		{steps("compute: {column: [x], expr: 'true'}"), "line 4 column 27: column: yaml: unmarshal errors"},
		{steps("split: {column: name, into: x, separator: ' '}"), "line 4 column 37: into: want a list of names"},
		{steps("split: {column: name, into: [a], separator: ' ', trim: maybe}"), "trim: yaml: unmarshal errors"},
		{steps("scale: {column: name, by: ten}"), `line 4 column 35: by: "ten" is not a number`},
		{steps("convert: {column: name, to: int, into: a.b}"), `line 4 column 48: into: "a.b" is not a column name`},
		{steps("timezone: {column: name}"), "timezone: give from, to or both"},
		{steps("split: {column: name, into: [a], types: {b: integer}, separator: ' '}"), `types: "b" is not an output column`},
	} {
		_, err := compileYAML(t, c.yaml, map[string]string{"S": "salt"})
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%q\nerror %v\nwant %q", c.yaml, err, c.err)
		}
	}
}

// TestConfigKeepsOrder: rename pairs and json fields apply in file order,
// and a null "with" masks with NULL while an absent one masks with char.
func TestConfigKeepsOrder(t *testing.T) {
	cfg, err := ParseConfig([]byte(`tables:
  people:
    to: replica.persons
    steps:
      - rename: {b: c, a: b}
      - json: {column: doc, fields: {z: z, y: y.x, x: "w[0]"}}
      - mask: {column: c, with: null}
      - mask: {column: b}
`), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tc := cfg.Tables["public.people"]
	if tc == nil || tc.To != "replica.persons" || len(tc.Steps) != 4 || tc.Steps[1].Line != 6 {
		t.Fatalf("table config %+v", tc)
	}
	var built []Step
	for _, sc := range tc.Steps {
		st, err := buildStep(sc, nil, nil, &options{})
		if err != nil {
			t.Fatal(err)
		}
		built = append(built, st)
	}
	if r := built[0].(renameStep); len(r.pairs) != 2 || r.pairs[0] != [2]string{"b", "c"} || r.pairs[1] != [2]string{"a", "b"} {
		t.Errorf("rename pairs %v", r.pairs)
	}
	j := built[1].(jsonStep)
	var names []string
	for _, f := range j.fields {
		names = append(names, f.name+"="+strings.Join(f.path, "/"))
	}
	if got := strings.Join(names, " "); got != "z=z y=y/x x=w/0" {
		t.Errorf("json fields %s", got)
	}
	if m := built[2].(maskStep); !m.withSet || m.with != nil {
		t.Errorf("with: null: %+v", m)
	}
	if m := built[3].(maskStep); m.withSet || m.char != "*" {
		t.Errorf("no with: %+v", m)
	}
}
