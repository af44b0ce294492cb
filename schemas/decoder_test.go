package schemas

import (
	"bytes"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/linkedin/goavro/v2"
)

// decSameNative is value-for-value equality of native forms, stricter than
// tcEqualNative: NaN equals NaN bit for bit, and types must match exactly.
func decSameNative(a, b any) bool {
	switch x := a.(type) {
	case *big.Rat:
		y, ok := b.(*big.Rat)
		return ok && x.Cmp(y) == 0
	case float32:
		y, ok := b.(float32)
		return ok && math.Float32bits(x) == math.Float32bits(y)
	case float64:
		y, ok := b.(float64)
		return ok && math.Float64bits(x) == math.Float64bits(y)
	case time.Time:
		y, ok := b.(time.Time)
		return ok && x.Equal(y) && x.Location() == y.Location()
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) || (x == nil) != (y == nil) {
			return false
		}
		for i := range x {
			if !decSameNative(x[i], y[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !decSameNative(v, w) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

// decAllTypesTable is a table with one nullable column per type case of
// types_test.go whose text decodes, and the native value of each.
func decAllTypesTable(t testing.TB) (*TableSchema, []any) {
	t.Helper()
	tbl := Table{Schema: "public", Name: "all_types", Columns: []Column{{Name: "id", Type: tcInt8, Typmod: -1, SQLType: "bigint", Key: true}}}
	values := []any{int64(42)}
	for i, tc := range tcCases {
		if tc.err != nil {
			continue
		}
		c, err := MapType(tc.t, tc.typmod, UnsupportedFail)
		if err != nil {
			continue
		}
		v, err := c.Decode([]byte(tc.in))
		if err != nil {
			t.Fatalf("%v: Decode: %v", tc, err)
		}
		tbl.Columns = append(tbl.Columns, Column{Name: fmt.Sprintf("c%d %s", i, tc.sql), Type: tc.t, Typmod: tc.typmod, SQLType: tc.sql})
		values = append(values, v)
	}
	ts, err := BuildTableSchema("bench", tbl, UnsupportedFail)
	if err != nil {
		t.Fatal(err)
	}
	return ts, values
}

func decEnvelopeNative(ts *TableSchema, op Op, before, after []any, unchanged []string) map[string]any {
	row := func(vals []any) any {
		if vals == nil {
			return nil
		}
		m := make(map[string]any, len(vals))
		for i, v := range vals {
			m[ts.Fields[i]] = ts.Union(i, v)
		}
		return goavro.Union(ts.RowName, m)
	}
	ut := make([]any, len(unchanged))
	for i, u := range unchanged {
		ut[i] = u
	}
	src := Source{Version: "test", Prefix: "bench", DB: "db", Schema: "public", Table: "all_types", LSN: 77,
		CommitLSN: 99, Xid: 4000000000, CommitTime: time.UnixMicro(1700000000123456).UTC(), Origin: "site_a"}
	return map[string]any{"op": string(op), "before": row(before), "after": row(after), "source": src.Native(),
		"tx": map[string]any{"id": TxID(src.Xid, src.CommitLSN), "position": int64(3)}, "unchanged_toast": ut}
}

// decEnvelopeCases encodes envelopes over every type case with goavro.
func decEnvelopeCases(t testing.TB, ts *TableSchema, values []any) [][]byte {
	t.Helper()
	nulls := make([]any, len(values))
	nulls[0] = values[0]
	var out [][]byte
	for _, env := range []map[string]any{
		decEnvelopeNative(ts, OpInsert, nil, values, nil),
		decEnvelopeNative(ts, OpUpdate, values, nulls, []string{"c1 bool", "id"}),
		decEnvelopeNative(ts, OpDelete, nulls, nil, nil),
		decEnvelopeNative(ts, OpTruncate, nil, nil, nil),
	} {
		b, err := ts.ValueCodec.BinaryFromNative(nil, env)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// TestDecoderNativeMatchesGoavro decodes envelopes over every type case with
// the compiled decoder and goavro: values must be equal, and goavro must
// re-encode the compiled decoder's values to the same bytes.
func TestDecoderNativeMatchesGoavro(t *testing.T) {
	ts, values := decAllTypesTable(t)
	dec, err := DecoderCompile(ts.ValueSchema)
	if err != nil {
		t.Fatal(err)
	}
	for i, bin := range decEnvelopeCases(t, ts, values) {
		want, wrest, err := ts.ValueCodec.NativeFromBinary(append(bin, 0xAA))
		if err != nil {
			t.Fatal(err)
		}
		got, grest, err := dec.Native(append(bin, 0xAA))
		if err != nil {
			t.Fatalf("envelope %d: %v", i, err)
		}
		if !decSameNative(got, want) {
			t.Fatalf("envelope %d:\n got  %#v\n want %#v", i, got, want)
		}
		if !bytes.Equal(grest, wrest) {
			t.Fatalf("envelope %d: rest %x, goavro %x", i, grest, wrest)
		}
		again, err := ts.ValueCodec.BinaryFromNative(nil, got)
		if err != nil {
			t.Fatalf("envelope %d: goavro cannot encode the compiled decoder's value: %v", i, err)
		}
		if !bytes.Equal(again, bin) {
			t.Fatalf("envelope %d: re-encoded bytes differ:\n got  %x\n want %x", i, again, bin)
		}
	}
}

// TestDecoderEnvelopeMatchesGoavro checks DecodeEnvelope's slices against
// goavro's maps, column by column.
func TestDecoderEnvelopeMatchesGoavro(t *testing.T) {
	ts, values := decAllTypesTable(t)
	ed, err := DecoderCompileEnvelope(ts.ValueSchema)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ed.RowFields(), ts.Fields) {
		t.Fatalf("RowFields %v, want %v", ed.RowFields(), ts.Fields)
	}
	var e DecodedEnvelope // reused, as the consumer does
	for i, bin := range decEnvelopeCases(t, ts, values) {
		native, _, err := ts.ValueCodec.NativeFromBinary(bin)
		if err != nil {
			t.Fatal(err)
		}
		env := native.(map[string]any)
		if err := ed.Decode(bin, &e); err != nil {
			t.Fatalf("envelope %d: %v", i, err)
		}
		if e.Op != env["op"] {
			t.Fatalf("envelope %d: op %q, want %q", i, e.Op, env["op"])
		}
		for _, img := range []struct {
			name string
			got  []any
		}{{"before", e.Before}, {"after", e.After}} {
			w := UnwrapUnion(env[img.name])
			if w == nil {
				if img.got != nil {
					t.Fatalf("envelope %d %s: %v, want null", i, img.name, img.got)
				}
				continue
			}
			wm := w.(map[string]any)
			if len(img.got) != len(ts.Fields) {
				t.Fatalf("envelope %d %s: %d values for %d fields", i, img.name, len(img.got), len(ts.Fields))
			}
			for j, f := range ts.Fields {
				if want := UnwrapUnion(wm[f]); !decSameNative(img.got[j], want) {
					t.Fatalf("envelope %d %s column %s: %#v, want %#v", i, img.name, f, img.got[j], want)
				}
			}
		}
		src := env["source"].(map[string]any)
		ws := Source{Version: src["version"].(string), Prefix: src["prefix"].(string), DB: src["db"].(string),
			Schema: src["schema"].(string), Table: src["table"].(string), LSN: pglogrepl.LSN(src["lsn"].(int64)),
			CommitLSN: pglogrepl.LSN(src["commit_lsn"].(int64)), Xid: uint32(src["xid"].(int64)),
			CommitTime: src["commit_ts"].(time.Time), Snapshot: src["snapshot"].(bool), Origin: UnwrapUnion(src["origin"]).(string)}
		if !reflect.DeepEqual(e.Source, ws) {
			t.Fatalf("envelope %d: source %+v, want %+v", i, e.Source, ws)
		}
		tx := env["tx"].(map[string]any)
		if e.TxID != tx["id"] || e.TxPosition != tx["position"] {
			t.Fatalf("envelope %d: tx %q %d, want %v", i, e.TxID, e.TxPosition, tx)
		}
		var ut []string
		for _, u := range env["unchanged_toast"].([]any) {
			ut = append(ut, u.(string))
		}
		if fmt.Sprint(e.UnchangedToast) != fmt.Sprint(ut) || len(e.UnchangedToast) != len(ut) {
			t.Fatalf("envelope %d: unchanged_toast %q, want %q", i, e.UnchangedToast, ut)
		}
	}
}

// TestDecoderEnvelopeEvolvedSchema decodes with a writer schema whose source
// block has an extra field and lacks origin, and whose envelope has an extra
// trailing field: decoding follows the writer schema, not a fixed layout.
func TestDecoderEnvelopeEvolvedSchema(t *testing.T) {
	schema := `{"type":"record","name":"Envelope","namespace":"x","fields":[
	 {"name":"extra_head","type":{"type":"array","items":{"type":"map","values":"long"}}},
	 {"name":"op","type":"string"},
	 {"name":"before","type":["null",{"type":"record","name":"Row","fields":[{"name":"a","type":["null","long"]},{"name":"e","type":["null",{"type":"enum","name":"E","symbols":["x","y"]}]}]}]},
	 {"name":"after","type":["null","Row"]},
	 {"name":"source","type":{"type":"record","name":"Source","fields":[
	   {"name":"schema","type":"string"},{"name":"table","type":"string"},{"name":"new_thing","type":["null","double"]},
	   {"name":"commit_lsn","type":"long"},{"name":"xid","type":"long"},{"name":"commit_ts","type":{"type":"long","logicalType":"timestamp-micros"}},{"name":"snapshot","type":"boolean"}]}},
	 {"name":"unchanged_toast","type":{"type":"array","items":"string"}},
	 {"name":"extra_tail","type":["null","string"]}]}`
	codec, err := goavro.NewCodec(schema)
	if err != nil {
		t.Fatal(err)
	}
	bin, err := codec.BinaryFromNative(nil, map[string]any{
		"extra_head": []any{map[string]any{"k": int64(1)}},
		"op":         "u", "before": nil,
		"after": goavro.Union("x.Row", map[string]any{"a": goavro.Union("long", int64(-5)), "e": goavro.Union("x.E", "y")}),
		"source": map[string]any{"schema": "s", "table": "t", "new_thing": goavro.Union("double", 1.5), "commit_lsn": int64(10),
			"xid": int64(7), "commit_ts": time.UnixMicro(5).UTC(), "snapshot": true},
		"unchanged_toast": []any{"a"}, "extra_tail": goavro.Union("string", "z"),
	})
	if err != nil {
		t.Fatal(err)
	}
	ed, err := DecoderCompileEnvelope(schema)
	if err != nil {
		t.Fatal(err)
	}
	// A reused envelope holds another schema's values: the fields this
	// writer schema lacks must come out zero.
	e := DecodedEnvelope{Op: "d", TxID: "stale", TxPosition: 3, Before: []any{1},
		Source: Source{Origin: "stale", Prefix: "stale", LSN: 5, Schema: "s", Table: "old"}}
	if err := ed.Decode(bin, &e); err != nil {
		t.Fatal(err)
	}
	want := DecodedEnvelope{Op: "u", After: []any{int64(-5), "y"},
		Source:         Source{Schema: "s", Table: "t", CommitLSN: 10, Xid: 7, CommitTime: time.UnixMicro(5).UTC(), Snapshot: true},
		UnchangedToast: []string{"a"}}
	if !reflect.DeepEqual(e, want) {
		t.Fatalf("got %+v\nwant %+v", e, want)
	}
	if err := ed.Decode(append(bin, 0), &e); err == nil || !strings.Contains(err.Error(), "1 bytes left") {
		t.Fatalf("trailing byte: err %v", err)
	}
}

// TestDecoderFrameMatchesGoavro decodes frames with and without origin and
// snapshot chunk and compares with FrameFromNative over goavro.
func TestDecoderFrameMatchesGoavro(t *testing.T) {
	codec, err := goavro.NewCodec(FrameSchema())
	if err != nil {
		t.Fatal(err)
	}
	fd, err := DecoderCompileFrame(FrameSchema())
	if err != nil {
		t.Fatal(err)
	}
	frames := []Frame{
		{Xid: 1, CommitLSN: 2, EndLSN: 3, CommitTime: time.UnixMicro(-1).UTC(), Events: 0},
		{Xid: math.MaxUint32, CommitLSN: 1 << 40, EndLSN: 1<<40 + 8, CommitTime: time.UnixMicro(1700000000000001).UTC(),
			Origin: "o", Events: 5, Partitions: []PartitionCount{{"p.public.a", 0, 2}, {"p.public.b", 11, 3}}},
		{Xid: 9, CommitLSN: 10, EndLSN: 11, CommitTime: time.UnixMicro(0).UTC(), Events: 1000,
			Snapshot:   &SnapshotChunk{Slot: "s", Schema: "public", Table: "t", Chunk: 4, Last: true, LastKey: []string{"a", ""}},
			Partitions: []PartitionCount{{"p.public.t", 2, 1000}}},
		{Xid: 9, CommitLSN: 10, EndLSN: 11, CommitTime: time.UnixMicro(0).UTC(),
			Snapshot: &SnapshotChunk{Slot: "s", Schema: "public", Table: "t"}},
	}
	for i, f := range frames {
		bin, err := codec.BinaryFromNative(nil, f.Native())
		if err != nil {
			t.Fatal(err)
		}
		native, _, err := codec.NativeFromBinary(bin)
		if err != nil {
			t.Fatal(err)
		}
		want, err := FrameFromNative(native)
		if err != nil {
			t.Fatal(err)
		}
		got, err := fd.Decode(bin)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("frame %d:\n got  %+v\n want %+v", i, got, want)
		}
		if !reflect.DeepEqual(got, f) {
			t.Fatalf("frame %d: round trip %+v, want %+v", i, got, f)
		}
	}
}

// FuzzDecoderMatchesGoavro feeds arbitrary bytes to the compiled envelope
// and frame decoders. They must never panic; whenever the compiled decoder
// accepts bytes, goavro must accept them too and decode the same value
// (goavro is not asked first: it allocates a garbage block count whole).
func FuzzDecoderMatchesGoavro(f *testing.F) {
	ts, values := decAllTypesTable(f)
	for _, b := range decEnvelopeCases(f, ts, values) {
		f.Add(b, false)
	}
	fcodec, err := goavro.NewCodec(FrameSchema())
	if err != nil {
		f.Fatal(err)
	}
	fr := Frame{Xid: 3, CommitLSN: 4, EndLSN: 5, CommitTime: time.UnixMicro(6).UTC(), Events: 2,
		Partitions: []PartitionCount{{"t", 1, 2}}}
	fb, _ := fcodec.BinaryFromNative(nil, fr.Native())
	f.Add(fb, true)
	f.Add([]byte{}, false)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, true)
	envDec, err := DecoderCompile(ts.ValueSchema)
	if err != nil {
		f.Fatal(err)
	}
	ed, _ := DecoderCompileEnvelope(ts.ValueSchema)
	frameDec, _ := DecoderCompile(FrameSchema())
	fd, _ := DecoderCompileFrame(FrameSchema())
	f.Fuzz(func(t *testing.T, b []byte, frame bool) {
		dec, codec := envDec, ts.ValueCodec
		if frame {
			dec, codec = frameDec, fcodec
		}
		got, rest, err := dec.Native(b)
		if frame {
			if _, ferr := fd.Decode(b); (ferr == nil) != (err == nil && len(rest) == 0) {
				t.Fatalf("DecoderFrame err %v, Native err %v rest %d", ferr, err, len(rest))
			}
		} else {
			var e DecodedEnvelope
			if eerr := ed.Decode(b, &e); (eerr == nil) != (err == nil && len(rest) == 0) {
				t.Fatalf("DecoderEnvelope err %v, Native err %v rest %d", eerr, err, len(rest))
			}
		}
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		want, wrest, werr := codec.NativeFromBinary(b)
		if werr != nil {
			t.Fatalf("compiled decoder accepted what goavro rejects (%v): %#v", werr, got)
		}
		if !decSameNative(got, want) || !bytes.Equal(rest, wrest) {
			t.Fatalf("got %#v rest %x\nwant %#v rest %x", got, rest, want, wrest)
		}
	})
}

func BenchmarkDecoderEnvelope(b *testing.B) {
	tbl := Table{Schema: "public", Name: "t", Columns: []Column{
		{Name: "id", Type: tcInt8, Typmod: -1, Key: true}, {Name: "name", Type: tcText, Typmod: -1},
		{Name: "amount", Type: tcNumeric, Typmod: tcNumTypmod(12, 2)}, {Name: "at", Type: tcTSTZ, Typmod: -1}}}
	ts, err := BuildTableSchema("p", tbl, UnsupportedFail)
	if err != nil {
		b.Fatal(err)
	}
	vals := []any{int64(1), strings.Repeat("x", 150), big.NewRat(12345, 100), time.UnixMicro(1).UTC()}
	bin, err := ts.ValueCodec.BinaryFromNative(nil, decEnvelopeNative(ts, OpInsert, nil, vals, nil))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("goavro", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, _, err := ts.ValueCodec.NativeFromBinary(bin); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("compiled", func(b *testing.B) {
		ed, err := DecoderCompileEnvelope(ts.ValueSchema)
		if err != nil {
			b.Fatal(err)
		}
		var e DecodedEnvelope
		b.ReportAllocs()
		for range b.N {
			if err := ed.Decode(bin, &e); err != nil {
				b.Fatal(err)
			}
		}
	})
}
