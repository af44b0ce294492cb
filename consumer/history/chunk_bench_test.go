package history

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/integration/harness"
)

// BenchmarkChunkStatement times the statement that appends one chunk of
// 5,000 rows to a history table of 300,000 current versions, against a
// real PostgreSQL started by the benchmark: rows of new keys, and rows that
// each replace a key's current version (which the statement closes). The
// baseline in the same run is what the PostgreSQL sink does with a chunk of
// inserts: one COPY of the 5,000 rows into a plain table of 300,000 rows
// with a primary key. Each execution is rolled back, and each run starts
// from tables filled afresh. µs/row is the target's cost per row.
//
//	go test ./consumer/history -run '^$' -bench ChunkStatement -count 6
func BenchmarkChunkStatement(b *testing.B) {
	const current, rows = 300_000, 5_000
	ctx := context.Background()
	pg := harness.StartPostgres(b)
	c := pg.Conn(b)
	// The benchmark table of bench/cmd/tribench.
	l, err := newLayout(&consumer.Table{Schema: "public", Name: "bench", Key: []int{0}, Columns: []consumer.Column{
		{Name: "id", SQLType: "bigint", Key: true}, {Name: "k", SQLType: "integer"},
		{Name: "ts", SQLType: "timestamp with time zone"}, {Name: "payload", SQLType: "text"}}}, "hist")
	if err != nil {
		b.Fatal(err)
	}
	for _, stmt := range l.ddl {
		if _, err := c.Exec(ctx, stmt); err != nil {
			b.Fatalf("%s: %v", stmt, err)
		}
	}
	if _, err := c.Exec(ctx, `CREATE TABLE public.bench (id bigint PRIMARY KEY, k integer, ts timestamptz, payload text)`); err != nil {
		b.Fatal(err)
	}
	// Every run starts from the same tables: rolled-back appends leave dead
	// rows behind.
	fill := func(b *testing.B) {
		for _, stmt := range []string{`TRUNCATE ` + l.qname + `, public.bench`,
			`INSERT INTO ` + l.qname + ` SELECT g, g, now(), repeat('x', 150), 1, 'c', '0/1'::pg_lsn, now(), 1, g, now(), NULL
				FROM generate_series(1, ` + strconv.Itoa(current) + `) g`,
			`INSERT INTO public.bench SELECT g, g, now(), repeat('x', 150) FROM generate_series(1, ` + strconv.Itoa(current) + `) g`,
			`VACUUM ANALYZE ` + l.qname + `, public.bench`} {
			if _, err := c.Exec(ctx, stmt); err != nil {
				b.Fatalf("%s: %v", stmt, err)
			}
		}
	}
	chunk := func(firstKey int) []any {
		ord, op, lsn, unch := make([]int32, rows), make([]string, rows), make([]string, rows), make([]string, rows)
		ts, xid, pos := make([]time.Time, rows), make([]int64, rows), make([]int64, rows)
		cols := make([][]*string, 4)
		for i := range rows {
			ord[i], op[i], lsn[i], ts[i], xid[i] = int32(i), "u", fmt.Sprintf("1/%X", i+1), time.Now(), int64(i)
			for j, v := range []string{strconv.Itoa(firstKey + i), strconv.Itoa(i), "2026-12-06 00:00:00+00", strings.Repeat("y", 150)} {
				cols[j] = append(cols[j], &v)
			}
		}
		return []any{ord, op, lsn, ts, xid, pos, unch, cols[0], cols[1], cols[2], cols[3]}
	}
	// measure runs one rolled-back chunk per iteration.
	measure := func(b *testing.B, apply func(tx pgx.Tx) (int64, error)) {
		fill(b)
		b.ResetTimer()
		for range b.N {
			tx, err := c.Begin(ctx)
			if err != nil {
				b.Fatal(err)
			}
			n, err := apply(tx)
			if err != nil {
				b.Fatal(err)
			}
			if n != rows {
				b.Fatalf("%d rows written, want %d", n, rows)
			}
			if err := tx.Rollback(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*rows), "µs/row")
	}
	plain := make([][]any, rows)
	for i := range plain {
		plain[i] = []any{int64(current + 1 + i), int32(i), time.Now(), strings.Repeat("y", 150)}
	}
	b.Run("plain-copy", func(b *testing.B) {
		measure(b, func(tx pgx.Tx) (int64, error) {
			return tx.CopyFrom(ctx, pgx.Identifier{"public", "bench"}, []string{"id", "k", "ts", "payload"}, pgx.CopyFromRows(plain))
		})
	})
	for _, keys := range []struct {
		name  string
		first int
	}{{"new-keys", current + 1}, {"existing-keys", 1}} {
		args := chunk(keys.first)
		b.Run("history-"+keys.name, func(b *testing.B) {
			measure(b, func(tx pgx.Tx) (int64, error) {
				ct, err := tx.Exec(ctx, l.insert, args...)
				return ct.RowsAffected(), err
			})
		})
	}
}
