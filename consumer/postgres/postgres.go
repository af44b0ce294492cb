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
//   - Columns whose TOASTed value did not change are left as they are.
//   - OnConflictError (the default) stops on an insert whose key exists and
//     on an update or delete that matches no row. OnConflictUpsert (the
//     seed's "higher robustness") turns inserts and complete updates into
//     INSERT ... ON CONFLICT DO UPDATE and ignores deletes of missing rows.
//   - Errors name the topic, partition, offset, table, key and commit LSN.
//     Integrity, data and definition errors are permanent; connection loss,
//     serialization failures and deadlocks are transient.
//
// Apply and Checkpoint may be called concurrently (per-key mode); each Apply
// holds one pooled connection.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/schemas"
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
	// Logger receives structured logs; nil means slog.Default().
	Logger *slog.Logger
}

// Sink is the PostgreSQL sink. Create it with New.
type Sink struct {
	cfg  Config
	log  *slog.Logger
	pool *pool
	cpt  string // quoted checkpoint table

	mu      sync.Mutex
	ensured map[int]bool      // value schema IDs whose target table was checked
	sql     map[string]string // statement cache
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
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Sink{cfg: cfg, log: cfg.Logger.With("sink", "postgres"),
		cpt:     schemas.QuoteIdent(cfg.CheckpointSchema) + "." + schemas.QuoteIdent("tributary_checkpoint"),
		ensured: map[int]bool{}, sql: map[string]string{}}, nil
}

// Open connects, checks that the connection may suppress triggers, and
// creates the checkpoint table when it is missing.
func (s *Sink) Open(ctx context.Context) error {
	cc, err := pgx.ParseConfig(s.cfg.DSN)
	if err != nil {
		return consumer.Permanent(fmt.Errorf("target DSN: %w", err))
	}
	pool := newPool(cc, int(s.cfg.MaxConns))
	ddl := fmt.Sprintf(`CREATE SCHEMA IF NOT EXISTS %s;
CREATE TABLE IF NOT EXISTS %s (
	consumer    text NOT NULL,
	kind        text NOT NULL,
	topic       text NOT NULL,
	partition   int NOT NULL,
	next_offset bigint NOT NULL,
	commit_lsn  pg_lsn,
	commit_ts   timestamptz,
	applied_at  timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (consumer, kind, topic, partition)
)`, schemas.QuoteIdent(s.cfg.CheckpointSchema), s.cpt)
	c, err := pool.acquire(ctx)
	if err != nil {
		pool.close()
		return err
	}
	_, err = c.Exec(ctx, ddl, pgx.QueryExecModeSimpleProtocol)
	pool.release(c, err)
	if err != nil {
		pool.close()
		return classify(fmt.Errorf("create checkpoint table %s: %w", s.cpt, err))
	}
	s.pool = pool
	return nil
}

// Checkpoint reads the consumer's checkpoint rows.
func (s *Sink) Checkpoint(ctx context.Context) (consumer.Checkpoint, error) {
	cp := consumer.Checkpoint{Next: map[consumer.Stream]int64{}}
	c, err := s.pool.acquire(ctx)
	if err != nil {
		return cp, err
	}
	err = s.readCheckpoint(ctx, c, &cp)
	s.pool.release(c, err)
	return cp, err
}

func (s *Sink) readCheckpoint(ctx context.Context, c *pgx.Conn, cp *consumer.Checkpoint) error {
	rows, err := c.Query(ctx, `SELECT kind, topic, partition, next_offset, coalesce(commit_lsn::text, ''), commit_ts FROM `+
		s.cpt+` WHERE consumer = $1`, s.cfg.Consumer)
	if err != nil {
		return classify(fmt.Errorf("read checkpoint: %w", err))
	}
	defer rows.Close()
	for rows.Next() {
		var kind, topic, lsn string
		var part int32
		var next int64
		var ts *time.Time
		if err := rows.Scan(&kind, &topic, &part, &next, &lsn, &ts); err != nil {
			return classify(fmt.Errorf("read checkpoint: %w", err))
		}
		cp.Next[consumer.Stream{Kind: consumer.StreamKind(kind), Topic: topic, Partition: part}] = next
		if lsn != "" {
			l, err := pglogrepl.ParseLSN(lsn)
			if err == nil && l > cp.CommitLSN {
				cp.CommitLSN = l
				if ts != nil {
					cp.CommitTime = *ts
				}
			}
		}
	}
	if err := rows.Err(); err != nil {
		return classify(fmt.Errorf("read checkpoint: %w", err))
	}
	return nil
}

