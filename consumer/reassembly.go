package consumer

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog"
)

// fetcher is the Kafka I/O the reassembly needs: fetched records, the data
// partitions it reads, their flow control and where they end. The session's
// client implements it (kafkaFetcher, txn.go); reassembly_test.go feeds
// plain records.
type fetcher interface {
	// poll waits up to wait for records of the partitions consumed and
	// passes them to add in fetch order; a fetch error is returned instead
	// of any record (fetchError's), and ctx's end as ctx.Err(). txLSO is
	// the transactions topic's last stable offset in the fetch, 0 when it
	// has none.
	poll(ctx context.Context, wait time.Duration, add func(*kgo.Record)) (txLSO int64, err error)
	// consume starts fetching the data partition s at offset at.
	consume(s Stream, at int64)
	// pause and resume stop and restart fetching s.
	pause(s Stream)
	resume(s Stream)
	// committedEnd is s's committed end offset (the last stable offset)
	// and whether a transaction is still open on s (records past that end
	// whose transaction Kafka has not marked yet); ok is false when it
	// cannot be known now.
	committedEnd(ctx context.Context, s Stream) (end int64, open, ok bool)
	// locate is where the records of commit LSN lsn begin in a data
	// partition that has no checkpoint (txlog.PositionFor); at is the
	// frame's timestamp. It fails with a permanent *BehindRetentionError
	// when retention deleted them.
	locate(ctx context.Context, s Stream, lsn pglogrepl.LSN, at time.Time) (int64, error)
}

// frameDecoder decodes a commit frame of the transactions topic (*decoder).
type frameDecoder interface {
	frame(ctx context.Context, r *kgo.Record) (schemas.Frame, error)
}

// reassembler is the transactional consumer's reassembly state: which frame
// of the transactions topic is next, which buffered records of the data
// partitions belong to it and in what order (a k-way merge on position),
// when it is complete, which records contradict it, which partitions to
// pause and resume, and the checkpoint after it. It holds no Kafka client:
// its I/O goes through fetcher and frameDecoder, so that it is tested with
// plain records (reassembly_test.go). It is used by one goroutine.
type reassembler struct {
	src     fetcher
	frames  frameDecoder
	txTopic string
	limit   int // read-ahead per partition, in records (Config.PartitionBuffer)
	bytes   int // and in bytes of keys and values (Config.PartitionBufferBytes); 0 for no bound
	// total bounds the read-ahead of all data partitions together
	// (Config.ReadAhead, ReadAheadBytes); its zero value bounds nothing.
	total    readAheadBound
	buffered readAheadBound   // what the data partitions buffer now
	crowded  bool             // partitions were paused for total since it was last drained to half
	now      func() time.Time // time.Now, but for tests
	cp       Checkpoint       // committed checkpoint, updated after every Apply
	tx       *part
	parts    map[Stream]*part
	opened   uint64 // frames opened so far (part.listedIn)
	end      int64  // transactions-topic end to stop at; -1 for never
	lso      int64  // the transactions topic's last stable offset, as last fetched
}

// newReassembler starts reading the transactions topic at checkpoint cp;
// next is cp's offset of it, or -1 when it is read from its start.
func newReassembler(src fetcher, frames frameDecoder, txTopic string, limit int, cp Checkpoint, next int64) *reassembler {
	r := &reassembler{src: src, frames: frames, txTopic: txTopic, limit: limit, now: time.Now, cp: cp,
		tx:    &part{s: Stream{Kind: StreamTransactions, Topic: txTopic}, appended: next, seen: next},
		parts: map[Stream]*part{}, end: -1}
	if cp.Next == nil {
		r.cp.Next = map[Stream]int64{}
	}
	return r
}

