package consumer

import (
	"context"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/tributary-cdc/tributary/schemas"
)

// Sink is where a consumer replays events: a target database, a history store,
// a warehouse. The sink owns the checkpoint storage, so that the checkpoint
// commits atomically with the data it covers.
//
// The consumer calls Open once, then Checkpoint and Apply any number of
// times, then Close. In transactional mode calls are sequential; in per-key
// mode Checkpoint and Apply may be called concurrently, but concurrent batches
// never share a Stream.
type Sink interface {
	// Open prepares the sink: connections, the checkpoint storage.
	Open(ctx context.Context) error
	// Checkpoint returns the checkpoint last committed for this consumer,
	// read from durable storage (the consumer calls it again after a failed
	// Apply, whose commit may or may not have happened), or an empty
	// Checkpoint when there is none.
	Checkpoint(ctx context.Context) (Checkpoint, error)
	// Apply reads every event of b with b.Next until io.EOF, applies them in
	// that order, then writes b.Checkpoint() and commits, all in one target
	// transaction: after Apply returns nil, the events and the checkpoint are
	// durable together; after it returns an error, neither is. Apply must
	// not retain events after it returns. An error about one event should
	// be made with Event.Errorf or Event.Wrap, so that it names the topic,
	// partition, offset, table, key and LSN. Errors are judged by
	// internal/retry: mark one that retrying cannot fix with Permanent
	// (PostgreSQL errors outside the transient SQLSTATE classes already
	// are), and one about the sink's database rather than the data with Halt.
	Apply(ctx context.Context, b *Batch) error
	// Close releases the sink's resources. It is called once, after the last
	// Apply has returned.
	Close(ctx context.Context) error
}

// StreamKind says which reading position a checkpoint entry records.
type StreamKind string

// The kinds of checkpoint entries.
const (
	// StreamTransactions is the transactions topic (partition 0).
	StreamTransactions StreamKind = "transactions"
	// StreamData is a data or messages partition read in transactional mode.
	StreamData StreamKind = "data"
	// StreamPerKey is a data partition read in per-key mode.
	StreamPerKey StreamKind = "per-key"
)

// Stream is one topic-partition as read in one way; it keys a checkpoint entry.
type Stream struct {
	Kind      StreamKind
	Topic     string
	Partition int32
}

// Checkpoint is a consumer's durable position.
type Checkpoint struct {
	// Next is the next offset to read, per stream. A stream without an
	// entry is read from its start.
	Next map[Stream]int64
	// CommitLSN and CommitTime are those of the last source transaction
	// applied; zero when none.
	CommitLSN  pglogrepl.LSN
	CommitTime time.Time
}

// CheckpointRow is one stored entry of a consumer's checkpoint, as every
// sink's checkpoint table (tributary_checkpoint) holds it: one row per
// consumer and stream. Sinks read their rows with their own read methods
// (pgtarget.ReadCheckpoints, duckdb.ReadCheckpoints); FoldCheckpoints makes
// Checkpoints of them.
type CheckpointRow struct {
	Consumer string
	Stream   Stream
	Next     int64
	// CommitLSN and CommitTime are those of the last source transaction
	// applied when the row was written; zero when it recorded none.
	CommitLSN  pglogrepl.LSN
	CommitTime time.Time
	// AppliedAt is when the row was written, by the target's clock.
	AppliedAt time.Time
}

// ErrNoCheckpointTable is wrapped by a sink's checkpoint reader when the
// checkpoint table does not exist: no consumer has run against the target.
var ErrNoCheckpointTable = errors.New("no checkpoint table")

