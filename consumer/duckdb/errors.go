package duckdb

import (
	"context"
	"errors"
	"fmt"
	"strings"

	ddb "github.com/duckdb/duckdb-go/v2"

	"github.com/tributary-cdc/tributary/consumer"
)

// Causes of a failure at the database file. An error of the sink wraps one
// of them when DuckDB reports that cause. Such an error is about the file,
// not about the events being loaded: it is marked with consumer.Halt, so the
// consumer stops at its checkpoint under every --on-error policy, and a
// restart after the fix resumes there.
var (
	// ErrLocked: another process has the file open; a DuckDB file has one
	// writer at a time.
	ErrLocked = errors.New("locked by another process (a DuckDB file has one writer at a time)")
	// ErrReadOnly: the file or its directory is on a read-only file system,
	// or not writable.
	ErrReadOnly = errors.New("read-only (read-only file system or no write permission)")
	// ErrNoSpace: a write failed for lack of space: the file system is full,
	// or a quota or file-size limit is reached.
	ErrNoSpace = errors.New("no space left for the database file (disk full, quota or file-size limit)")
	// ErrMemoryLimit: an operation that cannot spill to <file>.tmp needed
	// more than DuckDB's memory limit.
	ErrMemoryLimit = errors.New("out of DuckDB's memory limit (raise --duckdb-memory-limit)")
)

// classify finds the cause of a DuckDB error from the OS error its message
// reports (nil when it names none), and whether the error is about the
// database rather than the data, so that the consumer must halt.
func classify(err error) (cause error, halt bool) {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "Could not set lock on file") || strings.Contains(msg, "Conflicting lock"):
		cause = ErrLocked
	case strings.Contains(msg, "Read-only file system") || strings.Contains(msg, "Permission denied"):
		cause = ErrReadOnly
	case strings.Contains(msg, "No space left on device") || strings.Contains(msg, "File too large") ||
		strings.Contains(msg, "Disk quota exceeded"):
		cause = ErrNoSpace
	}
	var de *ddb.Error
	isDuck := errors.As(err, &de)
	if cause == nil && isDuck && de.Type == ddb.ErrorTypeOutOfMemory {
		cause = ErrMemoryLimit
	}
	return cause, cause != nil || isDuck && haltTypes[de.Type]
}

// haltTypes are the DuckDB error types about the database rather than the
// data: I/O, a database invalidated by an earlier fatal error, permissions
// and the memory limit.
var haltTypes = map[ddb.ErrorType]bool{ddb.ErrorTypeIO: true, ddb.ErrorTypeFatal: true,
	ddb.ErrorTypePermission: true, ddb.ErrorTypeOutOfMemory: true}

// oneLine is an error whose message has its line breaks (DuckDB's messages
// have some) replaced by spaces, so that a stopping consumer's last line
// says it all. It unwraps to the original.
type oneLine struct{ err error }

func (o oneLine) Error() string { return strings.ReplaceAll(o.err.Error(), "\n", " ") }
func (o oneLine) Unwrap() error { return o.err }

// errorf wraps a DuckDB error with the database file, what was being done,
// and the cause (ErrLocked, ...) when known. Unless ctx ended, the result is
// permanent, and marked with consumer.Halt when it is about the file.
func (s *Sink) errorf(ctx context.Context, err error, format string, args ...any) error {
	cause, halt := classify(err)
	if cause != nil {
		err = fmt.Errorf("%w: %w", cause, oneLine{err})
	} else {
		err = oneLine{err}
	}
	err = fmt.Errorf("duckdb %s: "+format+": %w", append(append([]any{s.cfg.Path}, args...), err)...)
	switch {
	case ctx.Err() != nil:
		return err
	case halt:
		return consumer.Halt(err)
	default:
		return consumer.Permanent(err)
	}
}

// span describes the source transactions of one micro-batch, for errors.
type span struct {
	txns        int
	first, last *consumer.Txn
	tables      []string
	seen        map[string]bool
	frameTopic  string // the transactions topic, once known
}

func (sp *span) add(ev *consumer.Event) {
	if ev.Txn != sp.last {
		if sp.first == nil {
			sp.first = ev.Txn
		}
		sp.last = ev.Txn
		sp.txns++
	}
	if ev.Table != nil && !sp.seen[ev.Table.String()] {
		if sp.seen == nil {
			sp.seen = map[string]bool{}
		}
		sp.seen[ev.Table.String()] = true
		sp.tables = append(sp.tables, ev.Table.String())
	}
}

// String is "micro-batch of N source transactions (commit_lsn A..B, tables
// x, y; frames at offsets F..G of <transactions topic>)": where the
// consumer stops and, after the fix, resumes.
func (sp *span) String() string {
	if sp.first == nil {
		return "micro-batch before its first change"
	}
	topic := "the transactions topic"
	if sp.frameTopic != "" {
		topic = sp.frameTopic
	}
	if sp.txns == 1 {
		s := fmt.Sprintf("micro-batch of 1 source transaction (commit_lsn %s xid %d, tables %s",
			sp.first.CommitLSN, sp.first.Xid, strings.Join(sp.tables, ", "))
		if sp.first.Offset >= 0 {
			s += fmt.Sprintf("; frame at offset %d of %s", sp.first.Offset, topic)
		}
		return s + ")"
	}
	s := fmt.Sprintf("micro-batch of %d source transactions (commit_lsn %s..%s, tables %s",
		sp.txns, sp.first.CommitLSN, sp.last.CommitLSN, strings.Join(sp.tables, ", "))
	if sp.first.Offset >= 0 {
		s += fmt.Sprintf("; frames at offsets %d..%d of %s", sp.first.Offset, sp.last.Offset, topic)
	}
	return s + ")"
}

// wrap names the micro-batch in err, which keeps its permanence.
func (sp *span) wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", sp, err)
}

// setTopic takes the transactions topic's name from the batch checkpoint.
func (sp *span) setTopic(cp consumer.Checkpoint) {
	for st := range cp.Next {
		if st.Kind == consumer.StreamTransactions {
			sp.frameTopic = st.Topic
		}
	}
}
