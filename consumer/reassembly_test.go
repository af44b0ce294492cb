package consumer

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/schemas"
)

// The reassembler is driven here by fakeKafka, with plain records: no broker.

const testTxTopic = "p.transactions"

var testTxStream = Stream{Kind: StreamTransactions, Topic: testTxTopic}

func dataStream(topic string, p int32) Stream {
	return Stream{Kind: StreamData, Topic: topic, Partition: p}
}

func dataRecord(s Stream, off int64, lsn pglogrepl.LSN, pos int64) *kgo.Record {
	return &kgo.Record{Topic: s.Topic, Partition: s.Partition, Offset: off, Headers: []kgo.RecordHeader{
		{Key: schemas.HeaderCommitLSN, Value: []byte(strconv.FormatUint(uint64(lsn), 10))},
		{Key: schemas.HeaderPosition, Value: []byte(strconv.FormatInt(pos, 10))},
	}}
}

// sized gives r a value of n bytes.
func sized(r *kgo.Record, n int) *kgo.Record {
	r.Value = make([]byte, n)
	return r
}

func markerRecord(s Stream, off int64) *kgo.Record {
	return &kgo.Record{Topic: s.Topic, Partition: s.Partition, Offset: off,
		Attrs: kgo.NewRecordAttrs(kgo.RecordAttrsOpts{Control: true, Transactional: true})}
}

// fakeKafka is the fetcher and frame decoder of a reassembler under test:
// partitions' logs (offset = index, the transactions topic's too), fetched
// in batches of random size and interleaving when rng is set, else all at
// once in order. It records protocol violations (a partition consumed twice,
// paused twice, resumed while not paused) and checks the read-ahead bound
// after every fetch.
type fakeKafka struct {
	logs     map[Stream][]*kgo.Record
	frames   map[int64]schemas.Frame // by transactions-topic offset
	frameErr map[int64]error
	rng      *rand.Rand
	maxBatch int
	refetch  bool             // sometimes fetch a record again
	backOff  bool             // locate returns offsets before the records of the commit LSN
	located  map[Stream]int64 // what locate returns, when set
	// late holds records of a partition whose transaction marker Kafka has
	// not written yet: past the committed end, in a transaction open there,
	// until the clock reaches lateUntil.
	late      map[Stream][]*kgo.Record
	lateUntil time.Time

	next   map[Stream]int64 // fetch position of each partition consumed
	start  map[Stream]int64
	paused map[Stream]bool
	clock  time.Time
	polls  int
	r      *reassembler
	bad    []string
}

func newFakeKafka(logs map[Stream][]*kgo.Record, frames map[int64]schemas.Frame) *fakeKafka {
	return &fakeKafka{logs: logs, frames: frames, frameErr: map[int64]error{}, maxBatch: 1 << 30,
		next: map[Stream]int64{}, start: map[Stream]int64{}, paused: map[Stream]bool{}, clock: time.Unix(1700000000, 0)}
}

// reassembler returns a reassembler over f from checkpoint cp, as newReader
// starts one, that stops at the transactions topic's end.
func (f *fakeKafka) reassembler(cp Checkpoint, limit int) *reassembler {
	next, ok := cp.Next[testTxStream]
	if !ok {
		next = -1
	}
	f.next[testTxStream], f.start[testTxStream] = max(next, 0), max(next, 0)
	r := newReassembler(f, f, testTxTopic, limit, cp, next)
	r.now = func() time.Time { return f.clock }
	r.end = int64(len(f.logs[testTxStream]))
	f.r = r
	return r
}

