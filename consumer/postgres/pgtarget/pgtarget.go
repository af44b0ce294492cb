// Package pgtarget holds what every sink that writes into a PostgreSQL target
// shares: the connection pool (pgxpool, with trigger suppression), the
// tributary_checkpoint table, the encoding of event
// values as PostgreSQL text literals and the column definitions used to
// create target tables. The PostgreSQL sink (consumer/postgres) and the
// history sink (consumer/history) both use it, so that they behave alike.
//
// Everything here is safe for concurrent use unless a comment says otherwise.
package pgtarget

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/schemas"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Acquire takes a connection of p, made by OpenPool. Pass it back to
// Release.
func Acquire(ctx context.Context, p *pgxpool.Pool) (*pgxpool.Conn, error) {
	c, err := p.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("target connection: %w", err)
	}
	return c, nil
}

// Release returns c to its pool. A connection that saw err, an error other
// than a PostgreSQL error, may be unusable and is closed instead; so is one
// inside a transaction (pgxpool's own rule).
func Release(c *pgxpool.Conn, err error) {
	var pe *pgconn.PgError
	if err != nil && !errors.As(err, &pe) {
		c.Conn().Close(context.Background())
	}
	c.Release()
}

// Target is what every PostgreSQL sink holds: its pool and its consumer's
// checkpoint rows. A sink embeds it, for the Checkpoint and Close methods of
// consumer.Sink, and opens it with Connect.
type Target struct {
	cpt  *Checkpoints
	pool *pgxpool.Pool
}

// NewTarget returns the Target of consumer name, whose checkpoint rows are
// in schema's tributary_checkpoint table; Connect opens it.
func NewTarget(schema, name string) Target {
	return Target{cpt: NewCheckpoints(schema, name)}
}

// Connect opens the pool (OpenPool) and, on one of its connections,
// creates the checkpoint table when it is missing and then runs setup,
// when not nil: the Sink Open method of every PostgreSQL sink.
func (t *Target) Connect(ctx context.Context, dsn string, maxConns int, setup func(context.Context, *pgx.Conn) error) error {
	pool, err := OpenPool(ctx, dsn, maxConns, func(ctx context.Context, c *pgx.Conn) error {
		if err := t.cpt.Create(ctx, c); err != nil {
			return err
		}
		if setup != nil {
			return setup(ctx, c)
		}
		return nil
	})
	if err != nil {
		return err
	}
	t.pool = pool
	return nil
}

// Checkpoints is the consumer's checkpoint rows.
func (t *Target) Checkpoints() *Checkpoints { return t.cpt }

// Checkpoint reads the consumer's checkpoint rows.
func (t *Target) Checkpoint(ctx context.Context) (consumer.Checkpoint, error) {
	return t.cpt.ReadFrom(ctx, t.pool)
}

// InTx runs apply in a transaction, begun with opts, on a connection of
// the pool, and rolls the transaction back unless apply committed it.
// session, when not nil, runs on the connection before the transaction
// begins; the function it returns runs once the transaction has ended. The
// connection goes back to the pool as Release says, with the error InTx
// returns.
func (t *Target) InTx(ctx context.Context, opts pgx.TxOptions, session func(*pgx.Conn) (func(), error), apply func(pgx.Tx) error) (err error) {
	pc, err := Acquire(ctx, t.pool)
	if err != nil {
		return err
	}
	defer func() { Release(pc, err) }()
	conn := pc.Conn()
	if session != nil {
		end, err := session(conn)
		if err != nil {
			return err
		}
		defer end()
	}
	tx, err := conn.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	return apply(tx)
}

// Close closes the pool.
func (t *Target) Close(context.Context) error {
	if t.pool != nil {
		t.pool.Close()
	}
	return nil
}

// ErrCheckpointMoved reports that another session of the same consumer
// committed since this one read its checkpoint: a killed session's last
// commit that finished late, or a second process with the same --name. The
// transaction is rolled back; the consumer re-reads the checkpoint and goes
// on from there, so nothing is applied twice.
var ErrCheckpointMoved = errors.New("the checkpoint moved under this session")

