package schemas

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/linkedin/goavro/v2"
)

// dbzField is one field of a Debezium record as its Connect schema defines
// it, translated the way Confluent's AvroConverter translates it: the Avro
// type name of the non-null branch, and whether the field is optional.
type dbzField struct {
	name     string
	typ      string // Avro primitive or full record name
	optional bool
}

// The field lists of Debezium 3.x's PostgreSQL connector, in order, from
// its documentation (connectors/postgresql, "Data change events": the
// envelope's before, after, source, op, ts_ms/ts_us/ts_ns and, with
// provide.transaction.metadata, transaction with id, total_order and
// data_collection_order; the source block's fields) and the code that
// builds them (io.debezium.schema.SchemaFactory.sourceInfoSchemaBuilder and
// datatypeEnvelopeSchema, PostgresSourceInfoStructMaker,
// TableSchemaBuilder: before/after, then source, then transaction, then
// op and the timestamps). Connect INT64 is Avro long, STRING string,
// STRUCT a record of the struct's name.
var (
	dbzEnvelopeFields = []dbzField{
		{"before", "enc.public.t.Value", true},
		{"after", "enc.public.t.Value", true},
		{"source", "io.debezium.connector.postgresql.Source", false},
		{"transaction", "event.block", true},
		{"op", "string", false},
		{"ts_ms", "long", true},
		{"ts_us", "long", true},
		{"ts_ns", "long", true},
	}
	dbzSourceFields = []dbzField{
		{"version", "string", false},
		{"connector", "string", false},
		{"name", "string", false},
		{"ts_ms", "long", false},
		{"snapshot", "string", true}, // io.debezium.data.Enum, default "false"
		{"db", "string", false},
		{"sequence", "string", true},
		{"ts_us", "long", true},
		{"ts_ns", "long", true},
		{"schema", "string", false},
		{"table", "string", false},
		{"txId", "long", true},
		{"lsn", "long", true},
		{"xmin", "long", true},
		{"origin", "string", true},
		{"origin_lsn", "long", true},
	}
	dbzBlockFields = []dbzField{
		{"id", "string", false},
		{"total_order", "long", false},
		{"data_collection_order", "long", false},
	}
)

// dbzDescribe reads one Avro field: its type name, optionality, the record
// definition when it is one, and its default.
func dbzDescribe(t *testing.T, f map[string]any, ns string) (dbzField, map[string]any) {
	t.Helper()
	name, _ := f["name"].(string)
	out := dbzField{name: name}
	typ := f["type"]
	if u, ok := typ.([]any); ok {
		if len(u) != 2 {
			t.Fatalf("field %s: union %v is not null and one type", name, u)
		}
		out.optional = true
		def, hasDef := f["default"]
		switch {
		case u[0] == "null":
			if !hasDef || def != nil {
				t.Errorf("field %s: optional with null first must default to null, has %v", name, def)
			}
			typ = u[1]
		case u[1] == "null":
			// AvroConverter puts a non-null default's type first.
			if !hasDef || def == nil {
				t.Errorf("field %s: [T, null] without a non-null default", name)
			}
			typ = u[0]
		default:
			t.Fatalf("field %s: union %v has no null", name, u)
		}
	}
	var rec map[string]any
	switch v := typ.(type) {
	case string:
		out.typ = v
	case map[string]any:
		if v["type"] == "record" {
			rec = v
			n, _ := v["name"].(string)
			if rns, ok := v["namespace"].(string); ok {
				n = rns + "." + n
			}
			out.typ = n
		} else {
			out.typ, _ = v["type"].(string)
		}
	}
	return out, rec
}

func dbzCheckFields(t *testing.T, what string, rec map[string]any, want []dbzField) {
	t.Helper()
	fs, _ := rec["fields"].([]any)
	var got []dbzField
	for _, f := range fs {
		d, _ := dbzDescribe(t, f.(map[string]any), "")
		got = append(got, d)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s fields:\n got  %v\n want %v", what, got, want)
	}
}