// Apply applies b in one target transaction with its checkpoint.
func (s *Sink) Apply(ctx context.Context, b *consumer.Batch) (err error) {
	conn, err := s.pool.acquire(ctx)
	if err != nil {
		return err
	}
	defer func() { s.pool.release(conn, err) }()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return classify(fmt.Errorf("begin: %w", err))
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	w := &writer{s: s, tx: tx, newIDs: map[int]bool{}}
	for {
		ev, err := b.Next(ctx)
		if errors.Is(err, errEOF) {
			break
		}
		if err != nil {
			return err
		}
		if err := w.add(ctx, ev); err != nil {
			return err
		}
	}
	if err := w.flush(ctx); err != nil {
		return err
	}
	if err := s.writeCheckpoint(ctx, tx, b.Checkpoint()); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return classify(fmt.Errorf("commit: %w", err))
	}
	if len(w.newIDs) > 0 {
		s.mu.Lock()
		for id := range w.newIDs {
			s.ensured[id] = true
		}
		s.mu.Unlock()
	}
	return nil
}

func (s *Sink) writeCheckpoint(ctx context.Context, tx pgx.Tx, cp consumer.Checkpoint) error {
	if len(cp.Next) == 0 {
		return nil
	}
	kinds := make([]string, 0, len(cp.Next))
	topics := make([]string, 0, len(cp.Next))
	parts := make([]int32, 0, len(cp.Next))
	offs := make([]int64, 0, len(cp.Next))
	for st, o := range cp.Next {
		kinds = append(kinds, string(st.Kind))
		topics = append(topics, st.Topic)
		parts = append(parts, st.Partition)
		offs = append(offs, o)
	}
	var lsn, ts any
	if cp.CommitLSN != 0 {
		lsn = cp.CommitLSN.String()
		ts = cp.CommitTime
	}
	_, err := tx.Exec(ctx, `INSERT INTO `+s.cpt+` AS c (consumer, kind, topic, partition, next_offset, commit_lsn, commit_ts, applied_at)
SELECT $1, u.k, u.t, u.p, u.o, $6::text::pg_lsn, $7::timestamptz, now()
FROM unnest($2::text[], $3::text[], $4::int[], $5::bigint[]) AS u(k, t, p, o)
ON CONFLICT (consumer, kind, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset,
	commit_lsn = coalesce(EXCLUDED.commit_lsn, c.commit_lsn), commit_ts = coalesce(EXCLUDED.commit_ts, c.commit_ts),
	applied_at = now()`, s.cfg.Consumer, kinds, topics, parts, offs, lsn, ts)
	if err != nil {
		return classify(fmt.Errorf("write checkpoint: %w", err))
	}
	return nil
}

// Close closes the pool.
func (s *Sink) Close(context.Context) error {
	if s.pool != nil {
		s.pool.close()
	}
	return nil
}

// pool is a small connection pool: connections are dialled on demand, up to
// max, and one that saw an error other than a PostgreSQL error is discarded.
type pool struct {
	cfg   *pgx.ConnConfig
	slots chan struct{}
	idle  chan *pgx.Conn
}

func newPool(cfg *pgx.ConnConfig, max int) *pool {
	return &pool{cfg: cfg, slots: make(chan struct{}, max), idle: make(chan *pgx.Conn, max)}
}

func (p *pool) acquire(ctx context.Context) (*pgx.Conn, error) {
	select {
	case c := <-p.idle:
		if !c.IsClosed() {
			return c, nil
		}
		<-p.slots
	default:
	}
	select {
	case c := <-p.idle:
		return c, nil
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	c, err := pgx.ConnectConfig(ctx, p.cfg)
	if err != nil {
		<-p.slots
		return nil, classifyConnect(fmt.Errorf("connect target: %w", err))
	}
	if _, err := c.Exec(ctx, "SET session_replication_role = replica"); err != nil {
		c.Close(context.Background())
		<-p.slots
		return nil, consumer.Permanent(fmt.Errorf("SET session_replication_role = replica (the apply role must be a superuser "+
			"or have GRANT SET ON PARAMETER session_replication_role): %w", err))
	}
	return c, nil
}

// release returns c to the pool, or closes it when err says the connection
// may be unusable.
func (p *pool) release(c *pgx.Conn, err error) {
	var pe *pgconn.PgError
	if c.IsClosed() || (err != nil && !errors.As(err, &pe)) || c.PgConn().TxStatus() != 'I' {
		c.Close(context.Background())
		<-p.slots
		return
	}
	p.idle <- c
}

func (p *pool) close() {
	for {
		select {
		case c := <-p.idle:
			c.Close(context.Background())
			<-p.slots
		default:
			return
		}
	}
}

// classifyConnect keeps connection failures transient, except for
// authentication and configuration errors, which no retry fixes.
func classifyConnect(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (pe.Code == "28P01" || pe.Code == "28000" || pe.Code == "3D000") {
		return consumer.Permanent(err)
	}
	return err
}