func (f *fakeKafka) streams() []Stream {
	var ss []Stream
	for s := range f.next {
		ss = append(ss, s)
	}
	slices.SortFunc(ss, func(a, b Stream) int {
		return cmp.Or(cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
	return ss
}

func (f *fakeKafka) poll(ctx context.Context, wait time.Duration, add func(*kgo.Record)) (int64, error) {
	if f.polls++; f.polls > 1_000_000 {
		return 0, errors.New("fake: the reassembler polls forever")
	}
	if len(f.late) > 0 && !f.clock.Before(f.lateUntil) {
		for s, recs := range f.late {
			f.logs[s] = append(f.logs[s], recs...)
		}
		f.late = nil
	}
	var ready []Stream
	for _, s := range f.streams() {
		if !f.paused[s] && f.next[s] < int64(len(f.logs[s])) {
			ready = append(ready, s)
		}
	}
	if len(ready) == 0 {
		f.clock = f.clock.Add(wait) // nothing arrives while waiting
		return 0, nil
	}
	var batch []*kgo.Record
	var lso int64
	n := f.maxBatch
	if f.rng != nil {
		n = 1 + f.rng.IntN(f.maxBatch)
	}
	for i := 0; i < n && len(ready) > 0; i++ {
		k := 0
		if f.rng != nil {
			k = f.rng.IntN(len(ready))
		}
		s := ready[k]
		off := f.next[s]
		if f.refetch && off > f.start[s] && f.rng.IntN(30) == 0 {
			batch = append(batch, f.logs[s][off-1-int64(f.rng.IntN(int(min(3, off-f.start[s]))))])
		}
		batch = append(batch, f.logs[s][off])
		f.next[s]++
		if s == testTxStream {
			lso = int64(len(f.logs[s]))
		}
		if f.next[s] == int64(len(f.logs[s])) {
			ready = slices.Delete(ready, k, k+1)
		}
	}
	for _, rec := range batch {
		add(rec)
	}
	// Fetched records beyond a paused partition's bound are those of the
	// fetch that filled it; beyond the bound of all data partitions, those
	// of one fetch per partition.
	var buffered readAheadBound
	for _, p := range f.r.parts {
		buffered.records += p.pending()
		buffered.bytes += p.size
	}
	paused := 0
	for _, p := range f.r.parts {
		if f.paused[p.s] {
			paused++
		}
	}
	if ra := f.r.readAhead(); ra != (ReadAhead{buffered.records, buffered.bytes, paused}) {
		f.bad = append(f.bad, fmt.Sprintf("the data partitions buffer %+v with %d paused, the reassembler reports %+v", buffered, paused, ra))
	}
	if t, slack := f.r.total, len(f.r.parts)*f.maxBatch; t.records > 0 && buffered.records > t.records+slack ||
		t.bytes > 0 && buffered.bytes > t.bytes+slack*maxTestValue {
		f.bad = append(f.bad, fmt.Sprintf("the data partitions buffer %+v, bound %+v and one fetch of %d records per partition",
			buffered, t, f.maxBatch))
	}
	for _, p := range append([]*part{f.r.tx}, mapValues(f.r.parts)...) {
		if p.pending() > f.r.limit+f.maxBatch {
			f.bad = append(f.bad, fmt.Sprintf("%v buffers %d records, limit %d", p.s, p.pending(), f.r.limit))
		}
		if p.paused && p.pending() == 0 {
			f.bad = append(f.bad, fmt.Sprintf("%v is paused with nothing buffered", p.s))
		}
		if p.paused != f.paused[p.s] {
			f.bad = append(f.bad, fmt.Sprintf("%v paused %v, fetches paused %v", p.s, p.paused, f.paused[p.s]))
		}
	}
	return lso, nil
}

func mapValues[K comparable, V any](m map[K]V) []V {
	var vs []V
	for _, v := range m {
		vs = append(vs, v)
	}
	return vs
}

func (f *fakeKafka) consume(s Stream, at int64) {
	if _, ok := f.next[s]; ok {
		f.bad = append(f.bad, fmt.Sprintf("%v consumed twice", s))
	}
	f.next[s], f.start[s] = at, at
}

func (f *fakeKafka) pause(s Stream) {
	if f.paused[s] {
		f.bad = append(f.bad, fmt.Sprintf("%v paused twice", s))
	}
	f.paused[s] = true
}

func (f *fakeKafka) resume(s Stream) {
	if !f.paused[s] {
		f.bad = append(f.bad, fmt.Sprintf("%v resumed while not paused", s))
	}
	f.paused[s] = false
}

func (f *fakeKafka) committedEnd(_ context.Context, s Stream) (int64, bool, bool) {
	return int64(len(f.logs[s])), len(f.late[s]) > 0, true
}

// locate finds the first record of commit LSN lsn or later; with backOff,
// an offset before it, as txlog.PositionFor may.
func (f *fakeKafka) locate(_ context.Context, s Stream, lsn pglogrepl.LSN, _ time.Time) (int64, error) {
	if off, ok := f.located[s]; ok {
		return off, nil
	}
	log := f.logs[s]
	i := slices.IndexFunc(log, func(r *kgo.Record) bool {
		l, ok := headerLSN(r)
		return !r.Attrs.IsControl() && ok && l >= lsn
	})
	if i < 0 {
		i = len(log)
	}
	if f.backOff && f.rng != nil {
		i -= f.rng.IntN(i + 1)
	}
	return int64(i), nil
}

func (f *fakeKafka) frame(_ context.Context, rec *kgo.Record) (schemas.Frame, error) {
	if err := f.frameErr[rec.Offset]; err != nil {
		return schemas.Frame{}, err
	}
	fr, ok := f.frames[rec.Offset]
	if !ok {
		return schemas.Frame{}, Permanent(fmt.Errorf("fake: no frame at offset %d", rec.Offset))
	}
	return fr, nil
}

// genTxn is a source transaction of a generated stream.
type genTxn struct {
	offset int64 // its frame's
	lsn    pglogrepl.LSN
	recs   []*kgo.Record // in position order
}

// generate writes n source transactions (some heartbeats) across the data
// partitions ss, each record in its partition's log in position order, with
// transaction markers between them at random, as a transactional producer
// does.
func generate(rng *rand.Rand, n int, ss []Stream) (map[Stream][]*kgo.Record, map[int64]schemas.Frame, []genTxn) {
	logs := map[Stream][]*kgo.Record{}
	frames := map[int64]schemas.Frame{}
	var txns []genTxn
	appendTo := func(s Stream, mk func(off int64) *kgo.Record) *kgo.Record {
		rec := mk(int64(len(logs[s])))
		logs[s] = append(logs[s], rec)
		return rec
	}
	for i := range n {
		lsn := pglogrepl.LSN(100 * (i + 1))
		f := schemas.Frame{Xid: uint32(i + 1), CommitLSN: lsn, EndLSN: lsn + 10, CommitTime: time.Unix(int64(1700000000+i), 0)}
		t := genTxn{lsn: lsn}
		if rng.IntN(10) == 0 {
			f.Xid = 0 // a heartbeat
		} else {
			counts := map[Stream]int64{}
			for pos := range int64(1 + rng.IntN(12)) {
				s := ss[rng.IntN(len(ss))]
				t.recs = append(t.recs, appendTo(s, func(off int64) *kgo.Record { return sized(dataRecord(s, off, lsn, pos), rng.IntN(maxTestValue)) }))
				counts[s]++
			}
			if s := ss[rng.IntN(len(ss))]; rng.IntN(5) == 0 && counts[s] == 0 {
				counts[s] = 0 // a partition listed with no record
			}
			for _, s := range ss {
				if c, ok := counts[s]; ok {
					f.Partitions = append(f.Partitions, schemas.PartitionCount{Topic: s.Topic, Partition: s.Partition, Count: c})
					f.Events += c
				}
			}
			rng.Shuffle(len(f.Partitions), func(a, b int) { f.Partitions[a], f.Partitions[b] = f.Partitions[b], f.Partitions[a] })
		}
		fr := appendTo(testTxStream, func(off int64) *kgo.Record {
			return &kgo.Record{Topic: testTxTopic, Offset: off, Timestamp: f.CommitTime}
		})
		t.offset = fr.Offset
		frames[fr.Offset] = f
		txns = append(txns, t)
		if rng.IntN(3) != 0 {
			for _, s := range append([]Stream{testTxStream}, ss...) {
				if rng.IntN(2) == 0 {
					appendTo(s, func(off int64) *kgo.Record { return markerRecord(s, off) })
				}
			}
		}
	}
	return logs, frames, txns
}

// maxTestValue bounds the size of a generated record's value.
const maxTestValue = 64

var testStreams = []Stream{dataStream("p.public.a", 0), dataStream("p.public.a", 1), dataStream("p.public.b", 0), dataStream("p.messages", 0)}

// readFrame reads the next frame whole, as group.next does.
func readFrame(ctx context.Context, r *reassembler) (*frameCursor, []*kgo.Record, error) {
	if err := r.waitFrame(ctx); err != nil {
		return nil, nil, err
	}
	fc, err := r.openFrame(ctx)
	if err != nil {
		return nil, nil, err
	}
	var recs []*kgo.Record
	for {
		rec, err := fc.next(ctx)
		if err != nil {
			return fc, recs, err
		}
		if rec == nil {
			return fc, recs, nil
		}
		recs = append(recs, rec)
	}
}

type appliedFrame struct {
	offset int64
	recs   []*kgo.Record
}

// TestReassemblyDeliversWholeTransactionsOnce: whatever the fetch batches,
// their interleaving across partitions, the read-ahead limits, records
// fetched twice, where the consumer starts and where it crashes, every
// transaction from the start is applied once, whole, in position order, in
// commit order, and the checkpoint ends past everything.
func TestReassemblyDeliversWholeTransactionsOnce(t *testing.T) {
	ctx := context.Background()
	for seed := uint64(0); seed < 1500; seed++ {
		rng := rand.New(rand.NewPCG(seed, 19))
		logs, frames, txns := generate(rng, 1+rng.IntN(40), testStreams[:1+rng.IntN(len(testStreams))])
		limit, maxBatch := 1+rng.IntN(8), 1+rng.IntN(20)
		byteLimit := 0 // read-ahead in bytes: none, or a bound that a record or two reach
		if rng.IntN(2) == 0 {
			byteLimit = 1 + rng.IntN(128)
		}
		// The read-ahead of all data partitions together: none, or a bound
		// in records, bytes or both, often below a partition's own.
		var total readAheadBound
		if rng.IntN(2) == 0 {
			total.records = rng.IntN(12)
			if rng.IntN(2) == 0 {
				total.bytes = rng.IntN(256)
			}
		}
		durable := Checkpoint{Next: map[Stream]int64{}}
		from := 0
		if rng.IntN(3) == 0 {
			// Start at a frame without data checkpoints (a bootstrap):
			// data partitions are positioned by commit LSN.
			from = rng.IntN(len(txns))
			durable.Next[testTxStream] = txns[from].offset
		}
		var applied []appliedFrame
		var trace []string
		for session := 0; ; session++ {
			if session > 1000 {
				t.Fatalf("seed %d: no end after %d sessions", seed, session)
			}
			f := newFakeKafka(logs, frames)
			f.rng, f.maxBatch, f.refetch, f.backOff = rng, maxBatch, true, true
			cp := Checkpoint{Next: map[Stream]int64{}, CommitLSN: durable.CommitLSN}
			for s, n := range durable.Next {
				cp.Next[s] = n
			}
			r := f.reassembler(cp, limit)
			r.bytes, r.total = byteLimit, total
			crashAfter := -1 // frames until a crash; -1 for none
			if rng.IntN(2) == 0 {
				crashAfter = rng.IntN(10)
			}
			batch, pending, done := Checkpoint{Next: map[Stream]int64{}}, []appliedFrame(nil), false
			for n := 0; ; n++ {
				if n == crashAfter {
					trace = append(trace, fmt.Sprintf("session %d: crash after %d frames, %d uncommitted", session, n, len(pending)))
					break
				}
				fc, recs, err := readFrame(ctx, r)
				done = errors.Is(err, io.EOF)
				if err != nil && !done {
					t.Fatalf("seed %d: %v\n%s", seed, err, strings.Join(trace, "\n"))
				}
				if !done {
					fc.checkpoint(&batch)
					pending = append(pending, appliedFrame{fc.offset, recs})
				}
				if len(pending) > 0 && (done || rng.IntN(3) == 0) {
					// Apply commits the batch and its checkpoint.
					durable.merge(batch)
					r.cp.merge(batch)
					applied = append(applied, pending...)
					trace = append(trace, fmt.Sprintf("session %d: committed %d frames: %v", session, len(pending), batch.Next))
					batch, pending = Checkpoint{Next: map[Stream]int64{}}, nil
				}
				if done {
					break
				}
			}
			if len(f.bad) > 0 {
				t.Fatalf("seed %d: %s\n%s", seed, strings.Join(f.bad, "\n"), strings.Join(trace, "\n"))
			}
			if done {
				break
			}
		}
		want := txns[from:]
		if len(applied) != len(want) {
			t.Fatalf("seed %d: %d frames applied, want %d\n%s", seed, len(applied), len(want), strings.Join(trace, "\n"))
		}
		for i, a := range applied {
			w := want[i]
			if a.offset != w.offset || !slices.Equal(a.recs, w.recs) {
				t.Fatalf("seed %d: frame %d applied at offset %d with records %s, want offset %d with %s\n%s",
					seed, i, a.offset, recordList(a.recs), w.offset, recordList(w.recs), strings.Join(trace, "\n"))
			}
		}
		if _, ok := durable.Next[testTxStream]; !ok {
			t.Fatalf("seed %d: no transactions checkpoint", seed)
		}
		// Every checkpoint entry is past the partition's last record (only
		// transaction markers may follow it), and not past its end.
		for s, n := range durable.Next {
			log := logs[s]
			last := len(log) - 1
			for last >= 0 && log[last].Attrs.IsControl() {
				last--
			}
			if n <= int64(last) || n > int64(len(log)) {
				t.Fatalf("seed %d: %v checkpoint %d, want past its last record %d, at most its end %d", seed, s, n, last, len(log))
			}
		}
	}
}

func recordList(recs []*kgo.Record) string {
	var b strings.Builder
	for _, r := range recs {
		fmt.Fprintf(&b, " %s/%d@%d", r.Topic, r.Partition, r.Offset)
	}
	return "[" + strings.TrimSpace(b.String()) + "]"
}

// renumber makes a log's offsets its indexes again after an edit.
func renumber(log []*kgo.Record) []*kgo.Record {
	out := make([]*kgo.Record, len(log))
	for i, r := range log {
		c := *r
		c.Offset = int64(i)
		out[i] = &c
	}
	return out
}

// TestReassemblyReportsMissingAndStrayRecords: a record missing from a
// partition, a record no frame counts, or two records of a transaction out
// of position order stop the reassembly with a structural ErrMismatch
// naming the topic, partition and offset, before the transaction they
// belong to is complete; every transaction before it is read whole.
func TestReassemblyReportsMissingAndStrayRecords(t *testing.T) {
	ctx := context.Background()
	for seed := uint64(0); seed < 1500; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		logs, frames, txns := generate(rng, 2+rng.IntN(30), testStreams[:1+rng.IntN(len(testStreams))])
		// Pick a data record to corrupt the stream at.
		var ss []Stream
		for _, s := range testStreams {
			if slices.ContainsFunc(logs[s], func(r *kgo.Record) bool { return !r.Attrs.IsControl() }) {
				ss = append(ss, s)
			}
		}
		if len(ss) == 0 {
			continue // heartbeats only
		}
		s := ss[rng.IntN(len(ss))]
		log := logs[s]
		var at []int
		for i, r := range log {
			if !r.Attrs.IsControl() {
				at = append(at, i)
			}
		}
		j := at[rng.IntN(len(at))]
		lsn, _ := headerLSN(log[j])
		failing := slices.IndexFunc(txns, func(t genTxn) bool { return t.lsn == lsn })
		var kind string
		var wantOffset int64 // of the record the error names; -1: the partition's committed end
		switch rng.IntN(3) {
		case 0:
			kind = "missing"
			log = renumber(slices.Delete(slices.Clone(log), j, j+1))
			wantOffset = -1
			if k := slices.IndexFunc(log, func(r *kgo.Record) bool { l, ok := headerLSN(r); return ok && l > lsn }); k >= 0 {
				wantOffset = int64(k) // the next transaction's record, taken for the missing one
			}
		case 1:
			kind = "stray"
			stray := dataRecord(s, 0, lsn+1, 0) // a commit LSN no frame has
			log = renumber(slices.Insert(slices.Clone(log), j, stray))
			wantOffset = int64(j)
		default:
			// Two records of one transaction in the partition, swapped.
			k := slices.IndexFunc(log[j+1:], func(r *kgo.Record) bool { l, ok := headerLSN(r); return ok && l == lsn })
			if k < 0 {
				continue
			}
			kind = "swapped"
			log = renumber(slices.Clone(log))
			log[j], log[j+1+k] = log[j+1+k], log[j]
			log = renumber(log)
			wantOffset = int64(j + 1 + k)
		}
		logs[s] = log
		f := newFakeKafka(logs, frames)
		f.rng, f.maxBatch, f.refetch = rng, 1+rng.IntN(20), true
		r := f.reassembler(Checkpoint{}, 1+rng.IntN(8))
		var err error
		var done []int64
		for {
			var fc *frameCursor
			fc, _, err = readFrame(ctx, r)
			if err != nil {
				break
			}
			done = append(done, fc.offset)
			fc.checkpoint(&r.cp)
		}
		what := fmt.Sprintf("seed %d: %s record at %v offset %d, in transaction %d", seed, kind, s, j, failing)
		if !errors.Is(err, ErrMismatch) || !isStructural(err) || !IsPermanent(err) {
			t.Fatalf("%s: %v, want a structural ErrMismatch", what, err)
		}
		for i, off := range done {
			if off != txns[i].offset || i >= failing {
				t.Fatalf("%s: frames %v read whole; want those before transaction %d", what, done, failing)
			}
		}
		if len(done) != failing {
			t.Fatalf("%s: stopped after %d frames, want %d: %v", what, len(done), failing, err)
		}
		var ee *EventError
		var fe *FrameError
		switch {
		case wantOffset >= 0 && errors.As(err, &ee):
			if ee.Topic != s.Topic || ee.Partition != s.Partition || ee.Offset != wantOffset || ee.FrameOffset != txns[failing].offset {
				t.Fatalf("%s: %v, want it named offset %d and frame %d", what, err, wantOffset, txns[failing].offset)
			}
		case wantOffset < 0 && errors.As(err, &fe):
			if fe.Offset != txns[failing].offset || !strings.Contains(err.Error(), fmt.Sprintf("in %s partition %d", s.Topic, s.Partition)) {
				t.Fatalf("%s: %v, want it named the frame at %d and the partition", what, err, txns[failing].offset)
			}
		default:
			t.Fatalf("%s: %v (%T), want an error naming offset %d", what, err, err, wantOffset)
		}
	}
}

// TestReassemblerBuffering: what one fetched record does to its partition's
// read state.
func TestReassemblerBuffering(t *testing.T) {
	s := dataStream("p.public.a", 0)
	type want struct {
		appended, seen int64
		pending        int
		paused         bool
	}
	for _, tc := range []struct {
		name      string
		start     int64 // the partition's first offset to read
		skipBelow uint64
		limit     int
		bytes     int // read-ahead in bytes; 0 for no bound
		recs      []*kgo.Record
		take      int // records taken after the fetch
		want      want
	}{
		{name: "records buffer in offset order", start: 0, limit: 10,
			recs: []*kgo.Record{dataRecord(s, 0, 100, 0), dataRecord(s, 1, 100, 1)},
			want: want{appended: 2, seen: 2, pending: 2}},
		{name: "a transaction marker moves seen only", start: 0, limit: 10,
			recs: []*kgo.Record{dataRecord(s, 0, 100, 0), markerRecord(s, 1)},
			want: want{appended: 1, seen: 2, pending: 1}},
		{name: "a record fetched again is dropped", start: 0, limit: 10,
			recs: []*kgo.Record{dataRecord(s, 0, 100, 0), dataRecord(s, 1, 100, 1), dataRecord(s, 0, 100, 0)},
			want: want{appended: 2, seen: 2, pending: 2}},
		{name: "a record below the start is dropped", start: 5, limit: 10,
			recs: []*kgo.Record{dataRecord(s, 3, 100, 0)},
			want: want{appended: 5, seen: 5}},
		{name: "records below skipBelow at the head are dropped", start: 0, skipBelow: 200, limit: 10,
			recs: []*kgo.Record{dataRecord(s, 0, 100, 0), markerRecord(s, 1), dataRecord(s, 2, 200, 0), dataRecord(s, 3, 100, 9)},
			want: want{appended: 4, seen: 4, pending: 2}},
		{name: "a full read-ahead pauses", start: 0, limit: 2,
			recs: []*kgo.Record{dataRecord(s, 0, 100, 0), dataRecord(s, 1, 100, 1), dataRecord(s, 2, 100, 2)},
			want: want{appended: 3, seen: 3, pending: 3, paused: true}},
		{name: "taking above half the limit stays paused", start: 0, limit: 4,
			recs: []*kgo.Record{dataRecord(s, 0, 100, 0), dataRecord(s, 1, 100, 1), dataRecord(s, 2, 100, 2),
				dataRecord(s, 3, 100, 3), dataRecord(s, 4, 100, 4)},
			take: 2, want: want{appended: 5, seen: 5, pending: 3, paused: true}},
		{name: "taking down to half the limit resumes", start: 0, limit: 4,
			recs: []*kgo.Record{dataRecord(s, 0, 100, 0), dataRecord(s, 1, 100, 1), dataRecord(s, 2, 100, 2),
				dataRecord(s, 3, 100, 3), dataRecord(s, 4, 100, 4)},
			take: 3, want: want{appended: 5, seen: 5, pending: 2}},
		{name: "a full read-ahead in bytes pauses", start: 0, limit: 100, bytes: 3000,
			recs: []*kgo.Record{sized(dataRecord(s, 0, 100, 0), 1000), sized(dataRecord(s, 1, 100, 1), 1000), sized(dataRecord(s, 2, 100, 2), 1000)},
			want: want{appended: 3, seen: 3, pending: 3, paused: true}},
		{name: "taking above half the bytes stays paused", start: 0, limit: 100, bytes: 3000,
			recs: []*kgo.Record{sized(dataRecord(s, 0, 100, 0), 1000), sized(dataRecord(s, 1, 100, 1), 1000), sized(dataRecord(s, 2, 100, 2), 1000)},
			take: 1, want: want{appended: 3, seen: 3, pending: 2, paused: true}},
		{name: "taking down to half the bytes resumes", start: 0, limit: 100, bytes: 3000,
			recs: []*kgo.Record{sized(dataRecord(s, 0, 100, 0), 1000), sized(dataRecord(s, 1, 100, 1), 1000), sized(dataRecord(s, 2, 100, 2), 1000)},
			take: 2, want: want{appended: 3, seen: 3, pending: 1}},
		{name: "a record larger than the bytes bound pauses until it is taken", start: 0, limit: 100, bytes: 500,
			recs: []*kgo.Record{sized(dataRecord(s, 0, 100, 0), 1000)},
			want: want{appended: 1, seen: 1, pending: 1, paused: true}},
		{name: "taking the record larger than the bound resumes", start: 0, limit: 100, bytes: 500,
			recs: []*kgo.Record{sized(dataRecord(s, 0, 100, 0), 1000)},
			take: 1, want: want{appended: 1, seen: 1}},
		{name: "a count bound reached first pauses under the bytes bound", start: 0, limit: 2, bytes: 1 << 20,
			recs: []*kgo.Record{sized(dataRecord(s, 0, 100, 0), 10), sized(dataRecord(s, 1, 100, 1), 10)},
			want: want{appended: 2, seen: 2, pending: 2, paused: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeKafka(map[Stream][]*kgo.Record{}, nil)
			r := f.reassembler(Checkpoint{}, tc.limit)
			r.bytes = tc.bytes
			p := &part{s: s, appended: tc.start, seen: tc.start, skipBelow: tc.skipBelow}
			r.parts[s] = p
			f.consume(s, tc.start)
			for _, rec := range tc.recs {
				r.add(rec)
			}
			for range tc.take {
				r.take(p)
			}
			got := want{p.appended, p.seen, p.pending(), p.paused}
			if got != tc.want || f.paused[s] != tc.want.paused || len(f.bad) > 0 {
				t.Fatalf("got %+v (fetches paused %v, %v), want %+v", got, f.paused[s], f.bad, tc.want)
			}
		})
	}
	// A record of a partition no frame listed yet is not buffered.
	f := newFakeKafka(map[Stream][]*kgo.Record{}, nil)
	r := f.reassembler(Checkpoint{}, 4)
	r.add(dataRecord(s, 0, 100, 0))
	if len(r.parts) != 0 {
		t.Fatalf("a record of an unlisted partition made %v", r.parts)
	}
}

// TestReassemblerTotalReadAhead: while the read-ahead of all data partitions
// together is reached, a partition that receives a record is paused, whatever
// its own bound; it resumes when it has nothing buffered (so that a frame
// waiting for it never waits for a paused partition), or once the total has
// drained to half. Without this bound, memory grew with the number of
// partitions (TestConsumerSmallTransactionsBoundedMemory).
func TestReassemblerTotalReadAhead(t *testing.T) {
	a, b, c := dataStream("p.public.a", 0), dataStream("p.public.a", 1), dataStream("p.public.b", 0)
	f := newFakeKafka(map[Stream][]*kgo.Record{}, nil)
	r := f.reassembler(Checkpoint{}, 100)
	r.total = readAheadBound{records: 4}
	parts := map[Stream]*part{}
	for _, s := range []Stream{a, b, c} {
		parts[s] = &part{s: s, appended: 0, seen: 0}
		r.parts[s] = parts[s]
		f.consume(s, 0)
	}
	next := map[Stream]int64{}
	add := func(s Stream, n int) {
		for range n {
			r.add(dataRecord(s, next[s], 100, next[s]))
			next[s]++
		}
	}
	check := func(step string, paused ...Stream) {
		t.Helper()
		for _, s := range []Stream{a, b, c} {
			want := slices.Contains(paused, s)
			if parts[s].paused != want || f.paused[s] != want {
				t.Fatalf("%s: %v paused %v (fetches paused %v), want %v", step, s, parts[s].paused, f.paused[s], want)
			}
		}
		if len(f.bad) > 0 {
			t.Fatalf("%s: %v", step, f.bad)
		}
	}
	add(a, 3)
	check("under the total")
	add(b, 2)
	check("the record that reaches the total pauses its partition", b)
	add(a, 1)
	add(c, 1)
	check("a partition receiving a record while the total is reached is paused", a, b, c)
	r.take(parts[c])
	check("a partition drained empty resumes", a, b)
	for range 3 {
		r.take(parts[a])
	}
	check("above half the total, a partition under its own bound stays paused", a, b)
	r.take(parts[b])
	check("the total drained to half resumes every partition under its own bound")
	add(c, 1)
	check("under the total again")
}

// TestReassemblerBufferedRecordsOwnTheirBytes: franz-go decodes a fetch's
// records as slices of the fetch's response, which holds every partition's
// records of that fetch. A buffered record that kept those slices would keep
// the whole response: on a backlog of small rows, the consumer's live heap
// was mostly fetch responses (116 of 160 MB, bench/ANALYSIS.md). What the
// reassembler buffers must not change when the response's memory is reused.
func TestReassemblerBufferedRecordsOwnTheirBytes(t *testing.T) {
	s := dataStream("p.public.a", 0)
	resp := make([]byte, 1<<16) // the fetch's response
	fill := func(b byte) {
		for i := range resp {
			resp[i] = b
		}
	}
	fill('a')
	big := slabSize + 1 // a value larger than a slab gets a buffer of its own
	recs := []*kgo.Record{
		{Topic: s.Topic, Partition: s.Partition, Offset: 0, Value: resp[150:150]}, // empty, first in an empty slab
		{Topic: s.Topic, Partition: s.Partition, Offset: 1, Key: resp[0:8], Value: resp[8:100],
			Headers: []kgo.RecordHeader{{Key: schemas.HeaderCommitLSN, Value: resp[100:110]}, {Key: schemas.HeaderPosition, Value: resp[110:111]}}},
		{Topic: s.Topic, Partition: s.Partition, Offset: 2, Value: resp[200:200]}, // empty, not nil
		{Topic: s.Topic, Partition: s.Partition, Offset: 3, Key: resp[300:308], Value: resp[400 : 400+big]},
		{Topic: s.Topic, Partition: s.Partition, Offset: 4, Key: resp[500:501], Value: resp[600:700]},
	}
	var want []kgo.Record
	for _, r := range recs {
		w := *r
		if r.Key != nil {
			w.Key = bytes.Clone(r.Key)
		}
		w.Value = bytes.Clone(r.Value)
		w.Headers = nil
		for _, h := range r.Headers {
			w.Headers = append(w.Headers, kgo.RecordHeader{Key: h.Key, Value: bytes.Clone(h.Value)})
		}
		want = append(want, w)
	}

	f := newFakeKafka(map[Stream][]*kgo.Record{}, nil)
	r := f.reassembler(Checkpoint{}, 10)
	p := &part{s: s, appended: 0, seen: 0}
	r.parts[s] = p
	f.consume(s, 0)
	for _, rec := range recs {
		r.add(rec)
	}
	fill('z')
	for i := range want {
		got := r.take(p)
		if !reflect.DeepEqual(*got, want[i]) {
			t.Fatalf("record %d after its response was reused:\n got %+v\nwant %+v", i, *got, want[i])
		}
		if (want[i].Key == nil) != (got.Key == nil) || (want[i].Value == nil) != (got.Value == nil) {
			t.Fatalf("record %d: a nil key or value (a tombstone) and an empty one swapped", i)
		}
	}
}

// TestReassemblerWaitsForALateMarker: Kafka writes a transaction's markers
// to its partitions one by one, so a frame can be readable while a data
// partition's marker is still on its way (for longer than the 3-s check,
// when that partition's leader moves). The partition's committed end then
// stops before the frame's records, and a transaction is open there: the
// reader must wait for them, not report the frame and records as disagreeing.
func TestReassemblerWaitsForALateMarker(t *testing.T) {
	a, b := dataStream("p.public.a", 0), dataStream("p.public.b", 1)
	fr := schemas.Frame{Xid: 7, CommitLSN: 100, EndLSN: 110, Partitions: []schemas.PartitionCount{
		{Topic: a.Topic, Partition: a.Partition, Count: 1}, {Topic: b.Topic, Partition: b.Partition, Count: 1}}}
	f := newFakeKafka(map[Stream][]*kgo.Record{a: {dataRecord(a, 0, 100, 0)}, b: nil,
		testTxStream: {{Topic: testTxTopic, Offset: 0}}}, map[int64]schemas.Frame{0: fr})
	f.late = map[Stream][]*kgo.Record{b: {dataRecord(b, 0, 100, 1)}}
	f.lateUntil = f.clock.Add(20 * time.Second)
	r := f.reassembler(Checkpoint{Next: map[Stream]int64{a: 0, b: 0}}, 10)
	_, recs, err := readFrame(context.Background(), r)
	if err != nil || len(recs) != 2 {
		t.Fatalf("read %d records, then %v; want both records", len(recs), err)
	}
}

// TestReassemblerFrameErrors: each way a frame and its records disagree, with
// the error it is reported with.
func TestReassemblerFrameErrors(t *testing.T) {
	ctx := context.Background()
	a, b := dataStream("p.public.a", 0), dataStream("p.public.b", 1)
	count := func(s Stream, n int64) schemas.PartitionCount {
		return schemas.PartitionCount{Topic: s.Topic, Partition: s.Partition, Count: n}
	}
	noHeader := func(key string, r *kgo.Record) *kgo.Record {
		r.Headers = slices.DeleteFunc(r.Headers, func(h kgo.RecordHeader) bool { return h.Key == key })
		return r
	}
	for _, tc := range []struct {
		name     string
		parts    []schemas.PartitionCount
		a, b     []*kgo.Record // the partitions' logs
		frameErr error
		want     string // the error; "" for none
		records  int    // read before it
	}{
		{name: "whole", parts: []schemas.PartitionCount{count(a, 2), count(b, 1)},
			a: []*kgo.Record{dataRecord(a, 0, 100, 0), dataRecord(a, 1, 100, 2)}, b: []*kgo.Record{dataRecord(b, 0, 100, 1)},
			records: 3},
		{name: "heartbeat", records: 0},
		{name: "undecodable", frameErr: Permanent(errors.New("bad bytes")),
			want: "frame at topic p.transactions partition 0 offset 0: cannot decode frame: bad bytes"},
		{name: "bad count", parts: []schemas.PartitionCount{count(a, -1)},
			want: "frame at topic p.transactions partition 0 offset 0 commit_lsn 0/64 xid 7: frame and records disagree: bad count -1 for p.public.a partition 0"},
		{name: "listed twice", parts: []schemas.PartitionCount{count(a, 1), count(a, 1)}, a: []*kgo.Record{dataRecord(a, 0, 100, 0)},
			want: "frame at topic p.transactions partition 0 offset 0 commit_lsn 0/64 xid 7: frame and records disagree: p.public.a partition 0 listed twice"},
		{name: "other commit LSN", parts: []schemas.PartitionCount{count(a, 3)},
			a:       []*kgo.Record{dataRecord(a, 0, 100, 0), dataRecord(a, 1, 200, 0)},
			records: 1,
			want:    "topic p.public.a partition 0 offset 1 commit_lsn 0/64 xid 7: frame and records disagree: record has commit LSN 0/C8, but the frame at p.transactions offset 0 expects 2 more record(s) of commit LSN 0/64 here"},
		{name: "no commit LSN", parts: []schemas.PartitionCount{count(a, 1)},
			a:    []*kgo.Record{noHeader(schemas.HeaderCommitLSN, dataRecord(a, 0, 100, 0))},
			want: "topic p.public.a partition 0 offset 0 commit_lsn 0/64 xid 7: frame and records disagree: record has no valid tributary.commit_lsn header"},
		{name: "no position", parts: []schemas.PartitionCount{count(a, 1)},
			a:    []*kgo.Record{noHeader(schemas.HeaderPosition, dataRecord(a, 0, 100, 0))},
			want: "topic p.public.a partition 0 offset 0 commit_lsn 0/64 xid 7: frame and records disagree: record has no valid tributary.position header"},
		{name: "position backwards", parts: []schemas.PartitionCount{count(a, 2)},
			a:       []*kgo.Record{dataRecord(a, 0, 100, 5), dataRecord(a, 1, 100, 4)},
			records: 1,
			want:    "topic p.public.a partition 0 offset 1 commit_lsn 0/64 xid 7: frame and records disagree: position 4 after position 5 in the same partition"},
		{name: "position repeated", parts: []schemas.PartitionCount{count(a, 2)},
			a:       []*kgo.Record{dataRecord(a, 0, 100, 5), dataRecord(a, 1, 100, 5)},
			records: 1,
			want:    "topic p.public.a partition 0 offset 1 commit_lsn 0/64 xid 7: frame and records disagree: position 5 repeated in the same partition"},
		{name: "fewer records than counted", parts: []schemas.PartitionCount{count(a, 1), count(b, 2)},
			a: []*kgo.Record{dataRecord(a, 0, 100, 0)}, b: []*kgo.Record{dataRecord(b, 0, 100, 1), markerRecord(b, 1)},
			records: 2,
			want:    "frame at topic p.transactions partition 0 offset 0 commit_lsn 0/64 xid 7: frame and records disagree: the frame counts 1 more record(s) in p.public.b partition 1, but the partition is read to its committed end (offset 2)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fr := schemas.Frame{Xid: 7, CommitLSN: 100, EndLSN: 110, Partitions: tc.parts}
			if tc.parts == nil {
				fr = schemas.Frame{CommitLSN: 100}
			}
			f := newFakeKafka(map[Stream][]*kgo.Record{a: tc.a, b: tc.b,
				testTxStream: {{Topic: testTxTopic, Offset: 0}}}, map[int64]schemas.Frame{0: fr})
			if tc.frameErr != nil {
				f.frameErr[0] = tc.frameErr
			}
			r := f.reassembler(Checkpoint{Next: map[Stream]int64{a: 0, b: 0}}, 10)
			fc, recs, err := readFrame(ctx, r)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tc.want || len(recs) != tc.records {
				t.Fatalf("read %d records, then %q; want %d, then %q", len(recs), got, tc.records, tc.want)
			}
			if err != nil && (!isStructural(err) || (tc.frameErr == nil) != errors.Is(err, ErrMismatch)) {
				t.Fatalf("%v: not a structural error", err)
			}
			if err == nil {
				// The records in position order, across partitions.
				for i := 1; i < len(recs); i++ {
					p0, _ := headerInt(recs[i-1], schemas.HeaderPosition)
					p1, _ := headerInt(recs[i], schemas.HeaderPosition)
					if p1 < p0 {
						t.Fatalf("records out of position order: %s", recordList(recs))
					}
				}
				if fc.txn.Xid != fr.Xid || fc.txn.CommitLSN != fr.CommitLSN || fc.txn.Offset != 0 {
					t.Fatalf("txn %+v", fc.txn)
				}
			}
		})
	}
	// A transient decoding error is returned as it is, for a retry.
	f := newFakeKafka(map[Stream][]*kgo.Record{testTxStream: {{Topic: testTxTopic}}}, nil)
	transient := errors.New("registry unreachable")
	f.frameErr[0] = transient
	if _, _, err := readFrame(ctx, f.reassembler(Checkpoint{}, 10)); err != transient {
		t.Fatalf("transient decoding error: %v", err)
	}
}

// TestReassemblerPositionsAndCheckpoints: where data partitions start, how
// the end and the lag are judged, and the checkpoint after a frame.
func TestReassemblerPositionsAndCheckpoints(t *testing.T) {
	ctx := context.Background()
	a, b := dataStream("p.public.a", 0), dataStream("p.public.b", 0)
	logs := map[Stream][]*kgo.Record{
		// a holds a record of an earlier frame this consumer never applies.
		a:            {dataRecord(a, 0, 50, 0), dataRecord(a, 1, 100, 0), markerRecord(a, 2), dataRecord(a, 3, 200, 0)},
		b:            {dataRecord(b, 0, 100, 1), dataRecord(b, 1, 200, 1), markerRecord(b, 2)},
		testTxStream: {{Topic: testTxTopic, Offset: 0}, {Topic: testTxTopic, Offset: 1}, markerRecord(testTxStream, 2)},
	}
	frames := map[int64]schemas.Frame{
		0: {Xid: 1, CommitLSN: 100, Events: 2, Partitions: []schemas.PartitionCount{{Topic: a.Topic, Count: 1}, {Topic: b.Topic, Count: 1}}},
		1: {Xid: 2, CommitLSN: 200, Events: 2, Partitions: []schemas.PartitionCount{{Topic: a.Topic, Count: 1}, {Topic: b.Topic, Count: 1}}},
	}
	// a's checkpoint is unknown (-1, as a bootstrap leaves it): it is
	// located by commit LSN, at offset 0, and the record of LSN 50 there is
	// dropped; b resumes at its checkpoint.
	f := newFakeKafka(logs, frames)
	f.located = map[Stream]int64{a: 0}
	r := f.reassembler(Checkpoint{Next: map[Stream]int64{a: -1, b: 0}}, 10)
	r.lso = 3
	if got := r.behind(); got != 0 {
		t.Fatalf("behind %d without a transactions checkpoint", got)
	}
	r.cp.Next[testTxStream] = 0
	if got := r.behind(); got != 3 {
		t.Fatalf("behind %d, want 3", got)
	}
	fc, recs, err := readFrame(ctx, r)
	if err != nil || len(recs) != 2 || recs[0] != logs[a][1] || recs[1] != logs[b][0] {
		t.Fatalf("first frame: %s, %v", recordList(recs), err)
	}
	if f.start[a] != 0 || f.start[b] != 0 {
		t.Fatalf("partitions started at %d and %d", f.start[a], f.start[b])
	}
	var cp Checkpoint
	cp.Next = map[Stream]int64{}
	fc.checkpoint(&cp)
	// Everything is fetched (the fake delivers all at once): the entries
	// point at the next frame's records.
	want := map[Stream]int64{testTxStream: 1, a: 3, b: 1}
	if !mapsEqual(cp.Next, want) || cp.CommitLSN != 100 {
		t.Fatalf("checkpoint after the first frame %v %s, want %v 0/64", cp.Next, cp.CommitLSN, want)
	}
	r.cp.merge(cp)
	if got := r.behind(); got != 2 {
		t.Fatalf("behind %d, want 2", got)
	}
	fc, _, err = readFrame(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	fc.checkpoint(&cp)
	// Past the transaction markers when nothing is buffered.
	want = map[Stream]int64{testTxStream: 3, a: 4, b: 3}
	if !mapsEqual(cp.Next, want) {
		t.Fatalf("checkpoint after the last frame %v, want %v", cp.Next, want)
	}
	r.cp.merge(cp)
	if got := r.behind(); got != 0 {
		t.Fatalf("behind %d after the last frame", got)
	}
	// A checkpoint made before the trailing marker was read is not behind.
	r.cp.Next[testTxStream] = 2
	if got := r.behind(); got != 0 {
		t.Fatalf("behind %d: only a marker is left", got)
	}
	if _, _, err := readFrame(ctx, r); !errors.Is(err, io.EOF) {
		t.Fatalf("at the end: %v, want io.EOF", err)
	}
	// An end of 0 (no transactions topic) is the end at once.
	f = newFakeKafka(map[Stream][]*kgo.Record{}, nil)
	if r := f.reassembler(Checkpoint{}, 10); r.end != 0 || !errors.Is(r.waitFrame(ctx), io.EOF) || f.polls != 0 {
		t.Fatalf("no transactions topic: end %d, %d polls", r.end, f.polls)
	}
}

func mapsEqual(a, b map[Stream]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// BenchmarkReassembly reads 1,000 generated source transactions of 1–12
// records each, frame by frame, with their checkpoints, as a session
// does: the reassembler's own work per frame, the fetches being a fake.
func BenchmarkReassembly(b *testing.B) {
	logs, frames, _ := generate(rand.New(rand.NewPCG(1, 2)), 1000, testStreams)
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		f := newFakeKafka(logs, frames)
		f.rng = rand.New(rand.NewPCG(3, 4))
		r := f.reassembler(Checkpoint{}, 4096)
		b.StartTimer()
		for n := 0; n < 1000; n++ {
			fc, _, err := readFrame(ctx, r)
			if err != nil {
				b.Fatal(err)
			}
			cp := Checkpoint{Next: map[Stream]int64{}}
			fc.checkpoint(&cp)
		}
	}
}
