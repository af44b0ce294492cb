package transform

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/schemas"
)

// stepCase is one row through a one-table pipeline.
type stepCase struct {
	name  string
	steps string   // YAML list items under steps:
	in    []string // source row as PostgreSQL text ("NULL")
	cols  string   // want: output columns "name type, ..."
	out   []string // want: output row; nil when the row is dropped
	err   string   // want: an error containing this
}

var salts = map[string]string{"SALT": "s3cret"}

// sample is a table with one column of each Avro form a step accepts.
func sample(t testing.TB) *consumer.Table {
	return table(t, "sample",
		col{"id", "int4", true}, col{"name", "text", false}, col{"n8", "int8", false}, col{"price", "numeric(10,2)", false},
		col{"num", "numeric", false}, col{"f", "float8", false}, col{"ok", "bool", false}, col{"d", "date", false},
		col{"ts", "timestamptz", false}, col{"lts", "timestamp", false}, col{"doc", "jsonb", false}, col{"b", "bytea", false},
		col{"u", "uuid", false}, col{"tm", "time", false})
}

const sampleCols = "id int4, name text, n8 int8, price numeric(10,2), num numeric, f float8, ok bool, d date, ts timestamptz, lts timestamp, doc jsonb, b bytea, u uuid, tm time"

func row(name, n8, price, num, f, ok, d, ts, lts, doc, b, u, tm string) []string {
	return []string{"7", name, n8, price, num, f, ok, d, ts, lts, doc, b, u, tm}
}