// readAheadBound is an amount of read-ahead, in records and in bytes of
// their keys and values.
//
// The read-ahead is bounded per partition (limit, bytes) and over all data
// partitions together (total). A partition is paused when its own bound is
// reached, or when it receives a record while the total is reached; it
// resumes when it has drained to half its own bound and the total is at
// most half reached, and in any case when it has nothing buffered. So a
// paused partition always has a record buffered: a frame waiting for a
// partition's next record (headOf) never waits for a paused one, and the
// total bound cannot stall the reassembly, whatever the partitions' order.
// A fetch under way when a partition is paused still brings its records,
// and a partition drained empty fetches again whatever the total, so the
// total is exceeded by up to one fetch of each partition
// (fetchMaxPartitionBytes).
type readAheadBound struct{ records, bytes int }

// reaches reports whether b reaches bound in records or in bytes; a zero
// dimension of bound is no bound.
func (b readAheadBound) reaches(bound readAheadBound) bool {
	return bound.records > 0 && b.records >= bound.records || bound.bytes > 0 && b.bytes >= bound.bytes
}

// withinHalf reports whether b is at most half of bound in both dimensions.
func (b readAheadBound) withinHalf(bound readAheadBound) bool {
	return (bound.records == 0 || b.records <= bound.records/2) && (bound.bytes == 0 || b.bytes <= bound.bytes/2)
}

// part is the read state of one partition in a session.
type part struct {
	s        Stream
	buf      []*kgo.Record // records not yet taken, from head
	head     int
	appended int64 // offset after the last record buffered; -1 before any
	seen     int64 // offset after the last record or marker received; -1 before any
	paused   bool
	size     int    // bytes of the keys and values in buf from head (reassembler.add and take)
	slab     []byte // where detach copies the bytes of buffered records
	// skipBelow, when set, drops records at the partition's head whose
	// commit LSN is below it: they belong to frames before the one the
	// partition was positioned for (see reassembler.partition).
	skipBelow uint64
	// listedIn is the number (reassembler.opened) of the last frame that
	// listed the partition, which finds a frame listing it twice.
	listedIn uint64
}

func (p *part) pending() int { return len(p.buf) - p.head }

func (p *part) peek() *kgo.Record { return p.buf[p.head] }

func (p *part) pop() *kgo.Record {
	r := p.buf[p.head]
	p.buf[p.head] = nil
	p.head++
	if p.head > 1024 && p.head*2 > len(p.buf) {
		n := copy(p.buf, p.buf[p.head:])
		clear(p.buf[n:])
		p.buf, p.head = p.buf[:n], 0
	}
	return r
}

// appendedTaken is the offset after the last record taken from p, and past
// the transaction markers received after it when nothing is buffered: a
// checkpoint that points past the markers is not taken for one behind
// retention when only markers were deleted.
func (p *part) appendedTaken() int64 {
	if p.pending() > 0 {
		return p.peek().Offset
	}
	return max(p.appended, p.seen)
}

// poll waits up to wait for records and buffers them.
func (r *reassembler) poll(ctx context.Context, wait time.Duration) error {
	lso, err := r.src.poll(ctx, wait, r.add)
	if err != nil {
		return err
	}
	if lso > r.lso {
		r.lso = lso
	}
	return nil
}

// add buffers a fetched record: a transaction marker only moves its
// partition's seen offset, a record fetched again is dropped, and a
// partition whose read-ahead is full is paused.
func (r *reassembler) add(rec *kgo.Record) {
	p := r.tx
	if rec.Topic != r.txTopic {
		p = r.parts[Stream{Kind: StreamData, Topic: rec.Topic, Partition: rec.Partition}]
		if p == nil {
			return
		}
	}
	if rec.Offset+1 > p.seen {
		p.seen = rec.Offset + 1
	}
	if rec.Attrs.IsControl() || rec.Offset < p.appended {
		return
	}
	if p.skipBelow > 0 {
		if lsn, ok := txlog.HeaderLSN(rec); ok && lsn < p.skipBelow {
			p.appended = rec.Offset + 1
			return
		}
		p.skipBelow = 0
	}
	p.appended = rec.Offset + 1
	p.detach(rec)
	p.buf = append(p.buf, rec)
	n := recordSize(rec)
	p.size += n
	if p == r.tx {
		if !p.paused && r.full(p) {
			r.pause(p)
		}
		return
	}
	r.buffered.records++
	r.buffered.bytes += n
	if p.paused {
		return
	}
	if r.full(p) {
		r.pause(p)
	} else if r.buffered.reaches(r.total) {
		r.crowded = true
		r.pause(p)
	}
}

