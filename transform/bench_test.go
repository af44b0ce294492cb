package transform

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/schemas"
)

// benchRows is how many rows one benchmark iteration transforms.
const benchRows = 1_000_000

const benchYAML = `
tables:
  people:
    steps:
      - rename: {born_at: born}
      - filter: region != 'SW'
      - split: {column: full_name, separator: ' ', into: [first_name, last_name]}
      - combine: {columns: [street, city, zip], into: address, separator: ', '}
      - hash: {column: ssn, into: ssn_hash, salt_env: SALT}
`

// benchSource is the people table and 64 distinct rows, 1 in 4 of them
// outside the filter, encoded as the producer encodes them.
func benchSource(b *testing.B) (*consumer.Table, *schemas.TableSchema, [][]any, [][]byte) {
	st := schemas.Table{Schema: "public", Name: "people"}
	for _, c := range []col{{"id", "int4", true}, {"full_name", "text", false}, {"street", "text", false}, {"city", "text", false},
		{"zip", "text", false}, {"ssn", "text", false}, {"region", "text", false}, {"born_at", "timestamptz", false}} {
		pt := pgTypes[c.typ]
		pt.Kind = schemas.KindBase
		st.Columns = append(st.Columns, schemas.Column{Name: c.name, Type: pt, Typmod: -1, SQLType: c.typ, Key: c.key})
	}
	ts, err := schemas.BuildTableSchema("p", st, schemas.UnsupportedFail)
	if err != nil {
		b.Fatal(err)
	}
	tb, err := consumer.TableFromValueSchema(ts.ValueSchema, 1, "public", "people", ts.Topic)
	if err != nil {
		b.Fatal(err)
	}
	regions := []string{"NE", "NW", "SE", "SW"}
	var rows [][]any
	var bins [][]byte
	for i := range 64 {
		row := []any{int32(i), fmt.Sprintf("First%d Last%d", i, i), fmt.Sprintf("%d Main Street", i), "Springfield",
			fmt.Sprintf("%05d", i), fmt.Sprintf("%03d-45-6789", i), regions[i%4], time.Unix(int64(i)*86400*365, 0).UTC()}
		rows = append(rows, row)
		m := map[string]any{}
		for j, f := range ts.Fields {
			m[f] = ts.Union(j, row[j])
		}
		src := schemas.Source{Version: "b", Prefix: "p", DB: "db", Schema: "public", Table: "people", CommitTime: time.Now()}
		env := map[string]any{"op": "c", "before": nil, "after": goavro.Union(ts.RowName, m), "source": src.Native(),
			"tx": map[string]any{"id": "1", "position": int64(i)}, "unchanged_toast": []any{}}
		bin, err := ts.ValueCodec.BinaryFromNative(nil, env)
		if err != nil {
			b.Fatal(err)
		}
		bins = append(bins, bin)
	}
	return tb, ts, rows, bins
}

// BenchmarkPipeline5Steps transforms 1M rows with a 5-step pipeline (rename,
// filter, split, combine, hash) and reports ns/row and allocs/row.
// BenchmarkConsumerBaseline is what the consumer spends per row without
// transforms (Avro decode plus the sink's text encoding); the ratio of the
// two is the transform's share of consumer CPU.
//
//	go test -run - -bench 'Pipeline5Steps|ConsumerBaseline' -benchtime 1x ./transform/
func BenchmarkPipeline5Steps(b *testing.B) {
	tb, _, rows, _ := benchSource(b)
	cfg, err := ParseConfig([]byte(benchYAML), "bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	p, err := compile(cfg, func(string) string { return "salt" })
	if err != nil {
		b.Fatal(err)
	}
	// Each event gets its own image slice, as the decoder allocates one.
	after := make([][]any, len(rows))
	for i := range after {
		after[i] = make([]any, len(rows[0]))
	}
	ev := &consumer.Event{Txn: &consumer.Txn{}}
	kept := 0
	run := func() {
		for i := range benchRows {
			k := i % len(rows)
			copy(after[k], rows[k])
			*ev = consumer.Event{Txn: ev.Txn, Op: schemas.OpInsert, Table: tb, After: after[k][:len(rows[k])]}
			keep, err := p.Transform(ev)
			if err != nil {
				b.Fatal(err)
			}
			if keep {
				kept++
			}
		}
	}
	run() // bind and warm the pools
	b.ResetTimer()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	start := time.Now()
	for range b.N {
		run()
	}
	el := time.Since(start)
	runtime.ReadMemStats(&ms1)
	n := float64(b.N * benchRows)
	b.ReportMetric(float64(el.Nanoseconds())/n, "ns/row")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/n, "allocs/row")
	b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/n, "B/row")
	if kept == 0 {
		b.Fatal("no row kept")
	}
}

func BenchmarkConsumerBaseline(b *testing.B) {
	tb, ts, _, bins := benchSource(b)
	sink := 0
	run := func() {
		for i := range benchRows {
			v, _, err := ts.ValueCodec.NativeFromBinary(bins[i%len(bins)])
			if err != nil {
				b.Fatal(err)
			}
			m := schemas.UnwrapUnion(v.(map[string]any)["after"]).(map[string]any)
			row := make([]any, len(tb.Columns))
			for j, c := range tb.Columns {
				row[j] = schemas.UnwrapUnion(m[c.Field])
			}
			for j, c := range tb.Columns {
				if row[j] != nil {
					s, err := c.Encode(row[j])
					if err != nil {
						b.Fatal(err)
					}
					sink += len(s)
				}
			}
		}
	}
	b.ResetTimer()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	start := time.Now()
	for range b.N {
		run()
	}
	el := time.Since(start)
	runtime.ReadMemStats(&ms1)
	n := float64(b.N * benchRows)
	b.ReportMetric(float64(el.Nanoseconds())/n, "ns/row")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/n, "allocs/row")
	b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/n, "B/row")
}
