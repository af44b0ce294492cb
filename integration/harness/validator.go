package harness

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog"
)

// Event is one decoded data record.
type Event struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       map[string]any // nil for truncate
	Op        schemas.Op
	Before    map[string]any
	After     map[string]any
	Toast     []string
	CommitLSN pglogrepl.LSN
	Position  int64
	Pending   bool // the tributary.snapshot header says pending
	Value     map[string]any
}

// Txn is one frame with the events it counts, in Kafka order.
type Txn struct {
	Frame  schemas.Frame
	Offset int64
	Events []Event
}

// Log is everything a producer wrote under one prefix, as read_committed
// readers see it.
type Log struct {
	Txns []Txn
}

// ReadLog reads the transactions topic and every partition its frames name,
// decodes them through the registry, and checks the contract's invariants,
// failing the test on any breach:
//   - chunk frames of the initial snapshot come first, at its consistent
//     point; then stream frames (online snapshot chunks among them) in
//     strictly increasing commit LSN order, so no source transaction
//     appears twice;
//   - each frame's per-partition counts are exactly the records that follow
//     on each partition, and no record is left unframed;
//   - every record's commit LSN header and tx position match its frame.
//
// Call it when no producer is writing under prefix, or a commit between the
// reads of the frames and of the data looks like an unframed record.
func ReadLog(t testing.TB, k *Kafka, reg *schemas.Registry, prefix string) *Log {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	frames := readFrames(ctx, t, k, txlog.NewFrameDecoder(reg), prefix)
	byTP := map[string][]*kgo.Record{}
	topics := map[string]bool{}
	for _, fr := range frames {
		for _, p := range fr.Partitions {
			topics[p.Topic] = true
		}
	}
	for tp := range topics {
		for _, r := range ReadTopic(ctx, t, k, tp) {
			key := tp + "/" + strconv.Itoa(int(r.Partition))
			byTP[key] = append(byTP[key], r)
		}
	}
	pos := map[string]int{}
	var log Log
	var prevStream, prevSnap pglogrepl.LSN
	var prevFrame *frameAt // the last stream frame, for the message below
	for _, fr := range frames {
		f := fr.Frame
		// A chunk of the initial snapshot ends at the consistent point and
		// commits one below it; an online chunk is the frame of its high
		// watermark's transaction, in stream order.
		if initial := f.InitialChunk(); !initial {
			if f.CommitLSN <= prevStream || f.CommitLSN < prevSnap {
				prev := "none"
				if prevFrame != nil {
					prev = describeFrame(prevFrame)
				}
				t.Fatalf("frame at offset %d: commit LSN %s not above previous %s (duplicate or out of order): %s; previous stream frame: %s",
					fr.offset, f.CommitLSN, max(prevStream, prevSnap), describeFrame(&fr), prev)
			}
			prevStream, prevFrame = f.CommitLSN, &fr
		} else {
			if prevStream != 0 {
				t.Fatalf("initial snapshot frame at offset %d after stream frames", fr.offset)
			}
			if f.EndLSN != f.CommitLSN+1 {
				t.Fatalf("initial snapshot frame at offset %d: commit LSN %s, end LSN %s: want the consistent point as its end and one below as its commit",
					fr.offset, f.CommitLSN, f.EndLSN)
			}
			if f.CommitLSN < prevSnap {
				t.Fatalf("snapshot frame at offset %d: consistent point %s below the previous chunk's %s", fr.offset, f.EndLSN, prevSnap+1)
			}
			prevSnap = f.CommitLSN
		}
		txn := Txn{Frame: f, Offset: fr.offset}
		var total int64
		for _, pc := range f.Partitions {
			key := pc.Topic + "/" + strconv.Itoa(int(pc.Partition))
			recs := byTP[key]
			if pos[key]+int(pc.Count) > len(recs) {
				t.Fatalf("frame xid %d commit %s counts %d records on %s, only %d remain", f.Xid, f.CommitLSN, pc.Count, key, len(recs)-pos[key])
			}
			for _, dr := range recs[pos[key] : pos[key]+int(pc.Count)] {
				ev := decodeEvent(ctx, t, reg, dr)
				if ev.CommitLSN != f.CommitLSN {
					t.Fatalf("%s@%d: commit LSN %s, its frame says %s", key, dr.Offset, ev.CommitLSN, f.CommitLSN)
				}
				txn.Events = append(txn.Events, ev)
			}
			pos[key] += int(pc.Count)
			total += pc.Count
		}
		if total != f.Events {
			t.Fatalf("frame xid %d: partition counts sum to %d, event_count is %d", f.Xid, total, f.Events)
		}
		sort.Slice(txn.Events, func(i, j int) bool { return txn.Events[i].Position < txn.Events[j].Position })
		for i, ev := range txn.Events {
			if ev.Position != int64(i) {
				t.Fatalf("frame xid %d commit %s: positions are not 0..%d (got %d at %d)", f.Xid, f.CommitLSN, len(txn.Events)-1, ev.Position, i)
			}
		}
		if !IsHeartbeat(f) {
			log.Txns = append(log.Txns, txn)
		}
	}
	for key, recs := range byTP {
		if pos[key] != len(recs) {
			t.Fatalf("%s: %d records are not counted by any frame", key, len(recs)-pos[key])
		}
	}
	return &log
}

