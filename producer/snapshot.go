package producer

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/schemas"
)

// snapshotTable is one published table as the snapshot reads it.
type snapshotTable struct {
	rel      *pglogrepl.RelationMessage
	where    string // publication row filter, or ""
	estimate int64  // pg_class.reltuples
	keyCols  []int  // column indexes ordering the chunks
}

// snapshot copies every published table inside the slot's exported snapshot,
// as op=r events, one frame per chunk of SnapshotChunkRows rows read in
// primary-key order. Its frames carry the consistent point as commit LSN, so
// streaming, which starts there, follows them without overlap.
func (s *session) snapshot(ctx context.Context, snapName string, cp pglogrepl.LSN) error {
	cfg := s.cfg
	pcfg, err := pgx.ParseConfig(cfg.SourceDSN)
	if err != nil {
		return permanent(err)
	}
	for k, v := range sessionParams {
		pcfg.RuntimeParams[k] = v
	}
	rd, err := pgx.ConnectConfig(ctx, pcfg)
	if err != nil {
		return fmt.Errorf("snapshot connection: %w", err)
	}
	defer rd.Close(context.Background())
	tx, err := rd.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("snapshot transaction: %w", err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT "+quoteLiteral(snapName)); err != nil {
		return fmt.Errorf("import snapshot %s: %w", snapName, err)
	}
	tables, err := s.snapshotTables(ctx, tx)
	if err != nil {
		return err
	}
	commitTime := time.Now()
	for _, st := range tables {
		name := st.rel.Namespace + "." + st.rel.RelationName
		done := s.snap[name]
		var after []string
		first := int64(0)
		if n := len(done); n > 0 {
			if done[n-1].last {
				continue
			}
			after, first = done[n-1].lastKey, done[n-1].chunk+1
			s.log.Info("snapshot resumes table", "table", name, "after_chunk", done[n-1].chunk, "after_key", after)
		}
		if err := s.snapshotTable(ctx, tx, st, cp, commitTime, after, first); err != nil {
			return err
		}
	}
	s.log.Info("snapshot complete", "tables", len(tables), "consistent_point", cp)
	return nil
}

// snapshotTables lists the published tables with their columns as pgoutput
// would describe them: the publication's column list, no generated columns.
func (s *session) snapshotTables(ctx context.Context, tx pgx.Tx) ([]snapshotTable, error) {
	rows, err := tx.Query(ctx, `
		SELECT c.oid, pt.schemaname, pt.tablename, pt.attnames, COALESCE(pt.rowfilter, ''),
		       GREATEST(c.reltuples, 0)::bigint, c.relreplident::text
		FROM pg_catalog.pg_publication_tables pt
		JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
		JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
		WHERE pt.pubname = $1 ORDER BY 2, 3`, s.cfg.Publication)
	if err != nil {
		return nil, fmt.Errorf("snapshot: published tables: %w", err)
	}
	type row struct {
		oid      uint32
		schema   string
		table    string
		attnames []string
		filter   string
		estimate int64
		ident    string
	}
	var list []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.oid, &r.schema, &r.table, &r.attnames, &r.filter, &r.estimate, &r.ident); err != nil {
			rows.Close()
			return nil, err
		}
		if s.only == nil || s.only[r.schema+"."+r.table] {
			list = append(list, r)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var out []snapshotTable
	for _, r := range list {
		rel := &pglogrepl.RelationMessage{RelationID: r.oid, Namespace: r.schema, RelationName: r.table}
		cols, err := tx.Query(ctx, `
			SELECT a.attname, a.atttypid, a.atttypmod,
			       COALESCE(a.attnum = ANY(i.indkey), false)
			FROM pg_catalog.pg_attribute a
			LEFT JOIN pg_catalog.pg_index i ON i.indrelid = a.attrelid AND
			     (CASE WHEN $2 = 'i' THEN i.indisreplident ELSE i.indisprimary END)
			WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
			  AND a.attname = ANY($3)
			ORDER BY a.attnum`, r.oid, r.ident, r.attnames)
		if err != nil {
			return nil, fmt.Errorf("snapshot: columns of %s.%s: %w", r.schema, r.table, err)
		}
		for cols.Next() {
			var c pglogrepl.RelationMessageColumn
			var key bool
			if err := cols.Scan(&c.Name, &c.DataType, &c.TypeModifier, &key); err != nil {
				cols.Close()
				return nil, err
			}
			if key || r.ident == "f" {
				c.Flags = 1
			}
			rel.Columns = append(rel.Columns, &c)
		}
		if err := cols.Err(); err != nil {
			return nil, err
		}
		rel.ColumnNum = uint16(len(rel.Columns))
		st := snapshotTable{rel: rel, where: r.filter, estimate: r.estimate}
		out = append(out, st)
	}
	return out, nil
}

