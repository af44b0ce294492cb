// Package postgres is the PostgreSQL sink of the consumer: it replays source
// transactions into a target PostgreSQL database with its checkpoint in the
// same target transaction, so that each source transaction is applied exactly
// once.
//
// Promises:
//   - Each Apply is one target transaction holding the batch's events, in
//     order, and the consumer's checkpoint rows in tributary_checkpoint.
//   - Target triggers do not fire during replay: every apply connection runs
//     SET session_replication_role = replica, so only triggers enabled
//     ALWAYS fire, and foreign keys (which are triggers) are not re-checked.
//     The apply role therefore needs to be a superuser or, from PostgreSQL
//     15 on, a dedicated least-privilege role given
//     GRANT SET ON PARAMETER session_replication_role TO tributary_apply;
//     plus INSERT, UPDATE, DELETE, TRUNCATE on the replicated tables and
//     CREATE on the checkpoint schema (and on target schemas with
//     CreateTables).
//   - Statements are prepared and pipelined with pgx batches; runs of plain
//     inserts into one table use COPY. Values travel as PostgreSQL text
//     literals (schemas.Codec.Encode), which the target parses with the
//     column's own input function.
//   - Bounded memory: the writer holds at most 2,000 events or 8 MiB of
//     their Kafka records before it flushes them, whatever the size of the
//     source transaction or of its rows.
//   - Set-based apply: a flush whose changes allow it (keyed tables without
//     replay triggers, no key changes, no snapshot reads, truncates or
//     pending changes, OnConflictError) applies each table's updates as one
//     UPDATE ... FROM unnest(...) per set of changed columns and its deletes
//     as one DELETE ... USING unnest(...), in waves that keep each key's
//     changes in order, inside a savepoint. Any error or unmatched row
//     rolls the savepoint back and applies the same changes in event
//     order, so a failure is reported exactly as event order reports it
//     (setapply.go). Sink.SetBasedStats counts both outcomes.
//   - Snapshot reads (op r) are upserts: a run of them is copied inside a
//     savepoint and, when a row exists, applied again as UPDATE-or-INSERT
//     statements (no unique constraint needed at the target). Changes
//     marked pending by an online snapshot (consumer.Event.Pending) are
//     lenient: an update of a missing row inserts it (with unchanged TOAST
//     columns it waits for the snapshot's read), a delete of a missing row
//     does nothing, an insert of an existing row updates it.
//   - Columns whose TOASTed value did not change are left as they are.
//   - Captured schema changes (schemas.DDLPrefix messages) are applied with
//     ApplyDDL, as structured statements in the apply transaction; the
//     source's sequence values (schemas.SequencesPrefix) move the target's
//     sequences forward, never back.
//   - OnConflictError (the default) stops on an insert whose key exists and
//     on an update or delete that matches no row. OnConflictUpsert (the
//     seed's "higher robustness") turns inserts and complete updates into
//     INSERT ... ON CONFLICT DO UPDATE and ignores deletes of missing rows.
//   - Errors name the topic, partition, offset, table, key and commit LSN.
//     Integrity, data and definition errors are permanent; connection loss,
//     serialization failures and deadlocks are transient.
//
// Multi-site replication (docs/MULTISITE.md) adds, when configured:
//   - Origin: each Apply runs under a PostgreSQL replication origin
//     (pg_replication_origin_session_setup on its connection, then
//     pg_replication_origin_xact_setup with the last source commit LSN and
//     time before COMMIT), so that the target's own producer sees the
//     Origin message and skips what the consumer wrote (no loops), and
//     pg_replication_origin_status shows how far the target has applied.
//     One session at a time may use an origin, so Applies that run at the
//     same time (per-key mode) each take their own instance of it,
//     conflict.OriginInstance: Origin, Origin#1, Origin#2, ... (created
//     when first needed); sequential Applies (transactional mode) always
//     use Origin itself.
//   - Conflicts: changes of the tables the engine handles are written one by
//     one through conflict.Session.Apply (row locked, compared, resolved,
//     recorded), in event order with the other writes of the transaction;
//     changes that were made at the local site and came back through a hub
//     are skipped.
//
// Apply and Checkpoint may be called concurrently (per-key mode); each Apply
// holds one pooled connection.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/conflict"
	"github.com/tributary-cdc/tributary/consumer/postgres/pgtarget"
)

// OnConflict is what the sink does when a change does not fit the target.
type OnConflict string