// CountFrames returns how many frames the transactions topic holds now,
// heartbeats left out (see IsHeartbeat). It decodes them with the built-in
// frame schema (it has no registry).
func CountFrames(t testing.TB, k *Kafka, prefix string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n := 0
	for _, f := range readFrames(ctx, t, k, txlog.NewBuiltinFrameDecoder(), prefix) {
		if !IsHeartbeat(f.Frame) {
			n++
		}
	}
	return n
}

// IsHeartbeat reports whether f is the frame of a producer heartbeat
// (schemas.Frame.Heartbeat). ReadLog checks heartbeats like any frame and
// leaves them out of Log.Txns, which then holds one entry per source
// transaction.
func IsHeartbeat(f schemas.Frame) bool { return f.Heartbeat() }

// frameAt is a frame and its offset in the transactions topic.
type frameAt struct {
	schemas.Frame
	offset int64
}

// readFrames reads every committed frame of prefix's transactions topic,
// from its log start to its last stable offset, through txlog.
func readFrames(ctx context.Context, t testing.TB, k *Kafka, dec *txlog.FrameDecoder, prefix string) []frameAt {
	t.Helper()
	fr := txlog.NewFrames(k.Opts(), k.Admin(t), dec, schemas.TransactionsTopic(prefix))
	b, err := fr.Bounds(ctx)
	if err != nil {
		t.Fatalf("bounds of %s: %v", fr.Topic(), err)
	}
	var out []frameAt
	if err := fr.Scan(ctx, b.Start, b.End, func(off int64, f schemas.Frame) error {
		out = append(out, frameAt{Frame: f, offset: off})
		return nil
	}); err != nil {
		t.Fatalf("reading %s: %v", fr.Topic(), err)
	}
	return out
}

// Events returns all events of the log in commit order.
func (l *Log) Events() []Event {
	var out []Event
	for _, tx := range l.Txns {
		out = append(out, tx.Events...)
	}
	return out
}

// ReadTopic reads the committed records of every partition of a data topic,
// up to each partition's high watermark as it was when the read started: a
// transaction still open there, or whose commit marker has not reached the
// partition yet, is waited for, so that its records are not missed when
// their frame is already committed. (The frames themselves are read with
// txlog, up to the transactions topic's last stable offset.)
func ReadTopic(ctx context.Context, t testing.TB, k *Kafka, topic string) []*kgo.Record {
	t.Helper()
	adm := k.Admin(t)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("end offsets of %s: %v", topic, err)
	}
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
		}
	})
	if len(want) == 0 {
		return nil
	}
	cl := k.Client(t, kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var out []*kgo.Record
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s: %v (still waiting for %v)", topic, ctx.Err(), want)
		}
		fs.EachError(func(tp string, p int32, err error) { t.Fatalf("fetch %s[%d]: %v", tp, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			if !r.Attrs.IsControl() {
				out = append(out, r)
			}
			if end, ok := want[r.Partition]; ok && r.Offset >= end-1 {
				delete(want, r.Partition)
			}
		})
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Partition != out[j].Partition {
			return out[i].Partition < out[j].Partition
		}
		return out[i].Offset < out[j].Offset
	})
	return out
}