// snapshotTable reads one table in key order, chunk by chunk, with keyset
// pagination, and writes each chunk as one framed Kafka transaction.
// It starts after key after (nil: at the start), numbering chunks from first.
func (s *session) snapshotTable(ctx context.Context, tx pgx.Tx, st snapshotTable, cp pglogrepl.LSN, commitTime time.Time, after []string, first int64) error {
	if err := s.relation(ctx, st.rel); err != nil {
		return err
	}
	rs := s.relations[st.rel.RelationID]
	ts := rs.ts
	cols := make([]string, len(ts.Table.Columns))
	for i, c := range ts.Table.Columns {
		cols[i] = quoteIdent(c.Name)
	}
	var keyList []string
	for _, i := range ts.KeyColumns {
		keyList = append(keyList, quoteIdent(ts.Table.Columns[i].Name))
	}
	order := strings.Join(keyList, ", ")
	base := "SELECT " + strings.Join(cols, ", ") + " FROM " + ts.Table.QualifiedName()
	var conds []string
	if st.where != "" {
		conds = append(conds, "("+st.where+")")
	}
	started := time.Now()
	var done int64
	last := after // text of the last key read
	for chunk := first; ; chunk++ {
		q := base
		c := conds
		var args []any
		if last != nil {
			ph := make([]string, len(last))
			for i, v := range last {
				ph[i] = fmt.Sprintf("$%d::%s", i+1, ts.Table.Columns[ts.KeyColumns[i]].SQLType)
				args = append(args, v)
			}
			c = append(c, "("+order+") > ("+strings.Join(ph, ", ")+")")
		}
		if len(c) > 0 {
			q += " WHERE " + strings.Join(c, " AND ")
		}
		q += fmt.Sprintf(" ORDER BY %s LIMIT %d", order, s.cfg.SnapshotChunkRows)
		s.tx = &txState{commitLSN: cp, commitTime: commitTime, counts: map[tpKey]int64{}}
		n, lastKey, err := s.snapshotChunk(ctx, tx, rs, q, args)
		if err != nil {
			return err
		}
		done += n
		lastChunk := n < int64(s.cfg.SnapshotChunkRows)
		if n > 0 {
			last = lastKey
		}
		if err := s.finishSnapshotChunk(ctx, ts, chunk, lastChunk, last, n > 0); err != nil {
			return err
		}
		s.reportSnapshot(ts.Table.String(), done, st.estimate, started, lastChunk)
		if lastChunk {
			return nil
		}
	}
}

func (s *session) snapshotChunk(ctx context.Context, tx pgx.Tx, rs *relState, q string, args []any) (int64, []string, error) {
	ts := rs.ts
	rows, err := tx.Query(ctx, q, append([]any{pgx.QueryResultFormats{pgx.TextFormatCode}}, args...)...)
	if err != nil {
		return 0, nil, fmt.Errorf("snapshot %s: %w", ts.Table, err)
	}
	defer rows.Close()
	var n int64
	var lastKey []string
	tuple := &pglogrepl.TupleData{ColumnNum: uint16(len(ts.Fields)), Columns: make([]*pglogrepl.TupleDataColumn, len(ts.Fields))}
	for i := range tuple.Columns {
		tuple.Columns[i] = &pglogrepl.TupleDataColumn{}
	}
	for rows.Next() {
		raw := rows.RawValues()
		for i, v := range raw {
			c := tuple.Columns[i]
			if v == nil {
				c.DataType, c.Data = pglogrepl.TupleDataTypeNull, nil
			} else {
				c.DataType, c.Data = pglogrepl.TupleDataTypeText, v
			}
		}
		after, _, err := rowFromTuple(ts, tuple)
		if err != nil {
			return 0, nil, s.eventError(rs, 0, "?", err)
		}
		key, keyText, err := s.encodeKey(rs, after)
		if err != nil {
			return 0, nil, s.eventError(rs, 0, keyText, err)
		}
		if err := s.emitSnapshot(ctx, rs, key, keyText, after); err != nil {
			return 0, nil, err
		}
		n++
		lastKey = lastKey[:0]
		for _, i := range ts.KeyColumns {
			lastKey = append(lastKey, string(raw[i]))
		}
	}
	if err := rows.Err(); err != nil {
		return 0, nil, fmt.Errorf("snapshot %s: %w", ts.Table, err)
	}
	return n, lastKey, nil
}

func (s *session) emitSnapshot(ctx context.Context, rs *relState, key []byte, keyText string, after map[string]any) error {
	// emit fills source from s.tx; snapshot reads have no change LSN.
	return s.emit(ctx, rs, 0, schemas.OpRead, key, keyText, nil, after, nil)
}

