package producer

import (
	"encoding/binary"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tributary-cdc/tributary/schemas"
)

// fuzzRelID is the relation ID of the fuzzed table in the seeds.
const fuzzRelID = 16384

// fuzzTable is a fixed table with columns of varied types, mapped as the
// producer maps them.
func fuzzTable(t testing.TB) *schemas.TableSchema {
	t.Helper()
	base := func(oid uint32, name string) schemas.PGType {
		return schemas.PGType{OID: oid, Name: name, Kind: schemas.KindBase}
	}
	text := base(pgtype.TextOID, "text")
	numeric := base(pgtype.NumericOID, "numeric")
	numTypmod := int32(((10 << 16) | 2) + 4) // numeric(10,2)
	cols := []schemas.Column{
		{Name: "id", Type: base(pgtype.Int8OID, "int8"), Typmod: -1, SQLType: "bigint", Key: true},
		{Name: "name", Type: text, Typmod: -1, SQLType: "text"},
		{Name: "amount", Type: numeric, Typmod: numTypmod, SQLType: "numeric(10,2)"},
		{Name: "ts", Type: base(pgtype.TimestamptzOID, "timestamptz"), Typmod: -1, SQLType: "timestamp with time zone"},
		{Name: "tags", Type: schemas.PGType{OID: pgtype.TextArrayOID, Name: "_text", Kind: schemas.KindArray, Elem: &text}, Typmod: -1, SQLType: "text[]"},
		{Name: "iv", Type: base(pgtype.IntervalOID, "interval"), Typmod: -1, SQLType: "interval"},
		{Name: "raw", Type: base(pgtype.ByteaOID, "bytea"), Typmod: -1, SQLType: "bytea"},
		{Name: "price", Type: schemas.PGType{OID: 90000, Name: "price", Kind: schemas.KindDomain, Base: &numeric, BaseTypmod: numTypmod}, Typmod: -1, SQLType: "price"},
		{Name: "d", Type: base(pgtype.DateOID, "date"), Typmod: -1, SQLType: "date"},
		{Name: "f", Type: base(pgtype.Float4OID, "float4"), Typmod: -1, SQLType: "real"},
	}
	ts, err := schemas.BuildTableSchema("fuzz", schemas.Table{Schema: "public", Name: "t", Columns: cols}, schemas.UnsupportedFail)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// fuzzCol is one column of a hand-encoded pgoutput tuple: kind 't' with data,
// 'n' (null) or 'u' (unchanged TOAST).
type fuzzCol struct {
	kind byte
	data string
}

// fuzzTuple encodes TupleData as pgoutput writes it: ncols uint16, then per
// column 't' (or 'b') int32-length bytes, 'n' or 'u'.
func fuzzTuple(cols []fuzzCol) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(cols)))
	for _, c := range cols {
		b = append(b, c.kind)
		if c.kind == 't' || c.kind == 'b' {
			b = binary.BigEndian.AppendUint32(b, uint32(len(c.data)))
			b = append(b, c.data...)
		}
	}
	return b
}

func fuzzInsert(cols []fuzzCol) []byte {
	b := binary.BigEndian.AppendUint32([]byte{'I'}, fuzzRelID)
	return append(append(b, 'N'), fuzzTuple(cols)...)
}

func fuzzUpdate(old byte, oldCols, newCols []fuzzCol) []byte {
	b := binary.BigEndian.AppendUint32([]byte{'U'}, fuzzRelID)
	if old != 0 {
		b = append(append(b, old), fuzzTuple(oldCols)...)
	}
	return append(append(b, 'N'), fuzzTuple(newCols)...)
}

func fuzzDelete(old byte, cols []fuzzCol) []byte {
	b := binary.BigEndian.AppendUint32([]byte{'D'}, fuzzRelID)
	return append(append(b, old), fuzzTuple(cols)...)
}

// fuzzRows are real rows of fuzzTable in PostgreSQL's text output under the
// producer's session settings.
var fuzzRows = [][]fuzzCol{
	{{'t', "1"}, {'t', "héllo, wörld"}, {'t', "12345678.90"}, {'t', "2024-02-29 12:34:56.123456+00"},
		{'t', `{a,"b c",NULL,"\"q\"","\\"}`}, {'t', "P1Y2M3DT4H5M6.5S"}, {'t', `\x00ff10`}, {'t', "-0.01"}, {'t', "2000-01-01"}, {'t', "NaN"}},
	{{'t', "-9223372036854775808"}, {'t', ""}, {'t', "-99999999.99"}, {'t', "infinity"},
		{'t', "{}"}, {'t', "P-1Y-2M3DT-4H-5M-6S"}, {'t', `\x`}, {'t', "0.00"}, {'t', "0044-03-15 BC"}, {'t', "-Infinity"}},
	{{'t', "9223372036854775807"}, {'n', ""}, {'n', ""}, {'t', "-infinity"},
		{'t', "{NULL}"}, {'t', "PT0S"}, {'n', ""}, {'n', ""}, {'t', "infinity"}, {'t', "1.17549435e-38"}},
	{{'t', "42"}, {'u', ""}, {'t', "1.50"}, {'t', "1970-01-01 00:00:00+00"},
		{'u', ""}, {'t', "PT-0.5S"}, {'u', ""}, {'t', "12.00"}, {'t', "-infinity"}, {'t', "-0"}},
}

