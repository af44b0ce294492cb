package schemas

import (
	"bytes"
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/linkedin/goavro/v2"
)

// The Encoder must write exactly what goavro writes for the same event. These
// tests build each event twice: through the reference path (Codec.Decode into
// native maps, then the table's goavro codecs, as the producer did before the
// Encoder) and through the Encoder, and compare the bytes.

// encRefRow is the reference row: the row record's goavro native form and
// the unchanged TOAST column names.
func encRefRow(ts *TableSchema, t *pglogrepl.TupleData) (map[string]any, []any, error) {
	if int(t.ColumnNum) != len(ts.Fields) || len(t.Columns) != len(ts.Fields) {
		return nil, nil, fmt.Errorf("tuple has %d columns, relation has %d", len(t.Columns), len(ts.Fields))
	}
	row := make(map[string]any, len(ts.Fields))
	var toast []any
	for i, c := range t.Columns {
		f := ts.Fields[i]
		switch c.DataType {
		case pglogrepl.TupleDataTypeNull:
			row[f] = nil
		case pglogrepl.TupleDataTypeToast:
			row[f] = nil
			toast = append(toast, ts.Table.Columns[i].Name)
		case pglogrepl.TupleDataTypeText:
			v, err := ts.Codecs[i].Decode(c.Data)
			if err != nil {
				return nil, nil, fmt.Errorf("column %q (%s) value %q: %w", ts.Table.Columns[i].Name, ts.Table.Columns[i].SQLType, encodeClip(c.Data), err)
			}
			row[f] = ts.Union(i, v)
		default:
			return nil, nil, fmt.Errorf("column %q: unexpected tuple data type %q", ts.Table.Columns[i].Name, c.DataType)
		}
	}
	return row, toast, nil
}

// encRefValue encodes ev's envelope through goavro.
func encRefValue(ts *TableSchema, ev *EncoderEvent, src Source, txID string) ([]byte, error) {
	union := func(t *pglogrepl.TupleData) (any, []any, error) {
		if t == nil {
			return nil, nil, nil
		}
		row, toast, err := encRefRow(ts, t)
		if err != nil {
			return nil, nil, err
		}
		return goavro.Union(ts.RowName, row), toast, nil
	}
	before, _, err := union(ev.Before)
	if err != nil {
		return nil, err
	}
	after, toast, err := union(ev.After)
	if err != nil {
		return nil, err
	}
	if toast == nil {
		toast = []any{}
	}
	src.LSN, src.Snapshot = ev.LSN, ev.Snapshot
	return ts.ValueCodec.BinaryFromNative(nil, map[string]any{
		"op": string(ev.Op), "before": before, "after": after, "source": src.Native(),
		"tx": map[string]any{"id": txID, "position": ev.Position}, "unchanged_toast": toast,
	})
}

// encRefKey encodes the key of t through goavro; only the key columns are
// converted, in column order, as AppendKey promises.
func encRefKey(ts *TableSchema, t *pglogrepl.TupleData) ([]byte, error) {
	if int(t.ColumnNum) != len(ts.Fields) || len(t.Columns) != len(ts.Fields) {
		return nil, fmt.Errorf("tuple has %d columns, relation has %d", len(t.Columns), len(ts.Fields))
	}
	km := map[string]any{}
	for _, i := range ts.KeyColumns {
		c := t.Columns[i]
		if c.DataType == pglogrepl.TupleDataTypeNull && ts.Table.Columns[i].Nullable {
			km[ts.Fields[i]] = nil
			continue
		}
		if c.DataType != pglogrepl.TupleDataTypeText {
			return nil, fmt.Errorf("key column %q is null or unchanged TOAST", ts.Table.Columns[i].Name)
		}
		v, err := ts.Codecs[i].Decode(c.Data)
		if err != nil {
			return nil, fmt.Errorf("column %q (%s) value %q: %w", ts.Table.Columns[i].Name, ts.Table.Columns[i].SQLType, encodeClip(c.Data), err)
		}
		km[ts.Fields[i]] = ts.KeyUnion(i, v)
	}
	return ts.KeyCodec.BinaryFromNative(nil, km)
}