func dbzTable(t *testing.T, cols ...Column) *TableSchema {
	t.Helper()
	if cols == nil {
		cols = []Column{
			{Name: "id", Type: tcInt4, Typmod: -1, SQLType: "integer", Key: true},
			{Name: "body", Type: tcText, Typmod: -1, SQLType: "text"},
			{Name: "doc", Type: tcJSONB, Typmod: -1, SQLType: "jsonb"},
			{Name: "bin", Type: tcBytea, Typmod: -1, SQLType: "bytea"},
			{Name: "tags", Type: tcArr(tcText), Typmod: -1, SQLType: "text[]"},
			{Name: "nums", Type: tcArr(tcInt4), Typmod: -1, SQLType: "integer[]"},
			{Name: "amount", Type: tcNumeric, Typmod: tcNumTypmod(10, 2), SQLType: "numeric(10,2)"},
			{Name: "at", Type: tcTSTZ, Typmod: -1, SQLType: "timestamp with time zone"},
			{Name: "u", Type: tcUUID, Typmod: -1, SQLType: "uuid"},
		}
	}
	ts, err := BuildTableSchemaEnvelope("enc", Table{Schema: "public", Name: "t", Columns: cols}, UnsupportedFail, EnvelopeDebezium)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// TestDebeziumEnvelopeSchema checks the value schema against Debezium's
// field lists: every field's name, order, type and optionality, the record
// names, and the defaults AvroConverter writes.
func TestDebeziumEnvelopeSchema(t *testing.T) {
	ts := dbzTable(t)
	var env map[string]any
	if err := json.Unmarshal([]byte(ts.ValueSchema), &env); err != nil {
		t.Fatal(err)
	}
	if env["name"] != "Envelope" || env["namespace"] != "enc.public.t" || env["connect.name"] != "enc.public.t.Envelope" {
		t.Errorf("envelope record is %v.%v (connect.name %v), want enc.public.t.Envelope", env["namespace"], env["name"], env["connect.name"])
	}
	dbzCheckFields(t, "envelope", env, dbzEnvelopeFields)
	var src, block, row map[string]any
	for _, f := range env["fields"].([]any) {
		fm := f.(map[string]any)
		_, rec := dbzDescribe(t, fm, "")
		switch fm["name"] {
		case "source":
			src = rec
		case "transaction":
			block = rec
		case "before":
			row = rec
		}
	}
	if src == nil || block == nil || row == nil {
		t.Fatalf("missing record definitions: source %v, transaction %v, before %v", src != nil, block != nil, row != nil)
	}
	dbzCheckFields(t, "source", src, dbzSourceFields)
	dbzCheckFields(t, "transaction", block, dbzBlockFields)
	if src["connect.name"] != DebeziumSourceName || block["connect.name"] != "event.block" {
		t.Errorf("connect.name of source %v, of transaction %v", src["connect.name"], block["connect.name"])
	}
	for _, f := range src["fields"].([]any) {
		fm := f.(map[string]any)
		if fm["name"] != "snapshot" {
			continue
		}
		if fm["default"] != "false" {
			t.Errorf("source.snapshot default %v, want \"false\"", fm["default"])
		}
		base := fm["type"].([]any)[0].(map[string]any)
		if base["connect.name"] != "io.debezium.data.Enum" ||
			base["connect.parameters"].(map[string]any)["allowed"] != "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental" {
			t.Errorf("source.snapshot is not Debezium's enum: %v", base)
		}
	}
	// The Value record has the table's columns with Tributary's codecs.
	tts, err := BuildTableSchema("enc", ts.Table, UnsupportedFail)
	if err != nil {
		t.Fatal(err)
	}
	var tenv map[string]any
	if err := json.Unmarshal([]byte(tts.ValueSchema), &tenv); err != nil {
		t.Fatal(err)
	}
	var trow map[string]any
	for _, f := range tenv["fields"].([]any) {
		if fm := f.(map[string]any); fm["name"] == "before" {
			_, trow = dbzDescribe(t, fm, "")
		}
	}
	if !reflect.DeepEqual(row["fields"], trow["fields"]) {
		t.Errorf("Value fields differ from Tributary's Row fields:\n %v\n %v", row["fields"], trow["fields"])
	}
	if row["name"] != "Value" || row["namespace"] != "enc.public.t" || ts.RowName != "enc.public.t.Value" {
		t.Errorf("row record %v.%v, RowName %s", row["namespace"], row["name"], ts.RowName)
	}
	// The key: record <prefix>.<schema>.<table>.Key with Tributary's key fields.
	var key, tkey map[string]any
	_ = json.Unmarshal([]byte(ts.KeySchema), &key)
	_ = json.Unmarshal([]byte(tts.KeySchema), &tkey)
	if key["name"] != "Key" || key["namespace"] != "enc.public.t" {
		t.Errorf("key record %v.%v, want enc.public.t.Key", key["namespace"], key["name"])
	}
	if !reflect.DeepEqual(key["fields"], tkey["fields"]) {
		t.Errorf("key fields differ from Tributary's:\n %v\n %v", key["fields"], tkey["fields"])
	}
	if !IsDebeziumEnvelope(ts.ValueSchema) || IsDebeziumEnvelope(tts.ValueSchema) {
		t.Errorf("IsDebeziumEnvelope: debezium %v, tributary %v", IsDebeziumEnvelope(ts.ValueSchema), IsDebeziumEnvelope(tts.ValueSchema))
	}
}

// dbzRef is the reference encoding of a Debezium envelope through goavro.
func dbzRef(t *testing.T, ts *TableSchema, ev *EncoderEvent, src Source, placeholder string) []byte {
	t.Helper()
	d := ev.Debezium
	union := func(tp *pglogrepl.TupleData, after bool) any {
		if tp == nil {
			return nil
		}
		row, _, err := encRefRow(ts, tp)
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range tp.Columns {
			if c.DataType != pglogrepl.TupleDataTypeToast || !after {
				continue
			}
			switch debeziumToastKind(ts.Codecs[i]) {
			case toastString:
				row[ts.Fields[i]] = goavro.Union("string", placeholder)
			case toastBytes:
				row[ts.Fields[i]] = goavro.Union("bytes", []byte(placeholder))
			case toastStringArray:
				row[ts.Fields[i]] = goavro.Union("array", []any{goavro.Union("string", placeholder)})
			}
		}
		return goavro.Union(ts.RowName, row)
	}
	opt := func(typ string, v any, present bool) any {
		if !present {
			return nil
		}
		return goavro.Union(typ, v)
	}
	lsn := ev.LSN
	if lsn == 0 && d.Snapshot == DebeziumSnapshotTrue {
		lsn = src.CommitLSN + 1 // the consistent point: the chunk commits one below it
	}
	str := func(l pglogrepl.LSN) string {
		if l == 0 {
			return "null"
		}
		return strconv.Quote(strconv.FormatUint(uint64(l), 10))
	}
	var tx any
	if d.TotalOrder > 0 {
		tx = goavro.Union("event.block", map[string]any{"id": fmt.Sprintf("%d:%d", src.Xid, uint64(ev.LSN)),
			"total_order": d.TotalOrder, "data_collection_order": d.CollectionOrder})
	}
	b, err := ts.ValueCodec.BinaryFromNative(nil, map[string]any{
		"before": union(ev.Before, false), "after": union(ev.After, true),
		"source": map[string]any{
			"version": src.Version, "connector": "postgresql", "name": src.Prefix,
			"ts_ms": src.CommitTime.UnixMilli(), "snapshot": goavro.Union("string", d.Snapshot), "db": src.DB,
			"sequence": goavro.Union("string", "["+str(d.LastCommit)+","+str(lsn)+"]"),
			"ts_us":    goavro.Union("long", src.CommitTime.UnixMicro()), "ts_ns": goavro.Union("long", src.CommitTime.UnixNano()),
			"schema": src.Schema, "table": src.Table,
			"txId": opt("long", int64(src.Xid), src.Xid != 0), "lsn": opt("long", int64(lsn), lsn != 0), "xmin": nil,
			"origin": opt("string", src.Origin, src.Origin != ""), "origin_lsn": opt("long", int64(42), src.Origin != ""),
		},
		"transaction": tx, "op": string(ev.Op),
		"ts_ms": goavro.Union("long", d.Now.UnixMilli()), "ts_us": goavro.Union("long", d.Now.UnixMicro()),
		"ts_ns": goavro.Union("long", d.Now.UnixNano()),
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDebeziumEncoderMatchesGoavro compares AppendDebeziumValue with goavro
// over the table's value schema: every op, snapshot reads, null and
// unchanged TOAST columns, with and without origin and previous commit.
func TestDebeziumEncoderMatchesGoavro(t *testing.T) {
	ts := dbzTable(t)
	const placeholder = "__debezium_unavailable_value"
	enc := NewEncoder(ts).WithToastPlaceholder(placeholder)
	row := encTuple(encText("7"), encText("hello"), encText(`{"a": 1}`), encText(`\x0102`), encText(`{a,NULL,"b c"}`),
		encText("{1,2}"), encText("12.50"), encText("2026-01-02 03:04:05.123456+00"), encText("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"))
	toasted := encTuple(encText("7"), encToast, encToast, encToast, encToast, encToast, encNull, encText("2026-01-02 03:04:05+00"), encNull)
	keyOnly := encTuple(encText("7"), encNull, encNull, encNull, encNull, encNull, encNull, encNull, encNull)
	now := time.Date(2026, 12, 6, 12, 0, 0, 123456789, time.UTC)
	cases := []struct {
		op            Op
		before, after *pglogrepl.TupleData
		snapshot      string
		lsn           pglogrepl.LSN
		total, coll   int64
	}{
		{OpInsert, nil, row, DebeziumSnapshotFalse, 0x16B3750, 1, 1},
		{OpUpdate, keyOnly, toasted, DebeziumSnapshotFalse, 0x16B3760, 2, 2},
		{OpUpdate, row, row, DebeziumSnapshotFalse, 0x16B3760, 3, 1},
		{OpDelete, keyOnly, nil, DebeziumSnapshotFalse, 0x16B3770, 4, 3},
		{OpTruncate, nil, nil, DebeziumSnapshotFalse, 0x16B3780, 5, 4},
		{OpRead, nil, row, DebeziumSnapshotTrue, 0, 0, 0},
		{OpRead, nil, row, DebeziumSnapshotIncremental, 0, 0, 0},
	}
	for _, src := range encSources {
		src.Schema, src.Table = ts.Table.Schema, ts.Table.Name
		src.CommitTime = src.CommitTime.UTC()
		for ci, c := range cases {
			for _, last := range []pglogrepl.LSN{0, 0x16B3700} {
				ev := EncoderEvent{Op: c.op, Before: c.before, After: c.after, LSN: c.lsn,
					Tx: NewEncoderTx(src.CommitLSN, src.Xid, src.CommitTime, src.Origin),
					Debezium: &DebeziumEvent{Head: NewDebeziumSourceHead(src.Version, src.Prefix, src.DB, src.Schema, src.Table),
						Snapshot: c.snapshot, LastCommit: last, TotalOrder: c.total, CollectionOrder: c.coll, Now: now}}
				if src.Origin != "" {
					ev.Tx.WithOriginLSN(42)
				}
				want := dbzRef(t, ts, &ev, src, placeholder)
				got, err := enc.AppendDebeziumValue([]byte("pfx"), &ev)
				if err != nil {
					t.Fatalf("case %d: %v", ci, err)
				}
				if !bytes.Equal(got[3:], want) {
					t.Fatalf("case %d (%s, source %+v): bytes differ:\n goavro  % x\n encoder % x", ci, c.op, src, want, got[3:])
				}
			}
		}
	}
}

// TestDebeziumToastPlaceholder decodes an update with unchanged TOAST
// columns: text-like columns and text arrays hold the placeholder, bytea
// its bytes, other types null; the header names them.
func TestDebeziumToastPlaceholder(t *testing.T) {
	ts := dbzTable(t)
	enc := NewEncoder(ts).WithToastPlaceholder("??")
	after := encTuple(encText("7"), encToast, encToast, encToast, encToast, encToast, encToast, encNull, encNull)
	ev := EncoderEvent{Op: OpUpdate, After: after, LSN: 5, Tx: NewEncoderTx(9, 3, time.Unix(1, 0), ""),
		Debezium: &DebeziumEvent{Head: NewDebeziumSourceHead("v", "enc", "db", "public", "t"), Snapshot: DebeziumSnapshotFalse, TotalOrder: 1, CollectionOrder: 1, Now: time.Unix(2, 0)}}
	b, err := enc.AppendDebeziumValue(nil, &ev)
	if err != nil {
		t.Fatal(err)
	}
	v, _, err := ts.ValueCodec.NativeFromBinary(b)
	if err != nil {
		t.Fatal(err)
	}
	a := UnwrapUnion(v.(map[string]any)["after"]).(map[string]any)
	want := map[string]any{"body": "??", "doc": "??", "bin": []byte("??"), "tags": []any{map[string]any{"string": "??"}}, "nums": nil, "amount": nil}
	for f, w := range want {
		if got := UnwrapUnion(a[f]); !reflect.DeepEqual(got, w) {
			t.Errorf("after.%s = %#v, want %#v", f, got, w)
		}
	}
	if h := string(enc.UnchangedToastHeader(after)); h != `["body","doc","bin","tags","nums","amount"]` {
		t.Errorf("header %s", h)
	}
	if enc.UnchangedToastHeader(encTuple(encText("1"))) != nil {
		t.Error("header on a row without unchanged TOAST")
	}
}
