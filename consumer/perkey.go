package consumer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog"
)

// perKeySession applies every data partition in parallel, one worker (and one
// Kafka client) per partition, each with its own checkpoint entry. New topics
// are picked up every 30 seconds.
func (c *Consumer) perKeySession(ctx context.Context, st *runState) error {
	cp, err := c.cfg.Sink.Checkpoint(ctx)
	if err != nil {
		return fmt.Errorf("read checkpoint: %w", err)
	}
	meta, err := kgo.NewClient(c.cfg.Kafka...)
	if err != nil {
		return Permanent(fmt.Errorf("kafka client: %w", err))
	}
	defer meta.Close()
	adm := kadm.NewClient(meta)
	boot, err := c.perKeyStart(ctx, adm, cp)
	if err != nil {
		return err
	}
	c.cfg.Observer.Ready(true)
	defer c.cfg.Observer.Ready(false)

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var progressed bool
	started := map[Stream]bool{}
	discover := func() error {
		topics, err := adm.ListTopics(ctx)
		if err != nil {
			return fmt.Errorf("list topics: %w", err)
		}
		var names []string
		for _, t := range topics.Sorted() {
			if c.isDataTopic(t.Topic) {
				names = append(names, t.Topic)
			}
		}
		var ends kadm.ListedOffsets
		if st.untilCaughtUp && len(names) > 0 {
			if ends, err = adm.ListCommittedOffsets(ctx, names...); err != nil {
				return fmt.Errorf("end offsets: %w", err)
			}
		}
		for _, t := range topics.Sorted() {
			if !c.isDataTopic(t.Topic) {
				continue
			}
			for _, p := range t.Partitions.Sorted() {
				s := Stream{Kind: StreamPerKey, Topic: t.Topic, Partition: p.Partition}
				if started[s] {
					continue
				}
				end := int64(-1)
				if st.untilCaughtUp {
					lo, ok := ends.Lookup(t.Topic, p.Partition)
					if !ok {
						return fmt.Errorf("end offset of %s partition %d: not in the answer", t.Topic, p.Partition)
					}
					if lo.Err != nil {
						return fmt.Errorf("end offset of %s partition %d: %w", t.Topic, p.Partition, lo.Err)
					}
					end = lo.Offset
				}
				started[s] = true
				next, skip, err := c.perKeyOffset(ctx, adm, cp, s, boot)
				if err != nil {
					return err
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					w := &keyWorker{c: c, s: s, end: end, skipBelow: skip, dec: newDecoder(c.cfg.Registry)}
					err := w.run(ctx, next, func() { mu.Lock(); progressed = true; mu.Unlock() })
					if err != nil && ctx.Err() == nil {
						cancel(err)
					}
				}()
			}
		}
		return nil
	}
	err = discover()
	if err == nil && !st.untilCaughtUp {
		t := time.NewTicker(30 * time.Second)
	loop:
		for {
			select {
			case <-ctx.Done():
				break loop
			case <-t.C:
				if err = discover(); err != nil {
					break loop
				}
			}
		}
		t.Stop()
	}
	if err != nil {
		cancel(err)
	}
	wg.Wait()
	st.progressed = progressed
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// isDataTopic reports whether topic is one of the prefix's table topics
// selected by Config.Tables.
func (c *Consumer) isDataTopic(topic string) bool {
	return schemas.IsDataTopic(c.cfg.Prefix, topic) && (c.filter == nil || c.filter[topic])
}

// perKeyBoot is where a per-key consumer bootstrapping from an online
// snapshot starts each partition: at the records of the snapshot's request.
type perKeyBoot struct {
	lsn uint64
	at  time.Time
}

// perKeyStart checks the checkpoint against the log's retention, and with
// Config.FromSnapshot finds where a consumer with no usable checkpoint
// starts; nil means from the checkpoint or the log's start.
func (c *Consumer) perKeyStart(ctx context.Context, adm *kadm.Client, cp Checkpoint) (*perKeyBoot, error) {
	behind, err := c.behindRetention(ctx, adm, cp, false)
	if err != nil {
		return nil, err
	}
	if c.cfg.FromSnapshot == "" || len(cp.Next) > 0 && behind == nil {
		if behind != nil {
			return nil, Permanent(behind)
		}
		return nil, nil
	}
	found, err := txlog.FindSnapshot(ctx, c.cfg.Kafka, adm, schemas.StateTopic(c.cfg.Prefix), c.cfg.FromSnapshot)
	if err != nil {
		return nil, err
	}
	if found == nil {
		return nil, Permanent(fmt.Errorf("--from-snapshot %s: no such online snapshot in %s; request one with tributary snapshot start",
			c.cfg.FromSnapshot, schemas.StateTopic(c.cfg.Prefix)))
	}
	c.log.Info("bootstrapping from an online snapshot", "snapshot", found.ID, "commit_lsn", found.RequestLSN)
	return &perKeyBoot{lsn: uint64(found.RequestLSN), at: found.Requested}, nil
}

// perKeyOffset is where a per-key worker starts s: its checkpoint, or
// (bootstrapping) the first records of the snapshot's request, dropping
// those below skip at its head, or the partition's start when nothing was
// deleted from it.
func (c *Consumer) perKeyOffset(ctx context.Context, adm *kadm.Client, cp Checkpoint, s Stream, boot *perKeyBoot) (int64, uint64, error) {
	if next, ok := cp.Next[s]; ok && next >= 0 && boot == nil {
		return next, 0, nil
	}
	b, err := txlog.PartitionBounds(ctx, adm, s.Topic, s.Partition)
	if err != nil {
		return 0, 0, err
	}
	if boot == nil {
		if b.Start > 0 {
			return 0, 0, Permanent(&BehindRetentionError{Topic: s.Topic, Partition: s.Partition, Checkpoint: -1, LogStart: b.Start})
		}
		return b.Start, 0, nil
	}
	off, err := txlog.PositionFor(ctx, c.cfg.Kafka, adm, s.Topic, s.Partition, b, boot.lsn, boot.at, txlog.HeaderLSN)
	return off, boot.lsn, err
}

// keyWorker applies one partition in per-key mode.
type keyWorker struct {
	c         *Consumer
	s         Stream
	end       int64
	skipBelow uint64 // drop records below this commit LSN at the head
	dec       *decoder
}

func (w *keyWorker) run(ctx context.Context, next int64, progressed func()) error {
	c := w.c
	off := kgo.NewOffset().At(next)
	cl, err := c.newClient(map[string]map[int32]kgo.Offset{w.s.Topic: {w.s.Partition: off}})
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	p := &part{s: w.s, appended: next, seen: next}
	var lastCommit time.Time
	for {
		if w.end >= 0 && (p.seen >= w.end || w.end == 0) && p.pending() == 0 {
			return nil
		}
		if p.pending() == 0 {
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			fs := cl.PollRecords(pctx, c.cfg.GroupMaxEvents)
			cancel()
			if ctx.Err() != nil {
				return nil
			}
			var ferr error
			fs.EachError(func(t string, pt int32, err error) {
				if ferr == nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
					ferr = fetchError(t, pt, err)
				}
			})
			if ferr != nil {
				return ferr
			}
			fs.EachRecord(func(r *kgo.Record) {
				if r.Offset+1 > p.seen {
					p.seen = r.Offset + 1
				}
				if !r.Attrs.IsControl() && r.Offset >= p.appended {
					p.appended = r.Offset + 1
					if w.skipBelow > 0 {
						if lsn, ok := txlog.HeaderLSN(r); ok && lsn < w.skipBelow {
							return
						}
						w.skipBelow = 0
					}
					p.buf = append(p.buf, r)
				}
			})
			continue
		}
		b := &Batch{}
		b.cp = Checkpoint{Next: map[Stream]int64{}}
		n := 0
		b.next = func(ctx context.Context) (*Event, error) {
			for {
				if p.pending() == 0 || n >= c.cfg.GroupMaxEvents {
					return nil, io.EOF
				}
				rec := p.pop()
				n++
				b.cp.Next[w.s] = p.appendedTaken()
				if rec.Value == nil {
					continue // a tombstone after a delete (--tombstones)
				}
				ev := &Event{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset, Size: recordSize(rec)}
				ev.Position, _ = headerInt(rec, schemas.HeaderPosition)
				if err := w.dec.event(ctx, rec, ev); err != nil {
					return nil, ev.Wrap(err)
				}
				if lsn, ok := headerLSN(rec); ok && ev.Txn.CommitLSN != lsn {
					return nil, structural(ev.Wrap(fmt.Errorf("%w: header commit LSN %s, envelope %s", ErrMismatch, lsn, ev.Txn.CommitLSN)))
				}
				b.cp.CommitLSN, b.cp.CommitTime = ev.Txn.CommitLSN, ev.Txn.CommitTime
				keep, err := c.transform(ev)
				if err != nil {
					return nil, err
				}
				if keep {
					return ev, nil
				}
			}
		}
		start := time.Now()
		if err := c.cfg.Sink.Apply(ctx, b); err != nil {
			return err
		}
		if b.err != nil {
			return b.err
		}
		c.cfg.Observer.Applied(Applied{Rows: b.rows, CommitLSN: b.cp.CommitLSN, CommitTime: b.cp.CommitTime, Took: time.Since(start)})
		progressed()
		if time.Since(lastCommit) > 5*time.Second {
			c.commitGroupOffsets(ctx, adm, b.cp.Next)
			lastCommit = time.Now()
		}
	}
}