func encTuple(cols ...*pglogrepl.TupleDataColumn) *pglogrepl.TupleData {
	return &pglogrepl.TupleData{ColumnNum: uint16(len(cols)), Columns: cols}
}

func encText(s string) *pglogrepl.TupleDataColumn {
	return &pglogrepl.TupleDataColumn{DataType: pglogrepl.TupleDataTypeText, Length: uint32(len(s)), Data: []byte(s)}
}

var (
	encNull  = &pglogrepl.TupleDataColumn{DataType: pglogrepl.TupleDataTypeNull}
	encToast = &pglogrepl.TupleDataColumn{DataType: pglogrepl.TupleDataTypeToast}
)

// encSources are the per-transaction parts the comparisons use: with and
// without origin, zero, old, far-future and sub-microsecond commit times.
var encSources = []Source{
	{Version: "v1.2.3", Prefix: "p", DB: "db", CommitLSN: 0x16B3748, Xid: 4294967295,
		CommitTime: time.Date(2026, 11, 22, 1, 2, 3, 456789000, time.UTC)},
	{Version: "", Prefix: "pré", DB: "δb", CommitLSN: 0, Xid: 0, CommitTime: time.Unix(0, 0), Origin: "site_a"},
	{Version: "dev", Prefix: "x", DB: "d", CommitLSN: 1 << 62, Xid: 7,
		CommitTime: time.Date(1850, 1, 1, 0, 0, 0, 999, time.FixedZone("x", 3600))},
}

// encCompare encodes ev both ways with every source and compares value and key.
// It reports whether the Encoder accepted the event.
func encCompare(t *testing.T, ts *TableSchema, ev EncoderEvent) bool {
	t.Helper()
	enc := NewEncoder(ts)
	ok := true
	for _, src := range encSources {
		src.Schema, src.Table = ts.Table.Schema, ts.Table.Name
		ev.SourceHead = EncoderSourceHead(src.Version, src.Prefix, src.DB, src.Schema, src.Table)
		ev.Tx = NewEncoderTx(src.CommitLSN, src.Xid, src.CommitTime, src.Origin)
		want, werr := encRefValue(ts, &ev, src, TxID(src.Xid, src.CommitLSN))
		got, gerr := enc.AppendValue([]byte("prefix"), &ev)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("value: goavro error %v, encoder error %v", werr, gerr)
		}
		if werr != nil {
			if werr.Error() != gerr.Error() {
				t.Fatalf("value errors differ:\n goavro  %v\n encoder %v", werr, gerr)
			}
			ok = false
			continue
		}
		if !bytes.HasPrefix(got, []byte("prefix")) || !bytes.Equal(got[6:], want) {
			t.Fatalf("value bytes differ:\n goavro  % x\n encoder % x", want, got[6:])
		}
		// goavro, the independent decoder, reads the encoder's bytes whole.
		if _, rest, err := ts.ValueCodec.NativeFromBinary(got[6:]); err != nil || len(rest) != 0 {
			t.Fatalf("goavro cannot decode the encoder's value: %v (%d bytes left)", err, len(rest))
		}
	}
	keyT := ev.After
	if ev.Op == OpDelete {
		keyT = ev.Before
	}
	if keyT != nil {
		want, werr := encRefKey(ts, keyT)
		got, gerr := enc.AppendKey(nil, keyT)
		if (werr == nil) != (gerr == nil) || werr != nil && werr.Error() != gerr.Error() {
			t.Fatalf("key: goavro error %v, encoder error %v", werr, gerr)
		}
		if werr == nil && !bytes.Equal(got, want) {
			t.Fatalf("key bytes differ:\n goavro  % x\n encoder % x", want, got)
		}
	}
	return ok
}

