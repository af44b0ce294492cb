package transform

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/schemas"
)

// col is a source column for tests: name, PostgreSQL type name, key.
type col struct {
	name string
	typ  string // int4, int8, text, numeric(10,2), numeric, date, timestamptz, timestamp, float8, bool, jsonb, bytea, uuid, time
	key  bool
}

var pgTypes = map[string]schemas.PGType{
	"int2": {OID: pgtype.Int2OID, Name: "int2"}, "int4": {OID: pgtype.Int4OID, Name: "int4"}, "int8": {OID: pgtype.Int8OID, Name: "int8"},
	"text": {OID: pgtype.TextOID, Name: "text"}, "numeric": {OID: pgtype.NumericOID, Name: "numeric"},
	"date": {OID: pgtype.DateOID, Name: "date"}, "timestamptz": {OID: pgtype.TimestamptzOID, Name: "timestamptz"},
	"timestamp": {OID: pgtype.TimestampOID, Name: "timestamp"}, "float8": {OID: pgtype.Float8OID, Name: "float8"},
	"float4": {OID: pgtype.Float4OID, Name: "float4"},
	"bool":   {OID: pgtype.BoolOID, Name: "bool"}, "jsonb": {OID: pgtype.JSONBOID, Name: "jsonb"},
	"bytea": {OID: pgtype.ByteaOID, Name: "bytea"}, "uuid": {OID: pgtype.UUIDOID, Name: "uuid"},
	"time": {OID: pgtype.TimeOID, Name: "time"}, "interval": {OID: pgtype.IntervalOID, Name: "interval"},
}

var schemaIDs = 100

// table builds the consumer's view of public.<name> as the consumer decodes
// it from the registry: through BuildTableSchema and TableFromValueSchema.
func table(t testing.TB, name string, cols ...col) *consumer.Table {
	t.Helper()
	st := schemas.Table{Schema: "public", Name: name}
	for _, c := range cols {
		typ, typmod := c.typ, int32(-1)
		if typ == "numeric(10,2)" {
			typ, typmod = "numeric", 10<<16|2+4
		}
		pt, ok := pgTypes[typ]
		if !ok {
			t.Fatalf("test type %q", c.typ)
		}
		pt.Kind = schemas.KindBase
		st.Columns = append(st.Columns, schemas.Column{Name: c.name, Type: pt, Typmod: typmod, SQLType: c.typ, Key: c.key})
	}
	ts, err := schemas.BuildTableSchema("p", st, schemas.UnsupportedFail)
	if err != nil {
		t.Fatal(err)
	}
	schemaIDs++
	tb, err := consumer.TableFromValueSchema(ts.ValueSchema, schemaIDs, "public", name, ts.Topic)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// decode turns PostgreSQL text into the value the consumer decodes (as
// goavro's NativeFromBinary returns it), nil for "NULL".
func decode(t testing.TB, c consumer.Column, text string) any {
	t.Helper()
	if text == "NULL" {
		return nil
	}
	codec, err := schemas.MapType(c.Type, c.Typmod, schemas.UnsupportedFail)
	if err != nil {
		t.Fatal(err)
	}
	v, err := codec.Decode([]byte(text))
	if err != nil {
		t.Fatalf("decode %q as %s: %v", text, c.SQLType, err)
	}
	tp, _ := typeOf(c)
	return normalize(tp, codec.ReaderValue(v))
}

func rowOf(t testing.TB, tb *consumer.Table, texts ...string) []any {
	t.Helper()
	if texts == nil {
		return nil
	}
	if len(texts) != len(tb.Columns) {
		t.Fatalf("%d values for %d columns", len(texts), len(tb.Columns))
	}
	out := make([]any, len(texts))
	for i, s := range texts {
		out[i] = decode(t, tb.Columns[i], s)
	}
	return out
}

// texts renders an output row as PostgreSQL text, "NULL" for nil.
func texts(t testing.TB, tb *consumer.Table, row []any) []string {
	t.Helper()
	if row == nil {
		return nil
	}
	out := make([]string, len(row))
	for i, v := range row {
		if v == nil {
			out[i] = "NULL"
			continue
		}
		s, err := tb.Columns[i].Encode(v)
		if err != nil {
			t.Fatalf("column %s: encode %#v: %v", tb.Columns[i].Name, v, err)
		}
		out[i] = s
	}
	return out
}

func event(tb *consumer.Table, op schemas.Op, before, after []any) *consumer.Event {
	return &consumer.Event{Txn: &consumer.Txn{CommitTime: time.Now()}, Topic: tb.Topic, Op: op, Table: tb, Before: before, After: after}
}

func compileYAML(t testing.TB, y string, env map[string]string) (*Pipeline, error) {
	t.Helper()
	cfg, err := ParseConfig([]byte(y), "test.yaml")
	if err != nil {
		return nil, err
	}
	return compile(cfg, func(k string) string { return env[k] })
}

func mustCompile(t testing.TB, y string, env map[string]string) *Pipeline {
	t.Helper()
	p, err := compileYAML(t, y, env)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
