// Package duckdb is the warehouse sink of the consumer: it loads source
// transactions into one embedded DuckDB database file, as a current-state
// table and an append-only history table per source table, and can export
// the history as Parquet for lake engines.
//
// Layout, for source table s.t (DuckDB schema s is created):
//
//	s.t          current state: the source columns, one row per live key
//	s.t_history  every change: the source columns, then op, commit_lsn
//	             (UBIGINT), commit_ts (TIMESTAMPTZ), xid, position
//	s.t_as_of(ts), s.t_as_of_lsn(lsn), s.t_versions(key...)  table macros
//	main.tributary_checkpoint   the consumer's checkpoint rows
//	main.tributary_export       the Parquet export's progress
//
// Types: numeric(p,s) with p <= 38 becomes DECIMAL(p,s), timestamp with time
// zone TIMESTAMPTZ, uuid UUID, json and jsonb JSON, arrays of scalar types
// LIST (T[]), bytea BLOB, and the integer, float, boolean, date, time and
// text types their DuckDB equivalents. Types DuckDB cannot hold exactly
// (unconstrained numeric, interval, enums, network types, ...) are VARCHAR
// holding PostgreSQL's text form.
//
// Promises:
//   - Each Apply is one DuckDB transaction holding the batch's changes and
//     the consumer's checkpoint rows, so that each source transaction is
//     loaded exactly once, across kill -9 (DuckDB replays its WAL on open).
//     A batch covers whole source transactions; the consumer's grouping
//     decides its size (see Config.FlushRows).
//   - Changes are staged with the DuckDB Appender into a temporary table,
//     then applied set-based per table: appended to the history, and
//     DELETE plus INSERT of the last version of each changed key into the
//     current state. The stage is merged once per Apply (and before a
//     snapshot read, a truncate or a schema change of its table): merges
//     inside one DuckDB transaction each leave memory behind until it
//     commits, so a large source transaction merged in pieces needed memory
//     in proportion to its size.
//   - History rows are complete: unchanged TOASTed columns are carried
//     forward from the key's previous state, and a delete row carries the
//     key's last values. A truncate appends an op-t row for every live key
//     and empties the current state. An update that changes the key is a
//     delete of the old key and an update of the new one.
//   - A new source column adds a column to both tables.
//   - With ExportParquet set, the history is written periodically, and on
//     Close, as Parquet under ExportParquet/table=<schema.table>/day=<date>/
//     with DuckDB's COPY ... (FORMAT parquet, PARTITION_BY ...). Each export
//     covers a commit-LSN range recorded before it starts, with file names
//     derived from that range, so an export interrupted by a crash is
//     redone over the same files: no row is exported twice.
//   - Errors name the database file, the micro-batch (its source commit-LSN
//     range, tables and transactions-topic offsets), and for data errors
//     the table, key and commit LSN. DuckDB errors are permanent. A file
//     that is locked by another process, read-only or out of space (ErrLocked,
//     ErrReadOnly, ErrNoSpace), and other I/O errors, are marked with
//     consumer.Halt: the consumer stops at its checkpoint whatever its
//     --on-error policy, as a Kafka Connect task fails, and a restart after
//     the fix resumes there. The failed micro-batch rolls back whole, with
//     its checkpoint; the database is reopened before the next Apply.
//   - Memory: the Go side holds one Appender chunk per staged table; the
//     staged rows (about FlushRows per Apply, or one larger source
//     transaction) and the merges live in DuckDB, bounded by MemoryLimit,
//     beyond which DuckDB spills to <Path>.tmp, whatever the size of a
//     source transaction. Threads bounds DuckDB's worker threads. An
//     operation that cannot spill fails with DuckDB's out-of-memory error
//     (a halt, resumable).
//
// A Sink serves one Apply at a time (DuckDB has one writer); use it with the
// transactional mode. Its methods must not be called concurrently.
package duckdb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/tributary-cdc/tributary/consumer"
)

