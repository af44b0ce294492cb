package consumer

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/tributary-cdc/tributary/internal/retry"
)

// ErrMismatch is wrapped by a FrameError when a frame and the records of its
// partitions disagree: a record with another commit LSN, a missing header,
// positions out of order, or fewer committed records than the frame counts.
var ErrMismatch = errors.New("frame and records disagree")

// Permanent marks err as terminal: Run does not retry it. It is
// internal/retry's Terminal mark under the name the Sink and TxnHandler
// contracts use, for sinks and handlers written outside this module too;
// retry.IsTerminal reports it, as it does PostgreSQL errors outside the
// transient SQLSTATE classes and the other terminal kinds. Permanent(nil) is
// nil.
func Permanent(err error) error { return retry.Terminal(err) }

// IsPermanent reports whether Run stops on err rather than retrying it:
// internal/retry's rule (retry.IsTerminal), for code outside the module.
func IsPermanent(err error) bool { return retry.IsTerminal(err) }

// structuralError marks a terminal error that the dead-letter policy must
// not skip: the stream itself is inconsistent, or the sink's database (not
// the data) is at fault (Halt).
type structuralError struct{ err error }

func (s *structuralError) Error() string { return s.err.Error() }
func (s *structuralError) Unwrap() error { return s.err }

func structural(err error) error { return Permanent(&structuralError{err}) }

func isStructural(err error) bool {
	var s *structuralError
	return errors.As(err, &s)
}

// EventError is an error about one record: it names where the record is and
// what it changes.
type EventError struct {
	Topic       string
	Partition   int32
	Offset      int64
	Table       string // schema.table; empty when unknown
	Key         string // "(col)=(value)"; empty when unknown
	CommitLSN   pglogrepl.LSN
	Xid         uint32
	FrameOffset int64 // offset of the frame in the transactions topic; -1 when none
	Err         error
}

func (e *EventError) Error() string {
	s := fmt.Sprintf("topic %s partition %d offset %d", e.Topic, e.Partition, e.Offset)
	if e.Table != "" {
		s += " table " + e.Table
	}
	if e.Key != "" {
		s += " key " + e.Key
	}
	if e.CommitLSN != 0 {
		s += fmt.Sprintf(" commit_lsn %s xid %d", e.CommitLSN, e.Xid)
	}
	return s + ": " + e.Err.Error()
}

func (e *EventError) Unwrap() error { return e.Err }

// FrameError is an error about one commit frame of the transactions topic.
type FrameError struct {
	Topic     string // the transactions topic
	Offset    int64  // the frame's offset
	CommitLSN pglogrepl.LSN
	Xid       uint32
	Err       error
}

func (e *FrameError) Error() string {
	s := fmt.Sprintf("frame at topic %s partition 0 offset %d", e.Topic, e.Offset)
	if e.CommitLSN != 0 {
		s += fmt.Sprintf(" commit_lsn %s xid %d", e.CommitLSN, e.Xid)
	}
	return s + ": " + e.Err.Error()
}

func (e *FrameError) Unwrap() error { return e.Err }

// isContext reports whether err comes from ctx being done.
func isContext(ctx context.Context, err error) bool {
	return ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ctx.Err()))
}

// CutBatchError is returned by Sink.Apply, wrapped or not, when the sink
// cannot apply an event in the same target transaction as the events before
// it (DuckDB cannot alter a table that its transaction has already
// changed). The consumer then applies the source transactions before the
// frame at FrameOffset as one batch and starts the next batch with it;
// nothing is retried with backoff and nothing is lost.
type CutBatchError struct {
	FrameOffset int64
	Reason      string
}

func (e *CutBatchError) Error() string {
	return fmt.Sprintf("the batch must end before the frame at offset %d: %s", e.FrameOffset, e.Reason)
}

// fetchError is the error of a fetch from topic partition p. A fetch below
// the log start (OFFSET_OUT_OF_RANGE: retention deleted records this
// consumer has not read) is retried, whatever franz-go calls it: the next
// session checks its positions against retention first and stops with the
// ErrBehindRetention that names where (see checkRetention).
func fetchError(topic string, p int32, err error) error {
	err = fmt.Errorf("fetch %s partition %d: %w", topic, p, err)
	if errors.Is(err, kerr.OffsetOutOfRange) {
		return retry.Retryable(err)
	}
	return err
}