// finishSnapshotChunk frames and commits one chunk, and records it in the
// session's snapshot state. lastKey is the key after which the next chunk
// starts; it is recorded in the frame only when the chunk has rows.
func (s *session) finishSnapshotChunk(ctx context.Context, ts *schemas.TableSchema, chunk int64, last bool, lastKey []string, hasRows bool) error {
	if err := s.beginGroup(); err != nil {
		return err
	}
	tx := s.tx
	f := schemas.Frame{CommitLSN: tx.commitLSN, EndLSN: tx.commitLSN, CommitTime: tx.commitTime, Events: tx.pos,
		Snapshot: &schemas.SnapshotChunk{Slot: s.cfg.Slot, Schema: ts.Table.Schema, Table: ts.Table.Name, Chunk: chunk, Last: last}}
	if hasRows {
		f.Snapshot.LastKey = append([]string(nil), lastKey...)
	}
	for k, n := range tx.counts {
		f.Partitions = append(f.Partitions, schemas.PartitionCount{Topic: k.topic, Partition: k.partition, Count: n})
	}
	sortCounts(f.Partitions)
	val, err := s.frameCodec.BinaryFromNative(schemas.AppendHeader(nil, s.frameID), f.Native())
	if err != nil {
		return permanent(fmt.Errorf("encode snapshot frame of %s chunk %d: %w", ts.Table, chunk, err))
	}
	s.w.produce(ctx, &kgo.Record{Topic: s.txTopic, Partition: 0, Value: val})
	s.tx = nil
	// Each chunk commits on its own: the snapshot's progress is what Kafka holds.
	if err := s.commitGroup(ctx); err != nil {
		return err
	}
	name := ts.Table.String()
	s.snap[name] = append(s.snap[name], chunkDone{chunk: chunk, lastKey: lastKey, lsn: tx.commitLSN, last: last})
	return nil
}

func (s *session) reportSnapshot(table string, done, estimate int64, started time.Time, finished bool) {
	el := time.Since(started)
	rate := float64(done) / el.Seconds()
	attrs := []any{"table", table, "rows", done, "estimate", estimate, "rows_per_s", int64(rate)}
	if estimate > done && rate > 0 && !finished {
		attrs = append(attrs, "eta", (time.Duration(float64(estimate-done)/rate) * time.Second).Round(time.Second))
	}
	if finished {
		s.log.Info("snapshot table done", attrs...)
	} else {
		s.log.Info("snapshot progress", attrs...)
	}
}

// chunkDone is one finished snapshot chunk, as its frame records it.
type chunkDone struct {
	chunk   int64
	lastKey []string      // key text of the chunk's last row; for an empty final chunk, the previous chunk's
	lsn     pglogrepl.LSN // consistent point of the snapshot the chunk was read in
	last    bool
}

// snapshotState is the initial snapshot's progress, by "schema.table", in
// chunk order. Along a table's key order the chunks' snapshot LSNs never
// decrease: a resumed snapshot reads the rest of a table in a newer snapshot.
type snapshotState map[string][]chunkDone

// readSnapshotState reads this slot's snapshot chunks from the start of the
// transactions topic, where the snapshot wrote them before any stream frame.
func (s *session) readSnapshotState(ctx context.Context) (snapshotState, error) {
	end, err := endOffset(ctx, s.kcl, s.txTopic)
	if err != nil {
		return nil, err
	}
	st := snapshotState{}
	err = scanFrames(ctx, s.cfg.KafkaOpts, s.cfg.Registry, s.txTopic, 0, end, func(f schemas.Frame) bool {
		if f.Snapshot == nil {
			return false
		}
		if f.Snapshot.Slot != s.cfg.Slot {
			return true
		}
		name := f.Snapshot.Schema + "." + f.Snapshot.Table
		key := f.Snapshot.LastKey
		if key == nil && len(st[name]) > 0 {
			key = st[name][len(st[name])-1].lastKey
		}
		st[name] = append(st[name], chunkDone{chunk: f.Snapshot.Chunk, lastKey: key, lsn: f.CommitLSN, last: f.Snapshot.Last})
		return true
	})
	return st, err
}