// The conflict policies.
const (
	OnConflictError  OnConflict = "error"
	OnConflictUpsert OnConflict = "upsert"
)

// ParseOnConflict parses --on-conflict.
func ParseOnConflict(s string) (OnConflict, error) {
	switch OnConflict(s) {
	case "", OnConflictError:
		return OnConflictError, nil
	case OnConflictUpsert:
		return OnConflictUpsert, nil
	}
	return "", fmt.Errorf("unknown conflict policy %q (want error or upsert)", s)
}

// Config configures a Sink.
type Config struct {
	// DSN is the target database (--target).
	DSN string
	// Consumer is the consumer's name (--name); it keys the checkpoint rows.
	Consumer string
	// CheckpointSchema holds tributary_checkpoint; "public" by default.
	CheckpointSchema string
	// OnConflict is --on-conflict; OnConflictError by default.
	OnConflict OnConflict
	// CreateTables creates missing target tables from the value schema and
	// adds columns when the schema gains them (--create-tables).
	CreateTables bool
	// MaxConns bounds the pool (default 8; per-key mode uses one per
	// partition being applied).
	MaxConns int32
	// CopyMin is the shortest run of plain inserts into one table that is
	// sent with COPY rather than INSERT statements (default 32).
	CopyMin int
	// Origin, when set, is the replication origin every Apply runs under
	// (--origin-name); it is created when missing. Concurrent Applies use
	// instances of it (see the package doc).
	Origin string
	// SynchronousCommit is the synchronous_commit of apply transactions.
	// The default is "off", as for PostgreSQL's own subscriptions: a commit
	// returns without waiting for its WAL flush. That is safe for
	// exactly-once effects because the checkpoint commits in the same
	// transaction: a target crash can only lose a suffix of applied
	// transactions together with their checkpoint, and the consumer applies
	// them again from Kafka. A synchronous_commit given in the DSN (as
	// options=-c synchronous_commit=on) is kept.
	SynchronousCommit string
	// ApplyDDL applies the schema changes that DDL capture records
	// (tributary setup ddl) to the target's tables, in the apply
	// transaction, at their place in the stream (--apply-ddl).
	ApplyDDL bool
	// Conflicts, when set, detects and resolves conflicts for the tables it
	// handles and skips changes that came back to their own site.
	Conflicts *conflict.Engine
	// Logger receives structured logs; nil means slog.Default().
	Logger *slog.Logger
}

// Sink is the PostgreSQL sink. Create it with New.
type Sink struct {
	pgtarget.Target // pool and checkpoint rows: Checkpoint and Close
	cfg             Config
	log             *slog.Logger

	mu      sync.Mutex
	ensured map[int]bool      // value schema IDs whose target table was checked
	sql     map[string]string // statement cache
	origins []originSlot      // instances of cfg.Origin, by index

	setApplied, setFellBack atomic.Int64 // flushes applied set-based, and rolled back to event order
}

// SetBasedStats returns how many flushes the sink applied set-based, and
// how many it tried set-based and then applied in event order because a
// statement failed or matched fewer rows than it should (see setapply.go).
func (s *Sink) SetBasedStats() (applied, fellBack int64) {
	return s.setApplied.Load(), s.setFellBack.Load()
}

// originSlot is one instance of the sink's replication origin.
type originSlot struct {
	busy    bool // an Apply holds it
	created bool // it exists at the target
}

// takeOrigin reserves the lowest free instance of the origin and returns
// its index and name; giveOrigin frees it.
func (s *Sink) takeOrigin() (int, string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := 0
	for i < len(s.origins) && s.origins[i].busy {
		i++
	}
	if i == len(s.origins) {
		s.origins = append(s.origins, originSlot{created: i == 0}) // Open created the first
	}
	s.origins[i].busy = true
	return i, conflict.OriginInstance(s.cfg.Origin, i), s.origins[i].created
}

func (s *Sink) giveOrigin(i int, created bool) {
	s.mu.Lock()
	s.origins[i].busy = false
	s.origins[i].created = s.origins[i].created || created
	s.mu.Unlock()
}

var _ consumer.Sink = (*Sink)(nil)

