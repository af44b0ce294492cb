package verify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/tributary-cdc/tributary/consumer"
)

// BarrierPrefix is the logical decoding message prefix of verify's barrier.
const BarrierPrefix = "tributary.verify"

// Config configures a comparison.
type Config struct {
	// SourceDSN is the source database (--source).
	SourceDSN string
	// Target is the sink's side; see NewPostgresTarget.
	Target Target
	// Tables are schema.table names; empty means every table of the
	// source's publications (or of Publication when set).
	Tables []string
	// Publication restricts the default table list to one publication.
	Publication string
	// Wait makes the comparison wait for the consumer's checkpoint to reach
	// the source snapshot; false compares at once (for quiescent databases,
	// or targets without a consumer).
	Wait bool
	// Timeout bounds the wait for the consumer (default 5m).
	Timeout time.Duration
	// Barrier writes the barrier message after the source snapshot (see the
	// package documentation). Only used when Wait is set.
	Barrier bool
	// Rechecks is how many times differing ranges are compared again with
	// fresh snapshots before they are reported (default 2; negative: none).
	Rechecks int
	// Fanout is how many sub-ranges a differing range is split into (16).
	Fanout int
	// LeafRows is the source row count at or below which a differing range
	// is compared row by row (1000).
	LeafRows int64
	// MaxKeys bounds the keys listed per table (100); counts stay exact.
	MaxKeys int
	// Transform, when set, applies the consumer's transforms to the source
	// rows before they are compared (see the package documentation).
	Transform *Transform
	// CheckInvariants also checks the invariants of a sink that has its
	// own (the history sink: versions 1..n per key, validity ranges that
	// do not overlap); a violation makes the table differ.
	CheckInvariants bool
	// Logger receives progress; nil means slog.Default().
	Logger *slog.Logger
}

// InputError is a mistake in the request, such as a table that does not
// exist on the source; the command exits 2 for it.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// Kind says how a key differs.
type Kind string

// The kinds of difference.
const (
	// Missing: the key is on the source and not on the target.
	Missing Kind = "missing"
	// Extra: the key is on the target and not on the source.
	Extra Kind = "extra"
	// Different: the key is on both sides with different values.
	Different Kind = "different"
)

// KeyDiff is one differing key.
type KeyDiff struct {
	Kind Kind `json:"kind"`
	// Key is col=value pairs, in key order.
	Key string `json:"key"`
}

// TableReport is one table's result.
type TableReport struct {
	Table          string    `json:"table"`
	Equal          bool      `json:"equal"`
	SourceRows     int64     `json:"source_rows"`
	TargetRows     int64     `json:"target_rows"`
	RangesCompared int       `json:"ranges_compared"`
	Missing        int64     `json:"missing"`
	Extra          int64     `json:"extra"`
	Different      int64     `json:"different"`
	Keys           []KeyDiff `json:"keys,omitempty"`
	// KeysTruncated is set when more keys differ than are listed.
	KeysTruncated bool `json:"keys_truncated,omitempty"`
	// Problem is a schema difference that prevented a row comparison.
	Problem string `json:"problem,omitempty"`
	// InvariantViolations counts the rows that break the sink's own
	// invariants (Config.CheckInvariants); Invariants lists some.
	InvariantViolations int64    `json:"invariant_violations,omitempty"`
	Invariants          []string `json:"invariants,omitempty"`
}

// Report is the result of a comparison.
type Report struct {
	Equal  bool   `json:"equal"`
	Source string `json:"source"`
	Target string `json:"target"`
	// SourceLSN is the WAL insert position read in the source snapshot of
	// the last round; TargetLSN is the consumer's applied commit LSN in the
	// target snapshot ("" when no consumer was waited for).
	SourceLSN string        `json:"source_lsn"`
	TargetLSN string        `json:"target_lsn,omitempty"`
	Rounds    int           `json:"rounds"`
	Tables    []TableReport `json:"tables"`
	Elapsed   string        `json:"elapsed"`
}

