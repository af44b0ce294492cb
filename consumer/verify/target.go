package verify

import (
	"context"
	"time"

	"github.com/jackc/pglogrepl"
)

// Position is how far a consumer has applied the source: the commit LSN and
// commit time of the last source transaction in its checkpoint.
type Position struct {
	// Known is false when the consumer has no checkpoint yet.
	Known bool
	// CommitLSN is the commit LSN of the last applied source transaction.
	CommitLSN pglogrepl.LSN
	// CommitTime is its source commit time; zero when not recorded.
	CommitTime time.Time
}

// Target is the sink-specific side of a comparison: where the consumer's
// checkpoint is read and how a consistent snapshot of its data is opened.
// The PostgreSQL sink's implementation is NewPostgresTarget; other sinks
// (history, DuckDB) add their own.
type Target interface {
	// Applied reads the consumer's checkpoint as it is now. It returns
	// ErrNoCheckpoint (wrapped) while the checkpoint does not exist yet.
	Applied(ctx context.Context) (Position, error)
	// Snapshot opens one consistent read of the target's data.
	Snapshot(ctx context.Context) (Snapshot, error)
	// Hasher opens a RowHasher on the database that hashes the target's
	// rows (the target's own; the source's for DuckDB), for comparisons that
	// transform the source rows (Config.Transform).
	Hasher(ctx context.Context) (RowHasher, error)
	// Describe names the target without secrets, for logs and reports.
	Describe() string
	// Close releases the target's connections.
	Close(ctx context.Context) error
}

// Snapshot is one consistent read of a database. Both sides of a comparison
// implement it; the engine only asks the source for key boundaries.
type Snapshot interface {
	// Applied reads the consumer's checkpoint inside the snapshot; a source
	// returns a zero Position.
	Applied(ctx context.Context) (Position, error)
	// Table resolves want (the source's table, with the source's columns) on
	// this side. It returns a nil TableDef and a nil error when the table is
	// missing, and a *SchemaError when a column is missing.
	Table(ctx context.Context, want *TableDef) (*TableDef, error)
	// Checksum aggregates the rows of r: their count and the sum of their
	// row hashes (see the package documentation), computed on the server.
	Checksum(ctx context.Context, t *TableDef, r Range) (Sum, error)
	// Rows streams the key and row hash of every row of r, in key order.
	Rows(ctx context.Context, t *TableDef, r Range, fn func(key []string, hash string) error) error
	// Boundaries returns up to n-1 keys that split r into n ranges of about
	// rows/n rows each; rows is r's row count.
	Boundaries(ctx context.Context, t *TableDef, r Range, rows int64, n int) ([][]string, error)
	// Close ends the read.
	Close(ctx context.Context) error
}

// RowHasher computes, in the database that hashes the target's rows, the key
// text forms and row hashes that the target's Checksum and Rows compute, for
// rows given as the text literals a sink writes: each value is parsed as its
// column's type first, so both sides print values the same way. It is used by
// one goroutine at a time.
type RowHasher interface {
	// Hash calls fn with the key (as text, in t.Key order) and the row
	// hash of each of rows, in order. A row holds one value per column of
	// t, in t.Columns order: a string literal, or nil for NULL.
	Hash(ctx context.Context, t *TableDef, rows [][]any, fn func(key []string, hash int64) error) error
	// Close releases the hasher's connection.
	Close(ctx context.Context) error
}

// Column is one compared column.
type Column struct {
	Name string
	// Type is the column's type on its side, as format_type prints it.
	Type string
	// Collation is the effective collation of a collatable column ("" when
	// the type is not collatable); "default" is resolved to the database's.
	Collation string
	// CompareCollation, when set, is used instead of the column's own
	// collation in key order and key comparisons.
	CompareCollation string
}

// TableDef is a table as one side sees it.
type TableDef struct {
	Schema, Name string
	// Columns are the source's columns, in the source's order.
	Columns []Column
	// Key are the replication-key columns, in index order.
	Key []Column
}

// String is schema.table.
func (t *TableDef) String() string { return t.Schema + "." + t.Name }

// Range is a key range: after Lo (exclusive) up to Hi (inclusive). A nil
// bound is open. Bound values are the key columns' text forms.
type Range struct {
	Lo, Hi []string
}

// Sum is a range's checksum.
type Sum struct {
	Rows int64
	// Hash is the decimal sum of the rows' signed 64-bit hashes.
	Hash string
}

// SchemaError is a table whose definition on the target does not allow a
// comparison, such as a missing column; it is reported as a difference.
type SchemaError struct {
	Table  string
	Reason string
}

func (e *SchemaError) Error() string { return e.Table + ": " + e.Reason }