// encCaseTable is a table whose key and second column have tc's type.
func encCaseTable(t *testing.T, pt PGType, typmod int32, sql string) *TableSchema {
	t.Helper()
	ts, err := BuildTableSchema("enc", Table{Schema: "public", Name: "t", Columns: []Column{
		{Name: "k", Type: pt, Typmod: typmod, SQLType: sql, Key: true},
		{Name: "v", Type: pt, Typmod: typmod, SQLType: sql},
		{Name: "n", Type: tcInt8, Typmod: -1, SQLType: "bigint"},
	}}, UnsupportedFail)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// TestEncoderMatchesGoavro runs every type case of the round-trip table
// through both paths, as key, as value, in before and after, and next to
// null and unchanged-TOAST columns.
func TestEncoderMatchesGoavro(t *testing.T) {
	accepted := 0
	for _, tc := range tcCases {
		t.Run(tc.String(), func(t *testing.T) {
			ts := encCaseTable(t, tc.t, tc.typmod, tc.sql)
			full := encTuple(encText(tc.in), encText(tc.in), encText("-1"))
			sparse := encTuple(encText(tc.in), encNull, encToast)
			if encCompare(t, ts, EncoderEvent{Op: OpInsert, After: full, Position: 3, LSN: 99}) {
				accepted++
			} else if tc.err == nil {
				t.Fatalf("%s rejected", tc.in)
			}
			encCompare(t, ts, EncoderEvent{Op: OpUpdate, Before: full, After: sparse, Position: 1 << 40, LSN: 1})
			encCompare(t, ts, EncoderEvent{Op: OpDelete, Before: sparse})
			encCompare(t, ts, EncoderEvent{Op: OpRead, After: full, Snapshot: true})
		})
	}
	if accepted < 150 {
		t.Fatalf("only %d of %d cases accepted; the comparison covers too little", accepted, len(tcCases))
	}
}

// TestEncoderRejectsAsDecode checks that text Decode rejects fails the
// Encoder with the same error, naming the column, its type and value.
func TestEncoderRejectsAsDecode(t *testing.T) {
	bad := []struct {
		t      PGType
		typmod int32
		sql    string
		in     string
	}{
		{tcInt4, -1, "integer", "2147483648"}, {tcInt8, -1, "bigint", "x"}, {tcBool, -1, "boolean", "yes"},
		{tcText, -1, "text", "\xc3\x28"}, {tcText, -1, "text", "a\x00b"}, {tcUUID, -1, "uuid", "A0EEBC99"},
		{tcTSTZ, -1, "timestamptz", "2000-01-01 00:00:00"}, {tcDate, -1, "date", "2001-02-29"},
		{tcTime, -1, "time", "25:00:00"}, {tcNumeric, tcNumTypmod(5, 2), "numeric(5,2)", "NaNa"},
		{tcArr(tcInt4), -1, "integer[]", "{1,x}"}, {tcInterval, -1, "interval", "1 day"},
		{tcFloat8, -1, "float8", "inf"}, {tcBytea, -1, "bytea", `\x0`}, {tcNumeric, -1, "numeric", "1e5"},
	}
	for _, b := range bad {
		ts := encCaseTable(t, b.t, b.typmod, b.sql)
		for _, tup := range []*pglogrepl.TupleData{
			encTuple(encText(b.in), encNull, encNull), // the key column
			encTuple(encText(sqlZero(b.sql)), encText(b.in), encNull),
		} {
			if encCompare(t, ts, EncoderEvent{Op: OpInsert, After: tup}) {
				t.Fatalf("%s %q accepted", b.sql, b.in)
			}
			_, err := NewEncoder(ts).AppendValue(nil, &EncoderEvent{Op: OpInsert, After: tup, Tx: NewEncoderTx(0, 0, time.Time{}, "")})
			if err == nil || !strings.Contains(err.Error(), "column ") || !strings.Contains(err.Error(), b.sql) {
				t.Fatalf("%s %q: error %v does not name the column and type", b.sql, b.in, err)
			}
		}
	}
	// A tuple of the wrong width and a binary column fail both ways alike.
	ts := encCaseTable(t, tcInt8, -1, "bigint")
	encCompare(t, ts, EncoderEvent{Op: OpInsert, After: encTuple(encText("1"))})
	encCompare(t, ts, EncoderEvent{Op: OpInsert, After: encTuple(encText("1"), &pglogrepl.TupleDataColumn{DataType: 'b', Data: []byte{1}}, encNull)})
	// A key column that is null or unchanged TOAST.
	encCompare(t, ts, EncoderEvent{Op: OpDelete, Before: encTuple(encNull, encNull, encNull)})
	encCompare(t, ts, EncoderEvent{Op: OpInsert, After: encTuple(encToast, encNull, encNull)})
}

// sqlZero is a valid text of the types TestEncoderRejectsAsDecode uses.
func sqlZero(sql string) string {
	switch sql {
	case "boolean":
		return "t"
	case "text", "numeric":
		return "0"
	case "uuid":
		return "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
	case "timestamptz":
		return "2000-01-01 00:00:00+00"
	case "date":
		return "2000-01-01"
	case "time":
		return "00:00:00"
	case "numeric(5,2)":
		return "1.00"
	case "integer[]":
		return "{}"
	case "interval":
		return "PT0S"
	case "bytea":
		return `\x`
	}
	return "0"
}

// encWideTable has one column of every type the type cases cover, the
// first two as the key.
func encWideTable(t testing.TB) (*TableSchema, [][]string) {
	return encWideTableKeyed(t, false)
}

// encWideTableKeyed is encWideTable; with full, every column is a key
// column and all but the first two are nullable, as REPLICA IDENTITY FULL
// keys a table without a primary key.
func encWideTableKeyed(t testing.TB, full bool) (*TableSchema, [][]string) {
	t.Helper()
	var cols []Column
	var vals [][]string
	byType := map[string]int{}
	for _, tc := range tcCases {
		if tc.err != nil {
			continue
		}
		i, ok := byType[tc.String()[:strings.IndexByte(tc.String(), '/')]+fmt.Sprint(tc.typmod)]
		if !ok {
			i = len(cols)
			byType[tc.String()[:strings.IndexByte(tc.String(), '/')]+fmt.Sprint(tc.typmod)] = i
			cols = append(cols, Column{Name: fmt.Sprintf("c%d %s", i, tc.sql), Type: tc.t, Typmod: tc.typmod, SQLType: tc.sql,
				Key: i < 2 || full, Nullable: full && i >= 2})
			vals = append(vals, nil)
		}
		vals[i] = append(vals[i], tc.in)
	}
	ts, err := BuildTableSchema("enc", Table{Schema: "s", Name: "wide", Columns: cols}, UnsupportedFail)
	if err != nil {
		t.Fatal(err)
	}
	return ts, vals
}

// TestEncoderTextBranch checks the union indexes the Encoder writes: the
// typed branch, the text branch for a value it cannot carry, null for a
// nullable key column, and the plain key field of a NOT NULL column
// without the text branch.
func TestEncoderTextBranch(t *testing.T) {
	ts, err := BuildTableSchema("enc", Table{Schema: "public", Name: "t", Columns: []Column{
		{Name: "d", Type: tcDate, Typmod: -1, SQLType: "date", Key: true},
		{Name: "n", Type: tcInt4, Typmod: -1, SQLType: "integer", Key: true, Nullable: true},
		{Name: "i", Type: tcInt4, Typmod: -1, SQLType: "integer", Key: true},
	}}, UnsupportedFail)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"fields":[{"name":"d","tributary.column":"d","tributary.key":true,"tributary.sql_type":"date","type":[{"logicalType":"date","type":"int"},{"tributary.text":true,"type":"string"}]},` +
		`{"name":"n","tributary.column":"n","tributary.key":true,"tributary.sql_type":"integer","type":["null","int"]},` +
		`{"name":"i","tributary.column":"i","tributary.key":true,"tributary.sql_type":"integer","type":"int"}],"name":"Key","namespace":"tributary.enc.public.t","type":"record"}`
	if ts.KeySchema != want {
		t.Errorf("key schema\n got %s\nwant %s", ts.KeySchema, want)
	}
	enc := NewEncoder(ts)
	for _, c := range []struct {
		row  *pglogrepl.TupleData
		want []byte
	}{
		{encTuple(encText("1970-01-02"), encNull, encText("1")), []byte{0, 2, 0, 2}},
		{encTuple(encText("infinity"), encText("1"), encText("1")), append(append([]byte{2, 16}, "infinity"...), 2, 2, 2)},
	} {
		got, err := enc.AppendKey(nil, c.row)
		if err != nil || !bytes.Equal(got, c.want) {
			t.Errorf("AppendKey = % x, %v; want % x", got, err, c.want)
		}
		encCompare(t, ts, EncoderEvent{Op: OpInsert, After: c.row})
	}
	if _, err := enc.AppendKey(nil, encTuple(encText("1970-01-02"), encNull, encNull)); err == nil {
		t.Error("AppendKey accepted NULL in a NOT NULL key column")
	}
	v, err := enc.AppendValue(nil, &EncoderEvent{Op: OpInsert, After: encTuple(encText("infinity"), encNull, encText("1")), Tx: NewEncoderTx(0, 0, time.Time{}, "")})
	if err != nil || !bytes.Contains(v, append([]byte{2, 4, 16}, "infinity"...)) {
		t.Errorf("AppendValue = % x, %v; want the row's date in union branch 2", v, err)
	}
}

// TestEncoderRandomRows compares random rows of a table holding every type:
// each column a random valid value, null, unchanged TOAST or garbage; and of
// the same table keyed by every column, most of them nullable (REPLICA
// IDENTITY FULL).
func TestEncoderRandomRows(t *testing.T) {
	t.Run("pk", func(t *testing.T) { encRandomRows(t, false) })
	t.Run("full", func(t *testing.T) { encRandomRows(t, true) })
}

func encRandomRows(t *testing.T, full bool) {
	ts, vals := encWideTableKeyed(t, full)
	rng := rand.New(rand.NewSource(1))
	garbage := []string{"", "x", "{", "-", "\xff", "1e999", "P", "NaN"}
	row := func() *pglogrepl.TupleData {
		var cols []*pglogrepl.TupleDataColumn
		for i := range ts.Fields {
			switch r := rng.Intn(40); {
			case r == 0:
				cols = append(cols, encText(garbage[rng.Intn(len(garbage))]))
			case r < 4 && i >= 2:
				cols = append(cols, encNull)
			case r < 6 && i >= 2:
				cols = append(cols, encToast)
			default:
				cols = append(cols, encText(vals[i][rng.Intn(len(vals[i]))]))
			}
		}
		return encTuple(cols...)
	}
	ops := []Op{OpInsert, OpUpdate, OpDelete, OpRead}
	accepted := 0
	for n := 0; n < 400; n++ {
		ev := EncoderEvent{Op: ops[rng.Intn(len(ops))], Position: rng.Int63n(1 << 20), LSN: pglogrepl.LSN(rng.Uint64())}
		switch ev.Op {
		case OpDelete:
			ev.Before = row()
		case OpUpdate:
			ev.Before, ev.After = row(), row()
		default:
			ev.After = row()
		}
		if encCompare(t, ts, ev) {
			accepted++
		}
	}
	if accepted < 50 {
		t.Fatalf("only %d of 400 random events were valid; the comparison covers too little", accepted)
	}
}

// FuzzEncoder feeds arbitrary text to every column of the wide table: both
// paths must agree on the bytes or on the error.
func FuzzEncoder(f *testing.F) {
	ts, vals := encWideTable(f)
	for _, v := range vals {
		f.Add(uint16(0), v[0])
	}
	f.Add(uint16(3), "\x00")
	f.Add(uint16(7), "infinity")
	f.Fuzz(func(t *testing.T, col uint16, text string) {
		cols := make([]*pglogrepl.TupleDataColumn, len(ts.Fields))
		for i := range cols {
			cols[i] = encText(vals[i][0])
		}
		cols[int(col)%len(cols)] = encText(text)
		encCompare(t, ts, EncoderEvent{Op: OpUpdate, Before: encTuple(cols...), After: encTuple(cols...)})
	})
}

// TestEncoderFrameMatchesGoavro compares commit frames, with and without
// origin, snapshot chunk, last key and partitions.
func TestEncoderFrameMatchesGoavro(t *testing.T) {
	codec, err := goavro.NewCodec(FrameSchema())
	if err != nil {
		t.Fatal(err)
	}
	frames := []Frame{
		{},
		{Xid: 4294967295, CommitLSN: 1 << 40, EndLSN: 1<<40 + 8, CommitTime: time.Date(2026, 1, 2, 3, 4, 5, 678901234, time.UTC),
			Origin: "o", Events: 3, Partitions: []PartitionCount{{"a.b", 0, 1}, {"a.c", 7, 2}}},
		{Snapshot: &SnapshotChunk{Slot: "s", Schema: "public", Table: "t", Chunk: 5, Last: true}, Events: 0},
		{Snapshot: &SnapshotChunk{Slot: "s", Chunk: 1, LastKey: []string{}}},
		{Snapshot: &SnapshotChunk{Slot: "s", Chunk: 1 << 33, LastKey: []string{"1", "héllo", ""}, ID: "r1"}, Events: 1 << 35,
			Partitions: []PartitionCount{{"t", 2147483647, 1}}},
		{Request: &SnapshotRequest{Slot: "s", ID: "join-0/1", Tables: []string{"public.t", ""}}},
		{Request: &SnapshotRequest{Slot: "s"}},
	}
	for i, fr := range frames {
		want, err := codec.BinaryFromNative(nil, fr.Native())
		if err != nil {
			t.Fatal(err)
		}
		if got := EncoderAppendFrame(nil, &fr); !bytes.Equal(got, want) {
			t.Fatalf("frame %d differs:\n goavro  % x\n encoder % x", i, want, got)
		}
	}
}

func BenchmarkEncoderValue(b *testing.B) {
	ts, err := BuildTableSchema("bench", Table{Schema: "public", Name: "bench", Columns: []Column{
		{Name: "id", Type: tcInt8, Typmod: -1, SQLType: "bigint", Key: true},
		{Name: "k", Type: tcInt4, Typmod: -1, SQLType: "integer"},
		{Name: "ts", Type: tcTSTZ, Typmod: -1, SQLType: "timestamp with time zone"},
		{Name: "payload", Type: tcText, Typmod: -1, SQLType: "text"},
	}}, UnsupportedFail)
	if err != nil {
		b.Fatal(err)
	}
	tup := encTuple(encText("123456"), encText("456"), encText("2026-11-22 01:02:03.456789+00"), encText(strings.Repeat("0123456789abcdef0123456789abcdef", 5)))
	src := encSources[0]
	src.Schema, src.Table = "public", "bench"
	b.Run("goavro", func(b *testing.B) {
		b.ReportAllocs()
		ev := EncoderEvent{Op: OpInsert, After: tup}
		for i := 0; i < b.N; i++ {
			if _, err := encRefValue(ts, &ev, src, TxID(src.Xid, src.CommitLSN)); err != nil {
				b.Fatal(err)
			}
			if _, err := encRefKey(ts, tup); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoder", func(b *testing.B) {
		b.ReportAllocs()
		enc := NewEncoder(ts)
		ev := EncoderEvent{Op: OpInsert, After: tup, SourceHead: EncoderSourceHead(src.Version, src.Prefix, src.DB, src.Schema, src.Table),
			Tx: NewEncoderTx(src.CommitLSN, src.Xid, src.CommitTime, src.Origin)}
		var buf, kbuf []byte
		for i := 0; i < b.N; i++ {
			var err error
			if buf, err = enc.AppendValue(buf[:0], &ev); err != nil {
				b.Fatal(err)
			}
			if kbuf, err = enc.AppendKey(kbuf[:0], tup); err != nil {
				b.Fatal(err)
			}
		}
	})
}