// resumeSnapshot finishes an initial snapshot that an earlier session left
// incomplete. The slot's exported snapshot died with that session, so the
// rest is read in the exported snapshot of a temporary slot, at a newer
// consistent point C2; while streaming from the slot up to C2, changes to
// rows read at C2 are already in the snapshot and are skipped (catchUp).
// Every row then arrives once: as a read, or as the changes after its read.
func (s *session) resumeSnapshot(ctx context.Context) error {
	var err error
	if s.snap, err = s.readSnapshotState(ctx); err != nil {
		return err
	}
	tables, err := s.publishedTableNames(ctx)
	if err != nil {
		return err
	}
	complete := true
	for _, t := range tables {
		if c := s.snap[t]; len(c) == 0 || !c[len(c)-1].last {
			complete = false
		}
	}
	if !complete {
		rcfg, err := connConfig(s.cfg.SourceDSN, true)
		if err != nil {
			return permanent(err)
		}
		tmp, err := pgconn.ConnectConfig(ctx, rcfg)
		if err != nil {
			return fmt.Errorf("replication connection for the resumed snapshot: %w", err)
		}
		defer tmp.Close(context.Background())
		name := fmt.Sprintf("%s_resume_%d", s.cfg.Slot, time.Now().UnixNano()%1e9)
		res, err := pglogrepl.CreateReplicationSlot(ctx, tmp, name, "pgoutput",
			pglogrepl.CreateReplicationSlotOptions{Temporary: true, Mode: pglogrepl.LogicalReplication, SnapshotAction: "EXPORT_SNAPSHOT"})
		if err != nil {
			return fmt.Errorf("temporary slot for the resumed snapshot: %w", err)
		}
		cp, err := pglogrepl.ParseLSN(res.ConsistentPoint)
		if err != nil {
			return permanent(err)
		}
		s.log.Info("resuming the interrupted initial snapshot", "slot", s.cfg.Slot, "consistent_point", cp, "tables_started", len(s.snap))
		if err := s.snapshot(ctx, res.SnapshotName, cp); err != nil {
			return err
		}
	}
	s.catchUp = newCatchUp(s.snap)
	return nil
}

// catchUp skips streamed changes that a resumed snapshot already holds.
type catchUp struct {
	until  pglogrepl.LSN // commits at or after this are never skipped
	chunks snapshotState
}

func newCatchUp(st snapshotState) *catchUp {
	c := &catchUp{chunks: st}
	var lowest pglogrepl.LSN
	for _, chunks := range st {
		for _, ch := range chunks {
			if lowest == 0 || ch.lsn < lowest {
				lowest = ch.lsn
			}
			if ch.lsn > c.until {
				c.until = ch.lsn
			}
		}
	}
	if c.until == lowest {
		return nil // one snapshot: the stream starts at its consistent point
	}
	return c
}

// inSnapshot reports whether the change of table t committed at commit, to the
// row whose key columns row holds, is already reflected by a snapshot read.
func (s *session) inSnapshot(ctx context.Context, ts *schemas.TableSchema, commit pglogrepl.LSN, row map[string]any) (bool, error) {
	c := s.catchUp
	if c == nil || commit >= c.until {
		return false, nil
	}
	chunks, ok := c.chunks[ts.Table.String()]
	if !ok {
		return false, nil // not part of the initial snapshot
	}
	// The chunks read before commit form a prefix of the key order; the row
	// is in the snapshot when its key lies beyond that prefix.
	idx := -1
	for i, ch := range chunks {
		if ch.lsn > commit {
			break
		}
		idx = i
	}
	switch {
	case idx < 0:
		return true, nil
	case chunks[idx].last:
		return false, nil
	}
	boundary := chunks[idx].lastKey
	var left, right []string
	args := make([]any, 0, 2*len(ts.KeyColumns))
	for n, i := range ts.KeyColumns {
		v := schemas.UnwrapUnion(row[ts.Fields[i]])
		if v == nil {
			return false, fmt.Errorf("key column %q is null", ts.Table.Columns[i].Name)
		}
		text, err := ts.Codecs[i].Encode(v)
		if err != nil {
			return false, err
		}
		typ := ts.Table.Columns[i].SQLType
		args = append(args, text)
		left = append(left, fmt.Sprintf("$%d::%s", len(args), typ))
		args = append(args, boundary[n])
		right = append(right, fmt.Sprintf("$%d::%s", len(args), typ))
	}
	var beyond bool
	q := "SELECT ROW(" + strings.Join(left, ", ") + ") > ROW(" + strings.Join(right, ", ") + ")"
	if err := s.db.QueryRow(ctx, q, args...).Scan(&beyond); err != nil {
		return false, fmt.Errorf("compare key with the snapshot boundary: %w", err)
	}
	return beyond, nil
}

func (s *session) publishedTableNames(ctx context.Context) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT schemaname || '.' || tablename FROM pg_catalog.pg_publication_tables
		WHERE pubname = $1 ORDER BY schemaname, tablename`, s.cfg.Publication)
	if err != nil {
		return nil, err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range names {
		if s.only == nil || s.only[n] {
			out = append(out, n)
		}
	}
	return out, nil
}