// full reports whether p's read-ahead reached its own bound.
func (r *reassembler) full(p *part) bool {
	return readAheadBound{p.pending(), p.size}.reaches(readAheadBound{r.limit, r.bytes})
}

// drained reports whether p's read-ahead is at most half its own bound.
func (r *reassembler) drained(p *part) bool {
	return readAheadBound{p.pending(), p.size}.withinHalf(readAheadBound{r.limit, r.bytes})
}

func (r *reassembler) pause(p *part) {
	p.paused = true
	r.src.pause(p.s)
}

func (r *reassembler) resume(p *part) {
	p.paused = false
	r.src.resume(p.s)
}

// readAhead is what the data partitions have read ahead, for the Observer.
func (r *reassembler) readAhead() ReadAhead {
	ra := ReadAhead{Records: r.buffered.records, Bytes: r.buffered.bytes}
	for _, p := range r.parts {
		if p.paused {
			ra.Paused++
		}
	}
	return ra
}

// detach moves rec's bytes out of the fetch response it was read from into
// p's slab. franz-go's records alias that response (keys, values and header
// values are slices of it, and it holds every partition's records of one
// fetch), so a buffered record would keep the whole response in memory for as
// long as it waits. The record itself is an element of its batch's array,
// which holds records of p only, taken in order: it is kept. A slab is
// shared by consecutive records of p, so it is freed once they are taken.
func (p *part) detach(rec *kgo.Record) {
	rec.Key, rec.Value = p.own(rec.Key), p.own(rec.Value)
	for i := range rec.Headers {
		rec.Headers[i].Value = p.own(rec.Headers[i].Value)
	}
}

// slabSize is the size of a part's slab for detached bytes.
const slabSize = 32 << 10

// own copies b into p's slab; nil stays nil (a tombstone), and empty stays
// empty without pointing into the response.
func (p *part) own(b []byte) []byte {
	if b == nil {
		return nil
	}
	if len(b) == 0 {
		return []byte{}
	}
	if len(b) > cap(p.slab)-len(p.slab) {
		p.slab = make([]byte, 0, max(slabSize, len(b)))
	}
	n := len(p.slab)
	p.slab = append(p.slab, b...)
	return p.slab[n:len(p.slab):len(p.slab)]
}

// recordSize is what a buffered record counts against the read-ahead in
// bytes: its key and value.
func recordSize(rec *kgo.Record) int { return len(rec.Key) + len(rec.Value) }

// behind is how many offsets of the transactions topic are committed but not
// applied; a trailing transaction marker already read does not count.
func (r *reassembler) behind() int64 {
	next, ok := r.cp.Next[r.tx.s]
	if !ok || r.lso <= next || r.tx.pending() == 0 && r.tx.seen >= r.lso {
		return 0
	}
	return r.lso - next
}

// take pops the head record of p and resumes the partitions the read-ahead
// bounds allow again (see readAheadBound).
func (r *reassembler) take(p *part) *kgo.Record {
	rec := p.pop()
	n := recordSize(rec)
	p.size -= n
	if p == r.tx {
		if p.paused && r.drained(p) {
			r.resume(p)
		}
		return rec
	}
	r.buffered.records--
	r.buffered.bytes -= n
	if r.crowded && r.buffered.withinHalf(r.total) {
		r.crowded = false
		for _, q := range r.parts {
			if q.paused && r.drained(q) {
				r.resume(q)
			}
		}
	}
	if p.paused && (p.pending() == 0 || r.drained(p) && !r.crowded) {
		r.resume(p)
	}
	return rec
}

