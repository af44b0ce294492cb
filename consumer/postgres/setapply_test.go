package postgres

import (
	"strconv"
	"testing"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/schemas"
)

// BenchmarkSetTableAdd groups a flush of 20,000 single-row inserts, the
// default --group-max-events, by key: with the key map and change list
// sized from the count of events, as flushSet makes them, and grown from
// empty.
func BenchmarkSetTableAdd(b *testing.B) {
	enc := func(v any) (string, error) { return strconv.FormatInt(v.(int64), 10), nil }
	t := &consumer.Table{Schema: "public", Name: "t", Key: []int{0}, Columns: []consumer.Column{
		{Name: "id", SQLType: "bigint", Key: true, Encode: enc}, {Name: "k", SQLType: "bigint", Encode: enc}}}
	const n = 20000
	evs := make([]*consumer.Event, n)
	for i := range evs {
		evs[i] = &consumer.Event{Op: schemas.OpInsert, Table: t, After: []any{int64(i), int64(i % 1000)}}
	}
	for _, c := range []struct {
		name string
		size int
	}{{"sized", n}, {"grown", 0}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				st := newSetTable(t, &tableInfo{ok: true}, c.size)
				for _, ev := range evs {
					if ok, err := st.add(ev); !ok || err != nil {
						b.Fatal(ok, err)
					}
				}
			}
		})
	}
}