// Config configures a Sink. Each field maps to one flag of `tributary
// consumer --sink duckdb`, named in its comment.
type Config struct {
	// Path is the DuckDB database file (--duckdb-file). It is created when
	// missing. Required.
	Path string
	// Consumer is the consumer's name (--name); it keys the checkpoint rows.
	// Required.
	Consumer string
	// FlushRows is the micro-batch size in rows (--flush-rows; default
	// 100000): the consumer should group at most that many events into one
	// Apply (consumer.Config.GroupMaxEvents = FlushRows), whose staged rows
	// are merged once, at its end.
	FlushRows int
	// FlushInterval is how long the consumer may wait to fill a micro-batch
	// (--flush-interval; default 1s); see GroupLinger.
	FlushInterval time.Duration
	// ExportParquet, when set, is the directory that the history is
	// exported to as Parquet (--export-parquet).
	ExportParquet string
	// ExportInterval is how often the Parquet export runs after an Apply
	// (--export-interval; default 1m). The export also runs on Close.
	ExportInterval time.Duration
	// MemoryLimit is DuckDB's memory_limit (--duckdb-memory-limit), such as
	// "512MB" or "2GiB"; empty means DefaultMemoryLimit. Beyond it DuckDB
	// spills to the <Path>.tmp directory, or fails with an out-of-memory
	// error (ErrMemoryLimit) when an operation cannot spill.
	MemoryLimit string
	// Threads is DuckDB's worker threads (--duckdb-threads); 0 keeps
	// DuckDB's default, the number of CPU cores.
	Threads int
	// Logger receives structured logs; nil means slog.Default().
	Logger *slog.Logger
	// Knobs are hooks for tests; nil in production.
	Knobs *TestingKnobs
}

// DefaultMemoryLimit is DuckDB's memory limit unless Config.MemoryLimit
// sets one. DuckDB's own default, 80% of the RAM, lets its buffer pool
// cache the database file until the consumer holds most of the machine; at
// 128MB the benchmark's load ran as fast (docs/SINKS.md).
const DefaultMemoryLimit = "128MB"

// TestingKnobs let tests inject faults.
type TestingKnobs struct {
	// BeforeCommit, when set, is called before each Apply commits; an error
	// it returns fails the Apply as a write error would.
	BeforeCommit func() error
}

// Sink is the DuckDB sink. Create it with New.
type Sink struct {
	cfg Config
	log *slog.Logger

	mu         sync.Mutex
	db         *sql.DB
	conn       *sql.Conn
	tables     map[int]*layout // by value schema ID, checked in the database
	lastExport time.Time
}

var _ consumer.Sink = (*Sink)(nil)

// New validates cfg and returns a sink; Open opens the database.
func New(cfg Config) (*Sink, error) {
	if cfg.Path == "" {
		return nil, errors.New("duckdb sink: Path (--duckdb-file): required")
	}
	if cfg.Consumer == "" {
		return nil, errors.New("duckdb sink: Consumer (--name): required")
	}
	if cfg.FlushRows < 0 || cfg.FlushInterval < 0 || cfg.ExportInterval < 0 || cfg.Threads < 0 {
		return nil, errors.New("duckdb sink: FlushRows (--flush-rows), FlushInterval (--flush-interval), " +
			"ExportInterval (--export-interval), Threads (--duckdb-threads): must not be negative")
	}
	if strings.ContainsAny(cfg.MemoryLimit, "'\\") {
		return nil, fmt.Errorf("duckdb sink: MemoryLimit (--duckdb-memory-limit) %q: want a size such as 512MB or 2GiB", cfg.MemoryLimit)
	}
	if cfg.FlushRows == 0 {
		cfg.FlushRows = 100000
	}
	if cfg.MemoryLimit == "" {
		cfg.MemoryLimit = DefaultMemoryLimit
	}
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = time.Second
	}
	if cfg.ExportInterval == 0 {
		cfg.ExportInterval = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Sink{cfg: cfg, log: cfg.Logger.With("sink", "duckdb", "file", cfg.Path)}, nil
}

// GroupMaxEvents is the consumer grouping that makes one Apply one
// micro-batch of FlushRows rows: set consumer.Config.GroupMaxEvents to it.
func (s *Sink) GroupMaxEvents() int { return s.cfg.FlushRows }

// GroupLinger is how long the consumer may wait for more source
// transactions before it applies a micro-batch (FlushInterval).
func (s *Sink) GroupLinger() time.Duration { return s.cfg.FlushInterval }

// Open opens (or creates) the database file and the checkpoint and export
// tables. On Unix it sets SIGXFSZ to be ignored for the whole process, so
// that a file-size limit fails a write with an error (ErrNoSpace) rather
// than killing the process.
func (s *Sink) Open(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ignoreFileSizeSignal()
	return s.open(ctx)
}

