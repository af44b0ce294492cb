package integration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tributary-cdc/tributary/integration/harness"
	"github.com/tributary-cdc/tributary/producer"
	"github.com/tributary-cdc/tributary/schemas"
)

// tmColumn is one column of the type matrix and the SQL expressions of its
// values; row k of a batch takes values[k % len(values)].
type tmColumn struct {
	name, typ string
	values    []string
}

// tmExtensions are the extension types schemas/TYPES.md documents; the
// matrix fails, naming the extension, when the server lacks one.
var tmExtensions = []string{"hstore", "citext", "ltree", "cube", "isn"}

// tmTypes creates the user-defined types of the matrix (in source and target).
var tmTypes = []string{
	`CREATE TYPE tm_mood AS ENUM ('sad', 'with space', 'ünï ✓', 'NULL')`,
	`CREATE DOMAIN tm_price AS numeric(10,2)`,
	`CREATE DOMAIN tm_big AS int8`,
	`CREATE DOMAIN tm_ints AS int4[]`,
	`CREATE TYPE tm_pair AS (n int, s text, d date)`,
	`CREATE TYPE tm_floatrange AS RANGE (subtype = float8)`,
}

// tmColumns has a column of every built-in type that a table can hold, the
// user-defined kinds (enum, domains, composite, range, multirange), the
// extension types, and arrays of many of them, each with its edge values:
// NULL, empty, NaN, ±Infinity, BC and far dates, 24:00:00, huge numerics,
// non-ASCII text, every byte.
func tmColumns() []tmColumn {
	thousand := strings.Repeat("9", 600) + "." + strings.Repeat("1234567890", 40)
	return []tmColumn{
		{"c_bool", "bool", []string{"true", "false", "NULL"}},
		{"c_int2", "int2", []string{"-32768", "32767", "0"}},
		{"c_int4", "int4", []string{"-2147483648", "2147483647", "0"}},
		{"c_int8", "int8", []string{"-9223372036854775808", "9223372036854775807", "9007199254740990", "9007199254740991", "-9007199254740991", "0"}},
		{"c_oid", "oid", []string{"0", "4294967295"}},
		{"c_float4", "float4", []string{"'NaN'", "'Infinity'", "'-Infinity'", "'3.4028235e38'", "'1.4e-45'", "'-0'", "'0.1'"}},
		{"c_float8", "float8", []string{"'NaN'", "'Infinity'", "'-Infinity'", "'1.7976931348623157e308'", "'5e-324'", "'-0'", "'1e+15'"}},
		{"c_numeric", "numeric", []string{"'NaN'", "'Infinity'", "'-Infinity'", "'" + thousand + "'", "'-0.000000000000000000001'", "'1.500'"}},
		{"c_num38", "numeric(38,10)", []string{"'NaN'", "'9999999999999999999999999999.9999999999'", "'-9999999999999999999999999999.9999999999'", "'-0.0000000001'", "0"}},
		{"c_numneg", "numeric(3,-2)", []string{"'99900'", "'-99900'", "'NaN'"}},
		{"c_numfrac", "numeric(2,5)", []string{"'0.00099'", "'-0.00099'", "'NaN'"}},
		{"c_text", "text", []string{"''", "'héllo wörld ✓ 𝄞 日本語'", `E'tab\there\nnewline "dq" \\ backslash ''sq'''`, "'NULL'"}},
		{"c_varchar", "varchar(20)", []string{"''", "'ünïcödé ✓'", "'20 chars exactly!!!!'"}},
		{"c_bpchar", "char(5)", []string{"''", "'ab'", "'äö'"}},
		{"c_qchar", `"char"`, []string{`'a'`, `'\300'`, `''`}},
		{"c_name", "name", []string{"'pg_catalog'", "'ünï name'"}},
		{"c_bytea", "bytea", []string{rtAllBytes(), `'\x'::bytea`, `'\x00'::bytea`}},
		{"c_uuid", "uuid", []string{"'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "'00000000-0000-0000-0000-000000000000'"}},
		{"c_date", "date", []string{"'infinity'", "'-infinity'", "'0044-03-15 BC'", "'4714-11-24 BC'", "'5874897-12-31'", "'10000-01-01'", "'0001-01-01'", "'9999-12-31'", "'2000-02-29'"}},
		{"c_time", "time", []string{"'24:00:00'", "'00:00:00'", "'23:59:59.999999'"}},
		{"c_timetz", "timetz", []string{"'24:00:00-15:59'", "'00:00:00+15:59'", "'12:34:56.789+05:30'"}},
		{"c_ts", "timestamp", []string{"'infinity'", "'-infinity'", "'0044-03-15 12:00:00.5 BC'", "'4714-11-24 00:00:00 BC'", "'294276-12-31 23:59:59.999999'", "'10000-01-01 00:00:00'", "'9999-12-31 23:59:59.999999'", "'2024-02-29 12:34:56.123456'"}},
		{"c_tstz", "timestamptz", []string{"'infinity'", "'-infinity'", "'0001-01-01 00:00:00+00 BC'", "'294276-12-31 23:59:59.999999+00'", "'10000-01-01 00:00:00+00'", "'0001-01-01 00:00:00+00'", "'2024-02-29 12:34:56.123456+05:30'"}},
		{"c_interval", "interval", []string{"'178956970 years 7 mons'", "'-178956970 years -8 mons'", "'2147483647 days'", "'2562047788:00:54.775807'", "'-2562047788:00:54.775807'", "'1 mon -30 days -0.5 seconds'", "'0'"}},
		{"c_json", "json", []string{`'{"b": 1,  "a": [1, 2, {"x": null}]}'`, `'"é"'`, "'[]'"}},
		{"c_jsonb", "jsonb", []string{`'{"b": 1, "a": [1, 2.50, {"x": null}]}'`, "'null'", "'{}'"}},
		{"c_jsonpath", "jsonpath", []string{`'$.a[*] ? (@ > 1)'`, `'strict $."ü"'`}},
		{"c_xml", "xml", []string{`'<a b="1">x &amp; ü</a>'`, `'text only'`}},
		{"c_money", "money", []string{"'-92233720368547758.08'", "'92233720368547758.07'", "'1.5'"}},
		{"c_bit", "bit(8)", []string{"B'10101010'", "B'00000000'"}},
		{"c_varbit", "varbit", []string{"B''", "B'1'", "B'1010101010101010101'"}},
		{"c_inet", "inet", []string{"'192.168.0.1/24'", "'::ffff:1.2.3.4'"}},
		{"c_cidr", "cidr", []string{"'10.0.0.0/8'", "'2001:db8::/32'"}},
		{"c_macaddr", "macaddr", []string{"'08:00:2b:01:02:03'"}},
		{"c_macaddr8", "macaddr8", []string{"'08:00:2b:01:02:03:04:05'"}},
		{"c_point", "point", []string{"'(1.5,-2)'", "'(NaN,Infinity)'"}},
		{"c_line", "line", []string{"'{1,2,3}'"}},
		{"c_lseg", "lseg", []string{"'[(1,2),(3,4)]'"}},
		{"c_box", "box", []string{"'(3,4),(1,2)'"}},
		{"c_path", "path", []string{"'[(1,2),(3,4)]'", "'((0,0),(1,1),(1,0))'"}},
		{"c_polygon", "polygon", []string{"'((0,0),(1,1),(1,0))'"}},
		{"c_circle", "circle", []string{"'<(1,2),3>'"}},
		{"c_tsvector", "tsvector", []string{"'a fat cat sat on a mat'", "''"}},
		{"c_tsquery", "tsquery", []string{"'fat & (rat | !cat)'"}},
		{"c_pg_lsn", "pg_lsn", []string{"'16/B374D848'", "'FFFFFFFF/FFFFFFFF'", "'0/0'"}},
		{"c_txid_snapshot", "txid_snapshot", []string{"'10:20:10,14,15'"}},
		{"c_pg_snapshot", "pg_snapshot", []string{"'10:20:10,14,15'"}},
		{"c_tid", "tid", []string{"'(0,1)'", "'(4294967295,65535)'"}},
		{"c_xid", "xid", []string{"'4294967295'"}},
		{"c_xid8", "xid8", []string{"'18446744073709551615'"}},
		{"c_cid", "cid", []string{"'7'"}},
		{"c_int2vector", "int2vector", []string{"'1 2 -3'"}},
		{"c_oidvector", "oidvector", []string{"'1 2 4294967295'"}},
		{"c_refcursor", "refcursor", []string{"'my cursor'"}},
		{"c_regclass", "regclass", []string{"'pg_class'"}},
		{"c_regtype", "regtype", []string{"'integer'"}},
		{"c_regproc", "regproc", []string{"'now'"}},
		{"c_regprocedure", "regprocedure", []string{"'abs(integer)'"}},
		{"c_regoper", "regoper", []string{"'||/'"}},
		{"c_regoperator", "regoperator", []string{"'+(integer,integer)'"}},
		{"c_regrole", "regrole", []string{"'postgres'"}},
		{"c_regnamespace", "regnamespace", []string{"'pg_catalog'"}},
		{"c_regconfig", "regconfig", []string{"'english'"}},
		{"c_regdictionary", "regdictionary", []string{"'simple'"}},
		{"c_regcollation", "regcollation", []string{`'"C"'`}},
		{"c_aclitem", "aclitem", []string{"'postgres=arwdDxt/postgres'"}},
		{"c_int4range", "int4range", []string{"'[1,10)'", "'empty'", "'(,5]'"}},
		{"c_int8range", "int8range", []string{"'[-9223372036854775808,9223372036854775807)'"}},
		{"c_numrange", "numrange", []string{"'(1.5,NaN]'", "'[,]'"}},
		{"c_tsrange", "tsrange", []string{"'[-infinity,\"0044-03-15 00:00:00 BC\")'"}},
		{"c_tstzrange", "tstzrange", []string{"'[\"2000-01-01 00:00:00+00\",infinity)'"}},
		{"c_daterange", "daterange", []string{"'[4714-11-24 BC,5874897-12-30]'"}},
		{"c_int4multirange", "int4multirange", []string{"'{[1,3),[5,7)}'", "'{}'"}},
		{"c_datemultirange", "datemultirange", []string{"'{[-infinity,2000-01-01),[2001-01-01,infinity)}'"}},
		{"c_int8multirange", "int8multirange", []string{"'{[1,2]}'"}},
		{"c_nummultirange", "nummultirange", []string{"'{[1.5,2.5),(3,NaN)}'"}},
		{"c_tsmultirange", "tsmultirange", []string{"'{[\"2000-01-01 00:00:00\",infinity)}'"}},
		{"c_tstzmultirange", "tstzmultirange", []string{"'{(-infinity,\"0001-01-01 00:00:00+00 BC\"]}'"}},
		{"c_floatrange", "tm_floatrange", []string{"'[-Infinity,NaN]'"}},
		{"c_enum", "tm_mood", []string{"'sad'", "'with space'", "'ünï ✓'", "'NULL'"}},
		{"c_domain", "tm_price", []string{"'12345678.99'", "'NaN'", "'-0.01'"}},
		{"c_domain_big", "tm_big", []string{"'9223372036854775807'", "'42'"}},
		{"c_domain_arr", "tm_ints", []string{"'{{1,2},{3,4}}'", "'[0:1]={5,6}'", "'{7}'"}},
		{"c_composite", "tm_pair", []string{`'(1,"a, ""b""",infinity)'`, "'(,,)'", `ROW(NULL, 'ü', '0044-03-15 BC')::tm_pair`}},
		{"c_hstore", "hstore", []string{`'"a"=>"1", "b c"=>NULL, "ü"=>"\""'`, "''"}},
		{"c_citext", "citext", []string{"'MiXeD Case ü'"}},
		{"c_ltree", "ltree", []string{"'Top.Science.Astronomy'", "''"}},
		{"c_lquery", "lquery", []string{"'*.Science.*'"}},
		{"c_cube", "cube", []string{"'(1,2),(3,4)'", "'(1e+300)'"}},
		{"c_isbn13", "isbn13", []string{"'978-0-393-04002-9'"}},
		{"c_ean13", "ean13", []string{"'978-0-393-04002-9'"}},
		{"c_issn", "issn", []string{"'1436-4522'"}},
		{"c_upc", "upc", []string{"'220356483481'"}},
		// Arrays: empty, NULL elements, 2-D, lower bounds other than 1, and
		// elements only the text form carries.
		{"a_int4", "int4[]", []string{"'{}'", "'{1,NULL,-2147483648}'", "'{{1,2},{3,4}}'", "'[0:2]={1,2,3}'", "'[-5:-5]={7}'"}},
		{"a_int8", "int8[]", []string{"'{1,9223372036854775807}'", "'{}'"}},
		{"a_text", "text[]", []string{`ARRAY['a,b', 'c"d', 'e\f', '{g}', ' h ', '', NULL, 'NULL', 'ünï']::text[]`, `'{{"a b",NULL},{"}",""}}'`, "'{}'"}},
		{"a_numeric", "numeric(5,2)[]", []string{"'{1.00,NaN,NULL}'", "'{1.50}'"}},
		{"a_date", "date[]", []string{"'{2000-01-01,infinity,\"0044-03-15 BC\"}'", "'{2000-01-01,9999-12-31}'"}},
		{"a_tstz", "timestamptz[]", []string{`'{"2000-01-01 00:00:00+00",-infinity}'`, `'{"2000-01-01 00:00:00+00"}'`}},
		{"a_time", "time[]", []string{"'{24:00:00,12:00:00}'"}},
		{"a_interval", "interval[]", []string{"'{P1Y,NULL,PT-0.5S}'"}},
		{"a_bytea", "bytea[]", []string{`'{"\\x00ff","\\x"}'`}},
		{"a_jsonb", "jsonb[]", []string{`ARRAY['{"a": 1}'::jsonb, NULL, '[]']`}},
		{"a_uuid", "uuid[]", []string{"'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,NULL}'"}},
		{"a_enum", "tm_mood[]", []string{"'{sad,\"with space\",NULL}'"}},
		{"a_domain", "tm_price[]", []string{"'{1.00,NaN}'", "'{2.50}'"}},
		{"a_money", "money[]", []string{"'{1.5,-2}'"}},
		{"a_box", "box[]", []string{"'{(3,4),(1,2);(5,6),(4,5)}'"}},
		{"a_range", "int4range[]", []string{`'{"[1,2)",empty}'`}},
		{"a_composite", "tm_pair[]", []string{`ARRAY['(1,x,)'::tm_pair, NULL, '(2,"y z",infinity)']`}},
		{"a_hstore", "hstore[]", []string{`ARRAY['"a"=>"1"'::hstore, '']`}},
		{"a_citext", "citext[]", []string{"'{A,b,NULL}'"}},
	}
}

// tmNotCovered lists the base types of pg_catalog that no table column can
// hold, or whose values cannot be written, and why.
var tmNotCovered = map[string]string{
	"unknown": "not a column type", "pg_node_tree": "no input function", "pg_ndistinct": "no input function",
	"pg_dependencies": "no input function", "pg_mcv_list": "no input function", "gtsvector": "no input function",
	"pg_brin_bloom_summary": "no input function", "pg_brin_minmax_multi_summary": "no input function",
}

// tmRoot is the repository's root (tests run in integration/).
func tmRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// TestTypesMatrix: a table with a column of every type (and arrays,
// domains, a composite, ranges, multiranges, an enum and the extension
// types), filled with edge values, replicated through the initial snapshot
// and the stream (insert, update, delete) by `tributary consumer` into a
// PostgreSQL target that `tributary verify` finds equal; a REPLICA IDENTITY
// FULL table with NULLs in its key columns, snapshotted in chunks of two
// rows and streamed, arrives whole too. Then three stock third-party
// decoders with default settings (kafkajs + @kafkajs/confluent-schema-
// registry, confluent-kafka-python's AvroDeserializer, Apache Avro's Java
// GenericDatumReader) decode every record of the matrix table's topic.
func TestTypesMatrix(t *testing.T) {
	// Install the decoders first (cached under .cache/): a missing tool
	// fails here, before the databases start.
	decoders := tmPrepareDecoders(t)

	e := newEnv(t)
	target := harness.StartPostgres(t)
	ctx := context.Background()
	for _, pg := range []*harness.Postgres{e.pg, target} {
		c := pg.Conn(t)
		for _, ext := range tmExtensions {
			var ok bool
			if err := c.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = $1)`, ext).Scan(&ok); err != nil {
				t.Fatal(err)
			}
			if !ok {
				t.Fatalf("the server at %s lacks the extension %s (Debian's postgresql-15 ships it in contrib): "+
					"the type matrix needs hstore, citext, ltree, cube and isn", pg.DSN, ext)
			}
			pg.Exec(t, "CREATE EXTENSION "+ext)
		}
		pg.Exec(t, tmTypes...)
	}
	cols := tmColumns()
	tmCheckCoverage(t, e.pg, cols)

	defs := []string{"id int PRIMARY KEY"}
	names := []string{"id"}
	nrows := 0
	for _, c := range cols {
		defs = append(defs, c.name+" "+c.typ)
		names = append(names, c.name)
		nrows = max(nrows, len(c.values))
	}
	create := `CREATE TABLE tm_matrix (` + strings.Join(defs, ", ") + `)`
	createFull := `CREATE TABLE tm_full (a int, b text, c date, d numeric(5,2), e int8[], f tm_mood)`
	for _, pg := range []*harness.Postgres{e.pg, target} {
		pg.Exec(t, create, createFull)
	}
	e.pg.Exec(t, `ALTER TABLE tm_full REPLICA IDENTITY FULL`)
	// rows k = 0..nrows-1 of a batch from id base+k, plus a row of NULLs.
	insert := func(base int) string {
		var stmts []string
		for k := 0; k < nrows; k++ {
			vals := []string{fmt.Sprint(base + k)}
			for _, c := range cols {
				vals = append(vals, c.values[k%len(c.values)])
			}
			stmts = append(stmts, fmt.Sprintf("INSERT INTO tm_matrix (%s) VALUES (%s)", strings.Join(names, ", "), strings.Join(vals, ", ")))
		}
		stmts = append(stmts, fmt.Sprintf("INSERT INTO tm_matrix (id) VALUES (%d)", base+nrows))
		return "BEGIN; " + strings.Join(stmts, ";\n") + "; COMMIT"
	}
	fullRows := `INSERT INTO tm_full VALUES
		(1, 'one', '2000-01-01', 1.5, '{1}', 'sad'), (NULL, 'null a', 'infinity', 'NaN', NULL, NULL),
		(2, NULL, NULL, NULL, '{9223372036854775807}', 'NULL'), (NULL, NULL, NULL, NULL, NULL, NULL),
		(3, '', '0044-03-15 BC', -0.01, '{{1,2},{3,4}}', 'ünï ✓'), (NULL, 'x', NULL, 2, '{}', 'sad'),
		(4, 'four', '2024-02-29', NULL, NULL, 'with space')`
	e.pg.Exec(t, insert(1), fullRows, `CREATE PUBLICATION pub FOR TABLE tm_matrix, tm_full`)

	cfg := e.producerConfig(t)
	cfg.Snapshot = producer.SnapshotInitial
	cfg.SnapshotChunkRows = 2 // tm_full's chunks end on NULL keys
	e.runProducer(t, cfg)
	harness.StartTributary(t, nil, "consumer", "--brokers", e.kafka.Brokers[0], "--registry", e.kafka.RegistryURL,
		"--prefix", e.prefix, "--name", "replica", "--target", target.DSN, "--log-format", "json")

	// The stream: the same edge values inserted, then updated into other
	// rows' values, a few rows deleted; NULL keys updated and deleted.
	e.pg.Exec(t, insert(1001),
		`UPDATE tm_matrix t SET (`+strings.Join(names[1:], ", ")+`) = (SELECT `+strings.Join(names[1:], ", ")+
			` FROM tm_matrix s WHERE s.id = t.id + 1) WHERE t.id BETWEEN 1001 AND 1004`,
		`UPDATE tm_matrix SET c_date = 'infinity', c_time = '24:00:00', c_num38 = 'NaN', a_int4 = '[2:3][1:1]={{1},{2}}' WHERE id IN (1, 1006)`,
		`DELETE FROM tm_matrix WHERE id IN (2, 1005)`,
		`INSERT INTO tm_full VALUES (NULL, NULL, '-infinity', 'NaN', '[0:0]={1}', NULL), (5, 'five', '10000-01-01', 3, '{5}', 'sad')`,
		`UPDATE tm_full SET b = 'was null' WHERE a IS NULL AND b IS NULL AND c IS NULL AND d IS NULL`,
		`UPDATE tm_full SET c = '5874897-12-31' WHERE a = 2`,
		`DELETE FROM tm_full WHERE a IS NULL AND b = 'x'`,
		`DELETE FROM tm_full WHERE a = 4`)

	code, out, errOut := runVerifyCLI(t, "--source", e.pg.DSN, "--target", target.DSN, "--consumer", "replica",
		"--tables", "public.tm_matrix", "--timeout", "3m")
	if code != 0 || !strings.Contains(out, "verify: EQUAL") {
		t.Fatalf("verify of the type matrix: exit %d\n%s\n%s", code, out, errOut)
	}
	t.Logf("verify:\n%s", lastLines(out, 6))
	tmWaitSameRows(t, e.pg, target, "tm_full")

	// Every record of the matrix topic, snapshot and stream, as third
	// parties read it.
	topic := schemas.TopicName(e.prefix, "public", "tm_matrix")
	log := harness.ReadLog(t, e.kafka, e.reg, e.prefix)
	records := 0
	for _, tx := range log.Txns {
		for _, ev := range tx.Events {
			if ev.Topic == topic {
				records++
			}
		}
	}
	if want := 2*(nrows+1) + 4 + 2 + 2; records != want {
		t.Fatalf("%d records on %s, want %d", records, topic, want)
	}
	tmRunDecoders(t, decoders, e.kafka.Brokers[0], e.kafka.RegistryURL, topic, records)
}

// tmCheckCoverage fails when a base type of pg_catalog that a table can hold
// has no column in the matrix.
func tmCheckCoverage(t *testing.T, pg *harness.Postgres, cols []tmColumn) {
	t.Helper()
	c := pg.Conn(t)
	covered := map[string]bool{}
	for _, col := range cols {
		var name string
		if err := c.QueryRow(context.Background(), `SELECT typname FROM pg_type WHERE oid = $1::regtype`, col.typ).Scan(&name); err != nil {
			t.Fatalf("type %s: %v", col.typ, err)
		}
		covered[name] = true
		for _, v := range col.values {
			var out *string
			if err := c.QueryRow(context.Background(), `SELECT (`+v+`)::`+col.typ+`::text`).Scan(&out); err != nil {
				t.Fatalf("column %s (%s) value %s: %v", col.name, col.typ, v, err)
			}
		}
	}
	rows, err := c.Query(context.Background(), `SELECT typname FROM pg_type
		WHERE typnamespace = 'pg_catalog'::regnamespace AND typtype IN ('b', 'r', 'm') AND typisdefined
		  AND NOT (typcategory = 'A' AND typname LIKE '\_%')
		ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		if !covered[name] && tmNotCovered[name] == "" {
			missing = append(missing, name)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		t.Fatalf("the matrix has no column of the built-in types %v", missing)
	}
}

// tmWaitSameRows waits until table holds the same rows (as text, with
// duplicates) in both databases.
func tmWaitSameRows(t *testing.T, src, dst *harness.Postgres, table string) {
	t.Helper()
	q := `SELECT coalesce(string_agg(r, E'\n' ORDER BY r), '') FROM (SELECT t::text AS r FROM ` + table + ` t) x`
	sc, dc := src.Conn(t), dst.Conn(t)
	var want, got string
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if err := sc.QueryRow(context.Background(), q).Scan(&want); err != nil {
			t.Fatal(err)
		}
		if err := dc.QueryRow(context.Background(), q).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got == want {
			t.Logf("%s: %d rows equal", table, strings.Count(want, "\n")+1)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s differs after 2 minutes:\nsource:\n%s\ntarget:\n%s", table, want, got)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// tmDecoder is one third-party decoder, ready to run.
type tmDecoder struct {
	name string
	cmd  func(args ...string) *exec.Cmd
}

// tmPrepareDecoders installs the three third-party decoders of
// integration/thirdparty into .cache/thirdparty (again only when their
// pinned versions change) and returns how to run each. A missing tool
// (node and npm, python3 with pip, java, javac and mvn) fails the test with
// the reason; .ci/run installs them.
func tmPrepareDecoders(t *testing.T) []tmDecoder {
	t.Helper()
	root := tmRoot(t)
	src := filepath.Join(root, "integration", "thirdparty")
	cache := filepath.Join(root, ".cache", "thirdparty")
	for _, tool := range []string{"node", "npm", "python3", "java", "javac", "mvn"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the third-party decoders need %s, which is not on PATH (.ci/run installs nodejs, npm, python3-pip, "+
				"default-jdk-headless and maven): %v", tool, err)
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, 3)
	wg.Add(3)
	go func() { // kafkajs
		defer wg.Done()
		dir := filepath.Join(cache, "node")
		errs[0] = tmInstall(dir, []string{filepath.Join(src, "package.json"), filepath.Join(src, "package-lock.json")}, func() error {
			for _, f := range []string{"package.json", "package-lock.json"} {
				if err := tmCopy(filepath.Join(src, f), filepath.Join(dir, f)); err != nil {
					return err
				}
			}
			return tmRun(dir, nil, "npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error")
		})
	}()
	go func() { // confluent-kafka-python
		defer wg.Done()
		_, errs[1] = tmInstallPython(root)
	}()
	go func() { // Java
		defer wg.Done()
		dir := filepath.Join(cache, "java")
		errs[2] = tmInstall(dir, []string{filepath.Join(src, "java", "pom.xml"), filepath.Join(src, "java", "Decode.java")}, func() error {
			if err := tmRun(dir, nil, "mvn", "-q", "-B", "-f", filepath.Join(src, "java", "pom.xml"),
				"dependency:copy-dependencies", "-DoutputDirectory="+filepath.Join(dir, "lib")); err != nil {
				return err
			}
			return tmRun(dir, nil, "javac", "-d", filepath.Join(dir, "classes"), "-cp", filepath.Join(dir, "lib", "*"),
				filepath.Join(src, "java", "Decode.java"))
		})
	}()
	wg.Wait()
	for i, name := range []string{"kafkajs", "confluent-kafka-python", "java"} {
		if errs[i] != nil {
			t.Fatalf("install the %s decoder: %v", name, errs[i])
		}
	}
	t.Logf("third-party decoders ready in %s", time.Since(start).Round(time.Millisecond))
	return []tmDecoder{
		{"kafkajs + @kafkajs/confluent-schema-registry", func(args ...string) *exec.Cmd {
			c := exec.Command("node", append([]string{filepath.Join(src, "decode.js")}, args...)...)
			c.Env = append(os.Environ(), "NODE_PATH="+filepath.Join(cache, "node", "node_modules"))
			return c
		}},
		{"confluent-kafka-python AvroDeserializer", func(args ...string) *exec.Cmd {
			c := exec.Command("python3", append([]string{filepath.Join(src, "decode.py")}, args...)...)
			c.Env = append(os.Environ(), "PYTHONPATH="+filepath.Join(cache, "python", "site"))
			return c
		}},
		{"Apache Avro GenericDatumReader (Java)", func(args ...string) *exec.Cmd {
			cp := filepath.Join(cache, "java", "classes") + string(os.PathListSeparator) + filepath.Join(cache, "java", "lib", "*")
			return exec.Command("java", append([]string{"-Xmx256m", "-cp", cp, "Decode"}, args...)...)
		}},
	}
}

// tmInstallPython installs confluent-kafka-python as pinned by
// integration/thirdparty/requirements.txt into .cache/thirdparty/python/site
// (again only when the pins change) and returns that directory, the
// PYTHONPATH of the Python decoder and of examples/python.
func tmInstallPython(root string) (string, error) {
	req := filepath.Join(root, "integration", "thirdparty", "requirements.txt")
	dir := filepath.Join(root, ".cache", "thirdparty", "python")
	site := filepath.Join(dir, "site")
	return site, tmInstall(dir, []string{req}, func() error {
		return tmRun(dir, nil, "python3", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-warn-script-location",
			"--target", site, "-r", req)
	})
}

// tmInstall runs install into dir unless dir/.stamp holds the hash of the
// inputs, which it writes after a successful install.
func tmInstall(dir string, inputs []string, install func() error) error {
	h := sha256.New()
	for _, f := range inputs {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		h.Write(b)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	stamp := filepath.Join(dir, ".stamp")
	if b, err := os.ReadFile(stamp); err == nil && string(b) == sum {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := install(); err != nil {
		return err
	}
	return os.WriteFile(stamp, []byte(sum), 0o644)
}

func tmCopy(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o644)
}

func tmRun(dir string, env []string, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, name, args...)
	c.Dir, c.Env = dir, append(os.Environ(), env...)
	out, err := c.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// tmRunDecoders runs the decoders in parallel over topic, each expected to
// decode exactly records records, and fails on any that does not.
func tmRunDecoders(t *testing.T, decoders []tmDecoder, brokers, registry, topic string, records int) {
	t.Helper()
	type result struct {
		out []byte
		err error
		el  time.Duration
	}
	res := make([]result, len(decoders))
	var wg sync.WaitGroup
	start := time.Now()
	for i, d := range decoders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := time.Now()
			out, err := d.cmd(brokers, registry, topic, fmt.Sprint(records)).CombinedOutput()
			res[i] = result{out, err, time.Since(s)}
		}()
	}
	wg.Wait()
	var failed []string
	for i, d := range decoders {
		r := res[i]
		t.Logf("%s (%s): %s", d.name, r.el.Round(time.Millisecond), tmClip(string(r.out), 3000))
		if r.err != nil {
			failed = append(failed, d.name)
		}
	}
	sort.Strings(failed)
	if len(failed) > 0 {
		t.Fatalf("third-party decoders failed on %s: %s", topic, strings.Join(failed, "; "))
	}
	t.Logf("%d records decoded by %d third-party decoders in %s", records, len(decoders), time.Since(start).Round(time.Millisecond))
}

func tmClip(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// TestTypesUpgradeFromContractWithoutTextBranch: on a prefix whose subjects
// hold the key and value schemas the producer derived before the text
// branch (no text branch, plain key fields), an upgraded producer with the
// default --schema-change fail registers new versions and streams values
// only the text branch carries; the consumer applies them.
func TestTypesUpgradeFromContractWithoutTextBranch(t *testing.T) {
	e := newEnv(t)
	target := harness.StartPostgres(t)
	ddl := `CREATE TABLE up (id int8 PRIMARY KEY, d date, n numeric(5,2), a int4[], s text)`
	e.pg.Exec(t, ddl, `CREATE PUBLICATION pub FOR TABLE up`)
	target.Exec(t, ddl)
	ctx := context.Background()

	// The schemas as the previous producer registered them.
	int8t := schemas.PGType{OID: 20, Name: "int8", Kind: schemas.KindBase}
	int4t := schemas.PGType{OID: 23, Name: "int4", Kind: schemas.KindBase}
	ts, err := schemas.BuildTableSchema(e.prefix, schemas.Table{Schema: "public", Name: "up", Columns: []schemas.Column{
		{Name: "id", Type: int8t, Typmod: -1, SQLType: "bigint", Key: true},
		{Name: "d", Type: schemas.PGType{OID: 1082, Name: "date", Kind: schemas.KindBase}, Typmod: -1, SQLType: "date"},
		{Name: "n", Type: schemas.PGType{OID: 1700, Name: "numeric", Kind: schemas.KindBase}, Typmod: 5<<16 | 2 + 4, SQLType: "numeric(5,2)"},
		{Name: "a", Type: schemas.PGType{OID: 1007, Name: "_int4", Kind: schemas.KindArray, Elem: &int4t}, Typmod: -1, SQLType: "integer[]"},
		{Name: "s", Type: schemas.PGType{OID: 25, Name: "text", Kind: schemas.KindBase}, Typmod: -1, SQLType: "text"},
	}}, schemas.UnsupportedAsText)
	if err != nil {
		t.Fatal(err)
	}
	oldKey, err := schemas.SchemaWithoutText(ts.KeySchema)
	if err != nil {
		t.Fatal(err)
	}
	oldValue, err := schemas.SchemaWithoutText(ts.ValueSchema)
	if err != nil {
		t.Fatal(err)
	}
	if oldKey == ts.KeySchema || oldValue == ts.ValueSchema {
		t.Fatal("the old schemas equal the new ones")
	}
	for subject, schema := range map[string]string{schemas.KeySubject(ts.Topic): oldKey, schemas.ValueSubject(ts.Topic): oldValue} {
		if _, err := e.reg.Register(ctx, subject, schema, schemas.SchemaChangeFail); err != nil {
			t.Fatal(err)
		}
	}

	cfg := e.producerConfig(t)
	if cfg.SchemaChange != schemas.SchemaChangeFail {
		t.Fatalf("the producer's schema change policy is %v, want the default fail", cfg.SchemaChange)
	}
	e.runProducer(t, cfg)
	harness.StartTributary(t, nil, "consumer", "--brokers", e.kafka.Brokers[0], "--registry", e.kafka.RegistryURL,
		"--prefix", e.prefix, "--name", "replica", "--target", target.DSN, "--log-format", "json")
	e.pg.Exec(t,
		`INSERT INTO up VALUES (1, '2000-01-01', 1.5, '{1,2}', 'ordinary'), (9223372036854775807, 'infinity', 'NaN', '{{1,2},{3,4}}', 'edge')`,
		`UPDATE up SET d = '0044-03-15 BC' WHERE id = 1`)
	tmWaitSameRows(t, e.pg, target, "up")
	for _, subject := range []string{schemas.KeySubject(ts.Topic), schemas.ValueSubject(ts.Topic)} {
		vs, err := e.reg.Client().SubjectVersions(ctx, subject)
		if err != nil {
			t.Fatal(err)
		}
		if len(vs) != 2 {
			t.Fatalf("%s has versions %v, want the old one and the producer's", subject, vs)
		}
	}
}