// FoldCheckpoints groups rows by consumer into Checkpoints: every stream's
// next offset, and the commit LSN and time of the row with the highest commit
// LSN. It is the one reading of checkpoint rows: a consumer resuming, and
// tools that copy or report checkpoints, agree on it.
func FoldCheckpoints(rows []CheckpointRow) map[string]Checkpoint {
	out := map[string]Checkpoint{}
	for _, r := range rows {
		cp, ok := out[r.Consumer]
		if !ok {
			cp = Checkpoint{Next: map[Stream]int64{}}
		}
		cp.Next[r.Stream] = r.Next
		if r.CommitLSN > cp.CommitLSN {
			cp.CommitLSN, cp.CommitTime = r.CommitLSN, r.CommitTime
		}
		out[r.Consumer] = cp
	}
	return out
}

// Txn describes the source transaction an event belongs to. It is shared by
// every event of the transaction; sinks must not modify it.
type Txn struct {
	Xid        uint32
	CommitLSN  pglogrepl.LSN
	CommitTime time.Time
	Origin     string
	Snapshot   bool // a snapshot chunk rather than a source transaction
	// Initial is a chunk of the initial snapshot, read in the slot's
	// exported snapshot before streaming: its reads are the table's rows,
	// exactly (also a table's equal rows, which only a unique key tells
	// apart). An online snapshot's reads may repeat rows a sink has.
	Initial bool
	Offset  int64 // offset of the frame in the transactions topic; -1 in per-key mode
}

// Column is one column of a table as its value schema describes it.
type Column struct {
	Field   string // Avro field name
	Name    string // PostgreSQL column name (tributary.column)
	SQLType string // format_type of the column (tributary.sql_type)
	Key     bool   // part of the replication key (tributary.key)
	// Type and Typmod are the PostgreSQL type that the column's Avro form
	// carries (int4 for any Avro int, timestamptz for timestamp-micros, ...):
	// schemas.MapType(Type, Typmod, schemas.UnsupportedFail) is its codec.
	// Transforms use them to type-check and convert values.
	Type   schemas.PGType
	Typmod int32
	// Encode converts a decoded Avro native value (never nil) to a
	// PostgreSQL text input literal of SQLType. A value of the column's
	// text branch (schemas/TYPES.md) is a Go string where the typed form is
	// not, and Encode returns it as it is: byte for byte the source's text.
	Encode func(native any) (string, error)
	// reader is the codec's ReaderValue when the column's field has the
	// text branch, else nil.
	reader func(v any) any
}

// Table is one table version, derived from a value schema. It is immutable
// and shared by every event written with that schema.
type Table struct {
	Schema   string
	Name     string
	Topic    string
	SchemaID int // value schema ID in the registry
	Columns  []Column
	Key      []int // indexes into Columns of the key columns
}

// String is schema.table, unquoted.
func (t *Table) String() string { return t.Schema + "." + t.Name }

// QualifiedName is schema.table with both parts quoted.
func (t *Table) QualifiedName() string {
	return schemas.QuoteIdent(t.Schema) + "." + schemas.QuoteIdent(t.Name)
}

// Message is a logical decoding message (pg_logical_emit_message).
type Message struct {
	Prefix        string
	Content       []byte
	Transactional bool
}

// Event is one change, in the order the sink must apply it.
type Event struct {
	Txn       *Txn
	Topic     string
	Partition int32
	Offset    int64
	Position  int64 // position within the source transaction
	// Size is the bytes of the Kafka record's key and value: what a sink
	// that holds events counts to bound its memory by bytes, not only by
	// events.
	Size int

	// Op is the change: insert, update, delete, snapshot read or truncate;
	// empty for a message.
	Op    schemas.Op
	Table *Table // nil for a message
	// Before and After are native Avro values in Table.Columns order (nil
	// is SQL NULL), or nil when the image is absent.
	Before, After []any
	// Unchanged holds the indexes of columns whose TOASTed value did not
	// change; After holds nil for them and the target keeps its value.
	Unchanged []int
	// Pending is set on a change of a table whose online snapshot is
	// active (the tributary.snapshot header): the row it changes may not
	// have reached the sink yet. Sinks apply such a change leniently: an
	// update of a row they lack inserts it (or, with unchanged TOAST
	// columns, waits for the snapshot's read of it), a delete of a row they
	// lack does nothing.
	Pending bool
	// LSN is the change's own position in the source's WAL; the truncate
	// events of one TRUNCATE statement share it.
	LSN pglogrepl.LSN
	// Truncate holds a truncate's options as the source gave them:
	// "restart_identity", "cascade".
	Truncate []string
	Message  *Message // set when Op is empty
}