func (s *Sink) open(ctx context.Context) error {
	if dir := filepath.Dir(s.cfg.Path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return consumer.Permanent(fmt.Errorf("duckdb %s: create directory: %w", s.cfg.Path, err))
		}
	}
	db, err := sql.Open("duckdb", s.cfg.Path)
	if err != nil {
		return s.errorf(ctx, err, "open")
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return s.errorf(ctx, err, "open")
	}
	settings := [][2]string{ // flag, statement
		{"--duckdb-memory-limit " + s.cfg.MemoryLimit, "SET memory_limit = " + quoteLit(s.cfg.MemoryLimit)}}
	if s.cfg.Threads > 0 {
		settings = append(settings, [2]string{fmt.Sprintf("--duckdb-threads %d", s.cfg.Threads), fmt.Sprintf("SET threads = %d", s.cfg.Threads)})
	}
	for _, set := range settings {
		if _, err := conn.ExecContext(ctx, set[1]); err != nil {
			conn.Close()
			db.Close()
			return consumer.Permanent(fmt.Errorf("duckdb %s: %s: %w", s.cfg.Path, set[0], oneLine{err}))
		}
	}
	for _, q := range []string{
		`CREATE TABLE IF NOT EXISTS main.tributary_checkpoint (consumer VARCHAR NOT NULL, kind VARCHAR NOT NULL,
			topic VARCHAR NOT NULL, "partition" INTEGER NOT NULL, next_offset BIGINT NOT NULL, commit_lsn UBIGINT,
			commit_ts TIMESTAMPTZ, applied_at TIMESTAMPTZ NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS main.tributary_export (history VARCHAR NOT NULL, source_table VARCHAR NOT NULL,
			exported_lsn UBIGINT NOT NULL, pending_lsn UBIGINT)`,
	} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			conn.Close()
			db.Close()
			return s.errorf(ctx, err, "create checkpoint tables")
		}
	}
	var mem string
	var threads int64
	if err := conn.QueryRowContext(ctx, `SELECT current_setting('memory_limit'), current_setting('threads')`).Scan(&mem, &threads); err != nil {
		conn.Close()
		db.Close()
		return s.errorf(ctx, err, "read settings")
	}
	s.db, s.conn, s.tables = db, conn, map[int]*layout{}
	s.log.Info("database open", "memory_limit", mem, "threads", threads)
	return nil
}

func (s *Sink) closeDB() {
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
	if s.db != nil {
		s.db.Close()
		s.db = nil
	}
}

// ensureOpen reopens the database after a failed Apply.
func (s *Sink) ensureOpen(ctx context.Context) error {
	if s.conn != nil {
		return nil
	}
	return s.open(ctx)
}

// Checkpoint reads the consumer's checkpoint (consumer.FoldCheckpoints of
// its rows).
func (s *Sink) Checkpoint(ctx context.Context) (consumer.Checkpoint, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cp := consumer.Checkpoint{Next: map[consumer.Stream]int64{}}
	if err := s.ensureOpen(ctx); err != nil {
		return cp, err
	}
	rows, err := ReadCheckpoints(ctx, s.conn, s.cfg.Consumer)
	if err != nil {
		return cp, s.errorf(ctx, err, "read checkpoint")
	}
	if got, ok := consumer.FoldCheckpoints(rows)[s.cfg.Consumer]; ok {
		cp = got
	}
	return cp, nil
}

