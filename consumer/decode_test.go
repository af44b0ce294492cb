package consumer

import (
	"context"
	"errors"
	"log/slog"
	"math/big"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/linkedin/goavro/v2"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/tributary-cdc/tributary/schemas"
)

// decodeEnv registers one table's value schema in a fake registry.
func decodeEnv(t testing.TB) (*decoder, *schemas.TableSchema, int) {
	t.Helper()
	fake := srfake.New()
	t.Cleanup(fake.Close)
	reg, err := schemas.NewRegistry([]string{fake.URL()}, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	base := func(oid uint32, name string) schemas.PGType {
		return schemas.PGType{OID: oid, Name: name, Kind: schemas.KindBase}
	}
	tbl := schemas.Table{Schema: "public", Name: "acc", Columns: []schemas.Column{
		{Name: "id", Type: base(pgtype.Int4OID, "int4"), Typmod: -1, SQLType: "integer", Key: true},
		{Name: "note", Type: base(pgtype.TextOID, "text"), Typmod: -1, SQLType: "text"},
		{Name: "amount", Type: base(pgtype.NumericOID, "numeric"), Typmod: (10<<16 | 2) + 4, SQLType: "numeric(10,2)"},
		{Name: "span", Type: base(pgtype.IntervalOID, "interval"), Typmod: -1, SQLType: "interval"},
		{Name: "at", Type: base(pgtype.TimestamptzOID, "timestamptz"), Typmod: -1, SQLType: "timestamp with time zone"},
	}}
	ts, err := schemas.BuildTableSchema("p", tbl, schemas.UnsupportedFail)
	if err != nil {
		t.Fatal(err)
	}
	id, err := reg.Register(context.Background(), schemas.ValueSubject(ts.Topic), ts.ValueSchema, schemas.SchemaChangeFail)
	if err != nil {
		t.Fatal(err)
	}
	return newDecoder(reg), ts, id
}

func decodeRecord(t testing.TB, ts *schemas.TableSchema, id int, op schemas.Op, before, after []any, toast ...string) *kgo.Record {
	t.Helper()
	row := func(vals []any) any {
		if vals == nil {
			return nil
		}
		m := map[string]any{}
		for i, v := range vals {
			m[ts.Fields[i]] = ts.Union(i, v)
		}
		return goavro.Union(ts.RowName, m)
	}
	ut := []any{}
	for _, s := range toast {
		ut = append(ut, s)
	}
	src := schemas.Source{Version: "t", Prefix: "p", DB: "d", Schema: "public", Table: "acc", CommitLSN: 0x1234, Xid: 9,
		CommitTime: time.UnixMicro(1700000000000001).UTC(), Origin: "site_b"}
	b, err := ts.ValueCodec.BinaryFromNative(nil, map[string]any{"op": string(op), "before": row(before), "after": row(after),
		"source": src.Native(), "tx": map[string]any{"id": "9:0/1234", "position": int64(0)}, "unchanged_toast": ut})
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: ts.Topic, Partition: 2, Offset: 41, Value: append(schemas.AppendHeader(nil, id), b...)}
}

// TestDecoderCompiledMatchesGoavroPath decodes the same records through the
// compiled decoder and through the goavro fallback: the events must be equal.
func TestDecoderCompiledMatchesGoavroPath(t *testing.T) {
	ctx := context.Background()
	d, ts, id := decodeEnv(t)
	g, _, _ := decodeEnv(t) // same schema, same ID in a fresh registry
	g.envs[id] = nil        // forces goavro
	iv := map[string]any{"months": int32(1), "days": int32(-2), "micros": int64(3)}
	full := []any{int32(7), "x\ty", big.NewRat(1234, 100), iv, time.UnixMicro(5).UTC()}
	recs := []*kgo.Record{
		decodeRecord(t, ts, id, schemas.OpInsert, nil, full),
		decodeRecord(t, ts, id, schemas.OpUpdate, []any{int32(7), nil, nil, nil, nil}, []any{int32(7), nil, nil, nil, nil}, "note"),
		decodeRecord(t, ts, id, schemas.OpDelete, []any{int32(7), nil, nil, nil, nil}, nil),
	}
	for i, r := range recs {
		var a, b Event
		if err := d.event(ctx, r, &a); err != nil {
			t.Fatalf("record %d compiled: %v", i, err)
		}
		if err := g.event(ctx, r, &b); err != nil {
			t.Fatalf("record %d goavro: %v", i, err)
		}
		if a.Op != b.Op || !reflect.DeepEqual(a.Before, b.Before) || !reflect.DeepEqual(a.After, b.After) ||
			!reflect.DeepEqual(a.Unchanged, b.Unchanged) || !reflect.DeepEqual(*a.Txn, *b.Txn) ||
			!reflect.DeepEqual(a.Table.Columns[1].Name, b.Table.Columns[1].Name) {
			t.Fatalf("record %d:\ncompiled %+v %+v\ngoavro   %+v %+v", i, a, *a.Txn, b, *b.Txn)
		}
		if a.Txn.Origin != "site_b" || a.Txn.CommitLSN != 0x1234 || a.Txn.Xid != 9 {
			t.Fatalf("record %d: txn %+v", i, *a.Txn)
		}
	}
	var ev Event
	if err := d.event(ctx, recs[0], &ev); err != nil {
		t.Fatal(err)
	}
	for i, c := range ev.Table.Columns {
		if _, err := c.Encode(ev.After[i]); err != nil {
			t.Errorf("column %s: Encode(%#v): %v", c.Name, ev.After[i], err)
		}
	}
}