// Checkpoints is a consumer's rows in a tributary_checkpoint table: one row
// per stream, written in the same transaction as the data they cover.
//
// Write is a compare-and-set: it locks the streams it advances (a
// transaction-scoped advisory lock per stream, so per-key workers of one
// consumer do not wait for each other) and checks that their rows still hold
// what this process last read or committed. Safe for concurrent use.
type Checkpoints struct {
	schema   string
	table    string // quoted schema.table
	consumer string

	mu    sync.Mutex
	known map[consumer.Stream]int64 // next offsets this process read or committed
}

// NewCheckpoints returns the checkpoint rows of consumer name in
// schema.tributary_checkpoint.
func NewCheckpoints(schema, name string) *Checkpoints {
	return &Checkpoints{schema: schema, consumer: name,
		table: CheckpointTable(schema),
		known: map[consumer.Stream]int64{}}
}

// Table is the quoted name of the checkpoint table.
func (k *Checkpoints) Table() string { return k.table }

// Create creates the checkpoint schema and table when they are missing.
func (k *Checkpoints) Create(ctx context.Context, c *pgx.Conn) error {
	// The lock serializes consumers that start together on one target:
	// concurrent CREATE ... IF NOT EXISTS can still collide.
	ddl := fmt.Sprintf(DDLLock+`;
CREATE SCHEMA IF NOT EXISTS %s;
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
)`, schemas.QuoteIdent(k.schema), k.table)
	if _, err := c.Exec(ctx, ddl, pgx.QueryExecModeSimpleProtocol); err != nil {
		return fmt.Errorf("create checkpoint table %s: %w", k.table, err)
	}
	return nil
}

// Read reads the consumer's checkpoint (consumer.FoldCheckpoints of its
// rows) and remembers it for Write's compare-and-set.
func (k *Checkpoints) Read(ctx context.Context, c *pgx.Conn) (consumer.Checkpoint, error) {
	rows, _, err := ReadCheckpoints(ctx, c, k.schema, k.consumer)
	if errors.Is(err, consumer.ErrNoCheckpointTable) {
		// Create made it; someone dropped it since.
		err = consumer.Permanent(err)
	}
	if err != nil {
		return consumer.Checkpoint{}, err
	}
	cp, ok := consumer.FoldCheckpoints(rows)[k.consumer]
	if !ok {
		cp = consumer.Checkpoint{Next: map[consumer.Stream]int64{}}
	}
	k.mu.Lock()
	k.known = make(map[consumer.Stream]int64, len(cp.Next))
	for st, o := range cp.Next {
		k.known[st] = o
	}
	k.mu.Unlock()
	return cp, nil
}

// ReadFrom reads the consumer's checkpoint on a connection of p: the Sink
// Checkpoint method of every PostgreSQL sink.
func (k *Checkpoints) ReadFrom(ctx context.Context, p *pgxpool.Pool) (consumer.Checkpoint, error) {
	c, err := Acquire(ctx, p)
	if err != nil {
		return consumer.Checkpoint{}, err
	}
	cp, err := k.Read(ctx, c.Conn())
	Release(c, err)
	return cp, err
}

// OpenPool opens a pool (pgxpool) of up to maxConns connections to dsn and
// runs setup (create the checkpoint table and whatever else the sink needs)
// on one of them; the Sink Open method of every PostgreSQL sink. Every
// connection runs SET session_replication_role = replica when it is made,
// so that only triggers enabled ALWAYS fire during replay; one that may not
// is a terminal error. application_name is ConsumerApplicationName unless
// the DSN sets one.
func OpenPool(ctx context.Context, dsn string, maxConns int, setup func(context.Context, *pgx.Conn) error) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, consumer.Permanent(fmt.Errorf("target DSN: %w", err))
	}
	if pc.ConnConfig.RuntimeParams["application_name"] == "" {
		pc.ConnConfig.RuntimeParams["application_name"] = ConsumerApplicationName
	}
	pc.MaxConns = int32(max(maxConns, 1))
	pc.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		if _, err := c.Exec(ctx, "SET session_replication_role = replica"); err != nil {
			return consumer.Permanent(fmt.Errorf("SET session_replication_role = replica (the apply role must be a superuser "+
				"or have GRANT SET ON PARAMETER session_replication_role): %w", err))
		}
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("target pool: %w", err)
	}
	c, err := Acquire(ctx, pool)
	if err != nil {
		pool.Close()
		return nil, err
	}
	err = setup(ctx, c.Conn())
	Release(c, err)
	if err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// Committed records that cp's transaction committed; call it after Commit.