// Apply loads b and its checkpoint in one DuckDB transaction.
func (s *Sink) Apply(ctx context.Context, b *consumer.Batch) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.ensureOpen(ctx); err != nil {
		return err
	}
	start := time.Now()
	if _, err := s.conn.ExecContext(ctx, "BEGIN TRANSACTION"); err != nil {
		s.closeDB()
		return s.errorf(ctx, err, "begin")
	}
	committed := false
	defer func() {
		if !committed {
			// A failed transaction may leave the database unusable
			// (DuckDB invalidates it after an I/O error): reopen it.
			_, _ = s.conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
			s.closeDB()
		}
	}()
	w := &loader{s: s, ctx: ctx, stages: map[string]*stage{}}
	defer w.closeAppenders()
	sp := &w.span
	if err := b.Each(ctx, func(ev *consumer.Event) error {
		sp.add(ev)
		if err := w.add(ev); err != nil {
			return sp.wrap(err)
		}
		return nil
	}); err != nil {
		return err
	}
	cp := b.Checkpoint()
	sp.setTopic(cp)
	if err := w.mergeAll(); err != nil {
		return sp.wrap(err)
	}
	if err := s.writeCheckpoint(ctx, cp); err != nil {
		return sp.wrap(err)
	}
	if k := s.cfg.Knobs; k != nil && k.BeforeCommit != nil {
		if err := k.BeforeCommit(); err != nil {
			return sp.wrap(s.errorf(ctx, err, "commit"))
		}
	}
	if _, err := s.conn.ExecContext(ctx, "COMMIT"); err != nil {
		return sp.wrap(s.errorf(ctx, err, "commit"))
	}
	committed = true
	for id, l := range s.tables {
		if slices.Contains(w.forgotten, l.t.String()) {
			delete(s.tables, id)
		}
	}
	for id, l := range w.created {
		s.tables[id] = l
	}
	lag := time.Duration(0)
	if !cp.CommitTime.IsZero() {
		lag = time.Since(cp.CommitTime)
	}
	s.log.Info("micro-batch loaded", "events", b.Events(), "rows", w.rows, "commit_lsn", cp.CommitLSN,
		"commit_ts", cp.CommitTime, "lag", lag.Round(time.Millisecond), "took", time.Since(start).Round(time.Millisecond))
	if s.cfg.ExportParquet != "" && time.Since(s.lastExport) >= s.cfg.ExportInterval {
		if err := s.export(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (s *Sink) writeCheckpoint(ctx context.Context, cp consumer.Checkpoint) error {
	var lsn, ts any
	if cp.CommitLSN != 0 {
		lsn, ts = uint64(cp.CommitLSN), cp.CommitTime
	}
	for st, next := range cp.Next {
		if _, err := s.conn.ExecContext(ctx, `DELETE FROM main.tributary_checkpoint
			WHERE consumer = ? AND kind = ? AND topic = ? AND "partition" = ?`, s.cfg.Consumer, string(st.Kind), st.Topic, st.Partition); err != nil {
			return s.errorf(ctx, err, "write checkpoint")
		}
		if _, err := s.conn.ExecContext(ctx, `INSERT INTO main.tributary_checkpoint VALUES (?, ?, ?, ?, ?, ?, ?, now())`,
			s.cfg.Consumer, string(st.Kind), st.Topic, st.Partition, next, lsn, ts); err != nil {
			return s.errorf(ctx, err, "write checkpoint")
		}
	}
	return nil
}

// Close runs a final Parquet export (when configured) and closes the
// database.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	if s.conn != nil && s.cfg.ExportParquet != "" {
		err = s.export(ctx)
	}
	s.closeDB()
	return err
}

// Export writes the history rows not yet exported as Parquet now.
func (s *Sink) Export(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg.ExportParquet == "" {
		return errors.New("duckdb sink: Export: ExportParquet (--export-parquet) is not set")
	}
	if err := s.ensureOpen(ctx); err != nil {
		return err
	}
	return s.export(ctx)
}

// rawConn runs f with the driver connection, for the Appender.
func (s *Sink) rawConn(f func(driver.Conn) error) error {
	return s.conn.Raw(func(dc any) error { return f(dc.(driver.Conn)) })
}

func quoteLit(v string) string { return "'" + strings.ReplaceAll(v, "'", "''") + "'" }

