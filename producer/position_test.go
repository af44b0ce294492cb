package producer

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"
)

// posModel drives a slotPosition the way a session does, with random
// streams of source transactions, keepalives and Kafka commits, and knows
// which transactions Kafka holds.
type posModel struct {
	rng  *rand.Rand
	p    slotPosition
	lsn  pglogrepl.LSN // the WAL written so far
	log  []string
	sent pglogrepl.LSN // the last position sent

	cur      *modelTxn   // the transaction being streamed
	open     []*modelTxn // framed into the group that has not started to commit
	inflight []*modelTxn // framed into the group whose commit is in flight
	durable  int
}

type modelTxn struct {
	commit, end pglogrepl.LSN
	bound       bool // will be sent to Kafka unless it turns out empty
}

func (m *posModel) step() {
	m.lsn += pglogrepl.LSN(1 + m.rng.IntN(50))
	switch r := m.rng.IntN(100); {
	case r < 25 && m.cur == nil:
		// A transaction begins; its commit record is ahead in the WAL.
		commit := m.lsn + pglogrepl.LSN(m.rng.IntN(200))
		t := &modelTxn{commit: commit, end: commit + pglogrepl.LSN(1+m.rng.IntN(30)), bound: m.rng.IntN(8) != 0}
		if t.bound {
			m.p.begin(t.commit)
		}
		m.cur = t
		m.lsn = max(m.lsn, t.end) // pgoutput sends a transaction at its commit
		m.log = append(m.log, fmt.Sprintf("begin %s..%s bound=%v", t.commit, t.end, t.bound))
	case r < 50 && m.cur != nil:
		t := m.cur
		m.cur = nil
		if t.bound && m.rng.IntN(4) != 0 {
			m.p.framed(t.end)
			m.open = append(m.open, t)
			m.log = append(m.log, fmt.Sprintf("framed %s", t.commit))
		} else {
			m.p.skipped(t.commit, t.end, len(m.open) > 0)
			m.log = append(m.log, fmt.Sprintf("skipped %s", t.commit))
		}
	case r < 65:
		// The server reports a WAL end at or past everything it sent, in
		// the middle of a transaction's changes too.
		// Transactions that commit later commit past it.
		w := m.lsn + pglogrepl.LSN(m.rng.IntN(100))
		m.lsn = w
		m.p.keepalive(w)
		m.log = append(m.log, fmt.Sprintf("keepalive %s", w))
	case r < 78 && m.inflight == nil && len(m.open) > 0:
		// The session commits between source transactions; the position
		// must not depend on it, so the model also commits in the middle
		// of one.
		var current pglogrepl.LSN
		if m.cur != nil && m.cur.bound {
			current = m.cur.commit
		}
		m.p.commitStarted(current)
		m.inflight, m.open = m.open, nil
		m.log = append(m.log, fmt.Sprintf("commit started (%d txns)", len(m.inflight)))
	case r < 92 && m.inflight != nil:
		m.p.committed()
		m.durable += len(m.inflight)
		m.inflight = nil
		m.log = append(m.log, "committed")
	default:
		m.sent = m.p.flush()
		m.p.sentFlush(m.sent)
		m.log = append(m.log, fmt.Sprintf("status %s", m.sent))
	}
}

// check is G5 and its companions: the position never reaches the commit of
// a transaction Kafka does not hold (PostgreSQL would skip it after a
// restart), and never moves back.
func (m *posModel) check() error {
	pos := m.p.flush()
	if pos < m.sent {
		return fmt.Errorf("position %s is below the %s already sent", pos, m.sent)
	}
	waiting := append(append([]*modelTxn{}, m.open...), m.inflight...)
	if m.cur != nil && m.cur.bound {
		waiting = append(waiting, m.cur)
	}
	for _, t := range waiting {
		if pos > t.commit {
			return fmt.Errorf("position %s passes transaction %s, which Kafka does not hold", pos, t.commit)
		}
	}
	return nil
}

func TestSlotPositionNeverPassesWhatKafkaLacks(t *testing.T) {
	for seed := uint64(0); seed < 3000; seed++ {
		m := &posModel{rng: rand.New(rand.NewPCG(seed, 19))}
		start := pglogrepl.LSN(m.rng.IntN(1000))
		m.p.floor(start)
		m.sent, m.lsn = start, start
		for i := 0; i < 300; i++ {
			m.step()
			if err := m.check(); err != nil {
				t.Fatalf("seed %d, step %d: %v\n%s", seed, i, err, strings.Join(m.log, "\n"))
			}
		}
	}
}

// An idle source's slot moves: once nothing is on its way to Kafka, a
// keepalive's WAL end is the position.
func TestSlotPositionFollowsAnIdleSource(t *testing.T) {
	for seed := uint64(0); seed < 1000; seed++ {
		m := &posModel{rng: rand.New(rand.NewPCG(seed, 5))}
		for i := 0; i < 100; i++ {
			m.step()
		}
		// Drain: end the transaction, commit everything.
		if m.cur != nil {
			m.p.skipped(m.cur.commit, m.cur.end, len(m.open) > 0)
			m.cur = nil
		}
		for m.inflight != nil || len(m.open) > 0 {
			if m.inflight != nil {
				m.p.committed()
				m.inflight = nil
			} else {
				m.p.commitStarted(0)
				m.inflight, m.open = m.open, nil
			}
		}
		w := m.lsn + 100
		m.p.keepalive(w)
		if got := m.p.flush(); got != w {
			t.Fatalf("seed %d: idle position %s, want the keepalive's %s\n%s", seed, got, w, strings.Join(m.log, "\n"))
		}
	}
}

// The cases the session's comments name, one by one.
func TestSlotPositionCases(t *testing.T) {
	var p slotPosition
	p.floor(100)
	if p.flush() != 100 {
		t.Fatalf("a fresh session confirms the slot's own position, got %s", p.flush())
	}
	p.begin(200)
	p.keepalive(300) // WAL end past the transaction being streamed
	if p.flush() != 100 {
		t.Fatalf("a keepalive passed a pending transaction: %s", p.flush())
	}
	p.framed(210)
	p.commitStarted(0)
	p.begin(250) // begins while the commit is in flight
	p.framed(260)
	p.committed()
	if got := p.flush(); got != 210 {
		t.Fatalf("after the first group's commit: %s, want its end 210", got)
	}
	p.commitStarted(0)
	p.committed()
	if got := p.flush(); got != 300 {
		t.Fatalf("all durable: %s, want the keepalive's 300", got)
	}
	// A transaction with nothing for Kafka that began during a commit does
	// not hold the position after it.
	p.begin(305)
	p.framed(310)
	p.commitStarted(0)
	p.begin(320)
	p.skipped(320, 330, false)
	p.committed()
	if got := p.flush(); got != 330 {
		t.Fatalf("after an empty transaction during a commit: %s, want 330", got)
	}
}
