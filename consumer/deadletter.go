package consumer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Headers added to dead-lettered records, next to the original headers.
const (
	HeaderDLQReason      = "tributary.dlq.reason"
	HeaderDLQTopic       = "tributary.dlq.topic"
	HeaderDLQPartition   = "tributary.dlq.partition"
	HeaderDLQOffset      = "tributary.dlq.offset"
	HeaderDLQFrameOffset = "tributary.dlq.frame_offset"
	HeaderDLQConsumer    = "tributary.dlq.consumer"
)

// deadLetter writes the frame at st.deadLetter and all its records, raw, to
// the dead-letter topic, then moves the sink's checkpoint past the frame. The
// Kafka write happens first: a crash in between writes the transaction to the
// dead-letter topic twice, never zero times.
func (r *reader) deadLetter(ctx context.Context, st *runState) error {
	c := r.c
	if err := r.waitFrame(ctx); err != nil {
		if errors.Is(err, io.EOF) {
			st.deadLetter = -1
			return nil
		}
		return err
	}
	if r.tx.peek().Offset != st.deadLetter {
		// The checkpoint is elsewhere (the failed group was applied after all).
		st.deadLetter = -1
		return nil
	}
	frameRec := r.tx.peek()
	fc, err := r.openFrame(ctx)
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, c.cfg.Kafka...), kgo.DefaultProduceTopic(c.dlqTopic),
		kgo.RequiredAcks(kgo.AllISRAcks()))...)
	if err != nil {
		return Permanent(fmt.Errorf("dead-letter client: %w", err))
	}
	defer cl.Close()
	if _, err := r.adm.CreateTopic(ctx, 1, -1, nil, c.dlqTopic); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create dead-letter topic %s: %w", c.dlqTopic, err)
	}
	reason := st.reason.Error()
	var perr error
	send := func(rec *kgo.Record) {
		hs := append([]kgo.RecordHeader{}, rec.Headers...)
		hs = append(hs,
			kgo.RecordHeader{Key: HeaderDLQReason, Value: []byte(reason)},
			kgo.RecordHeader{Key: HeaderDLQTopic, Value: []byte(rec.Topic)},
			kgo.RecordHeader{Key: HeaderDLQPartition, Value: []byte(strconv.Itoa(int(rec.Partition)))},
			kgo.RecordHeader{Key: HeaderDLQOffset, Value: []byte(strconv.FormatInt(rec.Offset, 10))},
			kgo.RecordHeader{Key: HeaderDLQFrameOffset, Value: []byte(strconv.FormatInt(fc.offset, 10))},
			kgo.RecordHeader{Key: HeaderDLQConsumer, Value: []byte(c.cfg.Name)},
		)
		out := &kgo.Record{Key: rec.Key, Value: rec.Value, Headers: hs, Topic: c.dlqTopic}
		cl.Produce(ctx, out, func(_ *kgo.Record, err error) {
			if err != nil && perr == nil {
				perr = err
			}
		})
	}
	n := 0
	for {
		rec, err := fc.next(ctx)
		if err != nil {
			return err
		}
		if rec == nil {
			break
		}
		send(rec)
		n++
	}
	send(frameRec)
	if err := cl.Flush(ctx); err != nil {
		return fmt.Errorf("dead-letter flush: %w", err)
	}
	if perr != nil {
		return fmt.Errorf("dead-letter produce to %s: %w", c.dlqTopic, perr)
	}
	b := &Batch{next: func(context.Context) (*Event, error) { return nil, io.EOF }}
	b.cp = Checkpoint{Next: map[Stream]int64{}}
	fc.checkpoint(&b.cp)
	if err := c.cfg.Sink.Apply(ctx, b); err != nil {
		return fmt.Errorf("advance checkpoint past the dead-lettered transaction: %w", err)
	}
	r.cp.merge(b.cp)
	c.cfg.Observer.DeadLettered(fc.frame.CommitLSN)
	c.log.Warn("dead-lettered a source transaction", "topic", c.dlqTopic, "frame_offset", fc.offset,
		"commit_lsn", fc.frame.CommitLSN, "xid", fc.frame.Xid, "records", n, "reason", reason)
	st.deadLetter, st.reason, st.progressed = -1, nil, true
	return nil
}