// export writes, per history table, the rows committed after its last
// export as Parquet. The range is recorded before the COPY, and the file
// names derive from it, so a crash mid-export is redone over the same files.
func (s *Sink) export(ctx context.Context) error {
	start := time.Now()
	type job struct {
		hist, table string
		from        uint64
		pending     sql.Null[uint64]
	}
	rows, err := s.conn.QueryContext(ctx, `SELECT history, source_table, exported_lsn, pending_lsn FROM main.tributary_export ORDER BY history`)
	if err != nil {
		return s.errorf(ctx, err, "export: read progress")
	}
	var jobs []job
	for rows.Next() {
		var j job
		if err := rows.Scan(&j.hist, &j.table, &j.from, &j.pending); err != nil {
			rows.Close()
			return s.errorf(ctx, err, "export: read progress")
		}
		jobs = append(jobs, j)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return s.errorf(ctx, err, "export: read progress")
	}
	dir := s.cfg.ExportParquet
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return consumer.Halt(fmt.Errorf("duckdb %s: export to %s: %w", s.cfg.Path, dir, err))
	}
	total := int64(0)
	for _, j := range jobs {
		to := j.pending.V
		if !j.pending.Valid {
			var max sql.Null[uint64]
			if err := s.conn.QueryRowContext(ctx, "SELECT max(commit_lsn) FROM "+j.hist).Scan(&max); err != nil {
				return s.errorf(ctx, err, "export %s", j.table)
			}
			if !max.Valid || max.V <= j.from {
				continue
			}
			to = max.V
			if _, err := s.conn.ExecContext(ctx, `UPDATE main.tributary_export SET pending_lsn = ? WHERE history = ?`, to, j.hist); err != nil {
				return s.errorf(ctx, err, "export %s", j.table)
			}
		}
		copySQL := fmt.Sprintf(`COPY (SELECT *, %s AS "table", CAST(commit_ts AS DATE) AS "day" FROM %s
			WHERE commit_lsn > %d AND commit_lsn <= %d) TO %s
			(FORMAT parquet, PARTITION_BY ("table", "day"), FILENAME_PATTERN %s, OVERWRITE_OR_IGNORE true)`,
			quoteLit(j.table), j.hist, j.from, to, quoteLit(dir), quoteLit(fmt.Sprintf("h_%016X_%016X_{i}", j.from, to)))
		res, err := s.conn.ExecContext(ctx, copySQL)
		if err != nil {
			return s.errorf(ctx, err, "export %s to %s", j.table, dir)
		}
		n, _ := res.RowsAffected()
		total += n
		if _, err := s.conn.ExecContext(ctx, `UPDATE main.tributary_export SET exported_lsn = ?, pending_lsn = NULL WHERE history = ?`,
			to, j.hist); err != nil {
			return s.errorf(ctx, err, "export %s", j.table)
		}
		s.log.Info("history exported as parquet", "table", j.table, "dir", dir, "rows", n,
			"from_lsn", pglogrepl.LSN(j.from), "to_lsn", pglogrepl.LSN(to))
	}
	s.lastExport = time.Now()
	s.log.Debug("parquet export done", "rows", total, "took", time.Since(start))
	return nil
}

// Querier is what ReadCheckpoints reads through: the sink's *sql.Conn, or
// a *sql.DB of the file opened read-only (tributary verify).
type Querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// ReadCheckpoints reads the rows of main.tributary_checkpoint through q:
// those of consumer name, or of every consumer when name is "", ordered by
// consumer, kind, topic and partition. A missing table is an error wrapping
// consumer.ErrNoCheckpointTable. It is the one reader of the table: the
// sink resuming (Checkpoint) and tributary verify read through it.
func ReadCheckpoints(ctx context.Context, q Querier, name string) ([]consumer.CheckpointRow, error) {
	rows, err := q.QueryContext(ctx, `SELECT consumer, kind, topic, "partition", next_offset, commit_lsn, commit_ts, applied_at
		FROM main.tributary_checkpoint WHERE ? = '' OR consumer = ? ORDER BY consumer, kind, topic, "partition"`, name, name)
	if err != nil {
		if strings.Contains(err.Error(), "does not exist") {
			return nil, fmt.Errorf("%w main.tributary_checkpoint", consumer.ErrNoCheckpointTable)
		}
		return nil, fmt.Errorf("read checkpoints from main.tributary_checkpoint: %w", err)
	}
	defer rows.Close()
	var out []consumer.CheckpointRow
	for rows.Next() {
		var r consumer.CheckpointRow
		var kind string
		var lsn sql.Null[uint64]
		var ts sql.NullTime
		if err := rows.Scan(&r.Consumer, &kind, &r.Stream.Topic, &r.Stream.Partition, &r.Next, &lsn, &ts, &r.AppliedAt); err != nil {
			return nil, fmt.Errorf("read checkpoints from main.tributary_checkpoint: %w", err)
		}
		r.Stream.Kind = consumer.StreamKind(kind)
		r.CommitLSN, r.CommitTime = pglogrepl.LSN(lsn.V), ts.Time
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read checkpoints from main.tributary_checkpoint: %w", err)
	}
	return out, nil
}