var full = row("Ada King Lovelace", "42", "12.50", "3.14159", "2.5", "t", "2024-02-29", "2024-03-10 23:30:00.5+00",
	"2024-03-10 23:30:00", `{"a": {"b": [10, {"c": "x"}]}, "n": 5, "s": "hi", "z": null}`, `\x00ff`,
	"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "12:34:56")

var nulls = row("NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL")

// only keeps id and the listed output columns, to keep wants short.
func keep(cols ...string) string {
	return "      - keep: [id, " + strings.Join(cols, ", ") + "]\n"
}

func TestSteps(t *testing.T) {
	cases := []stepCase{
		// rename, drop, keep, table
		{name: "rename", steps: "      - rename: {name: full_name, n8: big}\n" + keep("full_name", "big"),
			in: full, cols: "id int4, full_name text, big int8", out: []string{"7", "Ada King Lovelace", "42"}},
		{name: "rename onto existing", steps: "      - rename: {name: n8}\n", in: full, err: `column "n8": cannot rename "name": column already exists`},
		{name: "drop", steps: "      - drop: [name, n8, price, num, f, ok, d, ts, lts, doc, b, u]\n", in: full,
			cols: "id int4, tm time", out: []string{"7", "12:34:56"}},
		{name: "drop key", steps: "      - drop: [id]\n", in: full, err: `column "id": cannot drop a replication-key column`},
		{name: "keep reorders", steps: "      - keep: [name, id]\n", in: full, cols: "name text, id int4", out: []string{"Ada King Lovelace", "7"}},
		{name: "keep without key", steps: "      - keep: [name]\n", in: full, err: `column "id": keep must list the replication-key columns`},
		{name: "unknown column", steps: "      - drop: [nmae]\n", in: full, err: `column "nmae": unknown column (the table has: id, name,`},

		// convert
		{name: "convert text to int", steps: "      - convert: {column: name, to: integer}\n" + keep("name"),
			in:   row(" 12 ", "1", "1", "1", "1", "t", "2024-01-01", "2024-01-01 00:00:00+00", "2024-01-01 00:00:00", "{}", `\x`, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "00:00:00"),
			cols: "id int4, name integer", out: []string{"7", "12"}},
		{name: "convert abc to int", steps: "      - convert: {column: name, to: integer}\n", in: full,
			err: `step 1 "convert" (test.yaml line 4) column "name" key (id)=(7): cannot convert "Ada King Lovelace" to integer`},
		{name: "convert NULLs", steps: "      - convert: {column: name, to: integer}\n      - convert: {column: ts, to: date}\n" + keep("name", "ts"),
			in: nulls, cols: "id int4, name integer, ts date", out: []string{"7", "NULL", "NULL"}},
		{name: "convert timestamptz to date", steps: "      - convert: {column: ts, to: date, into: day}\n" + keep("day"),
			in: full, cols: "id int4, day date", out: []string{"7", "2024-03-10"}},
		{name: "convert timestamp to date and timestamptz", steps: "      - convert: {column: lts, to: date, into: day, keep_source: true}\n      - convert: {column: lts, to: timestamptz}\n" + keep("lts", "day"),
			in: full, cols: "id int4, lts timestamp with time zone, day date", out: []string{"7", "2024-03-10 23:30:00+00", "2024-03-10"}},
		{name: "convert date to timestamp", steps: "      - convert: {column: d, to: timestamp}\n" + keep("d"),
			in: full, cols: "id int4, d timestamp without time zone", out: []string{"7", "2024-02-29 00:00:00"}},
		{name: "convert numbers", steps: "      - convert: {column: price, to: integer}\n      - convert: {column: num, to: 'numeric(8,3)'}\n      - convert: {column: f, to: text}\n      - convert: {column: n8, to: real}\n" + keep("price", "num", "f", "n8"),
			in: full, cols: "id int4, price integer, num numeric(8,3), f text, n8 real", out: []string{"7", "13", "3.142", "2.5", "42"}},
		{name: "convert int overflow", steps: "      - convert: {column: n8, to: smallint}\n",
			in: row("x", "99999", "1", "1", "1", "t", "2024-01-01", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL"), err: `column "n8" key (id)=(7): cannot convert "99999" to smallint`},
		{name: "convert bool uuid json to text", steps: "      - convert: {column: ok, to: text}\n      - convert: {column: u, to: text}\n      - convert: {column: name, to: boolean}\n" + keep("ok", "u", "name"),
			in:   row("yes", "1", "1", "1", "1", "f", "2024-01-01", "NULL", "NULL", "NULL", "NULL", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "NULL"),
			cols: "id int4, ok text, u text, name boolean", out: []string{"7", "f", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "t"}},
		{name: "convert impossible", steps: "      - convert: {column: b, to: date}\n", in: full, err: `column "b": cannot convert bytea to date`},
		{name: "convert key keeps key", steps: "      - convert: {column: id, to: bigint, into: pk}\n      - keep: [pk]\n", in: full,
			cols: "pk bigint", out: []string{"7"}},

		// scale
		{name: "scale int to numeric", steps: "      - scale: {column: n8, by: 0.01, to: 'numeric(10,2)', into: amount}\n" + keep("amount"),
			in: full, cols: "id int4, amount numeric(10,2)", out: []string{"7", "0.42"}},
		{name: "scale decimal and numeric text", steps: "      - scale: {column: price, by: 100, to: bigint}\n      - scale: {column: num, by: '1/4'}\n      - scale: {column: f, by: 2}\n" + keep("price", "num", "f"),
			in: full, cols: "id int4, price bigint, num numeric, f double precision", out: []string{"7", "1250", "0.7853975", "5"}},
		{name: "scale NULL", steps: "      - scale: {column: price, by: 100}\n" + keep("price"), in: nulls, cols: "id int4, price numeric", out: []string{"7", "NULL"}},
		{name: "scale text", steps: "      - scale: {column: name, by: 100}\n", in: full, err: `column "name": scale needs a number, not text`},

		// timezone
		{name: "timezone instant to wall clock", steps: "      - timezone: {column: ts, to: America/New_York, into: local}\n" + keep("local"),
			in: full, cols: "id int4, local timestamp without time zone", out: []string{"7", "2024-03-10 19:30:00.5"}},
		{name: "timezone wall clock to instant", steps: "      - timezone: {column: lts, from: Europe/Berlin}\n" + keep("lts"),
			in: full, cols: "id int4, lts timestamp with time zone", out: []string{"7", "2024-03-10 22:30:00+00"}},
		{name: "timezone wall to wall", steps: "      - timezone: {column: lts, from: UTC, to: Asia/Tokyo}\n" + keep("lts"),
			in: full, cols: "id int4, lts timestamp without time zone", out: []string{"7", "2024-03-11 08:30:00"}},
		{name: "timezone infinity and NULL", steps: "      - timezone: {column: ts, to: Asia/Tokyo}\n      - timezone: {column: lts, from: UTC}\n" + keep("ts", "lts"),
			in:   row("x", "1", "1", "1", "1", "t", "2024-01-01", "infinity", "NULL", "NULL", "NULL", "NULL", "NULL"),
			cols: "id int4, ts timestamp without time zone, lts timestamp with time zone", out: []string{"7", "infinity", "NULL"}},

		// json
		{name: "json fields", steps: "      - json: {column: doc, fields: {c: 'a.b[1].c', first: a.b.0, n: n, obj: a, z: z, missing: q.r}, types: {first: integer, n: bigint}}\n",
			in: full, cols: "id int4, name text, n8 int8, price numeric(10,2), num numeric, f float8, ok bool, d date, ts timestamptz, lts timestamp, c text, first integer, n bigint, obj text, z text, missing text, b bytea, u uuid, tm time",
			out: []string{"7", "Ada King Lovelace", "42", "12.50", "3.14159", "2.5", "t", "2024-02-29", "2024-03-10 23:30:00.5+00", "2024-03-10 23:30:00", "x", "10", "5", `{"b":[10,{"c":"x"}]}`, "NULL", "NULL", `\x00ff`, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "12:34:56"}},
		{name: "json NULL", steps: "      - json: {column: doc, fields: {s: s}, keep_source: true}\n" + keep("doc", "s"), in: nulls, cols: "id int4, doc jsonb, s text", out: []string{"7", "NULL", "NULL"}},
		{name: "json bad type", steps: "      - json: {column: doc, fields: {s: s}, types: {s: integer}}\n", in: full, err: `column "doc" key (id)=(7): field s: cannot convert "hi" to integer`},
		{name: "split json object", steps: "      - split: {column: doc, json: true, into: [s, n], types: {n: integer}}\n" + keep("s", "n"),
			in: full, cols: "id int4, s text, n integer", out: []string{"7", "hi", "5"}},

		// split
		{name: "split separator", steps: "      - split: {column: name, separator: ' ', into: [first, last]}\n" + keep("first", "last"),
			in: full, cols: "id int4, first text, last text", out: []string{"7", "Ada", "King Lovelace"}},
		{name: "split fewer parts", steps: "      - split: {column: name, separator: ' ', into: [first, last]}\n" + keep("first", "last"),
			in:   row("Plato", "1", "1", "1", "1", "t", "2024-01-01", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL"),
			cols: "id int4, first text, last text", out: []string{"7", "Plato", "NULL"}},
		{name: "split NULL", steps: "      - split: {column: name, separator: ' ', into: [first, last]}\n" + keep("first", "last"),
			in: nulls, cols: "id int4, first text, last text", out: []string{"7", "NULL", "NULL"}},
		{name: "split regex with types", steps: "      - split: {column: u, regex: '^([0-9a-f]+)-([0-9a-f]+)', into: [p1, p2]}\n      - split: {column: d, separator: '-', into: [y, m, dd], types: {y: integer, m: smallint}}\n" + keep("p1", "p2", "y", "m", "dd"),
			in: full, cols: "id int4, p1 text, p2 text, y integer, m smallint, dd text", out: []string{"7", "a0eebc99", "9c0b", "2024", "2", "29"}},
		{name: "split keeps source", steps: "      - split: {column: name, separator: ' ', into: [first], keep_source: true}\n" + keep("name", "first"),
			in: full, cols: "id int4, name text, first text", out: []string{"7", "Ada King Lovelace", "Ada King Lovelace"}},
		{name: "split regex groups", steps: "      - split: {column: name, regex: '(a)(b)', into: [x]}\n", in: full, err: "regex has 2 groups for 1 columns"},

		// combine
		{name: "combine", steps: "      - combine: {columns: [name, n8, d, price], into: label, separator: ' / '}\n" + keep("label"),
			in: full, cols: "id int4, label text", out: []string{"7", "Ada King Lovelace / 42 / 2024-02-29 / 12.50"}},
		{name: "combine skips NULLs", steps: "      - combine: {columns: [name, n8], into: label, separator: ', '}\n" + keep("label"),
			in: row("NULL", "3", "1", "1", "1", "t", "2024-01-01", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL"), cols: "id int4, label text", out: []string{"7", "3"}},
		{name: "combine all NULL", steps: "      - combine: {columns: [name, n8], into: label}\n" + keep("label"), in: nulls, cols: "id int4, label text", out: []string{"7", "NULL"}},

		// compute
		{name: "compute", steps: "      - compute: {column: upper, expr: 'name.upperAscii()'}\n      - compute: {column: total, expr: 'price * 2.0 + double(n8)'}\n      - compute: {column: year, expr: 'ts.getFullYear()'}\n      - compute: {column: born, expr: 'd + duration(\"24h\")', type: date}\n" + keep("upper", "total", "year", "born"),
			in: full, cols: "id int4, upper text, total double precision, year bigint, born date", out: []string{"7", "ADA KING LOVELACE", "67", "2024", "2024-03-01"}},
		{name: "compute NULL-safe", steps: "      - compute: {column: n, expr: 'name == null ? \"?\" : name'}\n      - compute: {column: big, expr: 'n8 != null && n8 > 10'}\n" + keep("n", "big"),
			in: nulls, cols: "id int4, n text, big boolean", out: []string{"7", "?", "f"}},
		{name: "compute replaces column", steps: "      - compute: {column: name, expr: 'name.size()', type: integer}\n" + keep("name"),
			in: full, cols: "id int4, name integer", out: []string{"7", "17"}},
		{name: "compute typo", steps: "      - compute: {column: x, expr: 'nmae + \"!\"'}\n", in: full, err: "undeclared reference to 'nmae'"},
		{name: "compute on NULL fails", steps: "      - compute: {column: x, expr: 'name + \"!\"'}\n", in: nulls, err: `column "x" key (id)=(7): expression failed`},
		{name: "compute local timestamp", steps: "      - compute: {column: h, expr: 'lts.getHours()'}\n" + keep("h"), in: full, cols: "id int4, h bigint", out: []string{"7", "23"}},

		// filter
		{name: "filter keeps", steps: "      - filter: ok && f > 1.0 && name.startsWith('Ada') && b.size() == 2 && tm > duration('12h')\n" + keep("name"),
			in: full, cols: "id int4, name text", out: []string{"7", "Ada King Lovelace"}},
		{name: "filter drops", steps: "      - filter: \"name == 'Grace'\"\n", in: full, out: nil},
		{name: "filter NULL is not equal", steps: "      - filter: \"name == 'Grace' || num == null\"\n" + keep("num"), in: nulls, cols: "id int4, num numeric", out: []string{"7", "NULL"}},
		{name: "filter not bool", steps: "      - filter: name\n", in: full, err: "a filter must be a bool expression"},

		// hash and mask
		{name: "hash", steps: "      - hash: {column: name, into: name_hash, salt_env: SALT}\n      - hash: {column: n8, salt_env: SALT}\n" + keep("name_hash", "n8"),
			in: full, cols: "id int4, name_hash text, n8 text",
			out: []string{"7", hmacHex("s3cret", "Ada King Lovelace"), hmacHex("s3cret", "42")}},
		{name: "hash NULL", steps: "      - hash: {column: name, salt_env: SALT}\n" + keep("name"), in: nulls, cols: "id int4, name text", out: []string{"7", "NULL"}},
		{name: "mask", steps: "      - mask: {column: u, keep_last: 4}\n      - mask: {column: name, keep_first: 1, char: '#'}\n      - mask: {column: n8, with: redacted}\n      - mask: {column: price, with: null}\n" + keep("u", "name", "n8", "price"),
			in: full, cols: "id int4, u text, name text, n8 text, price text", out: []string{"7", "********************************0a11", "A################", "redacted", "NULL"}},
		{name: "mask key", steps: "      - mask: {column: id}\n", in: full, err: `column "id": cannot mask a replication-key column`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tb := sample(t)
			p, err := compileYAML(t, "tables:\n  sample:\n    steps:\n"+tc.steps, salts)
			if err == nil {
				ev := event(tb, schemas.OpInsert, nil, rowOf(t, tb, tc.in...))
				var keep bool
				keep, err = p.Transform(ev)
				if err == nil {
					if tc.err != "" {
						t.Fatalf("no error; want %q", tc.err)
					}
					if !keep {
						if tc.out != nil {
							t.Fatalf("row dropped; want %q", tc.out)
						}
						return
					}
					var cols []string
					for _, c := range ev.Table.Columns {
						cols = append(cols, c.Name+" "+c.SQLType)
					}
					if got := strings.Join(cols, ", "); got != tc.cols {
						t.Errorf("columns\n got %s\nwant %s", got, tc.cols)
					}
					got := texts(t, ev.Table, ev.After)
					if fmt.Sprint(got) != fmt.Sprint(tc.out) {
						t.Errorf("row\n got %q\nwant %q", got, tc.out)
					}
					return
				}
			}
			if tc.err == "" || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v\nwant one containing %q", err, tc.err)
			}
		})
	}
}

func hmacHex(salt, text string) string {
	m := hmac.New(sha256.New, []byte(salt))
	m.Write([]byte(text))
	return hex.EncodeToString(m.Sum(nil))
}
