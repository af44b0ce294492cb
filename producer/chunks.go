package producer

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tributary-cdc/tributary/internal/retry"
	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog"
)

// A snapshot reads a table in chunks, one key range per worker. A table
// with a unique key that has a btree ordering is read in key order with
// keyset pagination (WHERE key > last ORDER BY key LIMIT n), which resumes
// exactly after the last key written. A table without one (REPLICA
// IDENTITY FULL and no primary key, whose equal rows keyset pagination
// would skip at a chunk's edge, or a key type with no ordering operator) is
// read by ranges of heap blocks (WHERE ctid >= '(b,0)' AND ctid < '(e,0)',
// a TID range scan), with no ORDER BY: exact in the initial snapshot's
// exported snapshot; online, a row that an update moves between ranges
// reaches the reader through the stream, which carries the whole row for
// such tables.

// chunk is the next chunk of a range: its query, and where the range stands
// once it is written.
type chunk struct {
	query string
	args  []any
	ctid  bool
	end   int64 // ctid: the block after the chunk's last
}

// nextChunk is the SELECT of the next chunk of range r of a table read as
// sn says, under the publication's row filter.
func nextChunk(ts *schemas.TableSchema, pt pubTable, sn *txlog.Snapshot, r txlog.KeyRange, limit int) chunk {
	cols := make([]string, len(ts.Table.Columns))
	for i, c := range ts.Table.Columns {
		cols[i] = quoteIdent(c.Name)
	}
	var conds []string
	var args []any
	if pt.filter != "" {
		conds = append(conds, "("+pt.filter+")")
	}
	where := func() string {
		if len(conds) == 0 {
			return ""
		}
		return " WHERE " + strings.Join(conds, " AND ")
	}
	q := "SELECT " + strings.Join(cols, ", ") + " FROM " + pt.from(ts)
	if sn.Chunking == txlog.ChunkingCtid {
		next := r.NextBlock
		if next < r.StartBlock {
			next = r.StartBlock
		}
		end := min(next+max(sn.ChunkBlocks, 1), r.EndBlock)
		conds = append(conds, fmt.Sprintf("ctid >= '(%d,0)'::tid AND ctid < '(%d,0)'::tid", next, end))
		return chunk{query: q + where(), ctid: true, end: end}
	}
	var keyList []string
	for _, i := range ts.KeyColumns {
		keyList = append(keyList, quoteIdent(ts.Table.Columns[i].Name))
	}
	order := strings.Join(keyList, ", ")
	bound := func(op string, key []string) {
		ph := make([]string, len(key))
		for i, v := range key {
			args = append(args, v)
			ph[i] = fmt.Sprintf("$%d::%s", len(args), ts.Table.Columns[ts.KeyColumns[i]].SQLType)
		}
		conds = append(conds, "("+order+") "+op+" ("+strings.Join(ph, ", ")+")")
	}
	if after := r.Resume(); after != nil {
		bound(">", after)
	}
	if r.To != nil {
		bound("<=", r.To)
	}
	return chunk{query: q + where() + fmt.Sprintf(" ORDER BY %s LIMIT %d", order, limit), args: args}
}

// advance moves range r past a written chunk c that returned n rows, the
// last with key lastKey; full says a key-order chunk stopped at its size
// bound before its row limit.
func (c chunk) advance(r *txlog.KeyRange, n int64, lastKey []string, limit int, full bool) {
	if c.ctid {
		r.NextBlock = c.end
		r.Done = c.end >= r.EndBlock
		return
	}
	if n > 0 {
		r.After = lastKey
	}
	r.Done = !full && n < int64(limit)
}

// chunking decides how a table is read: by ctid ranges when its key is
// every column (no unique key) or its key type has no btree ordering (the
// probe query fails with undefined_function), else by key. q must not be a
// transaction that a failed probe would abort.
func (s *session) chunking(ctx context.Context, ts *schemas.TableSchema, pt pubTable) (string, error) {
	if len(ts.KeyColumns) < len(ts.Table.Columns) {
		var keys []string
		for _, i := range ts.KeyColumns {
			keys = append(keys, quoteIdent(ts.Table.Columns[i].Name))
		}
		_, err := s.db.Exec(ctx, "SELECT 1 FROM "+pt.from(ts)+" ORDER BY "+strings.Join(keys, ", ")+" LIMIT 0")
		var pe *pgconn.PgError
		switch {
		case err == nil:
			return txlog.ChunkingKey, nil
		case errors.As(err, &pe) && pe.Code == "42883":
			s.log.Info("the table's key has no ordering: its snapshot reads ranges of blocks", "table", ts.Table.String(), "detail", pe.Message)
		default:
			return "", fmt.Errorf("probe the key order of %s: %w", ts.Table, err)
		}
	}
	if pt.relkind == "p" {
		return "", retry.Terminal(fmt.Errorf("table %s is partitioned and has no unique key with an ordering: a snapshot cannot read it in chunks; "+
			"give it a primary key, or publish its partitions (publish_via_partition_root = false)", ts.Table))
	}
	return txlog.ChunkingCtid, nil
}

// planCtid splits a table's heap into n ranges of blocks, read in chunks of
// about chunkRows rows.
func (s *session) planCtid(ctx context.Context, q querier, pt pubTable, n, chunkRows int) ([]txlog.KeyRange, int64, error) {
	var blocks, pages int64
	var tuples float64
	if err := q.QueryRow(ctx, `SELECT pg_catalog.pg_relation_size($1::oid) / current_setting('block_size')::bigint, c.relpages, c.reltuples
		FROM pg_catalog.pg_class c WHERE c.oid = $1::oid`, pt.oid).Scan(&blocks, &pages, &tuples); err != nil {
		return nil, 0, fmt.Errorf("size of %s: %w", pt.fullName(), err)
	}
	perChunk := int64(64)
	if pages > 0 && tuples > 0 {
		perChunk = max(1, int64(float64(chunkRows)*float64(pages)/tuples))
	}
	n = max(1, min(n, int(blocks/max(perChunk, 1))))
	var ranges []txlog.KeyRange
	for i := 0; i < n; i++ {
		r := txlog.KeyRange{StartBlock: blocks * int64(i) / int64(n), EndBlock: blocks * int64(i+1) / int64(n)}
		r.NextBlock = r.StartBlock
		r.Done = r.StartBlock >= r.EndBlock
		ranges = append(ranges, r)
	}
	return ranges, perChunk, nil
}

// plan sets how sn reads table ts and splits it into ranges for n workers.
func (s *session) plan(ctx context.Context, q querier, ts *schemas.TableSchema, pt pubTable, sn *txlog.Snapshot, n int) error {
	mode, err := s.chunking(ctx, ts, pt)
	if err != nil {
		return err
	}
	sn.Chunking = mode
	if mode == txlog.ChunkingCtid {
		sn.Ranges, sn.ChunkBlocks, err = s.planCtid(ctx, q, pt, n, s.cfg.SnapshotChunkRows)
		return err
	}
	sn.Ranges, err = s.planRanges(ctx, q, ts, pt, n)
	return err
}
