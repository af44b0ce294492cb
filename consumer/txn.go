package consumer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog"
)

// part is the read state of one partition in a session.
type part struct {
	s        Stream
	buf      []*kgo.Record // records not yet taken, from head
	head     int
	appended int64 // offset after the last record buffered; -1 before any
	seen     int64 // offset after the last record or marker received; -1 before any
	paused   bool
	// skipBelow, when set, drops records at the partition's head whose
	// commit LSN is below it: they belong to frames before the one the
	// partition was positioned for (see reader.partition).
	skipBelow uint64
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

// reader reads the transactions topic and the data partitions its frames
// list, with a bounded read-ahead per partition.
type reader struct {
	c     *Consumer
	cl    *kgo.Client
	adm   *kadm.Client
	dec   *decoder
	cp    Checkpoint // committed checkpoint, updated after every Apply
	tx    *part
	parts map[Stream]*part
	end   int64 // transactions-topic end to stop at; -1 for never
	lso   int64 // the transactions topic's last stable offset, as last fetched
	// reset holds checkpoint entries that the next Apply must write
	// (entries a bootstrap marked unknown), and boot the truncates that
	// start its batch (bootTruncates).
	reset map[Stream]int64
	boot  []*Event
}

func (r *reader) close() { r.cl.Close() }

func (c *Consumer) newReader(ctx context.Context, cp Checkpoint, untilCaughtUp bool) (*reader, error) {
	txs := Stream{Kind: StreamTransactions, Topic: c.txTopic}
	cl, err := c.newClient(nil, kgo.WithHooks(c.cfg.KafkaHooks...))
	if err != nil {
		return nil, err
	}
	adm := kadm.NewClient(cl)
	old := cp
	cp, boot, err := c.position(ctx, adm, cp)
	if err != nil {
		cl.Close()
		return nil, err
	}
	next, ok := cp.Next[txs]
	off := kgo.NewOffset().AtStart()
	if ok {
		off = kgo.NewOffset().At(next)
	} else {
		next = -1
	}
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{c.txTopic: {0: off}})
	r := &reader{c: c, cl: cl, adm: adm, dec: newDecoder(c.cfg.Registry), cp: cp,
		tx: &part{s: txs, appended: next, seen: next}, parts: map[Stream]*part{}, end: -1}
	if cp.Next == nil {
		r.cp.Next = map[Stream]int64{}
	}
	for s, n := range cp.Next {
		if o, ok := old.Next[s]; !ok || o != n {
			if r.reset == nil {
				r.reset = map[Stream]int64{}
			}
			r.reset[s] = n
		}
	}
	if boot != nil {
		if r.boot, err = r.bootTruncates(ctx, boot); err != nil {
			cl.Close()
			return nil, err
		}
	}
	if untilCaughtUp {
		ends, err := r.adm.ListCommittedOffsets(ctx, c.txTopic)
		if err != nil {
			cl.Close()
			return nil, fmt.Errorf("end offset of %s: %w", c.txTopic, err)
		}
		lo, ok := ends.Lookup(c.txTopic, 0)
		switch {
		case !ok || errors.Is(lo.Err, kerr.UnknownTopicOrPartition):
			r.end = 0 // no transactions topic yet: nothing to apply
		case lo.Err != nil:
			cl.Close()
			return nil, fmt.Errorf("end offset of %s: %w", c.txTopic, lo.Err)
		default:
			r.end = lo.Offset
		}
		c.log.Info("catching up", "transactions_end_offset", r.end, "from", next)
	}
	return r, nil
}

// poll waits up to wait for records and buffers them.
func (r *reader) poll(ctx context.Context, wait time.Duration) error {
	pctx, cancel := context.WithTimeout(ctx, wait)
	fs := r.cl.PollRecords(pctx, 8192)
	cancel()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ferr error
	fs.EachError(func(t string, p int32, err error) {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return
		}
		if ferr == nil {
			ferr = fetchError(t, p, err)
		}
	})
	if ferr != nil {
		return ferr
	}
	fs.EachPartition(func(p kgo.FetchTopicPartition) {
		if p.Topic == r.c.txTopic && p.LastStableOffset > r.lso {
			r.lso = p.LastStableOffset
		}
	})
	limit := r.c.cfg.PartitionBuffer
	fs.EachRecord(func(rec *kgo.Record) {
		p := r.tx
		if rec.Topic != r.c.txTopic {
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
		p.buf = append(p.buf, rec)
		if !p.paused && p.pending() >= limit {
			p.paused = true
			r.cl.PauseFetchPartitions(map[string][]int32{p.s.Topic: {p.s.Partition}})
		}
	})
	return nil
}

