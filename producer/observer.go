package producer

import (
	"time"

	"github.com/jackc/pglogrepl"
)

// Observer watches a producer, for metrics and health checks. The producer
// calls it from Run's goroutine; methods must return quickly and must not
// call back into the producer. Embed NopObserver to implement only some.
type Observer interface {
	// Streaming reports whether a replication session is streaming changes.
	Streaming(active bool)
	// Positions reports the replication positions after each standby status
	// update.
	Positions(Positions)
	// KafkaCommitted reports one committed Kafka transaction: how many source
	// transactions and events it held, and how long the commit took.
	KafkaCommitted(sourceTxns, events int, took time.Duration)
	// SnapshotProgress reports a table's snapshot progress after each chunk.
	SnapshotProgress(SnapshotProgress)
	// Retrying reports a transient error after which a new replication
	// session resumes from the durable state.
	Retrying(err error)
}

// Positions are the replication positions of the producer's slot.
type Positions struct {
	ServerWAL   pglogrepl.LSN // pg_current_wal_lsn() on the source
	Received    pglogrepl.LSN // write position: WAL the producer has processed
	Confirmed   pglogrepl.LSN // flush position: durable in Kafka, confirmed to the slot
	ConfirmedAt time.Time     // when Confirmed last moved
}

// LagBytes is how much WAL the slot holds back: the source's WAL position
// minus the confirmed position.
func (p Positions) LagBytes() uint64 {
	if p.ServerWAL <= p.Confirmed {
		return 0
	}
	return uint64(p.ServerWAL - p.Confirmed)
}

// NopObserver ignores everything.
type NopObserver struct{}

// Streaming implements Observer.
func (NopObserver) Streaming(bool) {}

// Positions implements Observer.
func (NopObserver) Positions(Positions) {}

// KafkaCommitted implements Observer.
func (NopObserver) KafkaCommitted(int, int, time.Duration) {}

// SnapshotProgress implements Observer.
func (NopObserver) SnapshotProgress(SnapshotProgress) {}

// Retrying implements Observer.
func (NopObserver) Retrying(error) {}