// Run compares the source with the target and returns the report. An error
// means the comparison could not be made; an *InputError is a bad request.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.SourceDSN == "" || cfg.Target == nil {
		return nil, &InputError{errors.New("verify: a source DSN and a target are required")}
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.Fanout, 16)
	def(&cfg.MaxKeys, 100)
	if cfg.Fanout < 2 {
		cfg.Fanout = 2
	}
	if cfg.LeafRows <= 0 {
		cfg.LeafRows = 1000
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Minute
	}
	if cfg.Rechecks == 0 {
		cfg.Rechecks = 2
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	start := time.Now()
	e := &engine{cfg: cfg, log: cfg.Logger}
	rep, err := e.run(ctx)
	if rep != nil {
		rep.Elapsed = time.Since(start).Round(time.Millisecond).String()
	}
	return rep, err
}

type engine struct {
	cfg    Config
	log    *slog.Logger
	srcDsc string
}

// pair is the two snapshots of one round.
type pair struct {
	src    *pgSnapshot
	tgt    Snapshot
	lsn    pglogrepl.LSN
	target Position
	hasher RowHasher // opened by the first transformed table
}

func (p *pair) close(ctx context.Context) {
	if p.hasher != nil {
		p.hasher.Close(ctx)
	}
	if p.src != nil {
		p.src.Close(ctx)
	}
	if p.tgt != nil {
		p.tgt.Close(ctx)
	}
}

// tableState is one table's work across rounds.
type tableState struct {
	name   string
	rep    *TableReport
	leaves []Range // differing leaf ranges of the last round
	// noSplit: the transform rewrites key column keyColumn, so the table
	// is compared as a whole.
	noSplit   bool
	keyColumn string
}

func (e *engine) run(ctx context.Context) (*Report, error) {
	p, err := e.open(ctx)
	if err != nil {
		return nil, err
	}
	rep := &Report{Source: e.srcDsc, Target: e.cfg.Target.Describe(), Rounds: 1}
	names, err := e.tables(ctx, p.src)
	if err != nil {
		p.close(ctx)
		return nil, err
	}
	states := make([]*tableState, len(names))
	for i, n := range names {
		states[i] = &tableState{name: n}
	}
	for round := 0; ; round++ {
		rep.SourceLSN = p.lsn.String()
		if p.target.Known {
			rep.TargetLSN = p.target.CommitLSN.String()
		}
		differ := false
		for _, st := range states {
			if round > 0 && st.rep.Equal {
				continue
			}
			if err := e.compareTable(ctx, p, st, round); err != nil {
				p.close(ctx)
				return nil, err
			}
			differ = differ || !st.rep.Equal
		}
		p.close(ctx)
		if !differ || round >= e.cfg.Rechecks || !e.cfg.Wait {
			break
		}
		e.log.Info("differences found; re-checking the differing ranges with fresh snapshots",
			"round", round+2, "of", e.cfg.Rechecks+1)
		if p, err = e.open(ctx); err != nil {
			return nil, err
		}
		rep.Rounds++
	}
	rep.Equal = true
	for _, st := range states {
		rep.Tables = append(rep.Tables, *st.rep)
		rep.Equal = rep.Equal && st.rep.Equal
	}
	return rep, nil
}

