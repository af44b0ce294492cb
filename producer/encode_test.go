package producer

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/schemas"
)

// benchRelation is a relState for the benchmark's table: bigint key, int,
// timestamptz and a 160-byte text, the shape of make bench's rows.
func benchRelation(tb testing.TB) (*relState, *pglogrepl.TupleData) {
	base := func(oid uint32, name string) schemas.PGType {
		return schemas.PGType{OID: oid, Name: name, Kind: schemas.KindBase}
	}
	ts, err := schemas.BuildTableSchemaEnvelope("bench", schemas.Table{Schema: "public", Name: "bench", Columns: []schemas.Column{
		{Name: "id", Type: base(pgtype.Int8OID, "int8"), Typmod: -1, SQLType: "bigint", Key: true},
		{Name: "k", Type: base(pgtype.Int4OID, "int4"), Typmod: -1, SQLType: "integer"},
		{Name: "ts", Type: base(pgtype.TimestamptzOID, "timestamptz"), Typmod: -1, SQLType: "timestamp with time zone"},
		{Name: "payload", Type: base(pgtype.TextOID, "text"), Typmod: -1, SQLType: "text"},
	}}, schemas.UnsupportedFail, schemas.EnvelopeTributary)
	if err != nil {
		tb.Fatal(err)
	}
	rs := &relState{ts: ts, enc: schemas.NewEncoder(ts), srcHead: schemas.EncoderSourceHead("bench", "bench", "postgres", "public", "bench"),
		keyID: 1, valueID: 2, topic: topicInfo{n: 3, part: kgo.StickyKeyPartitioner(nil).ForTopic(ts.Topic)}, name: "public.bench"}
	col := func(s string) *pglogrepl.TupleDataColumn {
		return &pglogrepl.TupleDataColumn{DataType: pglogrepl.TupleDataTypeText, Data: []byte(s)}
	}
	tup := &pglogrepl.TupleData{ColumnNum: 4, Columns: []*pglogrepl.TupleDataColumn{
		col("123456"), col("456"), col("2026-11-22 01:02:03.456789+00"), col(strings.Repeat("0123456789abcdef0123456789abcdef", 5))}}
	return rs, tup
}

// BenchmarkEncodeChange is the producer's per-row work before the Kafka
// client: the key, the envelope, the record with its order headers and its
// partition.
func BenchmarkEncodeChange(b *testing.B) {
	rs, tup := benchRelation(b)
	s := &session{cfg: &Config{MaxEventBytes: 1 << 20}}
	tx := &txState{xid: 777, commitLSN: 0x16B3748, commitTime: time.Unix(1_700_000_000, 0)}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		key, err := s.encodeKey(rs, tup)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.encodeChange(rs, rs.topic.part, tx, int64(i), 0x16B3700, schemas.OpInsert, key, nil, tup); err != nil {
			b.Fatal(err)
		}
	}
}

// TestNewRecordHeaders: a record's order headers carry the transaction's
// commit LSN and xid and the record's own position in decimal, each record
// its own position, and a header appended to one record leaves the others
// alone.
func TestNewRecordHeaders(t *testing.T) {
	tx := &txState{xid: 4294967295, commitLSN: 0x16B3748}
	var recs []*kgo.Record
	for _, pos := range []int64{0, 7, 1 << 40, 1<<63 - 1} {
		recs = append(recs, newRecord(tx, pos, "t", []byte("k"), []byte("v")))
	}
	recs[0].Headers = append(recs[0].Headers, kgo.RecordHeader{Key: schemas.HeaderTruncate, Value: []byte("x")})
	for i, pos := range []int64{0, 7, 1 << 40, 1<<63 - 1} {
		r := recs[i]
		want := []kgo.RecordHeader{
			{Key: schemas.HeaderCommitLSN, Value: []byte("23803720")},
			{Key: schemas.HeaderPosition, Value: []byte(strconv.FormatInt(pos, 10))},
			{Key: schemas.HeaderXID, Value: []byte("4294967295")},
		}
		if i == 0 {
			want = append(want, kgo.RecordHeader{Key: schemas.HeaderTruncate, Value: []byte("x")})
		}
		if r.Topic != "t" || string(r.Key) != "k" || string(r.Value) != "v" || len(r.Headers) != len(want) {
			t.Fatalf("record %d: %+v", i, r)
		}
		for j, h := range want {
			if r.Headers[j].Key != h.Key || string(r.Headers[j].Value) != string(h.Value) {
				t.Errorf("record %d header %d: %s=%q, want %s=%q", i, j, r.Headers[j].Key, r.Headers[j].Value, h.Key, h.Value)
			}
		}
	}
}

// BenchmarkTransaction is the producer's per-transaction work for a
// single-row transaction, before the Kafka client: its shared parts, its
// one change (key, envelope, record) and its frame.
func BenchmarkTransaction(b *testing.B) {
	rs, tup := benchRelation(b)
	s := &session{cfg: &Config{MaxEventBytes: 1 << 20}, txTopic: "bench.transactions"}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		tx := &txState{xid: uint32(i), commitLSN: pglogrepl.LSN(0x16B3748 + i*200), commitTime: time.Unix(1_700_000_000, 0), counts: map[tpKey]int64{}}
		key, err := s.encodeKey(rs, tup)
		if err != nil {
			b.Fatal(err)
		}
		r, err := s.encodeChange(rs, rs.topic.part, tx, tx.pos, tx.commitLSN-100, schemas.OpInsert, key, nil, tup)
		if err != nil {
			b.Fatal(err)
		}
		tx.pos++
		tx.counts[tpKey{r.Topic, r.Partition}]++
		s.frameRecord(tx, tx.commitLSN+48)
	}
}

// TestFrameRecord: a transaction's frame lists its partitions' counts in
// topic and partition order, whatever the order of the map they come
// from, and its record decodes to that frame after the schema ID.
func TestFrameRecord(t *testing.T) {
	dec, err := schemas.DecoderCompileFrame(schemas.FrameSchema())
	if err != nil {
		t.Fatal(err)
	}
	s := &session{cfg: &Config{}, txTopic: "p.transactions", frameID: 7}
	for i := 0; i < 50; i++ {
		tx := &txState{xid: 9, commitLSN: 0x1000, commitTime: time.Unix(1_700_000_000, 0).UTC(), origin: "site_b", pos: 12, counts: map[tpKey]int64{}}
		want := []schemas.PartitionCount{{Topic: "p.public.a", Partition: 0, Count: 1}, {Topic: "p.public.a", Partition: 2, Count: 2}, {Topic: "p.public.a", Partition: 10, Count: 3}, {Topic: "p.public.b", Partition: 1, Count: 4}, {Topic: "p.public.bb", Partition: 0, Count: 2}}
		for _, c := range want {
			tx.counts[tpKey{c.Topic, c.Partition}] = c.Count
		}
		f, r := s.frameRecord(tx, 0x1100)
		if r.Topic != "p.transactions" || r.Partition != 0 {
			t.Fatalf("record %s/%d", r.Topic, r.Partition)
		}
		got, err := dec.Decode(r.Value[5:])
		if err != nil {
			t.Fatal(err)
		}
		if got.Xid != 9 || got.CommitLSN != 0x1000 || got.EndLSN != 0x1100 || got.Origin != "site_b" || got.Events != 12 ||
			!got.CommitTime.Equal(tx.commitTime) || !slices.Equal(got.Partitions, want) || !slices.Equal(f.Partitions, want) {
			t.Fatalf("frame %+v, decoded %+v, want partitions %v", f, got, want)
		}
	}
}