// Idempotent reports whether applying the event over a row the sink already
// has must not fail: a snapshot read (op r), which sinks apply as an
// upsert, or a pending change.
func (e *Event) Idempotent() bool { return e.Op == schemas.OpRead || e.Pending }

// Unkeyed reports whether t's key is every column: a table with REPLICA
// IDENTITY FULL and no primary key, which may hold equal rows and NULLs,
// so that a key names a row's value rather than one row.
func (t *Table) Unkeyed() bool { return len(t.Key) == len(t.Columns) }

// KeyString renders the event's key columns as PostgreSQL does in error
// details, "(a, b)=(1, x)", from After, or Before when After is absent.
func (e *Event) KeyString() string {
	if e.Table == nil {
		return ""
	}
	row := e.After
	if row == nil {
		row = e.Before
	}
	if row == nil {
		return ""
	}
	names := make([]string, 0, len(e.Table.Key))
	vals := make([]string, 0, len(e.Table.Key))
	for _, i := range e.Table.Key {
		c := e.Table.Columns[i]
		names = append(names, c.Name)
		v := "NULL"
		if row[i] != nil {
			if s, err := c.Encode(row[i]); err == nil {
				v = s
			} else {
				v = "?"
			}
		}
		vals = append(vals, v)
	}
	return "(" + strings.Join(names, ", ") + ")=(" + strings.Join(vals, ", ") + ")"
}

// Wrap returns err as an *EventError naming e. It keeps err's permanence.
func (e *Event) Wrap(err error) error {
	if err == nil {
		return nil
	}
	ee := &EventError{Topic: e.Topic, Partition: e.Partition, Offset: e.Offset, Key: e.KeyString(), Err: err}
	if e.Table != nil {
		ee.Table = e.Table.String()
	}
	if e.Txn != nil {
		ee.CommitLSN, ee.Xid, ee.FrameOffset = e.Txn.CommitLSN, e.Txn.Xid, e.Txn.Offset
	}
	return ee
}

// Batch is a stream of events of whole source transactions, in apply order,
// followed by the checkpoint to write with them. It is used by one goroutine.
type Batch struct {
	next func(ctx context.Context) (*Event, error)
	cp   Checkpoint
	done bool
	err  error

	txns   int
	events int
	rows   map[string]int // events per "schema.table", for Observer.Applied
}

// Next returns the next event, or io.EOF after the last one. Any other error
// ends the batch: the sink must roll back and return an error (Apply may
// return the error Next returned). The returned event is valid until Apply
// returns.
func (b *Batch) Next(ctx context.Context) (*Event, error) {
	if b.done {
		if b.err != nil {
			return nil, b.err
		}
		return nil, io.EOF
	}
	ev, err := b.next(ctx)
	if err != nil {
		b.done = true
		if !errors.Is(err, io.EOF) {
			b.err = err
		}
		return nil, err
	}
	b.events++
	if ev.Table != nil {
		if b.rows == nil {
			b.rows = map[string]int{}
		}
		b.rows[ev.Table.Schema+"."+ev.Table.Name]++
	}
	return ev, nil
}

// Each calls fn with each event of b, in order, until Next returns io.EOF,
// and returns nil then; it stops at the first error of Next or fn and
// returns it.
func (b *Batch) Each(ctx context.Context, fn func(*Event) error) error {
	for {
		ev, err := b.Next(ctx)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
}

// Checkpoint returns the checkpoint to write with the batch: only the
// entries that changed. It is valid once Next has returned io.EOF.
func (b *Batch) Checkpoint() Checkpoint { return b.cp }

// Events is how many events Next has returned so far.
func (b *Batch) Events() int { return b.events }
