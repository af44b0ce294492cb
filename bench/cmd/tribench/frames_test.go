package main

import (
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog/txlogtest"
)

// TestFramesOfTheRunner checks the runner's two readers of a transactions
// topic on the embedded broker: LastFrame skips a trailing aborted frame,
// and watchFrames sees the stream frames committed after it started (not
// snapshot chunks, not aborted frames, not heartbeats).
func TestFramesOfTheRunner(t *testing.T) {
	l := txlogtest.Start(t)
	ctx := l.Ctx()
	k := &Kafka{Brokers: l.Addr}
	const topic = "bench.transactions"
	l.CreateTopic(topic)
	if f, err := k.LastFrame(ctx, topic); err != nil || f != nil {
		t.Fatalf("LastFrame of an empty topic = %v, %v", f, err)
	}
	write := func(lsn uint64, commit, snapshot bool) {
		t.Helper()
		f := schemas.Frame{Xid: uint32(lsn), CommitLSN: pglogrepl.LSN(lsn), EndLSN: pglogrepl.LSN(lsn + 1), CommitTime: time.Now(), Events: 1}
		if snapshot {
			f.Snapshot = &schemas.SnapshotChunk{Table: "public.t"}
		}
		l.Txn(commit, txlogtest.Frame(topic, 1, &f))
	}
	write(1, true, false)
	write(2, true, false)
	write(3, false, false)
	if f, err := k.LastFrame(ctx, topic); err != nil || f == nil || f.CommitLSN != 2 {
		t.Fatalf("LastFrame = %+v, %v; want commit 2", f, err)
	}
	b := &Bench{kafka: k}
	w, err := b.watchFrames(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	write(4, true, true)
	write(5, true, false)
	write(6, false, false)
	write(7, true, false)
	heartbeat := schemas.Frame{CommitLSN: 8, EndLSN: 9, CommitTime: time.Now()} // no events
	l.Txn(true, txlogtest.Frame(topic, 1, &heartbeat))
	deadline := time.Now().Add(10 * time.Second)
	for {
		if f, err := k.LastFrame(ctx, topic); err == nil && f != nil && f.CommitLSN == 8 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("frame 8 never became the last frame")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for w.Seen() < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // room for a wrongly noted heartbeat to show
	seen := w.Stop()
	if len(seen) != 2 || seen[0].lat < 0 || seen[1].lat < 0 {
		t.Fatalf("watchFrames saw %+v, want frames 5 and 7", seen)
	}
}