// New validates cfg and returns a sink; Open connects.
func New(cfg Config) (*Sink, error) {
	var err error
	if cfg.DSN == "" {
		return nil, errors.New("postgres sink: DSN (--target): required")
	}
	if cfg.Consumer == "" {
		return nil, errors.New("postgres sink: Consumer (--name): required")
	}
	if cfg.OnConflict, err = ParseOnConflict(string(cfg.OnConflict)); err != nil {
		return nil, fmt.Errorf("postgres sink: OnConflict: %w", err)
	}
	if cfg.CheckpointSchema == "" {
		cfg.CheckpointSchema = "public"
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 8
	}
	if cfg.CopyMin <= 0 {
		cfg.CopyMin = 32
	}
	if cfg.SynchronousCommit == "" {
		cc, err := pgconn.ParseConfig(cfg.DSN)
		if err != nil {
			return nil, consumer.Permanent(fmt.Errorf("postgres sink: DSN: %w", err))
		}
		if cc.RuntimeParams["synchronous_commit"] == "" && !strings.Contains(cc.RuntimeParams["options"], "synchronous_commit") {
			cfg.SynchronousCommit = "off"
		}
	}
	switch cfg.SynchronousCommit {
	case "", "off", "local", "remote_write", "on", "remote_apply":
	default:
		return nil, fmt.Errorf("postgres sink: SynchronousCommit %q: want off, local, remote_write, on or remote_apply", cfg.SynchronousCommit)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Sink{cfg: cfg, log: cfg.Logger.With("sink", "postgres"),
		Target:  pgtarget.NewTarget(cfg.CheckpointSchema, cfg.Consumer),
		ensured: map[int]bool{}, sql: map[string]string{}}, nil
}

// Open connects, checks that the connection may suppress triggers, and
// creates the checkpoint table when it is missing.
func (s *Sink) Open(ctx context.Context) error {
	return s.Connect(ctx, s.cfg.DSN, int(s.cfg.MaxConns), func(ctx context.Context, c *pgx.Conn) error {
		if s.cfg.Origin != "" {
			if err := pgtarget.CreateOrigin(ctx, c, s.cfg.Origin); err != nil {
				return err
			}
		}
		if s.cfg.Conflicts != nil {
			return s.cfg.Conflicts.Setup(ctx, c)
		}
		return nil
	})
}

// Apply applies b in one target transaction with its checkpoint.
func (s *Sink) Apply(ctx context.Context, b *consumer.Batch) error {
	var session func(*pgx.Conn) (func(), error)
	if s.cfg.Origin != "" {
		session = func(conn *pgx.Conn) (func(), error) { return s.originSession(ctx, conn) }
	}
	var opts pgx.TxOptions
	if sc := s.cfg.SynchronousCommit; sc != "" {
		opts.BeginQuery = "BEGIN; SET LOCAL synchronous_commit TO " + sc
	}
	return s.InTx(ctx, opts, session, func(tx pgx.Tx) error {
		w := &writer{s: s, tx: tx, newIDs: map[int]bool{}}
		if s.cfg.Conflicts != nil {
			w.cs = s.cfg.Conflicts.Begin()
		}
		if err := b.Each(ctx, func(ev *consumer.Event) error { return w.add(ctx, ev) }); err != nil {
			return err
		}
		if err := w.flush(ctx); err != nil {
			return err
		}
		if err := s.Checkpoints().Write(ctx, tx, b.Checkpoint()); err != nil {
			return err
		}
		if cp := b.Checkpoint(); s.cfg.Origin != "" && cp.CommitLSN != 0 {
			if err := pgtarget.OriginXactSetup(ctx, tx, cp.CommitLSN, cp.CommitTime); err != nil {
				return err
			}
		}
		if err := tx.Commit(ctx); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
		if w.cs != nil {
			w.cs.Committed()
		}
		s.Checkpoints().Committed(b.Checkpoint())
		if len(w.newIDs) > 0 {
			s.mu.Lock()
			for id := range w.newIDs {
				s.ensured[id] = true
			}
			s.mu.Unlock()
		}
		return nil
	})
}

// originSession takes an instance of the origin for conn (creating it at
// the target when it is new) and sets up conn's replication origin session;
// the returned function resets the session and frees the instance.
func (s *Sink) originSession(ctx context.Context, conn *pgx.Conn) (func(), error) {
	i, origin, created := s.takeOrigin()
	if !created {
		if err := pgtarget.CreateOrigin(ctx, conn, origin); err != nil {
			s.giveOrigin(i, false)
			return nil, err
		}
	}
	if err := pgtarget.OriginSessionSetup(ctx, conn, origin); err != nil {
		s.giveOrigin(i, true)
		return nil, err
	}
	return func() {
		pgtarget.OriginSessionReset(context.WithoutCancel(ctx), conn, s.log)
		s.giveOrigin(i, true)
	}, nil
}
