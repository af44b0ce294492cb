package producer

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The stream keeps reading and encoding while a group's Kafka transaction
// commits (Flush and EndTransaction). A commit runs in its own goroutine; the
// records of the next group wait in a bounded queue until it ends, and then
// go into a new Kafka transaction in their order. G5 is unchanged: the
// confirmed position (slotPosition) moves only when awaitCommit has seen the
// commit succeed, and only to the end of the group that commit held.

// Bounds of the queue of records waiting for a commit to end. When either is
// reached the stream waits for the commit, as it did before the overlap.
const (
	queueMaxBytes   = 8 << 20
	queueMaxRecords = 20000
)

// inflightCommit is one group's Kafka commit running in the background.
type inflightCommit struct {
	done     chan struct{} // closed when the commit has ended
	finished atomic.Bool   // set just before done is closed
	err      error         // valid once done is closed

	end    pglogrepl.LSN // end of the group's last source transaction
	txns   int
	events int
	start  time.Time
	took   time.Duration // Flush and EndTransaction; valid once done is closed
}

// groupOpen reports whether events wait to be committed outside any commit
// in flight: in the open Kafka transaction or in the queue.
func (s *session) groupOpen() bool { return s.w.inTxn || len(s.queue) > 0 }

// commitGroupAsync starts the commit of the open Kafka transaction and
// returns; a commit still in flight is awaited first. The confirmed position
// moves when awaitCommit sees this commit succeed.
func (s *session) commitGroupAsync(ctx context.Context) error {
	if err := s.awaitCommit(ctx); err != nil {
		return err
	}
	if !s.w.inTxn {
		return nil
	}
	// The state that the group's frames advanced goes into the same Kafka
	// transaction (state.go).
	for _, r := range s.state.records(s.cfg.Slot) {
		s.w.produce(r)
	}
	var current pglogrepl.LSN // a source transaction being streamed is not in the group
	if s.tx != nil && !s.tx.skip {
		current = s.tx.commitLSN
	}
	p := &inflightCommit{done: make(chan struct{}), end: s.pos.commitStarted(current), txns: s.groupTxns, events: s.groupEvents, start: time.Now()}
	s.groupEvents, s.groupTxns = 0, 0
	s.draining, s.probed = false, false
	s.inflight = p
	w, wake := s.w, s.wake
	w.inTxn = false // the goroutine owns the transaction until done
	go func() {
		p.err = w.commitOpen(ctx)
		p.took = time.Since(p.start)
		p.finished.Store(true)
		close(p.done)
		if wake != nil {
			wake()
		}
	}()
	return nil
}

// awaitCommit waits for the commit in flight, if any, and applies it: the
// confirmed position moves to the end of its group, and the queued records
// go into a new Kafka transaction. An error of the commit is returned; then
// nothing of its group or of the queue is in Kafka.
func (s *session) awaitCommit(ctx context.Context) error {
	p := s.inflight
	if p == nil {
		return nil
	}
	<-p.done
	s.inflight = nil
	if p.err != nil {
		s.pos.commitFailed()
		s.queue, s.queueBytes = nil, 0
		return p.err
	}
	s.cfg.Observer.KafkaCommitted(p.txns, p.events, p.took)
	s.prog.txns += p.txns
	s.prog.events += p.events
	s.prog.commits++
	s.pos.committed()
	s.log.Debug("kafka transaction committed", "source_txns", p.txns, "events", p.events, "end_lsn", p.end, "took", p.took)
	s.progressed = true
	if len(s.queue) == 0 {
		return nil
	}
	start := s.queueStart
	if err := s.beginGroup(); err != nil {
		return err
	}
	s.groupStart = start
	for i, r := range s.queue {
		s.w.produce(r)
		s.queue[i] = nil
	}
	s.queue, s.queueBytes = s.queue[:0], 0
	return nil
}

// pollCommit applies the commit in flight if it has ended, without waiting.
func (s *session) pollCommit(ctx context.Context) error {
	if s.inflight != nil && s.inflight.finished.Load() {
		return s.awaitCommit(ctx)
	}
	return nil
}

// send hands r to the open Kafka transaction, opening one if needed, or
// queues it while a commit is in flight and the queue has room.
func (s *session) send(ctx context.Context, r *kgo.Record) error {
	if s.inflight != nil {
		if !s.inflight.finished.Load() && s.queueBytes < queueMaxBytes && len(s.queue) < queueMaxRecords {
			if len(s.queue) == 0 {
				s.queueStart = time.Now()
			}
			s.queue = append(s.queue, r)
			s.queueBytes += len(r.Key) + len(r.Value)
			return nil
		}
		if err := s.awaitCommit(ctx); err != nil {
			return err
		}
	}
	if err := s.beginGroup(); err != nil {
		return err
	}
	s.w.produce(r)
	return nil
}