func (k *Checkpoints) Committed(cp consumer.Checkpoint) {
	k.mu.Lock()
	for st, o := range cp.Next {
		k.known[st] = o
	}
	k.mu.Unlock()
}

// Write upserts the entries of cp in tx after checking, under a lock, that no
// other session moved them (see Checkpoints); an empty cp writes nothing.
// The lock, the read of the stored rows and the upsert go to the target as
// one pipeline (one round trip): the check runs on what the read returned,
// after the upsert, so on any error, ErrCheckpointMoved included, the caller
// must roll tx back (every caller does, as for any failed write). Call
// Committed once tx commits.
func (k *Checkpoints) Write(ctx context.Context, tx pgx.Tx, cp consumer.Checkpoint) error {
	if len(cp.Next) == 0 {
		return nil
	}
	streams := make([]consumer.Stream, 0, len(cp.Next))
	for st := range cp.Next {
		streams = append(streams, st)
	}
	// One lock order for every session, so two sessions never deadlock.
	sort.Slice(streams, func(i, j int) bool {
		a, b := streams[i], streams[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		if a.Topic != b.Topic {
			return a.Topic < b.Topic
		}
		return a.Partition < b.Partition
	})
	names := make([]string, len(streams))
	kinds := make([]string, len(streams))
	topics := make([]string, len(streams))
	parts := make([]int32, len(streams))
	offs := make([]int64, len(streams))
	for i, st := range streams {
		names[i] = fmt.Sprintf("%s/%s/%s/%d", k.consumer, st.Kind, st.Topic, st.Partition)
		kinds[i], topics[i], parts[i], offs[i] = string(st.Kind), st.Topic, st.Partition, cp.Next[st]
	}
	var lsn, ts any
	if cp.CommitLSN != 0 {
		lsn = cp.CommitLSN.String()
		ts = cp.CommitTime
	}
	var b pgx.Batch
	b.Queue(`SELECT pg_advisory_xact_lock(hashtextextended('tributary_checkpoint:' || n, 0))
		FROM unnest($1::text[]) WITH ORDINALITY AS u(n, i) ORDER BY i`, names)
	b.Queue(`SELECT kind, topic, partition, next_offset FROM `+k.table+` WHERE consumer = $1`, k.consumer)
	b.Queue(`INSERT INTO `+k.table+` AS c (consumer, kind, topic, partition, next_offset, commit_lsn, commit_ts, applied_at)
SELECT $1, u.k, u.t, u.p, u.o, $6::text::pg_lsn, $7::timestamptz, now()
FROM unnest($2::text[], $3::text[], $4::int[], $5::bigint[]) AS u(k, t, p, o)
ON CONFLICT (consumer, kind, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset,
	commit_lsn = coalesce(EXCLUDED.commit_lsn, c.commit_lsn), commit_ts = coalesce(EXCLUDED.commit_ts, c.commit_ts),
	applied_at = now()`, k.consumer, kinds, topics, parts, offs, lsn, ts)
	br := tx.SendBatch(ctx, &b)
	stored, err := k.readLocked(br)
	if cerr := br.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("write checkpoint to %s (commit_lsn %s): %w", k.table, cp.CommitLSN, cerr)
	}
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, st := range streams {
		have, haveOK := stored[st]
		want, wantOK := k.known[st]
		if haveOK != wantOK || have != want {
			return fmt.Errorf("%w: %s %s partition %d is at offset %d in %s, this session expected %d (consumer %s)",
				ErrCheckpointMoved, st.Kind, st.Topic, st.Partition, have, k.table, want, k.consumer)
		}
	}
	return nil
}

