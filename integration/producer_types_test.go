package integration

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tributary-cdc/tributary/integration/harness"
	"github.com/tributary-cdc/tributary/producer"
	"github.com/tributary-cdc/tributary/schemas"
)

// rtColumn is one column of the round-trip table and the SQL expressions of
// the values its rows take (row k gets values[k % len(values)]).
type rtColumn struct {
	name, typ string
	values    []string
}

func rtAllBytes() string {
	var b strings.Builder
	b.WriteString(`'\x`)
	for i := 0; i < 256; i++ {
		fmt.Fprintf(&b, "%02x", i)
	}
	b.WriteString(`'::bytea`)
	return b.String()
}

// rtColumns has one column per mapped type of schemas/TYPES.md, each with its
// edge values.
func rtColumns() []rtColumn {
	hundred := strings.Repeat("1234567890", 6) + "." + strings.Repeat("9876543210", 4) // 100 digits
	return []rtColumn{
		{"c_int2", "int2", []string{"-32768", "32767", "0"}},
		{"c_int4", "int4", []string{"-2147483648", "2147483647", "0"}},
		{"c_int8", "int8", []string{"-9223372036854775808", "9223372036854775807", "0"}},
		{"c_float4", "float4", []string{"'NaN'", "'Infinity'", "'-Infinity'", "'3.4028235e38'", "'-1.17549435e-38'", "'1.4e-45'", "'-0'", "'0.1'", "'1e+06'", "'123456.7'"}},
		{"c_float8", "float8", []string{"'NaN'", "'Infinity'", "'-Infinity'", "'1.7976931348623157e308'", "'5e-324'", "'-0'", "'0.1'", "'100000000000000'", "'1e+15'", "'-2.2250738585072014e-308'"}},
		{"c_num", "numeric(38,10)", []string{"'9999999999999999999999999999.9999999999'", "'-9999999999999999999999999999.9999999999'", "'0'", "'-0.0000000001'", "'0.0000000001'", "'-42.5'"}},
		{"c_numneg", "numeric(3,-2)", []string{"'99900'", "'-99900'", "'0'", "'-1250'"}},
		{"c_numfrac", "numeric(2,5)", []string{"'0.00099'", "'-0.00099'", "'0'"}},
		{"c_numu", "numeric", []string{"'NaN'", "'Infinity'", "'-Infinity'", "'" + hundred + "'", "'-" + hundred + "'", "'-0.000000000000000000001'", "'0'", "'1.500'"}},
		{"c_bool", "bool", []string{"true", "false"}},
		{"c_text", "text", []string{"''", "'héllo wörld ✓ 𝄞 日本語'", `E'tab\there\nnewline "dq" \\ backslash ''sq'''`, "'NULL'", "' '"}},
		{"c_varchar", "varchar(20)", []string{"''", "'ünïcödé ✓'", "'20 chars exactly!!!!'"}},
		{"c_char", "char(5)", []string{"''", "'ab'", "'äö'", "'abcde'"}},
		{"c_bytea", "bytea", []string{rtAllBytes(), `'\x'::bytea`, `'\x00'::bytea`}},
		{"c_uuid", "uuid", []string{"'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "'00000000-0000-0000-0000-000000000000'", "'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF'"}},
		{"c_date", "date", []string{"'infinity'", "'-infinity'", "'0044-03-15 BC'", "'4714-11-24 BC'", "'5874897-12-31'", "'2000-02-29'", "'1970-01-01'", "'1969-12-31'"}},
		{"c_time", "time", []string{"'00:00:00'", "'23:59:59.999999'", "'24:00:00'", "'12:34:56.789'"}},
		{"c_timetz", "timetz", []string{"'00:00:00+00'", "'23:59:59.999999-15:59'", "'12:34:56.789+05:30'", "'04:05:06+14'", "'24:00:00-01'"}},
		{"c_ts", "timestamp", []string{"'infinity'", "'-infinity'", "'2000-01-01 00:00:00.000001'", "'4713-01-01 00:00:00 BC'", "'1969-12-31 23:59:59.999999'", "'1970-01-01 00:00:00'", "'294247-01-10 04:00:54.775806'", "'4714-11-24 00:00:00 BC'"}},
		{"c_tstz", "timestamptz", []string{"'infinity'", "'-infinity'", "'2024-02-29 12:34:56.123456+05:30'", "'1900-01-01 00:00:00.5+00'", "'0001-01-01 00:00:00+00 BC'", "'1969-12-31 23:59:59.999999+00'", "'4714-11-24 00:00:00+00 BC'"}},
		{"c_interval", "interval", []string{"'1 year 2 mons 3 days 04:05:06.5'", "'-1 year -2 mons +3 days -04:05:06'", "'0'", "'-0.5 seconds'", "'178956970 years 7 mons'", "'-178956970 years -8 mons'", "'2147483647 days'", "'-2147483648 days'", "'1 mon -30 days'", "'2562047788:00:54.775807'"}},
		{"c_json", "json", []string{`'{"b": 1,  "a": [1, 2, {"x": null}]}'`, `'"string with \u00e9 and é"'`, "'[]'", "'null'", "' 1.50 '"}},
		{"c_jsonb", "jsonb", []string{`'{"b": 1, "a": [1, 2.50, {"x": null}]}'`, `'"é"'`, "'null'", "'{}'", "'[]'"}},
		{"c_int4arr", "int4[]", []string{"'{}'", "'{1,NULL,-2147483648}'", "'{NULL}'", "'{2147483647}'"}},
		{"c_textarr", "text[]", []string{"'{}'", `ARRAY['a,b', 'c"d', 'e\f', '{g}', ' h ', '', NULL, 'NULL', 'null', E'k\nl', 'ünï', '\"', '}{']::text[]`, "'{NULL}'", `'{""}'`}},
		{"c_enum", "rt_mood", []string{"'sad'", "'with space'", "'ünï ✓'", "'NULL'"}},
		{"c_domain", "rt_price", []string{"'12345678.99'", "'-0.01'", "'0'", "'-99999999.99'"}},
		{"c_inet", "inet", []string{"'192.168.0.1/24'", "'::1'", "'2001:db8::1/64'", "'10.0.0.1'", "'::ffff:1.2.3.4'"}},
		{"c_cidr", "cidr", []string{"'10.0.0.0/8'", "'2001:db8::/32'", "'192.168.1.0/24'"}},
		{"c_macaddr", "macaddr", []string{"'08:00:2b:01:02:03'", "'ff:ff:ff:ff:ff:ff'", "'00:00:00:00:00:00'"}},
	}
}

// rtPGType reads a type as the producer's catalog does (pg_type, following
// domains and arrays), so that the test maps it with the same MapType call.
func rtPGType(ctx context.Context, c *pgx.Conn, oid uint32) (*schemas.PGType, error) {
	var name, typtype, typcategory string
	var elem, base uint32
	var baseTypmod int32
	err := c.QueryRow(ctx, `SELECT typname, typtype::text, typcategory::text, typelem, typbasetype, typtypmod
		FROM pg_catalog.pg_type WHERE oid = $1`, oid).Scan(&name, &typtype, &typcategory, &elem, &base, &baseTypmod)
	if err != nil {
		return nil, fmt.Errorf("type %d: %w", oid, err)
	}
	t := &schemas.PGType{OID: oid, Name: name}
	switch {
	case typtype == "d":
		t.Kind, t.BaseTypmod = schemas.KindDomain, baseTypmod
		t.Base, err = rtPGType(ctx, c, base)
	case typtype == "e":
		t.Kind = schemas.KindEnum
	case typcategory == "A" && elem != 0:
		t.Kind = schemas.KindArray
		t.Elem, err = rtPGType(ctx, c, elem)
	case typtype == "b":
		t.Kind = schemas.KindBase
	default:
		t.Kind = schemas.KindOther
	}
	return t, err
}

// rtCatalogColumn is a column as the catalog describes it.
type rtCatalogColumn struct {
	name    string
	sqlType string
	codec   schemas.Codec
	hasEq   bool
}

// rtCatalog maps every column of table with schemas.MapType on its catalog type.
func rtCatalog(t *testing.T, c *pgx.Conn, table string) []rtCatalogColumn {
	t.Helper()
	ctx := context.Background()
	rows, err := c.Query(ctx, `SELECT attname, atttypid, atttypmod, format_type(atttypid, atttypmod),
		       EXISTS (SELECT 1 FROM pg_operator o WHERE o.oprname = '=' AND o.oprleft = o.oprright
		               AND o.oprleft = COALESCE(NULLIF(t.typbasetype, 0), a.atttypid)) OR t.typcategory = 'A' OR t.typtype = 'e'
		FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
		WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, table)
	if err != nil {
		t.Fatal(err)
	}
	type raw struct {
		name, sqlType string
		oid           uint32
		mod           int32
		eq            bool
	}
	var rs []raw
	for rows.Next() {
		var r raw
		if err := rows.Scan(&r.name, &r.oid, &r.mod, &r.sqlType, &r.eq); err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var out []rtCatalogColumn
	for _, r := range rs {
		pt, err := rtPGType(ctx, c, r.oid)
		if err != nil {
			t.Fatal(err)
		}
		codec, err := schemas.MapType(*pt, r.mod, schemas.UnsupportedFail)
		if err != nil {
			t.Fatalf("column %s (%s): MapType: %v", r.name, r.sqlType, err)
		}
		out = append(out, rtCatalogColumn{name: r.name, sqlType: r.sqlType, codec: codec, hasEq: r.eq})
	}
	return out
}

// rtCheckInDB checks in PostgreSQL that the literal Encode makes of native
// is the value stored in column col of the row that where selects: equal
// (when the type has equality) and printed the same by its output function
// (which also catches -0, numeric display scale, bpchar padding, interval
// units and json text). A nil native must be a stored NULL.
func rtCheckInDB(t *testing.T, c *pgx.Conn, table, where string, col rtCatalogColumn, native any) {
	t.Helper()
	var lit *string
	if native != nil {
		s, err := col.codec.Encode(native)
		if err != nil {
			t.Errorf("%s %s (%s): Encode(%T %v): %v", table, where, col.name, native, native, err)
			return
		}
		lit = &s
	}
	eq := "true"
	if col.hasEq {
		eq = "x.v IS NOT DISTINCT FROM y.v"
	}
	q := fmt.Sprintf(`SELECT %s, format('%%s', x.v) IS NOT DISTINCT FROM format('%%s', y.v), format('%%s', x.v), format('%%s', y.v)
		FROM (SELECT %s AS v FROM %s WHERE %s) x, (SELECT $1::text::%s AS v) y`,
		eq, schemas.QuoteIdent(col.name), table, where, col.sqlType)
	var same, sameText bool
	var stored, got *string
	if err := c.QueryRow(context.Background(), q, lit).Scan(&same, &sameText, &stored, &got); err != nil {
		t.Errorf("%s %s (%s): literal %s: %v", table, where, col.name, rtShow(lit), err)
		return
	}
	if !same || !sameText {
		t.Errorf("%s %s column %s (%s): Kafka carries %s, the source holds %s (equal %v, same text %v)",
			table, where, col.name, col.sqlType, rtShow(got), rtShow(stored), same, sameText)
	}
}

func rtShow(s *string) string {
	if s == nil {
		return "NULL"
	}
	if len(*s) > 120 {
		return fmt.Sprintf("%q...(%d bytes)", (*s)[:120], len(*s))
	}
	return fmt.Sprintf("%q", *s)
}

// TestProducerTypeRoundTrip inserts one column of each mapped type with its
// edge values (and a row of NULLs), streams it through the producer, decodes
// the Avro from Kafka, turns each value back into a literal with the
// column's Codec.Encode and checks in PostgreSQL that it is the stored value.
func TestProducerTypeRoundTrip(t *testing.T) {
	e := newEnv(t)
	cols := rtColumns()
	defs := []string{"id int PRIMARY KEY"}
	nrows := 0
	for _, c := range cols {
		defs = append(defs, c.name+" "+c.typ)
		if len(c.values) > nrows {
			nrows = len(c.values)
		}
	}
	e.pg.Exec(t,
		`CREATE TYPE rt_mood AS ENUM ('sad', 'with space', 'ünï ✓', 'NULL')`,
		`CREATE DOMAIN rt_price AS numeric(10,2)`,
		`CREATE TABLE types_rt (`+strings.Join(defs, ", ")+`)`,
		`CREATE PUBLICATION pub FOR TABLE types_rt`)
	stop := e.runProducer(t, e.producerConfig(t))

	names := []string{"id"}
	for _, c := range cols {
		names = append(names, c.name)
	}
	var stmts []string
	for k := 0; k < nrows; k++ {
		vals := []string{fmt.Sprint(k + 1)}
		for _, c := range cols {
			vals = append(vals, c.values[k%len(c.values)])
		}
		stmts = append(stmts, fmt.Sprintf("INSERT INTO types_rt (%s) VALUES (%s)", strings.Join(names, ", "), strings.Join(vals, ", ")))
	}
	stmts = append(stmts, "INSERT INTO types_rt (id) VALUES (1000)") // every other column NULL
	c := e.pg.Conn(t)
	ctx := context.Background()
	if _, err := c.Exec(ctx, "BEGIN; "+strings.Join(stmts, ";\n")+"; COMMIT"); err != nil {
		t.Fatalf("insert edge values: %v", err)
	}
	log := e.waitFrames(t, 1)
	stop()
	if len(log.Txns) != 1 {
		t.Fatalf("%d frames, want 1", len(log.Txns))
	}
	evs := log.Txns[0].Events
	if len(evs) != nrows+1 {
		t.Fatalf("%d events, want %d", len(evs), nrows+1)
	}
	catalog := rtCatalog(t, c, "types_rt")
	if len(catalog) != len(cols)+1 {
		t.Fatalf("catalog has %d columns", len(catalog))
	}
	checked := 0
	for _, ev := range evs {
		if ev.Op != schemas.OpInsert || ev.Before != nil || ev.After == nil || len(ev.Toast) != 0 {
			t.Fatalf("event %s@%d: op %q before %v toast %v, want an insert with an after image", ev.Topic, ev.Offset, ev.Op, ev.Before, ev.Toast)
		}
		id, ok := ev.After["id"].(int32)
		if !ok || ev.Key["id"] != id {
			t.Fatalf("event %s@%d: id %v key %v", ev.Topic, ev.Offset, ev.After["id"], ev.Key)
		}
		if len(ev.After) != len(catalog) {
			t.Errorf("id %d: after has %d fields, the table %d columns", id, len(ev.After), len(catalog))
		}
		for _, col := range catalog {
			native, ok := ev.After[col.name]
			if !ok {
				t.Errorf("id %d: column %s missing from the after image", id, col.name)
				continue
			}
			if id == 1000 && col.name != "id" && native != nil {
				t.Errorf("id 1000: column %s is %v, want null", col.name, native)
			}
			rtCheckInDB(t, c, "types_rt", fmt.Sprintf("id = %d", id), col, native)
			checked++
		}
	}
	t.Logf("%d rows x %d columns compared in PostgreSQL", len(evs), len(catalog))
	if checked != (nrows+1)*len(catalog) {
		t.Fatalf("compared %d values, want %d", checked, (nrows+1)*len(catalog))
	}
}

// TestProducerUnchangedTOAST: a 1-MB value stored out of line is sent on
// insert; an update of another column lists it in unchanged_toast with null
// (and no placeholder anywhere); an update of the value itself sends it whole.
func TestProducerUnchangedTOAST(t *testing.T) {
	e := newEnv(t)
	e.pg.Exec(t,
		`CREATE TABLE big (id int PRIMARY KEY, flag int, note text, payload text)`,
		`CREATE PUBLICATION pub FOR TABLE big`)
	stop := e.runProducer(t, e.producerConfig(t))
	c := e.pg.Conn(t)
	ctx := context.Background()
	md5Of := func() (string, int) {
		var sum string
		var n int
		if err := c.QueryRow(ctx, `SELECT md5(payload), octet_length(payload) FROM big WHERE id = 1`).Scan(&sum, &n); err != nil {
			t.Fatal(err)
		}
		return sum, n
	}
	// 32768 random md5 strings: 1 MiB that pglz cannot shrink below the
	// out-of-line threshold.
	e.pg.Exec(t, `INSERT INTO big VALUES (1, 1, 'n', (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 32768)))`)
	sum1, n1 := md5Of()
	var toastChunks int64
	var toastRel string
	if err := c.QueryRow(ctx, `SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = 'big'::regclass`).Scan(&toastRel); err != nil {
		t.Fatal(err)
	}
	if err := c.QueryRow(ctx, `SELECT count(*) FROM `+toastRel).Scan(&toastChunks); err != nil {
		t.Fatal(err)
	}
	if n1 != 1<<20 || toastChunks == 0 {
		t.Fatalf("precondition: payload is %d bytes with %d chunks in %s; want 1 MiB stored out of line", n1, toastChunks, toastRel)
	}
	e.pg.Exec(t, `UPDATE big SET flag = 2, note = 'unchanged payload' WHERE id = 1`)
	e.pg.Exec(t, `UPDATE big SET payload = upper(payload) || 'x' WHERE id = 1`)
	sum3, n3 := md5Of()
	log := e.waitFrames(t, 3)
	stop()
	if len(log.Txns) != 3 {
		t.Fatalf("%d frames, want 3", len(log.Txns))
	}
	ev := func(i int) harness.Event {
		if len(log.Txns[i].Events) != 1 {
			t.Fatalf("frame %d has %d events, want 1", i, len(log.Txns[i].Events))
		}
		return log.Txns[i].Events[0]
	}
	checkPayload := func(ev harness.Event, sum string, n int) {
		t.Helper()
		p, ok := ev.After["payload"].(string)
		if !ok {
			t.Fatalf("%s event: payload is %T, want the full text", ev.Op, ev.After["payload"])
		}
		if got := md5.Sum([]byte(p)); hex.EncodeToString(got[:]) != sum || len(p) != n {
			t.Fatalf("%s event: payload of %d bytes does not match the source's %d bytes (md5 %s)", ev.Op, len(p), n, sum)
		}
		if len(ev.Toast) != 0 {
			t.Fatalf("%s event: unchanged_toast %v, want none", ev.Op, ev.Toast)
		}
	}
	ins := ev(0)
	if ins.Op != schemas.OpInsert {
		t.Fatalf("first event op %q", ins.Op)
	}
	checkPayload(ins, sum1, n1)

	upd := ev(1)
	if upd.Op != schemas.OpUpdate || upd.After["flag"] != int32(2) || upd.After["note"] != "unchanged payload" || upd.After["id"] != int32(1) {
		t.Fatalf("second event: op %q after %v", upd.Op, upd.After)
	}
	if v, ok := upd.After["payload"]; !ok || v != nil {
		t.Fatalf("unchanged TOAST column: after.payload = %v (present %v), want null", v, ok)
	}
	if len(upd.Toast) != 1 || upd.Toast[0] != "payload" {
		t.Fatalf("unchanged_toast = %v, want [payload]", upd.Toast)
	}
	// No placeholder string anywhere in the row images (Debezium writes
	// "__debezium_unavailable_value"; pgoutput's 'u' must not become text).
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, y := range x {
				walk(path+"."+k, y)
			}
		case []any:
			for i, y := range x {
				walk(fmt.Sprintf("%s[%d]", path, i), y)
			}
		case string:
			l := strings.ToLower(x)
			if strings.Contains(l, "toast") || strings.Contains(l, "unavailable") || strings.Contains(l, "unchanged-") {
				t.Errorf("placeholder-like string at %s: %q", path, x)
			}
		case []byte:
			if bytes.Contains(bytes.ToLower(x), []byte("toast")) {
				t.Errorf("placeholder-like bytes at %s", path)
			}
		}
	}
	walk(".after", upd.Value["after"])
	walk(".before", upd.Value["before"])

	full := ev(2)
	if full.Op != schemas.OpUpdate {
		t.Fatalf("third event op %q", full.Op)
	}
	checkPayload(full, sum3, n3)
	if full.After["flag"] != int32(2) {
		t.Fatalf("third event: flag %v", full.After["flag"])
	}
}

// TestProducerReplicaIdentityFull: under REPLICA IDENTITY FULL an update
// carries the whole before image; an update of the primary key (FULL or
// DEFAULT) arrives as a delete of the old key then an insert of the new one,
// each on its own key's partition.
func TestProducerReplicaIdentityFull(t *testing.T) {
	e := newEnv(t)
	e.pg.Exec(t,
		`CREATE TABLE full_t (id int PRIMARY KEY, v text, n int)`,
		`ALTER TABLE full_t REPLICA IDENTITY FULL`,
		`CREATE TABLE def_t (id int PRIMARY KEY, v text)`,
		`CREATE PUBLICATION pub FOR TABLE full_t, def_t`)
	stop := e.runProducer(t, e.producerConfig(t))
	e.pg.Exec(t,
		`INSERT INTO full_t SELECT g, 'v' || g, g * 10 FROM generate_series(1, 20) g`, // frame 0
		`UPDATE full_t SET v = 'a2' WHERE id = 1`,                                     // frame 1
		`UPDATE full_t SET id = 200, n = 21 WHERE id = 2`,                             // frame 2
		`UPDATE full_t SET v = 'b2' WHERE id = 200`,                                   // frame 3
		`DELETE FROM full_t WHERE id = 1`,                                             // frame 4
		`INSERT INTO def_t SELECT g, 'd' || g FROM generate_series(1, 20) g`,          // frame 5
		`UPDATE def_t SET id = 100 WHERE id = 1`,                                      // frame 6
		`UPDATE def_t SET v = 'x' WHERE id = 100`,                                     // frame 7
	)
	log := e.waitFrames(t, 8)
	stop()
	if len(log.Txns) != 8 {
		t.Fatalf("%d frames, want 8", len(log.Txns))
	}
	partOf := map[string]int32{} // table/id -> partition of its first insert
	for _, i := range []int{0, 5} {
		for _, ev := range log.Txns[i].Events {
			id := ev.Key["id"].(int32)
			partOf[fmt.Sprintf("%s/%d", ev.Topic, id)] = ev.Partition
		}
	}
	parts := map[int32]bool{}
	for _, p := range partOf {
		parts[p] = true
	}
	if len(parts) < 2 {
		t.Fatalf("40 keys all went to one partition: %v", parts)
	}
	one := func(i int) harness.Event {
		t.Helper()
		if len(log.Txns[i].Events) != 1 {
			t.Fatalf("frame %d: %d events, want 1", i, len(log.Txns[i].Events))
		}
		return log.Txns[i].Events[0]
	}
	row := func(id int32, v string, n int32) map[string]any {
		return map[string]any{"id": id, "v": v, "n": n}
	}
	same := func(a, b map[string]any) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

	u := one(1)
	if u.Op != schemas.OpUpdate || !same(u.Before, row(1, "v1", 10)) || !same(u.After, row(1, "a2", 10)) || u.Key["id"] != int32(1) {
		t.Fatalf("FULL update: op %q key %v before %v after %v", u.Op, u.Key, u.Before, u.After)
	}
	checkKeyChange := func(frame int, oldID, newID int32, before, after map[string]any, follow harness.Event) {
		t.Helper()
		evs := log.Txns[frame].Events
		if len(evs) != 2 {
			t.Fatalf("key change %d->%d: %d events, want a delete and an insert", oldID, newID, len(evs))
		}
		d, c := evs[0], evs[1]
		if d.Op != schemas.OpDelete || d.Key["id"] != oldID || d.After != nil || !same(d.Before, before) {
			t.Fatalf("key change %d->%d: first event op %q key %v before %v after %v, want the delete of the old key", oldID, newID, d.Op, d.Key, d.Before, d.After)
		}
		if c.Op != schemas.OpInsert || c.Key["id"] != newID || c.Before != nil || !same(c.After, after) {
			t.Fatalf("key change %d->%d: second event op %q key %v before %v after %v, want the insert of the new key", oldID, newID, c.Op, c.Key, c.Before, c.After)
		}
		if want := partOf[fmt.Sprintf("%s/%d", d.Topic, oldID)]; d.Partition != want {
			t.Fatalf("key change: delete of key %d on partition %d, its insert was on %d", oldID, d.Partition, want)
		}
		if follow.Key["id"] != newID || follow.Partition != c.Partition {
			t.Fatalf("key change: key %d on partition %d, its next update (key %v) on %d", newID, c.Partition, follow.Key, follow.Partition)
		}
	}
	checkKeyChange(2, 2, 200, row(2, "v2", 20), row(200, "v2", 21), one(3))
	if f := one(3); !same(f.Before, row(200, "v2", 21)) || !same(f.After, row(200, "b2", 21)) {
		t.Fatalf("FULL update after key change: before %v after %v", f.Before, f.After)
	}
	if d := one(4); d.Op != schemas.OpDelete || !same(d.Before, row(1, "a2", 10)) || d.After != nil {
		t.Fatalf("FULL delete: op %q before %v after %v, want the whole old row", d.Op, d.Before, d.After)
	}
	// DEFAULT identity: the old image of a key change holds the key only.
	checkKeyChange(6, 1, 100, map[string]any{"id": int32(1), "v": nil}, map[string]any{"id": int32(100), "v": "d1"}, one(7))
	if f := one(7); f.Before != nil {
		t.Fatalf("DEFAULT identity update without key change: before %v, want none", f.Before)
	}
}

// TestProducerRefusesKeylessTable: a published table without a primary key
// under REPLICA IDENTITY DEFAULT stops the producer with an error that names
// the table and the REPLICA IDENTITY fix, before any slot is created.
func TestProducerRefusesKeylessTable(t *testing.T) {
	e := newEnv(t)
	e.pg.Exec(t,
		`CREATE TABLE keyed (id int PRIMARY KEY)`,
		`CREATE TABLE nokey (a int, b text)`,
		`CREATE PUBLICATION pub FOR TABLE keyed, nokey`)
	p, err := producer.New(e.producerConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err = p.Run(ctx)
	if ctx.Err() != nil {
		t.Fatalf("Run kept going for 2 minutes instead of refusing the keyless table (err %v)", err)
	}
	if err == nil {
		t.Fatal("Run returned nil for a publication with a keyless table")
	}
	if !strings.Contains(err.Error(), "public.nokey") || !strings.Contains(err.Error(), "REPLICA IDENTITY") {
		t.Fatalf("error does not name the table and the REPLICA IDENTITY fix: %v", err)
	}
	if strings.Contains(err.Error(), "public.keyed") {
		t.Fatalf("error names the keyed table too: %v", err)
	}
	if !errors.Is(err, producer.ErrNoReplicaIdentity) {
		t.Errorf("error does not wrap producer.ErrNoReplicaIdentity: %v", err)
	}
	var slots int
	if err := e.pg.Conn(t).QueryRow(context.Background(), `SELECT count(*) FROM pg_replication_slots`).Scan(&slots); err != nil {
		t.Fatal(err)
	}
	if slots != 0 {
		t.Fatalf("%d replication slots exist after the refusal; a refused start must not hold WAL", slots)
	}
	t.Logf("refused: %v", err)
}

// rtNoPanic turns a panic of the harness's log reader into a test failure,
// so that one bad record does not abort the rest of the suite.
func rtNoPanic(t *testing.T, read func() *harness.Log) *harness.Log {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("reading the log panicked: %v", r)
		}
	}()
	return read()
}

// TestProducerTruncateAndMessages: a truncate is one 't' event per partition
// of the table's topic; a transactional pg_logical_emit_message arrives on
// <prefix>.messages inside its transaction's frame, a non-transactional one
// (even from a rolled-back transaction) as a frame of its own.
func TestProducerTruncateAndMessages(t *testing.T) {
	e := newEnv(t)
	e.pg.Exec(t,
		`CREATE TABLE tr (id int PRIMARY KEY, v text)`,
		`CREATE PUBLICATION pub FOR TABLE tr`)
	stop := e.runProducer(t, e.producerConfig(t))
	e.pg.Exec(t,
		`INSERT INTO tr SELECT g, 'x' FROM generate_series(1, 30) g`, // frame 0
		`TRUNCATE tr`, // frame 1
		`BEGIN; INSERT INTO tr VALUES (100, 'a'); SELECT pg_logical_emit_message(true, 'outbox', 'payload'); INSERT INTO tr VALUES (101, 'b'); COMMIT`,           // frame 2
		`SELECT pg_logical_emit_message(false, 'outbox', 'standalone')`,                                                                                          // frame 3
		`BEGIN; SELECT pg_logical_emit_message(true, 'outbox', 'rolled back'); SELECT pg_logical_emit_message(false, 'outbox', 'from an aborted txn'); ROLLBACK`, // frame 4
	)
	log := rtNoPanic(t, func() *harness.Log { return e.waitFrames(t, 5) })
	stop()
	if len(log.Txns) != 5 {
		t.Fatalf("%d frames, want 5: %v", len(log.Txns), log.Txns)
	}
	topic := schemas.TopicName(e.prefix, "public", "tr")
	msgTopic := schemas.MessagesTopic(e.prefix)

	tr := log.Txns[1]
	if len(tr.Events) != 3 || len(tr.Frame.Partitions) != 3 {
		t.Fatalf("truncate frame: %d events over %v, want one per partition of 3", len(tr.Events), tr.Frame.Partitions)
	}
	var tparts []int
	for i, ev := range tr.Events {
		if ev.Op != schemas.OpTruncate || ev.Topic != topic || ev.Key != nil || ev.Before != nil || ev.After != nil {
			t.Fatalf("truncate event %d: op %q topic %s key %v before %v after %v", i, ev.Op, ev.Topic, ev.Key, ev.Before, ev.After)
		}
		tparts = append(tparts, int(ev.Partition))
	}
	sort.Ints(tparts)
	if fmt.Sprint(tparts) != "[0 1 2]" {
		t.Fatalf("truncate events on partitions %v, want [0 1 2]", tparts)
	}

	msg := func(ev harness.Event, content string, transactional bool) {
		t.Helper()
		if ev.Topic != msgTopic || ev.Value["prefix"] != "outbox" || !bytes.Equal(ev.Value["content"].([]byte), []byte(content)) || ev.Value["transactional"] != transactional {
			t.Fatalf("message event on %s: %v; want prefix outbox content %q transactional %v on %s", ev.Topic, ev.Value, content, transactional, msgTopic)
		}
	}
	tx := log.Txns[2]
	if len(tx.Events) != 3 {
		t.Fatalf("outbox transaction: %d events, want insert, message, insert", len(tx.Events))
	}
	if tx.Events[0].Op != schemas.OpInsert || tx.Events[0].After["id"] != int32(100) || tx.Events[2].Op != schemas.OpInsert || tx.Events[2].After["id"] != int32(101) {
		t.Fatalf("outbox transaction: events %+v", tx.Events)
	}
	msg(tx.Events[1], "payload", true)
	if tx.Frame.Xid == 0 {
		t.Fatalf("outbox transaction frame has no xid")
	}

	for i, content := range map[int]string{3: "standalone", 4: "from an aborted txn"} {
		f := log.Txns[i]
		if len(f.Events) != 1 {
			t.Fatalf("frame %d: %d events, want the non-transactional message alone", i, len(f.Events))
		}
		msg(f.Events[0], content, false)
	}
	for _, f := range log.Txns {
		for _, ev := range f.Events {
			if ev.Topic == msgTopic && string(ev.Value["content"].([]byte)) == "rolled back" {
				t.Fatalf("the transactional message of a rolled-back transaction reached Kafka")
			}
		}
	}
}

// TestProducerEventTooLarge: a change whose event is larger than
// MaxEventBytes (--max-event-bytes) stops the producer with
// ErrEventTooLarge, naming its table, key and LSN, before any of its
// transaction reaches Kafka and without confirming it to the slot. A
// restart with a larger limit writes it, once, after what came before it.
// (Before the limit was checked, an event beyond the Kafka client's 8 MiB
// buffer failed inside the client, naming neither table nor key.)
func TestProducerEventTooLarge(t *testing.T) {
	e := newEnv(t)
	e.pg.Exec(t,
		`CREATE TABLE docs (id int PRIMARY KEY, body text)`,
		`ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL`,
		`CREATE PUBLICATION pub FOR TABLE docs`)
	cfg := e.producerConfig(t)
	cfg.MaxEventBytes = 1 << 20
	p, err := producer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	e.waitSlotActive(t, "slot")
	e.pg.Exec(t, `INSERT INTO docs VALUES (1, 'small')`)
	// Row 1's transaction must be in Kafka before row 2 is written: the
	// producer groups transactions that arrive close together into one
	// Kafka transaction, and the stop aborts the whole group.
	e.waitFrameCount(t, 1)
	c := e.pg.Conn(t)
	// 2 MiB of md5 digits: twice the limit.
	e.pg.Exec(t, `INSERT INTO docs SELECT 2, string_agg(md5(g::text), '') FROM generate_series(1, 65536) g`)
	select {
	case err = <-done:
	case <-ctx.Done():
		t.Fatal("the producer kept running for 2 minutes past an event twice its limit")
	}
	if !errors.Is(err, producer.ErrEventTooLarge) {
		t.Fatalf("want ErrEventTooLarge, got %v", err)
	}
	for _, want := range []string{"public.docs", "key (id=2)", "lsn ", "commit ", "--max-event-bytes", "limit 1048576"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error does not name %q: %v", want, err)
		}
	}
	t.Logf("stopped: %v", err)
	// PostgreSQL sends again a transaction whose commit LSN is at or past
	// the slot's confirmed position. (A heartbeat or a keepalive may move
	// that position past the WAL before row 2's commit: any bound below its
	// commit LSN would depend on timing.)
	m := regexp.MustCompile(`commit ([0-9A-F]+/[0-9A-F]+)\)`).FindStringSubmatch(err.Error())
	if m == nil {
		t.Fatalf("error does not name the commit LSN: %v", err)
	}
	var held bool
	if err := c.QueryRow(context.Background(),
		`SELECT confirmed_flush_lsn <= $1::pg_lsn FROM pg_replication_slots WHERE slot_name = 'slot'`, m[1]).Scan(&held); err != nil {
		t.Fatal(err)
	}
	if !held {
		t.Fatalf("the slot confirmed the transaction (commit %s) of the event that was not written", m[1])
	}
	ids := func() []int {
		var out []int
		for _, ev := range harness.ReadLog(t, e.kafka, e.reg, e.prefix).Events() {
			if ev.Topic == e.prefix+".public.docs" {
				out = append(out, int(ev.After["id"].(int32)))
			}
		}
		return out
	}
	if got := ids(); !slices.Equal(got, []int{1}) {
		t.Fatalf("Kafka holds the rows %v of docs after the stop, want [1]", got)
	}
	// The way past: a larger limit. The row is written once, after row 1.
	var end string
	if err := c.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&end); err != nil {
		t.Fatal(err)
	}
	cfg.MaxEventBytes = 4 << 20
	stop := e.runProducer(t, cfg)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var ok bool
		if err := c.QueryRow(context.Background(),
			`SELECT confirmed_flush_lsn >= $1::pg_lsn FROM pg_replication_slots WHERE slot_name = 'slot'`, end).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the restarted producer did not confirm the large row's transaction in 2 minutes")
		}
		time.Sleep(200 * time.Millisecond)
	}
	stop()
	if got := ids(); !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("Kafka holds the rows %v of docs after the restart, want [1 2]", got)
	}
	// The topic the first producer created for 1 MiB events was raised.
	rcs, err := e.kafka.Admin(t).DescribeTopicConfigs(context.Background(), e.prefix+".public.docs")
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On(e.prefix+".public.docs", nil)
	if err != nil {
		t.Fatal(err)
	}
	raised := false
	for _, c := range rc.Configs {
		if c.Key == "max.message.bytes" && c.Value != nil {
			raised = *c.Value == fmt.Sprint(4<<20+64<<10)
			t.Logf("max.message.bytes of the docs topic: %s", *c.Value)
		}
	}
	if !raised {
		t.Fatal("the restarted producer did not raise the topic's max.message.bytes to 4 MiB + 64 KiB")
	}
}