// TestFuzzSeedsDecode checks that the seeds are real rows: each converts and
// encodes, so the fuzzers start from the producer's happy path.
func TestFuzzSeedsDecode(t *testing.T) {
	ts := fuzzTable(t)
	for i, r := range fuzzRows {
		msg, err := pglogrepl.Parse(fuzzInsert(r))
		if err != nil {
			t.Fatalf("seed %d: %v", i, err)
		}
		env := fuzzCheckTuple(t, ts, msg.(*pglogrepl.InsertMessage).Tuple)
		if env == nil {
			t.Fatalf("seed %d: rejected", i)
		}
		toast := env["unchanged_toast"].([]any)
		after := schemas.UnwrapUnion(env["after"]).(map[string]any)
		if i == 3 && (len(toast) != 3 || after["name"] != nil) {
			t.Fatalf("seed %d: unchanged TOAST columns %v, name %v", i, toast, after["name"])
		}
	}
}

// FuzzDecodeTuple feeds bytes to parsePgoutput, as the producer does with
// each XLogData payload, and the tuples of Insert, Update and Delete messages
// to the encoder. Nothing may panic; errors are fine. A change message the
// producer's own decoder accepts must decode the same with pglogrepl.Parse,
// which copies where it aliases. A row the encoder accepts must be encodable
// as the table's Avro envelope (and its key, when the key column is set):
// Decode's contract is to return what goavro accepts.
func FuzzDecodeTuple(f *testing.F) {
	for _, r := range fuzzRows {
		f.Add(fuzzInsert(r))
		f.Add(fuzzDelete('K', []fuzzCol{r[0], {'n', ""}, {'n', ""}, {'n', ""}, {'n', ""}, {'n', ""}, {'n', ""}, {'n', ""}, {'n', ""}, {'n', ""}}))
		f.Add(fuzzDelete('O', r))
		f.Add(fuzzUpdate(0, nil, r))
		f.Add(fuzzUpdate('O', fuzzRows[0], r))
	}
	f.Add(fuzzInsert(fuzzRows[0][:3]))                                                                                                           // too few columns
	f.Add(append(fuzzInsert(fuzzRows[0]), fuzzInsert(fuzzRows[1])...))                                                                           // trailing bytes
	f.Add(fuzzInsert([]fuzzCol{{'t', "1"}, {'b', "x"}, {'n', ""}, {'n', ""}, {'n', ""}, {'n', ""}, {'n', ""}, {'n', ""}, {'n', ""}, {'n', ""}})) // binary column
	ts := fuzzTable(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := parsePgoutput(data)
		if err != nil {
			return
		}
		tuples := changeTuples(msg)
		if tuples == nil {
			return
		}
		if want := changeTuples(pglogreplParse(t, data)); !reflect.DeepEqual(tuples, want) {
			t.Fatalf("decoded %s, pglogrepl.Parse %s", fuzzShow(tuples), fuzzShow(want))
		}
		for _, x := range tuples {
			if tup, ok := x.(*pglogrepl.TupleData); ok && tup != nil {
				fuzzCheckTuple(t, ts, tup)
			}
		}
	})
}

// changeTuples lists the tuples of a change message, with their markers
// ('K', 'O', 'N'), or nil for another message.
func changeTuples(msg pglogrepl.Message) []any {
	switch m := msg.(type) {
	case *pglogrepl.InsertMessage:
		return []any{m.Type(), 'N', m.RelationID, m.Tuple}
	case *pglogrepl.UpdateMessage:
		return []any{m.Type(), m.OldTupleType, m.RelationID, m.OldTuple, m.NewTuple}
	case *pglogrepl.DeleteMessage:
		return []any{m.Type(), m.OldTupleType, m.RelationID, m.OldTuple}
	}
	return nil
}

