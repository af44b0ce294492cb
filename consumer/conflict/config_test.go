package conflict

import (
	"strings"
	"testing"
	"time"

	"github.com/google/cel-go/common/types"
)

func TestParseFileValidates(t *testing.T) {
	for _, c := range []struct {
		name, yml, want string
	}{
		{"ok", "tables:\n  customers:\n    groups:\n      a: {columns: [x], method: additive}\n", ""},
		{"unknown method", "tables:\n  t:\n    method: newest\n", `method "newest"`},
		{"custom needs expr", "tables:\n  t:\n    method: custom\n", "expr is required"},
		{"column in two groups", "tables:\n  t:\n    groups:\n      a: {columns: [x]}\n      b: {columns: [x]}\n", "already in group"},
		{"unknown field", "tables:\n  t:\n    metod: latest\n", "metod"},
		{"ownership empty", "tables:\n  t:\n    ownership: {}\n", "set primary, owner or columns"},
		{"bad table", "tables:\n  a.b.c: {}\n", "not schema.table"},
		{"delete policy", "tables:\n  t:\n    delete: maybe\n", "delete \"maybe\""},
		{"timestamp column needs latest or earliest", "tables:\n  t:\n    groups:\n      a: {columns: [x, at], method: maximum, timestamp_column: at}\n",
			"only for latest and earliest"},
		{"timestamp column in its group", "tables:\n  t:\n    groups:\n      a: {columns: [x], method: latest, timestamp_column: at}\n",
			"not one of its columns"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, err := ParseFile([]byte(c.yml), "test.yaml")
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if _, ok := f.Tables["public.customers"]; !ok {
					t.Fatalf("table name not normalized: %v", f.Tables)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestNewCompilesExpressions(t *testing.T) {
	f, err := ParseFile([]byte("tables:\n  t:\n    method: custom\n    expr: 'local.x +'\n"), "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{File: f, Site: "A", RemoteSite: "B"}); err == nil || !strings.Contains(err.Error(), "tables.public.t") {
		t.Fatalf("a bad expression should fail New, naming the table: %v", err)
	}
	if _, err := New(Config{Site: "A", RemoteSite: "A"}); err == nil {
		t.Fatal("RemoteSite equal to Site should fail")
	}
}

func TestSitesAndOrigins(t *testing.T) {
	f, _ := ParseFile([]byte("priority: [hq, east]\norigins: {legacy_origin: west}\n"), "x")
	e, err := New(Config{File: f, Site: "east", RemoteSite: "hq"})
	if err != nil {
		t.Fatal(err)
	}
	for origin, want := range map[string]string{"tributary_west": "west", "legacy_origin": "west", "other": "other",
		OriginInstance("tributary_west", 3): "west", OriginInstance("legacy_origin", 1): "west", OriginInstance("tributary_hq", 0): "hq"} {
		if got := e.OriginSite(origin); got != want {
			t.Errorf("OriginSite(%q) = %q, want %q", origin, got, want)
		}
	}
	// Ranked before unranked; unranked by name.
	for _, c := range []struct {
		a, b string
		want bool
	}{{"hq", "east", true}, {"east", "hq", false}, {"east", "west", true}, {"alpha", "beta", true}, {"west", "alpha", false}} {
		if got := better(e.file.Priority, c.a, c.b); got != c.want {
			t.Errorf("better(%s, %s) = %v", c.a, c.b, got)
		}
	}
}

func TestCustomAndOwnerExpressions(t *testing.T) {
	cols := []column{{name: "id", sqlType: "integer", class: classInt, key: true}, {name: "qty", sqlType: "bigint", class: classInt},
		{name: "note", sqlType: "text", class: classText}, {name: "status", sqlType: "text", class: classText}}
	s := func(v string) *string { return &v }
	local := []*string{s("1"), s("10"), s("local"), s("entered")}
	before := []*string{s("1"), s("7"), s("base"), s("entered")}
	after := []*string{s("1"), s("9"), s("remote"), s("entered")}
	p, err := compileCEL(`{"qty": local.qty + remote_after.qty - remote_before.qty, "note": local.note + "|" + remote_after.note}`,
		[]string{"local", "remote_before", "remote_after"})
	if err != nil {
		t.Fatal(err)
	}
	g := &group{name: "g", cols: []int{1, 2}, method: MethodCustom, expr: p}
	vals, err := p.evalGroup(cols, g, local, before, after)
	if err != nil {
		t.Fatal(err)
	}
	if len(vals) != 2 || vals[0].col != 1 || *vals[0].value != "12" || *vals[1].value != "local|remote" {
		t.Fatalf("custom values: %+v", vals)
	}
	owner, err := compileCEL(`row.status == "entered" ? ["A"] : ["B", "C"]`, []string{"row"}, "site")
	if err != nil {
		t.Fatal(err)
	}
	for st, want := range map[string]string{"entered": "[A]", "shipped": "[B C]"} {
		v, err := owner.eval(map[string]any{"row": celRow(cols, []*string{s("1"), s("1"), nil, s(st)}), "site": "A"})
		if err != nil {
			t.Fatal(err)
		}
		names, err := siteNames(v)
		if err != nil || "["+strings.Join(names, " ")+"]" != want {
			t.Fatalf("owner of %s: %v %v, want %s", st, names, err, want)
		}
	}
	if v, _ := textOf(types.Double(2.5)); *v != "2.5" {
		t.Fatalf("textOf(2.5) = %s", *v)
	}
}

func TestParseTimestamp(t *testing.T) {
	for in, want := range map[string]string{
		"2026-11-22 00:33:16.123456+00":    "2026-11-22T00:33:16.123456Z",
		"2026-11-22 05:33:16+05:30":        "2026-11-22T00:03:16Z",
		"2026-11-22 00:33:16-03":           "2026-11-22T03:33:16Z",
		"2026-11-22 00:33:16.5":            "2026-11-22T00:33:16.5Z",
		"1900-01-01 00:00:00+00:09:21":     "1899-12-31T23:50:39Z",
		"2026-11-22 00:33:16.000001+00:00": "2026-11-22T00:33:16.000001Z",
	} {
		got, err := parseTimestamp(in)
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if s := got.UTC().Format(time.RFC3339Nano); s != want {
			t.Fatalf("%s: got %s, want %s", in, s, want)
		}
	}
	if _, err := parseTimestamp("11/22/2026 00:33:16"); err == nil || !strings.Contains(err.Error(), "DateStyle") {
		t.Fatalf("a non-ISO value should fail naming DateStyle: %v", err)
	}
}