// atEnd reports whether the transactions topic is read to the end the
// reassembler catches up to.
func (r *reassembler) atEnd() bool { return r.end >= 0 && r.tx.seen >= r.end }

// waitFrame blocks until a frame is buffered; it returns io.EOF when the
// reader is caught up to its end offset.
func (r *reassembler) waitFrame(ctx context.Context) error {
	for r.tx.pending() == 0 {
		if r.atEnd() || r.end == 0 {
			return io.EOF
		}
		if err := r.poll(ctx, time.Second); err != nil {
			return err
		}
	}
	return nil
}

// partition returns the read state of a data partition, starting to fetch it
// at its checkpointed offset the first time. A partition without one is
// first listed by frame fc: it is read from where its records of fc's
// commit LSN begin (fetcher.locate), the records before (of frames this
// consumer never applies) dropped at its head; a frame whose records
// retention deleted is a clear stop.
func (r *reassembler) partition(ctx context.Context, topic string, partition int32, fc *frameCursor) (*part, error) {
	s := Stream{Kind: StreamData, Topic: topic, Partition: partition}
	if p := r.parts[s]; p != nil {
		return p, nil
	}
	next, ok := r.cp.Next[s]
	p := &part{s: s, appended: next, seen: next}
	if !ok || next < 0 {
		next, err := r.src.locate(ctx, s, fc.frame.CommitLSN, fc.at)
		if err != nil {
			return nil, err
		}
		p.appended, p.seen, p.skipBelow = next, next, uint64(fc.frame.CommitLSN)
	}
	r.parts[s] = p
	r.src.consume(s, p.appended)
	return p, nil
}

// headOf blocks until p has a buffered record. While it waits it checks that
// the record can still arrive: a committed frame's records are committed with
// it, so a partition read to its committed end with no transaction open on it
// lacks records the frame counts. Kafka writes a transaction's markers to its
// partitions one by one, so the frame can be readable while a data
// partition's marker is still on its way (its leader moving, say): that
// partition's records are then past its committed end, in a transaction
// still open there, and the reader waits for them.
func (r *reassembler) headOf(ctx context.Context, p *part, fc *frameCursor, want int64) (*kgo.Record, error) {
	check := r.now().Add(3 * time.Second)
	for p.pending() == 0 {
		if r.now().After(check) {
			check = r.now().Add(3 * time.Second)
			if end, open, ok := r.src.committedEnd(ctx, p.s); ok && !open && p.seen >= 0 && p.seen >= end {
				return nil, structural(fc.errorf("%w: the frame counts %d more record(s) in %s partition %d, "+
					"but the partition is read to its committed end (offset %d)", ErrMismatch, want, p.s.Topic, p.s.Partition, end))
			}
		}
		if err := r.poll(ctx, 500*time.Millisecond); err != nil {
			return nil, err
		}
	}
	return p.peek(), nil
}

// frameCursor walks the records of one frame in position order.
type frameCursor struct {
	r      *reassembler
	offset int64
	at     time.Time // the frame record's timestamp
	frame  schemas.Frame
	txn    *Txn
	parts  []cursorPart
}

type cursorPart struct {
	p         *part
	remaining int64
	lastPos   int64
}

func (fc *frameCursor) errorf(format string, args ...any) error {
	return &FrameError{Topic: fc.r.txTopic, Offset: fc.offset, CommitLSN: fc.frame.CommitLSN, Xid: fc.frame.Xid,
		Err: fmt.Errorf(format, args...)}
}

