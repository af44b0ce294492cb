package producer

import (
	"fmt"
	"time"
)

// Reading a group's window at once.
//
// At a steady rate the walsender sends each pgoutput message as soon as it
// has decoded it, and a stream that reads every message as it comes wakes
// several times per source transaction: in a CPU profile of the producer at
// 5,000 rows/s, reads of the replication connection and the poller's waits
// took 27% of its CPU and the scheduler another 11%. A group's Kafka
// transaction commits no earlier than --group-max-delay after it opened, so
// what arrives before then needs reading only by then.
//
// While a group waits for its deadline, or a commit is in flight, the
// stream raises the connection's SO_RCVLOWAT to coalesceBytes: a read that
// finds the socket empty wakes when that much is queued, at the group's
// deadline, or when the commit ends (s.wake). A read that finds bytes
// returns them at once, so a backlog reads as before. When the group falls
// due, the stream first reads what the socket holds (at most coalesceBytes
// more) and then commits at the next source commit: the group holds what
// arrived in its window, as when every message was read on arrival, and
// the records reach Kafka together with the commit that the linger held
// them for anyway.
//
// Over TLS the mark is set on the socket under the TLS layer. That layer
// reads ahead of what it returns, so when pgconn's buffer and the kernel's
// queue are empty it may still hold records: the drain then reads once
// with a deadline already past, which returns what the layer holds without
// waiting for the socket, or times out and ends the drain (arrivedUnread).
// On a Unix socket the stream reads message by message, as before
// (newReplSocket); so it does with --synchronous, where every source
// commit commits its group at once (coalesce).
const coalesceBytes = 64 << 10

// groupDeadline is when the open group reaches --group-max-delay: the open
// Kafka transaction's, or while a commit is in flight, the queue's.
func (s *session) groupDeadline() time.Time {
	start := s.groupStart
	if !s.w.inTxn {
		start = s.queueStart
	}
	return start.Add(s.cfg.GroupMaxDelay)
}

// coalesce sets the socket's low-water mark for the next wait: high while
// the open group waits for its deadline or a commit is in flight (each wait
// then ends by that deadline or by the commit's end), one byte otherwise.
// A group that commits before its deadline does not wait for it: with
// --synchronous every source commit commits its group, and a group full by
// --group-max-events commits at the next one.
func (s *session) coalesce(now time.Time) error {
	if s.sock == nil {
		return nil
	}
	want := 1
	if s.groupOpen() && !s.cfg.Synchronous && s.groupEvents < s.cfg.GroupMaxEvents &&
		(s.inflight != nil || now.Before(s.groupDeadline())) {
		want = coalesceBytes
	}
	if want == s.lowWater {
		return nil
	}
	if err := s.sock.setLowWater(want); err != nil {
		return s.readEachMessage(err)
	}
	s.lowWater = want
	return nil
}

// arrivedUnread reports whether a group that fell due has more to read
// before it commits: bytes buffered or queued on the replication
// connection, of which it reads at most coalesceBytes since it fell due.
// Over TLS, with nothing buffered or queued, it asks for a probe (s.probe)
// until one finds the TLS layer empty.
func (s *session) arrivedUnread() (bool, error) {
	if s.sock == nil {
		return false, nil
	}
	if !s.draining {
		s.draining, s.drainFrom = true, s.consumed
	}
	if s.consumed-s.drainFrom >= coalesceBytes {
		return false, nil
	}
	if s.repl.Frontend().ReadBufferLen() > 0 {
		return true, nil
	}
	n, err := s.sock.queued()
	if err != nil {
		return false, s.readEachMessage(err)
	}
	if n == 0 && s.sock.readsAhead && !s.probed {
		s.probe = true
		return true, nil
	}
	return n > 0, nil
}

// readEachMessage stops coalescing after the socket refused a request: the
// stream goes on reading every message as it comes. It fails only when the
// low-water mark cannot be put back to one byte, since a wait could then
// outlast its group.
func (s *session) readEachMessage(cause error) error {
	if s.lowWater > 1 {
		if err := s.sock.setLowWater(1); err != nil {
			return fmt.Errorf("replication socket of slot %s: %w (after %v)", s.cfg.Slot, err, cause)
		}
	}
	s.log.Warn("reading the replication connection message by message", "slot", s.cfg.Slot, "error", cause)
	s.sock, s.lowWater = nil, 1
	return nil
}