func decodeWire(ctx context.Context, t testing.TB, reg *schemas.Registry, r *kgo.Record, b []byte) any {
	t.Helper()
	id, body, err := schemas.SplitWire(b)
	if err != nil {
		t.Fatalf("%s[%d]@%d: %v", r.Topic, r.Partition, r.Offset, err)
	}
	c, err := reg.Codec(ctx, id)
	if err != nil {
		t.Fatalf("%s[%d]@%d: %v", r.Topic, r.Partition, r.Offset, err)
	}
	native, rest, err := c.NativeFromBinary(body)
	if err != nil || len(rest) != 0 {
		t.Fatalf("%s[%d]@%d: decode: %v (%d bytes left)", r.Topic, r.Partition, r.Offset, err, len(rest))
	}
	return native
}

func decodeEvent(ctx context.Context, t testing.TB, reg *schemas.Registry, r *kgo.Record) Event {
	t.Helper()
	ev := Event{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset}
	for _, h := range r.Headers {
		switch h.Key {
		case schemas.HeaderCommitLSN:
			v, _ := strconv.ParseUint(string(h.Value), 10, 64)
			ev.CommitLSN = pglogrepl.LSN(v)
		case schemas.HeaderPosition:
			ev.Position, _ = strconv.ParseInt(string(h.Value), 10, 64)
		case schemas.HeaderSnapshot:
			ev.Pending = string(h.Value) == "pending"
		}
	}
	if r.Key != nil {
		// Key fields are unions where the column is nullable or has the
		// text branch (schemas/TYPES.md); Key holds the values.
		if k, ok := decodeWire(ctx, t, reg, r, r.Key).(map[string]any); ok {
			ev.Key = unwrapRow(k)
		}
	}
	v, ok := decodeWire(ctx, t, reg, r, r.Value).(map[string]any)
	if !ok {
		t.Fatalf("%s[%d]@%d: value is not a record", r.Topic, r.Partition, r.Offset)
	}
	ev.Value = v
	if op, ok := v["op"].(string); ok {
		ev.Op = schemas.Op(op)
	}
	if b, ok := schemas.UnwrapUnion(v["before"]).(map[string]any); ok {
		ev.Before = unwrapRow(b)
	}
	if a, ok := schemas.UnwrapUnion(v["after"]).(map[string]any); ok {
		ev.After = unwrapRow(a)
	}
	if tx, ok := v["tx"].(map[string]any); ok {
		if p := tx["position"].(int64); p != ev.Position {
			t.Fatalf("%s[%d]@%d: header position %d, tx.position %d", r.Topic, r.Partition, r.Offset, ev.Position, p)
		}
	}
	if src, ok := v["source"].(map[string]any); ok {
		if c := pglogrepl.LSN(src["commit_lsn"].(int64)); c != ev.CommitLSN {
			t.Fatalf("%s[%d]@%d: header commit LSN %s, source.commit_lsn %s", r.Topic, r.Partition, r.Offset, ev.CommitLSN, c)
		}
	}
	if ut, ok := v["unchanged_toast"].([]any); ok { // message records have none
		for _, x := range ut {
			ev.Toast = append(ev.Toast, x.(string))
		}
	}
	return ev
}

func unwrapRow(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = schemas.UnwrapUnion(v)
	}
	return out
}

// String renders a transaction briefly for failure messages.
func (tx Txn) String() string {
	return fmt.Sprintf("xid %d commit %s (%d events)", tx.Frame.Xid, tx.Frame.CommitLSN, len(tx.Events))
}

// describeFrame names a frame in a failure message: offset, xid, LSNs,
// events, and whether it is a heartbeat or a snapshot chunk.
func describeFrame(fr *frameAt) string {
	f := fr.Frame
	kind := "transaction"
	switch {
	case IsHeartbeat(f):
		kind = "heartbeat"
	case f.Snapshot != nil:
		kind = "snapshot chunk " + f.Snapshot.Schema + "." + f.Snapshot.Table
	}
	return fmt.Sprintf("offset %d %s xid %d commit %s end %s events %d at %s", fr.offset, kind, f.Xid, f.CommitLSN, f.EndLSN, f.Events, f.CommitTime.UTC().Format(time.RFC3339Nano))
}