// openFrame pops the next buffered frame and starts fetching its partitions.
func (r *reassembler) openFrame(ctx context.Context) (*frameCursor, error) {
	rec := r.take(r.tx)
	fc := &frameCursor{r: r, offset: rec.Offset, at: rec.Timestamp}
	f, err := r.frames.frame(ctx, rec)
	if err != nil {
		if IsPermanent(err) {
			return nil, structural(fc.errorf("cannot decode frame: %w", err))
		}
		return nil, err
	}
	fc.frame = f
	fc.txn = &Txn{Xid: f.Xid, CommitLSN: f.CommitLSN, CommitTime: f.CommitTime, Origin: f.Origin,
		Snapshot: f.Snapshot != nil, Initial: f.InitialChunk(), Offset: rec.Offset}
	r.opened++
	for _, pc := range f.Partitions {
		if pc.Count < 0 || pc.Partition < 0 {
			return nil, structural(fc.errorf("%w: bad count %d for %s partition %d", ErrMismatch, pc.Count, pc.Topic, pc.Partition))
		}
		p, err := r.partition(ctx, pc.Topic, pc.Partition, fc)
		if err != nil {
			return nil, err
		}
		if p.listedIn == r.opened {
			return nil, structural(fc.errorf("%w: %s partition %d listed twice", ErrMismatch, pc.Topic, pc.Partition))
		}
		p.listedIn = r.opened
		if pc.Count > 0 {
			if fc.parts == nil {
				fc.parts = make([]cursorPart, 0, len(f.Partitions))
			}
			fc.parts = append(fc.parts, cursorPart{p: p, remaining: pc.Count, lastPos: -1})
		}
	}
	return fc, nil
}

// next returns the frame's next record in position order, checked against
// the frame, or nil when the frame is complete.
func (fc *frameCursor) next(ctx context.Context) (*kgo.Record, error) {
	var best *cursorPart
	var bestPos int64
	for i := range fc.parts {
		cp := &fc.parts[i]
		if cp.remaining == 0 {
			continue
		}
		rec, err := fc.r.headOf(ctx, cp.p, fc, cp.remaining)
		if err != nil {
			return nil, err
		}
		bad := func(format string, args ...any) error {
			return structural(&EventError{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset,
				CommitLSN: fc.frame.CommitLSN, Xid: fc.frame.Xid, FrameOffset: fc.offset,
				Err: fmt.Errorf("%w: "+format, append([]any{ErrMismatch}, args...)...)})
		}
		lsn, ok := headerLSN(rec)
		if !ok {
			return nil, bad("record has no valid %s header", schemas.HeaderCommitLSN)
		}
		if lsn != fc.frame.CommitLSN {
			return nil, bad("record has commit LSN %s, but the frame at %s offset %d expects %d more record(s) of commit LSN %s here",
				lsn, fc.r.txTopic, fc.offset, cp.remaining, fc.frame.CommitLSN)
		}
		pos, ok := headerInt(rec, schemas.HeaderPosition)
		if !ok {
			return nil, bad("record has no valid %s header", schemas.HeaderPosition)
		}
		// The producer gives every record of a transaction its own
		// position, increasing within each partition.
		if pos < cp.lastPos {
			return nil, bad("position %d after position %d in the same partition", pos, cp.lastPos)
		}
		if pos == cp.lastPos {
			return nil, bad("position %d repeated in the same partition", pos)
		}
		if best == nil || pos < bestPos {
			best, bestPos = cp, pos
		}
	}
	if best == nil {
		return nil, nil
	}
	rec := fc.r.take(best.p)
	best.remaining--
	best.lastPos = bestPos
	return rec, nil
}

// checkpoint records that fc was read whole into the batch checkpoint.
func (fc *frameCursor) checkpoint(cp *Checkpoint) {
	cp.Next[fc.r.tx.s] = max(fc.offset+1, fc.r.tx.appendedTaken())
	for _, p := range fc.parts {
		cp.Next[p.p.s] = p.p.appendedTaken()
	}
	cp.CommitLSN, cp.CommitTime = fc.frame.CommitLSN, fc.frame.CommitTime
}
