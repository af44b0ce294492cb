package producer

import "github.com/jackc/pglogrepl"

// slotPosition decides the flush position the producer confirms to its
// replication slot, the heart of G5: the slot moves past a source
// transaction only once Kafka has committed it. It is a pure state machine
// fed by the session (session.go, overlap.go), one method per event of the
// stream, and is property-tested without a server (position_test.go). It is
// used by one goroutine.
//
// The position is the end of the last group Kafka committed, or beyond it
// the WAL end a keepalive (or a transaction with nothing for Kafka) reported,
// as long as no source transaction that began before that end is still on
// its way to Kafka; it never goes below what was last sent (the slot's own
// position at the start).
type slotPosition struct {
	confirmed pglogrepl.LSN // end of the last group Kafka committed
	sent      pglogrepl.LSN // flush position last sent; the floor
	serverEnd pglogrepl.LSN // WAL end of the last keepalive or transaction with nothing for Kafka
	// pendingFrom is the commit LSN of the oldest source transaction begun
	// and not yet durable; 0 if none. nextPendingFrom is what it becomes
	// once the commit in flight ends: the first transaction that began
	// after that commit started.
	pendingFrom     pglogrepl.LSN
	nextPendingFrom pglogrepl.LSN
	groupEnd        pglogrepl.LSN // end of the last transaction framed into the open group
	inflight        bool          // a group's Kafka commit is in flight
	inflightEnd     pglogrepl.LSN // end of that group
}

// floor makes lsn the least position ever sent: the slot's confirmed
// position when the session starts, or a new slot's consistent point. A
// session that has committed nothing to Kafka yet would otherwise send 0,
// which pglogrepl replaces with the write position.
func (p *slotPosition) floor(lsn pglogrepl.LSN) { p.sent = lsn }

// resume records that Kafka holds everything up to end already (the state
// topic's position).
func (p *slotPosition) resume(end pglogrepl.LSN) { p.confirmed = end }

// begin records a source transaction, with commit LSN commit, that the
// session will send to Kafka unless it turns out to have nothing for it.
func (p *slotPosition) begin(commit pglogrepl.LSN) {
	if p.pendingFrom == 0 {
		p.pendingFrom = commit
	}
	if p.inflight && p.nextPendingFrom == 0 {
		p.nextPendingFrom = commit
	}
}

// framed records that the transaction being streamed, ending at end, went
// into the open group (its frame is written).
func (p *slotPosition) framed(end pglogrepl.LSN) { p.groupEnd = end }

// skipped records that the transaction being streamed, with commit LSN
// commit and ending at end, has nothing for Kafka (already there, from an
// origin not forwarded, or with no published change). groupOpen says
// whether framed transactions wait in a group that has not started to
// commit. Its end is then handled as a keepalive's: the slot may pass it
// once what precedes it is durable. If it began while a commit was in
// flight it must not hold the position once that commit ends.
func (p *slotPosition) skipped(commit, end pglogrepl.LSN, groupOpen bool) {
	if p.nextPendingFrom == commit {
		p.nextPendingFrom = 0
	}
	if !groupOpen && !p.inflight {
		p.pendingFrom = 0
	}
	p.keepalive(end)
}

// keepalive records the WAL end a keepalive reported.
func (p *slotPosition) keepalive(walEnd pglogrepl.LSN) {
	if walEnd > p.serverEnd {
		p.serverEnd = walEnd
	}
}

// commitStarted records that the open group's Kafka commit started, and
// returns the end of its last transaction. current is the commit LSN of the
// source transaction being streamed, if it is bound for Kafka (0 otherwise):
// it is not in the group, so it is pending after the commit.
func (p *slotPosition) commitStarted(current pglogrepl.LSN) pglogrepl.LSN {
	p.inflight, p.inflightEnd = true, p.groupEnd
	p.nextPendingFrom = current
	return p.inflightEnd
}

// committed records that the commit in flight succeeded: the position may
// move to the end of its group, and the oldest pending transaction is the
// first that began after the commit started (or was being streamed then).
func (p *slotPosition) committed() {
	if !p.inflight {
		return
	}
	p.inflight = false
	if p.inflightEnd > p.confirmed {
		p.confirmed = p.inflightEnd
	}
	p.pendingFrom, p.nextPendingFrom = p.nextPendingFrom, 0
}

// commitFailed records that the commit in flight failed; the session ends.
func (p *slotPosition) commitFailed() { p.inflight = false }

// flush is the position safe to confirm: everything committed to Kafka,
// and beyond it the last reported WAL end when no transaction before it is
// still pending; never below what was sent.
func (p *slotPosition) flush() pglogrepl.LSN {
	pos := p.confirmed
	if p.serverEnd > pos && (p.pendingFrom == 0 || p.serverEnd < p.pendingFrom) {
		pos = p.serverEnd
	}
	return max(pos, p.sent)
}

// sentFlush records that lsn (flush's value) was sent to the slot.
func (p *slotPosition) sentFlush(lsn pglogrepl.LSN) { p.sent = lsn }