// readLocked reads the results of Write's lock and read: the consumer's
// stored rows, as they were once this session held the locks.
func (k *Checkpoints) readLocked(br pgx.BatchResults) (map[consumer.Stream]int64, error) {
	if _, err := br.Exec(); err != nil {
		return nil, fmt.Errorf("lock checkpoint rows in %s: %w", k.table, err)
	}
	rows, err := br.Query()
	if err != nil {
		return nil, fmt.Errorf("read checkpoint from %s: %w", k.table, err)
	}
	defer rows.Close()
	stored := map[consumer.Stream]int64{}
	for rows.Next() {
		var kind, topic string
		var part int32
		var next int64
		if err := rows.Scan(&kind, &topic, &part, &next); err != nil {
			return nil, fmt.Errorf("read checkpoint from %s: %w", k.table, err)
		}
		stored[consumer.Stream{Kind: consumer.StreamKind(kind), Topic: topic, Partition: part}] = next
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read checkpoint from %s: %w", k.table, err)
	}
	return stored, nil
}

// Encode converts the value v of column ci of ev's table to a PostgreSQL
// text literal; an error names the event and the column and is permanent.
func Encode(ev *consumer.Event, ci int, v any) (string, error) {
	c := ev.Table.Columns[ci]
	s, err := c.Encode(v)
	if err != nil {
		return "", ev.Wrap(consumer.Permanent(fmt.Errorf("column %q (%s): %w", c.Name, c.SQLType, err)))
	}
	return s, nil
}

// Values encodes the columns cols of row as text parameters (nil for NULL).
func Values(ev *consumer.Event, row []any, cols []int) ([]any, error) {
	out := make([]any, len(cols))
	for i, ci := range cols {
		if row[ci] == nil {
			continue
		}
		s, err := Encode(ev, ci, row[ci])
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}

// ColumnDefs are the quoted column definitions "name type" of t, in order.
func ColumnDefs(t *consumer.Table) []string {
	out := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		out[i] = schemas.QuoteIdent(c.Name) + " " + c.SQLType
	}
	return out
}

// KeyNames are the quoted names of t's key columns, in key order.
func KeyNames(t *consumer.Table) []string {
	out := make([]string, len(t.Key))
	for i, k := range t.Key {
		out[i] = schemas.QuoteIdent(t.Columns[k].Name)
	}
	return out
}

// DDLLock is the statement that serializes, until the end of the
// transaction, the DDL that consumers run at one target: CREATE ... IF NOT
// EXISTS of the same object in two sessions at once can still fail (a
// duplicate pg_type row), as per-key workers that meet a new table together
// would.
const DDLLock = "SELECT pg_advisory_xact_lock(hashtextextended('tributary_ddl', 0))"

// EnsureColumns returns the statements that create schema and table (with
// extra column definitions appended after t's columns) when missing, and add
// the columns of t that an existing table lacks, under DDLLock.
func EnsureColumns(t *consumer.Table, schema, table string, extra ...string) []string {
	qt := schemas.QuoteIdent(schema) + "." + schemas.QuoteIdent(table)
	cols := append(ColumnDefs(t), extra...)
	stmts := []string{
		DDLLock,
		"CREATE SCHEMA IF NOT EXISTS " + schemas.QuoteIdent(schema),
		"CREATE TABLE IF NOT EXISTS " + qt + " (" + strings.Join(cols, ", ") + ")",
	}
	for _, c := range t.Columns {
		stmts = append(stmts, "ALTER TABLE "+qt+" ADD COLUMN IF NOT EXISTS "+schemas.QuoteIdent(c.Name)+" "+c.SQLType)
	}
	return stmts
}
