package consumer

import (
	"time"

	"github.com/jackc/pglogrepl"
)

// Observer watches a consumer, for metrics and health checks. The consumer
// calls it from its own goroutines (per-key mode: several at once), so an
// implementation must be safe for concurrent use and return quickly. Embed
// NopObserver to implement only some methods.
type Observer interface {
	// Ready reports whether a session is connected and applying.
	Ready(ready bool)
	// Applied reports one committed target transaction.
	Applied(Applied)
	// Behind reports, after each read of the transactions topic, how many
	// offsets (frames and transaction markers) are committed in Kafka but
	// not yet applied. Transactional mode only.
	Behind(offsets int64)
	// ReadAhead reports, after each applied target transaction, what the
	// consumer has read ahead of it. Transactional mode only.
	ReadAhead(ReadAhead)
	// DeadLettered reports a source transaction sent to the dead-letter topic.
	DeadLettered(commitLSN pglogrepl.LSN)
	// Retrying reports a transient error after which the consumer resumes
	// from its checkpoint.
	Retrying(err error)
}

// Applied describes one committed target transaction.
type Applied struct {
	SourceTxns int            // whole source transactions in it
	Rows       map[string]int // events per source table, "schema.table"
	CommitLSN  pglogrepl.LSN  // the last source transaction's commit LSN
	CommitTime time.Time      // and its commit time at the source
	Took       time.Duration  // from reading the first event to the target commit
}

// ReadAhead is what a transactional consumer has read from the data
// partitions and not yet applied, bounded by Config.PartitionBuffer,
// PartitionBufferBytes, ReadAhead and ReadAheadBytes.
type ReadAhead struct {
	Records int // buffered records
	Bytes   int // the bytes of their keys and values
	Paused  int // data partitions whose fetching the bounds paused
}

// NopObserver ignores everything.
type NopObserver struct{}

// Ready implements Observer.
func (NopObserver) Ready(bool) {}

// Applied implements Observer.
func (NopObserver) Applied(Applied) {}

// Behind implements Observer.
func (NopObserver) Behind(int64) {}

// ReadAhead implements Observer.
func (NopObserver) ReadAhead(ReadAhead) {}

// DeadLettered implements Observer.
func (NopObserver) DeadLettered(pglogrepl.LSN) {}

// Retrying implements Observer.
func (NopObserver) Retrying(error) {}