// behind is how many offsets of the transactions topic are committed but not
// applied; a trailing transaction marker already read does not count.
func (r *reader) behind() int64 {
	next, ok := r.cp.Next[r.tx.s]
	if !ok || r.lso <= next || r.tx.pending() == 0 && r.tx.seen >= r.lso {
		return 0
	}
	return r.lso - next
}

// take pops the head record of p, resuming p's fetches when it has drained.
func (r *reader) take(p *part) *kgo.Record {
	rec := p.pop()
	if p.paused && p.pending() <= r.c.cfg.PartitionBuffer/2 {
		p.paused = false
		r.cl.ResumeFetchPartitions(map[string][]int32{p.s.Topic: {p.s.Partition}})
	}
	return rec
}

// waitFrame blocks until a frame is buffered; it returns io.EOF when the
// reader is caught up to its end offset.
func (r *reader) waitFrame(ctx context.Context) error {
	for r.tx.pending() == 0 {
		if r.end >= 0 && r.tx.seen >= r.end || r.end == 0 {
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
// commit LSN begin (txlog.PositionFor), the records before (of frames this
// consumer never applies) dropped at its head; a frame whose records
// retention deleted is a clear stop.
func (r *reader) partition(ctx context.Context, topic string, partition int32, fc *frameCursor) (*part, error) {
	s := Stream{Kind: StreamData, Topic: topic, Partition: partition}
	if p := r.parts[s]; p != nil {
		return p, nil
	}
	next, ok := r.cp.Next[s]
	p := &part{s: s, appended: next, seen: next}
	if !ok || next < 0 {
		b, err := txlog.PartitionBounds(ctx, r.adm, topic, partition)
		if err != nil {
			return nil, err
		}
		if next, err = txlog.PositionFor(ctx, r.c.cfg.Kafka, r.adm, topic, partition, b, uint64(fc.frame.CommitLSN), fc.at, txlog.HeaderLSN); err != nil {
			return nil, err
		}
		p.appended, p.seen, p.skipBelow = next, next, uint64(fc.frame.CommitLSN)
		if next == b.Start && b.Start > 0 {
			// The partition's first record may already be past fc's.
			first, err := txlog.ReadFirst(ctx, r.c.cfg.Kafka, topic, partition, b)
			if err != nil {
				return nil, err
			}
			if lsn, ok := txlog.HeaderLSN(first); first != nil && ok && lsn > uint64(fc.frame.CommitLSN) {
				return nil, Permanent(&BehindRetentionError{Topic: topic, Partition: partition, Checkpoint: -1, LogStart: b.Start})
			}
		}
	}
	r.parts[s] = p
	r.cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().At(p.appended)}})
	return p, nil
}