// pglogreplParse is pglogrepl.Parse, failing the test when it panics or
// errors.
func pglogreplParse(t *testing.T, data []byte) pglogrepl.Message {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("pglogrepl.Parse panics on a message the producer decodes: %v", r)
		}
	}()
	msg, err := pglogrepl.Parse(data)
	if err != nil {
		t.Fatalf("pglogrepl.Parse rejects a message the producer decodes: %v", err)
	}
	return msg
}

func fuzzShow(v []any) string {
	var b strings.Builder
	for _, x := range v {
		if td, ok := x.(*pglogrepl.TupleData); ok && td != nil {
			fmt.Fprintf(&b, "%d cols[", td.ColumnNum)
			for _, c := range td.Columns {
				fmt.Fprintf(&b, "%c%d:%q ", c.DataType, c.Length, c.Data)
			}
			b.WriteString("] ")
			continue
		}
		fmt.Fprintf(&b, "%v ", x)
	}
	return b.String()
}

// FuzzRowFromTuple drives the encoder with structurally valid tuples of
// arbitrary column kinds and values, independently of pglogrepl's parser:
// kinds[i] is column i's kind ('t' when kinds is short), v[i] its data.
func FuzzRowFromTuple(f *testing.F) {
	for _, r := range fuzzRows {
		kinds := make([]byte, len(r))
		var v [10][]byte
		for i, c := range r {
			kinds[i], v[i] = c.kind, []byte(c.data)
		}
		f.Add(kinds, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9])
	}
	ts := fuzzTable(f)
	f.Fuzz(func(t *testing.T, kinds, v0, v1, v2, v3, v4, v5, v6, v7, v8, v9 []byte) {
		vals := [][]byte{v0, v1, v2, v3, v4, v5, v6, v7, v8, v9}
		tup := &pglogrepl.TupleData{ColumnNum: uint16(len(vals))}
		for i, v := range vals {
			k := byte('t')
			if i < len(kinds) {
				k = kinds[i]
			}
			tup.Columns = append(tup.Columns, &pglogrepl.TupleDataColumn{DataType: k, Length: uint32(len(v)), Data: v})
		}
		fuzzCheckTuple(t, ts, tup)
	})
}

// fuzzCheckTuple encodes tup's envelope and key as session.encodeChange and
// session.encodeKey do and returns the envelope as goavro decodes it, or nil
// when the encoder rejects the row. What the encoder accepts, goavro must
// decode, null and unchanged-TOAST columns must be null, and every decoded
// value must go back to a literal that Decode accepts.
func fuzzCheckTuple(t *testing.T, ts *schemas.TableSchema, tup *pglogrepl.TupleData) map[string]any {
	enc := schemas.NewEncoder(ts)
	ev := schemas.EncoderEvent{Op: schemas.OpInsert, After: tup,
		SourceHead: schemas.EncoderSourceHead("fuzz", "fuzz", "db", "public", "t"),
		Tx:         schemas.NewEncoderTx(0, 1, time.Unix(0, 0), "")}
	b, err := enc.AppendValue(nil, &ev)
	if err != nil {
		return nil
	}
	back, rest, err := ts.ValueCodec.NativeFromBinary(b)
	if err != nil || len(rest) != 0 {
		t.Fatalf("encoded envelope does not decode: %v (%d bytes left)", err, len(rest))
	}
	env := back.(map[string]any)
	after := schemas.UnwrapUnion(env["after"]).(map[string]any)
	if len(after) != len(ts.Fields) {
		t.Fatalf("row has %d fields, table %d", len(after), len(ts.Fields))
	}
	for i, f := range ts.Fields {
		v := schemas.UnwrapUnion(after[f])
		if c := tup.Columns[i]; c.DataType == pglogrepl.TupleDataTypeNull || c.DataType == pglogrepl.TupleDataTypeToast {
			if v != nil {
				t.Fatalf("column %d (%c) is %v, want null", i, c.DataType, v)
			}
		}
		if v == nil {
			continue
		}
		lit, err := ts.Codecs[i].Encode(v)
		if err != nil {
			t.Fatalf("column %s: Encode(%T %v) of a decoded value: %v", f, v, v, err)
		}
		if _, err := ts.Codecs[i].Decode([]byte(lit)); err != nil {
			t.Fatalf("column %s: Encode's literal %q does not decode: %v", f, lit, err)
		}
	}
	key, err := enc.AppendKey(nil, tup)
	if err != nil {
		for _, k := range ts.KeyColumns {
			if tup.Columns[k].DataType == pglogrepl.TupleDataTypeText {
				t.Fatalf("the value encodes but its key does not: %v", err)
			}
		}
		return env
	}
	if _, rest, err := ts.KeyCodec.NativeFromBinary(key); err != nil || len(rest) != 0 {
		t.Fatalf("encoded key does not decode: %v (%d bytes left)", err, len(rest))
	}
	return env
}
