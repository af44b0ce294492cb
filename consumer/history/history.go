// Package history is the change-history sink of the consumer (the seed's
// "Implementing a Change History"): instead of updating rows it appends a
// new version of a row for every change, into a history table per source
// table in a target PostgreSQL database, and keeps the checkpoint in the
// same target transaction.
//
// Layout: for source table s.t the sink creates s.t_history (or
// Config.Schema.t_history) holding every source column plus
//
//	version     bigint       1, 2, 3 ... per replication key, managed by the writer
//	op          text         c (insert), u (update), d (delete), r (snapshot read), t (truncate)
//	commit_lsn  pg_lsn       commit LSN of the source transaction
//	commit_ts   timestamptz  commit time of the source transaction
//	xid         bigint       source transaction id
//	position    bigint       position of the change within its source transaction
//	valid_from  timestamptz  when this version became current
//	valid_to    timestamptz  when the next version replaced it; NULL while current
//
// and the functions s.t_as_of(timestamptz), s.t_as_of_lsn(pg_lsn) and
// s.t_versions(key columns...). docs/SINKS.md shows them in use.
//
// Promises:
//   - Each Apply is one target transaction holding the history rows of the
//     batch's events and the consumer's checkpoint rows (tributary_checkpoint,
//     shared with the PostgreSQL sink's layout).
//   - Exactly one history row per insert, update, delete and snapshot read,
//     in commit order; versions per key are consecutive from 1, also when
//     one source transaction or one batch changes a key several times.
//   - Slowly-changing dimension type 2: the new row's valid_from is its
//     commit time and the previous version's valid_to is closed to it in the
//     same statement. Validity ranges of one key never overlap: they
//     are half-open, [valid_from, valid_to), and valid_from never goes back
//     in time within a key (a commit time earlier than the previous version's
//     valid_from is raised to it). Versions replaced within one commit get
//     empty ranges, so no as-of query ever sees a state the source never
//     committed. A delete row and a truncate row are closed at once (their
//     range is empty): the key has no current version after them.
//   - Every row is complete: columns whose TOASTed value did not change are
//     carried forward from the key's previous version, and a delete row
//     carries the key's last values (from the previous version; from the
//     delete's before image when the history has none).
//   - A truncate is recorded as a row with op t for every key that was
//     current, carrying its last values, and closes those versions.
//   - An update that changes the replication key is recorded as a delete
//     (op d) of the old key and a change of the new key: op c with its own
//     position, as the producer sends it, or op u with the update's position
//     for an update event whose images hold both keys. Keys equal at the
//     target in another text form (numeric 1.0 and 1.00) are one key.
//   - Replay is idempotent: (replication key, commit_lsn, position) is a
//     unique key, and a change at or before the key's latest recorded change
//     is skipped, on top of the checkpoint.
//   - History tables are created on first sight of a table and gain the
//     columns the source gains. A source column named like one of the
//     columns above is a permanent error naming it.
//   - Errors name the topic, partition, offset, table, key and commit LSN;
//     they are classified like the PostgreSQL sink's.
//
// Apply and Checkpoint may be called concurrently (per-key mode); each Apply
// holds one pooled connection.
package history

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/postgres/pgtarget"

	"github.com/jackc/pgx/v5"
)

// Config configures a Sink. Each field maps to one flag of `tributary
// consumer --sink history`, named in its comment.
type Config struct {
	// DSN is the target database (--target). Required.
	DSN string
	// Consumer is the consumer's name (--name); it keys the checkpoint rows.
	// Required.
	Consumer string
	// CheckpointSchema holds tributary_checkpoint (--checkpoint-schema);
	// "public" by default.
	CheckpointSchema string
	// Schema, when set, holds every history table and function
	// (--history-schema); by default each goes into its source table's
	// schema.
	Schema string
	// FlushRows is how many changes of one table are sent in one statement
	// (--flush-rows; default 5000). Larger is faster and holds more memory.
	FlushRows int
	// MaxConns bounds the pool (default 8).
	MaxConns int32
	// Logger receives structured logs; nil means slog.Default().
	Logger *slog.Logger
}

// Sink is the history sink. Create it with New.
type Sink struct {
	pgtarget.Target // pool and checkpoint rows: Checkpoint and Close
	cfg             Config
	log             *slog.Logger

	mu     sync.Mutex
	tables map[int]*layout // by value schema ID; checked in the target once committed
}

var _ consumer.Sink = (*Sink)(nil)

// New validates cfg and returns a sink; Open connects.
func New(cfg Config) (*Sink, error) {
	if cfg.DSN == "" {
		return nil, errors.New("history sink: DSN (--target): required")
	}
	if cfg.Consumer == "" {
		return nil, errors.New("history sink: Consumer (--name): required")
	}
	if cfg.FlushRows < 0 {
		return nil, fmt.Errorf("history sink: FlushRows (--flush-rows) %d: must not be negative", cfg.FlushRows)
	}
	if cfg.CheckpointSchema == "" {
		cfg.CheckpointSchema = "public"
	}
	if cfg.FlushRows == 0 {
		cfg.FlushRows = 5000
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 8
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Sink{cfg: cfg, log: cfg.Logger.With("sink", "history"),
		Target: pgtarget.NewTarget(cfg.CheckpointSchema, cfg.Consumer), tables: map[int]*layout{}}, nil
}

// Open connects, checks that the connection may suppress triggers, and
// creates the checkpoint table when it is missing.
func (s *Sink) Open(ctx context.Context) error {
	return s.Connect(ctx, s.cfg.DSN, int(s.cfg.MaxConns), nil)
}

// Apply appends the history rows of b's events and writes b's checkpoint in
// one target transaction.
func (s *Sink) Apply(ctx context.Context, b *consumer.Batch) error {
	return s.InTx(ctx, pgx.TxOptions{}, nil, func(tx pgx.Tx) error {
		w := newWriter(s, tx)
		if err := b.Each(ctx, func(ev *consumer.Event) error { return w.add(ctx, ev) }); err != nil {
			return err
		}
		if err := w.flushAll(ctx); err != nil {
			return err
		}
		cp := b.Checkpoint()
		if err := s.Checkpoints().Write(ctx, tx, cp); err != nil {
			return err
		}
		if err := tx.Commit(ctx); err != nil {
			return fmt.Errorf("commit (commit_lsn %s): %w", cp.CommitLSN, err)
		}
		s.Checkpoints().Committed(cp)
		if len(w.created) > 0 || len(w.forgotten) > 0 {
			s.mu.Lock()
			for id, l := range s.tables {
				if slices.Contains(w.forgotten, l.t.String()) {
					delete(s.tables, id)
				}
			}
			for id, l := range w.created {
				s.tables[id] = l
			}
			s.mu.Unlock()
		}
		s.log.Debug("applied", "events", b.Events(), "rows", w.rows, "commit_lsn", cp.CommitLSN)
		return nil
	})
}
