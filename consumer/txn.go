package consumer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog"
)

// reader is a transactional session's reading side: the reassembly core
// (reassembler) over the session's Kafka client (kafkaFetcher), with the
// decoder of events and what the session's first batch must carry.
type reader struct {
	*reassembler
	c   *Consumer
	cl  *kgo.Client
	adm *kadm.Client
	dec *decoder
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
	src := &kafkaFetcher{cl: cl, adm: adm, kafka: c.cfg.Kafka, txTopic: c.txTopic}
	if err := src.startTransactions(ctx, off); err != nil {
		cl.Close()
		return nil, err
	}
	dec := newDecoder(c.cfg.Registry)
	r := &reader{reassembler: newReassembler(src, dec, c.txTopic, c.cfg.PartitionBuffer, cp, next),
		c: c, cl: cl, adm: adm, dec: dec}
	r.bytes = c.cfg.PartitionBufferBytes
	r.total = readAheadBound{c.cfg.ReadAhead, c.cfg.ReadAheadBytes}
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

// kafkaFetcher is the fetcher of a session's reassembler: its Kafka client.
type kafkaFetcher struct {
	cl      *kgo.Client
	adm     *kadm.Client
	kafka   []kgo.Opt // Config.Kafka, for txlog's own clients
	txTopic string
	// txAwait is where to start the transactions topic once it exists;
	// nil once it is consumed.
	txAwait *kgo.Offset
}

// txAwaitPoll is how often a consumer started before its producer looks
// for the transactions topic.
const txAwaitPoll = 100 * time.Millisecond

// startTransactions starts fetching the transactions topic at off, or, when
// the topic does not exist yet, notes off for poll to start it once it
// does: franz-go retries the listing of a missing topic's offsets only
// after a second.
func (f *kafkaFetcher) startTransactions(ctx context.Context, off kgo.Offset) error {
	starts, err := f.adm.ListStartOffsets(ctx, f.txTopic)
	if err != nil {
		return fmt.Errorf("start offset of %s: %w", f.txTopic, err)
	}
	if lo, ok := starts.Lookup(f.txTopic, 0); !ok || errors.Is(lo.Err, kerr.UnknownTopicOrPartition) {
		f.txAwait = &off
		return nil
	}
	f.cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{f.txTopic: {0: off}})
	f.txAwait = nil
	return nil
}

func (f *kafkaFetcher) poll(ctx context.Context, wait time.Duration, add func(*kgo.Record)) (int64, error) {
	if f.txAwait != nil {
		if err := f.startTransactions(ctx, *f.txAwait); err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			return 0, err
		}
		if f.txAwait != nil {
			wait = min(wait, txAwaitPoll)
		}
	}
	pctx, cancel := context.WithTimeout(ctx, wait)
	fs := f.cl.PollRecords(pctx, 8192)
	cancel()
	if ctx.Err() != nil {
		return 0, ctx.Err()
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
		return 0, ferr
	}
	var lso int64
	fs.EachPartition(func(p kgo.FetchTopicPartition) {
		if p.Topic == f.txTopic && p.LastStableOffset > lso {
			lso = p.LastStableOffset
		}
	})
	fs.EachRecord(add)
	return lso, nil
}

func (f *kafkaFetcher) consume(s Stream, at int64) {
	f.cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{s.Topic: {s.Partition: kgo.NewOffset().At(at)}})
}

func (f *kafkaFetcher) pause(s Stream) {
	f.cl.PauseFetchPartitions(map[string][]int32{s.Topic: {s.Partition}})
}

func (f *kafkaFetcher) resume(s Stream) {
	f.cl.ResumeFetchPartitions(map[string][]int32{s.Topic: {s.Partition}})
}

func (f *kafkaFetcher) committedEnd(ctx context.Context, s Stream) (end int64, open, ok bool) {
	committed, err := f.adm.ListCommittedOffsets(ctx, s.Topic)
	if err != nil {
		return 0, false, false
	}
	newest, err := f.adm.ListEndOffsets(ctx, s.Topic)
	if err != nil {
		return 0, false, false
	}
	lso, ok1 := committed.Lookup(s.Topic, s.Partition)
	hwm, ok2 := newest.Lookup(s.Topic, s.Partition)
	if !ok1 || !ok2 || lso.Err != nil || hwm.Err != nil {
		return 0, false, false
	}
	return lso.Offset, hwm.Offset > lso.Offset, true
}

func (f *kafkaFetcher) locate(ctx context.Context, s Stream, lsn pglogrepl.LSN, at time.Time) (int64, error) {
	b, err := txlog.PartitionBounds(ctx, f.adm, s.Topic, s.Partition)
	if err != nil {
		return 0, err
	}
	next, err := txlog.PositionFor(ctx, f.kafka, f.adm, s.Topic, s.Partition, b, uint64(lsn), at, txlog.HeaderLSN)
	if err != nil {
		return 0, err
	}
	if next == b.Start && b.Start > 0 {
		// The partition's first record may already be past lsn's.
		first, err := txlog.ReadFirst(ctx, f.kafka, s.Topic, s.Partition, b)
		if err != nil {
			return 0, err
		}
		if flsn, ok := txlog.HeaderLSN(first); first != nil && ok && flsn > uint64(lsn) {
			return 0, Permanent(&BehindRetentionError{Topic: s.Topic, Partition: s.Partition, Checkpoint: -1, LogStart: b.Start})
		}
	}
	return next, nil
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
		c.cfg.Observer.ReadAhead(r.readAhead())
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
					if left > 0 && !r.atEnd() {
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
		ev := &Event{Txn: g.cur.txn, Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset, Size: recordSize(rec)}
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