// open takes the source snapshot, waits for the consumer, then takes the
// target snapshot.
func (e *engine) open(ctx context.Context) (*pair, error) {
	c, desc, err := connect(ctx, e.cfg.SourceDSN, "source")
	if err != nil {
		return nil, err
	}
	e.srcDsc = desc
	src, err := beginSnapshot(ctx, c, "source")
	if err != nil {
		c.Close(ctx)
		return nil, err
	}
	p := &pair{src: src}
	// The first statement takes the snapshot, then reads the WAL position.
	var lsnText string
	var lastCommit *time.Time
	err = src.tx.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text,
	CASE WHEN current_setting('track_commit_timestamp')::bool THEN (pg_last_committed_xact()).timestamp END`).Scan(&lsnText, &lastCommit)
	if err != nil {
		p.close(ctx)
		return nil, fmt.Errorf("source: read WAL position: %w", err)
	}
	if p.lsn, err = pglogrepl.ParseLSN(lsnText); err != nil {
		p.close(ctx)
		return nil, fmt.Errorf("source: WAL position %q: %w", lsnText, err)
	}
	e.log.Info("source snapshot taken", "source", desc, "lsn", p.lsn)
	if e.cfg.Wait {
		if e.cfg.Barrier {
			e.barrier(ctx)
		}
		if err := e.wait(ctx, p.lsn, lastCommit); err != nil {
			p.close(ctx)
			return nil, err
		}
	}
	if p.tgt, err = e.cfg.Target.Snapshot(ctx); err != nil {
		p.close(ctx)
		return nil, err
	}
	if e.cfg.Wait {
		if p.target, err = p.tgt.Applied(ctx); err != nil {
			p.close(ctx)
			return nil, err
		}
		e.log.Info("target snapshot taken", "target", e.cfg.Target.Describe(), "applied_lsn", p.target.CommitLSN)
	}
	return p, nil
}

// barrier writes a non-transactional logical message after the snapshot, so
// that a commit at or after the snapshot's LSN reaches the consumer even on an
// idle source. Failure only costs the barrier.
func (e *engine) barrier(ctx context.Context) {
	c, _, err := connect(ctx, e.cfg.SourceDSN, "source")
	if err == nil {
		var lsn string
		err = c.QueryRow(ctx, `SELECT pg_logical_emit_message(false, $1, now()::text)::text`, BarrierPrefix).Scan(&lsn)
		c.Close(ctx)
		if err == nil {
			e.log.Debug("barrier written", "lsn", lsn)
			return
		}
	}
	e.log.Warn("could not write the barrier message; waiting for the next source commit instead "+
		"(grant EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) to the verify role)", "err", err)
}

// wait blocks until the consumer has applied the source up to lsn (see the
// package documentation for the rule).
func (e *engine) wait(ctx context.Context, lsn pglogrepl.LSN, lastCommit *time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
	defer cancel()
	var last Position
	var lastErr error
	nextLog := time.Now().Add(5 * time.Second)
	for {
		pos, err := e.cfg.Target.Applied(ctx)
		switch {
		case err == nil:
			last, lastErr = pos, nil
			if pos.CommitLSN >= lsn {
				e.log.Info("consumer caught up", "applied_lsn", pos.CommitLSN, "snapshot_lsn", lsn)
				return nil
			}
			if lastCommit != nil && !pos.CommitTime.IsZero() && !pos.CommitTime.Before(*lastCommit) {
				e.log.Info("consumer caught up (its last applied commit is the source's last commit)",
					"applied_lsn", pos.CommitLSN, "snapshot_lsn", lsn, "commit_time", pos.CommitTime)
				return nil
			}
		case errors.Is(err, ErrNoCheckpoint):
			lastErr = err
		case ctx.Err() != nil:
		default:
			return err
		}
		if time.Now().After(nextLog) {
			nextLog = time.Now().Add(5 * time.Second)
			if lastErr != nil {
				e.log.Info("waiting for the consumer", "snapshot_lsn", lsn, "reason", lastErr.Error())
			} else {
				e.log.Info("waiting for the consumer", "snapshot_lsn", lsn, "applied_lsn", last.CommitLSN,
					"lag_bytes", uint64(lsn)-uint64(last.CommitLSN))
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				why := fmt.Sprintf("its checkpoint is at %s", last.CommitLSN)
				if lastErr != nil {
					why = lastErr.Error()
				}
				return fmt.Errorf("the consumer did not reach the source snapshot (LSN %s) within %s: %s; "+
					"is the consumer (and the producer) running?", lsn, e.cfg.Timeout, why)
			}
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// tables resolves the table list.
func (e *engine) tables(ctx context.Context, src *pgSnapshot) ([]string, error) {
	if len(e.cfg.Tables) > 0 {
		out := make([]string, 0, len(e.cfg.Tables))
		for _, t := range e.cfg.Tables {
			t = strings.TrimSpace(t)
			if t == "" {
				continue
			}
			if !strings.Contains(t, ".") {
				t = "public." + t
			}
			out = append(out, t)
		}
		return out, nil
	}
	q := `SELECT DISTINCT schemaname || '.' || tablename FROM pg_publication_tables`
	args := []any{}
	if e.cfg.Publication != "" {
		q += ` WHERE pubname = $1`
		args = append(args, e.cfg.Publication)
	}
	rows, err := src.tx.Query(ctx, q+` ORDER BY 1`, args...)
	if err != nil {
		return nil, fmt.Errorf("source: list published tables: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("source: list published tables: %w", err)
	}
	if len(names) == 0 {
		return nil, &InputError{errors.New("the source has no published tables; name the tables with --tables schema.table,...")}
	}
	return names, nil
}

func splitName(n string) (string, string) {
	i := strings.Index(n, ".")
	return n[:i], n[i+1:]
}

// compareTable compares one table: the whole key space in round 0, the
// previous round's differing leaves later.
func (e *engine) compareTable(ctx context.Context, p *pair, st *tableState, round int) error {
	schema, name := splitName(st.name)
	sdef, err := p.src.sourceTable(ctx, schema, name)
	if err != nil {
		return err
	}
	rep := &TableReport{Table: sdef.String()}
	prev := st.rep
	st.rep = rep
	c, err := e.prepare(ctx, p, sdef, round)
	var se *SchemaError
	if errors.As(err, &se) {
		rep.Problem = se.Reason
		return nil
	}
	if err != nil {
		return err
	}
	c.rep = rep
	if round == 0 {
		e.log.Info("comparing", "table", sdef.String(), "target_table", c.tgt.String(), "transformed", c.transformed())
		ss, ts, scanned, err := c.sums(ctx, Range{})
		var kr *errKeyRewritten
		if errors.As(err, &kr) {
			// Source key ranges are not target key ranges: compare the
			// whole table only.
			e.log.Warn("the consumer's transform rewrites a key column; comparing the table as a whole, without listing keys",
				"table", sdef.String(), "column", kr.column)
			st.noSplit = true
			c.noSplit()
			ss, ts, scanned, err = c.sums(ctx, Range{})
		}
		if err != nil {
			return err
		}
		rep.SourceRows, rep.TargetRows = ss.Rows, ts.Rows
		if ss != ts {
			if st.noSplit {
				st.keyColumn = kr.column
				c.wholeDiffers(ss, ts, kr.column)
			} else if err := c.descend(ctx, Range{}, ss, ts, scanned); err != nil {
				return err
			}
		}
	} else {
		rep.SourceRows, rep.TargetRows = prev.SourceRows, prev.TargetRows
		rep.RangesCompared = prev.RangesCompared
		if st.noSplit {
			c.noSplit()
		}
		for _, r := range st.leaves {
			ss, ts, scanned, err := c.sums(ctx, r)
			if err != nil {
				return err
			}
			switch {
			case ss == ts:
			case st.noSplit:
				c.wholeDiffers(ss, ts, st.keyColumn)
			default:
				if err := c.descend(ctx, r, ss, ts, scanned); err != nil {
					return err
				}
			}
		}
	}
	st.leaves = c.leaves
	if st.noSplit && len(st.leaves) == 0 && rep.Problem != "" {
		st.leaves = []Range{{}}
	}
	if e.cfg.CheckInvariants {
		if ic, ok := p.tgt.(invariantChecker); ok {
			n, list, err := ic.Invariants(ctx, c.tgt, e.cfg.MaxKeys)
			if err != nil {
				return err
			}
			rep.InvariantViolations, rep.Invariants = n, list
		}
	}
	rep.Equal = rep.Problem == "" && rep.Missing == 0 && rep.Extra == 0 && rep.Different == 0 && rep.InvariantViolations == 0
	e.log.Info("compared", "table", rep.Table, "equal", rep.Equal, "source_rows", rep.SourceRows,
		"ranges_compared", rep.RangesCompared, "missing", rep.Missing, "extra", rep.Extra, "different", rep.Different,
		"invariant_violations", rep.InvariantViolations)
	return nil
}

// invariantChecker is a Snapshot of a sink with invariants of its own (the
// history sink's versions and validity ranges).
type invariantChecker interface {
	// Invariants checks t and returns the number of violations and up to
	// max of them, described.
	Invariants(ctx context.Context, t *TableDef, max int) (int64, []string, error)
}

// prepare resolves the source table on the target, through the consumer's
// transform when there is one, and returns the comparison for it.
func (e *engine) prepare(ctx context.Context, p *pair, sdef *TableDef, round int) (*comparison, error) {
	want := sdef
	var in *consumer.Table
	if e.cfg.Transform != nil {
		w, i, err := transformedTable(ctx, e.cfg.Transform, sdef)
		if err != nil {
			return nil, err
		}
		if w != nil {
			want, in = w, i
		}
	}
	tdef, err := p.tgt.Table(ctx, want)
	if err != nil {
		return nil, err
	}
	if tdef == nil {
		return nil, &SchemaError{Table: sdef.String(), Reason: "the target has no table " + want.String()}
	}
	for i := range sdef.Key {
		sdef.Key[i].CompareCollation = tdef.Key[i].CompareCollation
		if tdef.Key[i].CompareCollation != "" && round == 0 {
			e.log.Warn("key collations differ between source and target; comparing with COLLATE \"C\" (no index range scans)",
				"table", sdef.String(), "column", sdef.Key[i].Name, "source", sdef.Key[i].Collation, "target", tdef.Key[i].Collation)
		}
	}
	c := &comparison{e: e, p: p, src: sdef, tgt: tdef, side: plainSource{s: p.src, t: sdef}}
	if in != nil {
		if p.hasher == nil {
			if p.hasher, err = e.cfg.Target.Hasher(ctx); err != nil {
				return nil, err
			}
		}
		// Transformed rows are hashed as the target's rows are: with
		// the target's types, or, for a target whose rows another
		// database hashes (DuckDB), with the types that one casts to.
		hdef := tdef
		if hd, ok := p.tgt.(interface{ hashDef(*TableDef) *TableDef }); ok {
			hdef = hd.hashDef(tdef)
		}
		ts, err := newTransformedSource(p.src, sdef, in, e.cfg.Transform.Pipeline, hdef, p.hasher)
		if err != nil {
			return nil, err
		}
		c.side = ts
	}
	return c, nil
}

// comparison is one table in one round.
type comparison struct {
	e        *engine
	p        *pair
	src, tgt *TableDef
	side     rowSource // the source side: src as it is, or transformed
	rep      *TableReport
	leaves   []Range
}

func (c *comparison) transformed() bool {
	_, ok := c.side.(*transformedSource)
	return ok
}

// noSplit stops checking that keys pass through the transform unchanged.
func (c *comparison) noSplit() {
	if ts, ok := c.side.(*transformedSource); ok {
		ts.checkKeys = false
	}
}

// wholeDiffers reports a table that differs and whose keys cannot be
// narrowed down, because the transform rewrites key column col.
func (c *comparison) wholeDiffers(ss, ts Sum, col string) {
	c.leaves = append(c.leaves, Range{})
	c.rep.Problem = fmt.Sprintf("the transformed source (%d rows) and the target (%d rows) differ; "+
		"the consumer's transform rewrites key column %q, so the differing keys cannot be listed", ss.Rows, ts.Rows, col)
}

// sums computes the checksums of r on both sides at once; ss.Rows counts
// the rows the target should hold, scanned the source rows of r (more than
// ss.Rows when a transform filters rows).
func (c *comparison) sums(ctx context.Context, r Range) (Sum, Sum, int64, error) {
	c.rep.RangesCompared++
	type res struct {
		s   Sum
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := c.p.tgt.Checksum(ctx, c.tgt, r)
		ch <- res{s, err}
	}()
	ss, scanned, err := c.side.Checksum(ctx, r)
	t := <-ch
	if err != nil {
		return Sum{}, Sum{}, 0, err
	}
	return ss, t.s, scanned, t.err
}

// descend narrows a differing range down to leaves and diffs their rows.
func (c *comparison) descend(ctx context.Context, r Range, ss, ts Sum, scanned int64) error {
	if ss.Rows <= c.e.cfg.LeafRows {
		c.leaves = append(c.leaves, r)
		return c.diffRows(ctx, r)
	}
	// Split by source rows (scanned): a transform's filter may hold back
	// some of them.
	bounds, err := c.p.src.Boundaries(ctx, c.src, r, scanned, c.e.cfg.Fanout)
	if err != nil {
		return err
	}
	if len(bounds) == 0 {
		c.leaves = append(c.leaves, r)
		return c.diffRows(ctx, r)
	}
	lo := r.Lo
	for i := 0; i <= len(bounds); i++ {
		sub := Range{Lo: lo, Hi: r.Hi}
		if i < len(bounds) {
			sub.Hi = bounds[i]
			lo = bounds[i]
		}
		s1, t1, n1, err := c.sums(ctx, sub)
		if err != nil {
			return err
		}
		if s1 != t1 {
			if err := c.descend(ctx, sub, s1, t1, n1); err != nil {
				return err
			}
		}
	}
	return nil
}

// diffRows compares a leaf row by row: the source's keys and hashes are held
// in memory (at most about LeafRows), the target's are streamed.
func (c *comparison) diffRows(ctx context.Context, r Range) error {
	type srow struct {
		key  []string
		hash string
		seen bool
	}
	var order []string
	src := map[string]*srow{}
	err := c.side.Rows(ctx, r, func(key []string, hash string) error {
		k := strings.Join(key, "\x00")
		order = append(order, k)
		src[k] = &srow{key: key, hash: hash}
		return nil
	})
	if err != nil {
		return err
	}
	prev := ""
	err = c.p.tgt.Rows(ctx, c.tgt, r, func(key []string, hash string) error {
		k := strings.Join(key, "\x00")
		s, ok := src[k]
		dup := k == prev // rows come in key order: a key twice is adjacent
		prev = k
		switch {
		case !ok, dup:
			c.add(Extra, key)
		case s.hash != hash:
			s.seen = true
			c.add(Different, key)
		default:
			s.seen = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range order {
		if s := src[k]; !s.seen {
			c.add(Missing, s.key)
		}
	}
	return nil
}

func (c *comparison) add(kind Kind, key []string) {
	switch kind {
	case Missing:
		c.rep.Missing++
	case Extra:
		c.rep.Extra++
	case Different:
		c.rep.Different++
	}
	if len(c.rep.Keys) >= c.e.cfg.MaxKeys {
		c.rep.KeysTruncated = true
		return
	}
	parts := make([]string, len(key))
	for i, v := range key {
		parts[i] = c.tgt.Key[i].Name + "=" + v // the target's names: a transform may rename keys
	}
	c.rep.Keys = append(c.rep.Keys, KeyDiff{Kind: kind, Key: strings.Join(parts, ", ")})
}