// TestDecoderTextBranch: values in their columns' text branch (NaN in a
// numeric(p,s), infinity, an interval beyond 2^53 microseconds) decode the
// same through the compiled decoder and goavro, into the natives their typed
// branch has where one holds them (contract v1's forms), into the text
// where none does; Encode gives back the source's exact text.
func TestDecoderTextBranch(t *testing.T) {
	ctx := context.Background()
	d, ts, id := decodeEnv(t)
	g, _, _ := decodeEnv(t)
	g.envs[id] = nil // forces goavro
	row := []any{int32(7), nil, "NaN", "PT2562047788H54.775807S", "infinity"}
	want := []string{"7", "", "NaN", "PT2562047788H54.775807S", "infinity"}
	r := decodeRecord(t, ts, id, schemas.OpInsert, nil, row)
	var a, b Event
	if err := d.event(ctx, r, &a); err != nil {
		t.Fatalf("compiled: %v", err)
	}
	if err := g.event(ctx, r, &b); err != nil {
		t.Fatalf("goavro: %v", err)
	}
	if !reflect.DeepEqual(a.After, b.After) {
		t.Fatalf("compiled %#v\ngoavro   %#v", a.After, b.After)
	}
	if s, ok := a.After[2].(string); !ok || s != "NaN" {
		t.Errorf("numeric(10,2) NaN decoded to %#v, want the text", a.After[2])
	}
	if v, ok := a.After[4].(time.Time); !ok || v.UnixMicro() != 1<<63-1 {
		t.Errorf("timestamptz infinity decoded to %#v, want contract v1's MaxInt64 µs", a.After[4])
	}
	if v, ok := a.After[3].(map[string]any); !ok || v["micros"] != int64(9223372036854775807) {
		t.Errorf("interval decoded to %#v, want the record form", a.After[3])
	}
	for i, c := range a.Table.Columns {
		if a.After[i] == nil {
			continue
		}
		if got, err := c.Encode(a.After[i]); err != nil || got != want[i] {
			t.Errorf("column %s: Encode(%#v) = %q, %v; want %q", c.Name, a.After[i], got, err, want[i])
		}
	}
}

// TestDecoderGarbageBody: a known schema ID followed by bytes that are not
// its Avro is a permanent error that, wrapped as the consumer wraps it,
// names the topic, partition and offset; nothing is returned as an event.
func TestDecoderGarbageBody(t *testing.T) {
	ctx := context.Background()
	d, ts, id := decodeEnv(t)
	good := decodeRecord(t, ts, id, schemas.OpInsert, nil, []any{int32(1), "a", nil, nil, nil})
	for name, value := range map[string][]byte{
		"truncated": good.Value[:len(good.Value)-3],
		"trailing":  append(append([]byte{}, good.Value...), 0),
		"garbage":   append(schemas.AppendHeader(nil, id), []byte("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01garbage")...),
		"bad union": append(schemas.AppendHeader(nil, id), 2, 'c', 0x08),
	} {
		t.Run(name, func(t *testing.T) {
			r := &kgo.Record{Topic: ts.Topic, Partition: 3, Offset: 77, Value: value}
			ev := &Event{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset}
			err := d.event(ctx, r, ev)
			if err == nil {
				t.Fatalf("no error; event %+v", ev)
			}
			if !IsPermanent(err) {
				t.Errorf("not permanent: %v", err)
			}
			err = ev.Wrap(err)
			var ee *EventError
			if !errors.As(err, &ee) || ee.Topic != ts.Topic || ee.Partition != 3 || ee.Offset != 77 {
				t.Fatalf("error does not name topic, partition and offset: %v", err)
			}
			msg := err.Error()
			for _, want := range []string{ts.Topic, "partition 3", "offset 77", "cannot decode Avro"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q lacks %q", msg, want)
				}
			}
		})
	}
}

// BenchmarkDecoderEvent compares the consumer's decode of one data record
// through the compiled decoder and through goavro.
func BenchmarkDecoderEvent(b *testing.B) {
	ctx := context.Background()
	for _, path := range []string{"compiled", "goavro"} {
		b.Run(path, func(b *testing.B) {
			d, ts, id := decodeEnv(b)
			if path == "goavro" {
				d.envs[id] = nil
			}
			r := decodeRecord(b, ts, id, schemas.OpInsert, nil,
				[]any{int32(7), strings.Repeat("p", 180), big.NewRat(1234, 100), nil, time.UnixMicro(5).UTC()})
			b.ReportAllocs()
			for range b.N {
				var ev Event
				if err := d.event(ctx, r, &ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// parseDecimal reads the order headers; it must accept and reject exactly
// what strconv.ParseUint(s, 10, 64) does.
func TestParseDecimalMatchesParseUint(t *testing.T) {
	in := []string{"", "0", "7", "007", "18446744073709551615", "18446744073709551616", "99999999999999999999",
		"-1", "+1", "1_000", " 1", "1 ", "0x10", "12a", "9223372036854775808"}
	for i := uint64(1); i != 0 && i < 1<<63; i = i*3 + 1 {
		in = append(in, strconv.FormatUint(i, 10))
	}
	for _, s := range in {
		want, err := strconv.ParseUint(s, 10, 64)
		got, ok := parseDecimal([]byte(s))
		if ok != (err == nil) || ok && got != want {
			t.Errorf("parseDecimal(%q) = %d, %v; strconv.ParseUint: %d, %v", s, got, ok, want, err)
		}
	}
}