// headOf blocks until p has a buffered record. While it waits it checks that
// the record can still arrive: a committed frame's records are committed with
// it, so a partition read to its committed end lacks records the frame counts.
func (r *reader) headOf(ctx context.Context, p *part, fc *frameCursor, want int64) (*kgo.Record, error) {
	check := time.Now().Add(3 * time.Second)
	for p.pending() == 0 {
		if time.Now().After(check) {
			check = time.Now().Add(3 * time.Second)
			ends, err := r.adm.ListCommittedOffsets(ctx, p.s.Topic)
			if err == nil {
				if lo, ok := ends.Lookup(p.s.Topic, p.s.Partition); ok && lo.Err == nil && p.seen >= 0 && p.seen >= lo.Offset {
					return nil, structural(fc.errorf("%w: the frame counts %d more record(s) in %s partition %d, "+
						"but the partition is read to its committed end (offset %d)", ErrMismatch, want, p.s.Topic, p.s.Partition, lo.Offset))
				}
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
	r      *reader
	offset int64
	at     time.Time // the frame record's timestamp
	frame  schemas.Frame
	txn    *Txn
	parts  []*cursorPart
}

type cursorPart struct {
	p         *part
	remaining int64
	lastPos   int64
}

func (fc *frameCursor) errorf(format string, args ...any) error {
	return &FrameError{Topic: fc.r.c.txTopic, Offset: fc.offset, CommitLSN: fc.frame.CommitLSN, Xid: fc.frame.Xid,
		Err: fmt.Errorf(format, args...)}
}

// openFrame pops the next buffered frame and starts fetching its partitions.
func (r *reader) openFrame(ctx context.Context) (*frameCursor, error) {
	rec := r.take(r.tx)
	fc := &frameCursor{r: r, offset: rec.Offset, at: rec.Timestamp}
	f, err := r.dec.frame(ctx, rec)
	if err != nil {
		if IsPermanent(err) {
			return nil, structural(fc.errorf("cannot decode frame: %w", err))
		}
		return nil, err
	}
	fc.frame = f
	fc.txn = &Txn{Xid: f.Xid, CommitLSN: f.CommitLSN, CommitTime: f.CommitTime, Origin: f.Origin,
		Snapshot: f.Snapshot != nil, Initial: f.Snapshot != nil && f.EndLSN == f.CommitLSN, Offset: rec.Offset}
	seen := map[Stream]bool{}
	for _, pc := range f.Partitions {
		if pc.Count < 0 || pc.Partition < 0 {
			return nil, structural(fc.errorf("%w: bad count %d for %s partition %d", ErrMismatch, pc.Count, pc.Topic, pc.Partition))
		}
		p, err := r.partition(ctx, pc.Topic, pc.Partition, fc)
		if err != nil {
			return nil, err
		}
		if seen[p.s] {
			return nil, structural(fc.errorf("%w: %s partition %d listed twice", ErrMismatch, pc.Topic, pc.Partition))
		}
		seen[p.s] = true
		if pc.Count > 0 {
			fc.parts = append(fc.parts, &cursorPart{p: p, remaining: pc.Count, lastPos: -1})
		}
	}
	return fc, nil
}

// next returns the frame's next record in position order, checked against
// the frame, or nil when the frame is complete.
func (fc *frameCursor) next(ctx context.Context) (*kgo.Record, error) {
	var best *cursorPart
	var bestPos int64
	for _, cp := range fc.parts {
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
				lsn, fc.r.c.txTopic, fc.offset, cp.remaining, fc.frame.CommitLSN)
		}
		pos, ok := headerInt(rec, schemas.HeaderPosition)
		if !ok {
			return nil, bad("record has no valid %s header", schemas.HeaderPosition)
		}
		if pos < cp.lastPos {
			return nil, bad("position %d after position %d in the same partition", pos, cp.lastPos)
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

// frameDone records that fc was read whole into the batch checkpoint.
func (fc *frameCursor) checkpoint(cp *Checkpoint) {
	cp.Next[fc.r.tx.s] = max(fc.offset+1, fc.r.tx.appendedTaken())
	for _, p := range fc.parts {
		cp.Next[p.p.s] = p.p.appendedTaken()
	}
	cp.CommitLSN, cp.CommitTime = fc.frame.CommitLSN, fc.frame.CommitTime
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

// txSession runs one transactional session: from the sink's checkpoint until
// an error, ctx's end, or (untilCaughtUp) the end of the transactions topic.
func (c *Consumer) txSession(ctx context.Context, st *runState) error {
	cp, err := c.cfg.Sink.Checkpoint(ctx)
	if err != nil {
		return fmt.Errorf("read checkpoint: %w", err)
	}
	r, err := c.newReader(ctx, cp, st.untilCaughtUp)
	if err != nil {
		return err
	}
	defer r.close()
	c.cfg.Observer.Ready(true)
	defer c.cfg.Observer.Ready(false)
	if st.deadLetter >= 0 {
		if err := r.deadLetter(ctx, st); err != nil {
			return err
		}
	}
	var lastCommit time.Time
	applied, lastLog := 0, time.Now()
	for {
		if err := r.waitFrame(ctx); err != nil {
			if errors.Is(err, io.EOF) {
				c.log.Info("caught up", "commit_lsn", r.cp.CommitLSN, "applied_txns", applied)
				c.commitGroupOffsets(ctx, r.adm, r.cp.Next)
				return nil
			}
			return err
		}
		b := &Batch{}
		g := &group{r: r, st: st, b: b, cp: Checkpoint{Next: map[Stream]int64{}}, first: -1}
		for s, n := range r.reset {
			g.cp.Next[s] = n
		}
		b.next = g.next
		start := time.Now()
		err := c.cfg.Sink.Apply(ctx, b)
		st.lastGroupTxns, st.lastGroupFirst = g.txns, g.first
		if err == nil && !b.done {
			err = errors.New("sink returned from Apply before reading the whole batch")
		}
		if err == nil && b.err != nil {
			err = b.err
		}
		if err != nil {
			if g.cur != nil && failedFrame(err) < 0 && IsPermanent(err) {
				err = &EventError{Topic: c.txTopic, Offset: g.cur.offset, CommitLSN: g.cur.frame.CommitLSN,
					Xid: g.cur.frame.Xid, FrameOffset: g.cur.offset, Err: err}
			}
			return err
		}
		r.cp.merge(g.cp)
		r.reset, r.boot = nil, nil
		st.progressed = true
		applied += g.sourceTxns
		c.cfg.Observer.Applied(Applied{SourceTxns: g.sourceTxns, Rows: b.rows, CommitLSN: r.cp.CommitLSN,
			CommitTime: r.cp.CommitTime, Took: time.Since(start)})
		c.cfg.Observer.Behind(r.behind())
		if time.Since(lastLog) > 10*time.Second {
			c.log.Info("applying", "commit_lsn", r.cp.CommitLSN, "commit_ts", r.cp.CommitTime, "applied_txns", applied)
			lastLog = time.Now()
		}
		if time.Since(lastCommit) > 5*time.Second {
			c.commitGroupOffsets(ctx, r.adm, r.cp.Next)
			lastCommit = time.Now()
		}
	}
}

// group produces the events of one Batch: whole frames, while more are
// already read and the group limits allow.
type group struct {
	booted int // bootstrap truncates returned (reader.boot)
	r      *reader
	st     *runState
	b      *Batch
	cp     Checkpoint
	cur    *frameCursor
	txns   int
	// sourceTxns counts the frames of source transactions: not the
	// producer's heartbeats (no transaction, no event), which only move
	// the checkpoint's commit time, so that an idle source's consumer stays
	// fresh.
	sourceTxns int
	events     int
	first      int64
	started    time.Time // when the first frame was opened
}

func (g *group) next(ctx context.Context) (*Event, error) {
	r, cfg := g.r, &g.r.c.cfg
	for g.booted < len(r.boot) {
		ev := r.boot[g.booted]
		g.booted++
		if keep, err := r.c.transform(ev); err != nil {
			return nil, err
		} else if keep {
			return ev, nil
		}
	}
	for {
		if g.cur == nil {
			if g.txns > 0 {
				isolate := g.st.isolateThrough >= 0 && g.first <= g.st.isolateThrough
				full := isolate || g.txns >= cfg.GroupMaxTxns || g.events >= cfg.GroupMaxEvents ||
					r.tx.pending() > 0 && r.tx.peek().Offset == g.st.cutBefore
				if !full && r.tx.pending() == 0 {
					// Wait up to GroupLinger for more whole transactions,
					// unless the reader is at the end it catches up to.
					left := cfg.GroupLinger - time.Since(g.started)
					atEnd := r.end >= 0 && r.tx.seen >= r.end
					if left > 0 && !atEnd {
						if err := r.poll(ctx, left); err != nil {
							return nil, err
						}
						continue
					}
				}
				if full || r.tx.pending() == 0 {
					g.finish()
					return nil, io.EOF
				}
			} else if err := r.waitFrame(ctx); err != nil {
				return nil, err
			}
			if g.first < 0 {
				g.first = r.tx.peek().Offset
				g.started = time.Now()
			}
			fc, err := r.openFrame(ctx)
			if err != nil {
				return nil, err
			}
			g.cur = fc
			g.txns++
			if !fc.frame.Heartbeat() {
				g.sourceTxns++
			}
		}
		rec, err := g.cur.next(ctx)
		if err != nil {
			return nil, err
		}
		if rec == nil {
			g.cur.checkpoint(&g.cp)
			g.cur = nil
			continue
		}
		if rec.Topic != r.c.msgTopic && r.c.filter != nil && !r.c.filter[rec.Topic] {
			continue
		}
		if rec.Value == nil && rec.Topic != r.c.msgTopic {
			continue // a tombstone after a delete (--tombstones): counted, not an event
		}
		ev := &Event{Txn: g.cur.txn, Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset}
		ev.Position, _ = headerInt(rec, schemas.HeaderPosition)
		if rec.Topic == r.c.msgTopic {
			if ev.Message, err = r.dec.message(ctx, rec); err != nil {
				return nil, ev.Wrap(err)
			}
		} else if err := r.dec.event(ctx, rec, ev); err != nil {
			return nil, ev.Wrap(err)
		}
		if keep, err := r.c.transform(ev); err != nil {
			return nil, err
		} else if !keep {
			continue
		}
		g.events++
		return ev, nil
	}
}

func (g *group) finish() { g.b.cp = g.cp }
