package main

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/deploy/embedded"
	"github.com/tributary-cdc/tributary/schemas"
)

// TestFramesOfTheRunner checks the runner's two readers of a transactions
// topic on the embedded broker: LastFrame skips a trailing aborted frame,
// and watchFrames sees the stream frames committed after it started (not
// snapshot chunks, not aborted frames).
func TestFramesOfTheRunner(t *testing.T) {
	st, err := embedded.Start(embedded.Config{Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	k := &Kafka{Brokers: st.KafkaAddr}
	const topic = "bench.transactions"
	if err := k.CreateTopic(ctx, topic, 1); err != nil {
		t.Fatal(err)
	}
	if f, err := k.LastFrame(ctx, topic); err != nil || f != nil {
		t.Fatalf("LastFrame of an empty topic = %v, %v", f, err)
	}
	w, err := k.Client(kgo.TransactionalID("bench-test"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	write := func(lsn uint64, commit, snapshot bool) {
		t.Helper()
		f := schemas.Frame{Xid: uint32(lsn), CommitLSN: pglogrepl.LSN(lsn), EndLSN: pglogrepl.LSN(lsn + 1), CommitTime: time.Now()}
		if snapshot {
			f.Snapshot = &schemas.SnapshotChunk{Table: "public.t"}
		}
		if err := w.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		rec := &kgo.Record{Topic: topic, Value: schemas.EncoderAppendFrame(schemas.AppendHeader(nil, 1), &f)}
		if err := w.ProduceSync(ctx, rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := w.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}
	write(1, true, false)
	write(2, true, false)
	write(3, false, false)
	if f, err := k.LastFrame(ctx, topic); err != nil || f == nil || f.CommitLSN != 2 {
		t.Fatalf("LastFrame = %+v, %v; want commit 2", f, err)
	}
	b := &Bench{kafka: k}
	stop, err := b.watchFrames(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	write(4, true, true)
	write(5, true, false)
	write(6, false, false)
	write(7, true, false)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if f, err := k.LastFrame(ctx, topic); err == nil && f != nil && f.CommitLSN == 7 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("frame 7 never became the last frame")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // the watcher's fetch wait is 50 ms
	seen := stop()
	if len(seen) != 2 || seen[0].lat < 0 || seen[1].lat < 0 {
		t.Fatalf("watchFrames saw %+v, want frames 5 and 7", seen)
	}
}
