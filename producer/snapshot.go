package producer

import (
	"context"
	"fmt"
	"strings"
	"sync"
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

// snapshot copies every published table inside the exported snapshot
// snapName, as op=r events, one frame per chunk of SnapshotChunkRows rows read
// in key order. Its frames carry the consistent point cp as commit LSN, so
// streaming, which starts there, follows them without overlap.
//
// SnapshotWorkers connections import the snapshot and read tables in
// parallel, each decoding and encoding its own rows; this goroutine writes
// the chunks to Kafka one whole chunk at a time, so a chunk's frame counts
// exactly its records. A worker reads at most one bounded buffer ahead.
func (s *session) snapshot(ctx context.Context, snapName string, cp pglogrepl.LSN) error {
	cfg := s.cfg
	pcfg, err := pgx.ParseConfig(cfg.SourceDSN)
	if err != nil {
		return permanent(err)
	}
	for k, v := range sessionParams {
		pcfg.RuntimeParams[k] = v
	}
	// Every reader imports the snapshot now, while the exporting replication
	// connection is still idle.
	var txs []pgx.Tx
	defer func() {
		for _, tx := range txs {
			tx.Rollback(context.Background())
			tx.Conn().Close(context.Background())
		}
	}()
	for i := 0; i < cfg.SnapshotWorkers; i++ {
		conn, err := pgx.ConnectConfig(ctx, pcfg)
		if err != nil {
			return fmt.Errorf("snapshot connection: %w", err)
		}
		tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
		if err != nil {
			conn.Close(context.Background())
			return fmt.Errorf("snapshot transaction: %w", err)
		}
		txs = append(txs, tx)
		if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT "+quoteLiteral(snapName)); err != nil {
			return fmt.Errorf("import snapshot %s: %w", snapName, err)
		}
	}
	tables, err := s.snapshotTables(ctx, txs[0])
	if err != nil {
		return err
	}
	var work []*snapshotWork
	for _, st := range tables {
		if err := s.relation(ctx, st.rel); err != nil {
			return err
		}
		w := &snapshotWork{st: st, rs: s.relations[st.rel.RelationID], name: st.rel.Namespace + "." + st.rel.RelationName}
		if done := s.snap[w.name]; len(done) > 0 {
			last := done[len(done)-1]
			if last.last {
				continue
			}
			w.after, w.first = last.lastKey, last.chunk+1
			s.log.Info("snapshot resumes table", "table", w.name, "after_chunk", last.chunk, "after_key", last.lastKey)
		}
		work = append(work, w)
	}

	commitTime := time.Now() // the snapshot's events carry the time it was taken
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	queue := make(chan *snapshotWork, len(work))
	for _, w := range work {
		queue <- w
	}
	close(queue)
	streams := make(chan *chunkStream, len(txs))
	var wg sync.WaitGroup
	for _, tx := range txs[:min(len(txs), max(len(work), 1))] {
		wg.Add(1)
		go func(tx pgx.Tx) {
			defer wg.Done()
			s.snapshotWorker(wctx, tx, &txState{commitLSN: cp, commitTime: commitTime}, queue, streams)
		}(tx)
	}
	go func() { wg.Wait(); close(streams) }()

	progress := map[string]*SnapshotProgress{}
	var werr error
	for cs := range streams {
		if werr != nil {
			for range cs.recs { // let the worker finish or see the cancel
			}
			continue
		}
		pr := progress[cs.w.name]
		if pr == nil {
			pr = &SnapshotProgress{Table: cs.w.name, Estimate: cs.w.st.estimate, Started: time.Now()}
			progress[cs.w.name] = pr
		}
		if werr = s.writeSnapshotChunk(ctx, cs, cp, commitTime); werr != nil {
			cancel()
			continue
		}
		pr.Rows += cs.res.n
		pr.Done = cs.res.last
		s.reportSnapshot(*pr)
	}
	if werr != nil {
		return werr
	}
	s.log.Info("snapshot complete", "tables", len(tables), "consistent_point", cp.String())
	return nil
}

// snapshotWork is one table still to copy.
type snapshotWork struct {
	st    snapshotTable
	rs    *relState
	name  string
	after []string // resume after this key; nil from the start
	first int64    // number of the first chunk to read
}

// chunkStream carries one chunk from a worker to the writer: its records in
// key order, in batches of up to recBatch (one channel hand-off per record
// cost more than encoding it), then (when recs is closed) its result.
type chunkStream struct {
	w     *snapshotWork
	chunk int64
	recs  chan []*kgo.Record
	res   chunkResult // valid once recs is closed
}

type chunkResult struct {
	n       int64
	lastKey []string
	last    bool
	err     error
}

// writeSnapshotChunk produces one chunk's records, frames it and commits it.
func (s *session) writeSnapshotChunk(ctx context.Context, cs *chunkStream, cp pglogrepl.LSN, commitTime time.Time) error {
	s.tx = &txState{commitLSN: cp, commitTime: commitTime, counts: map[tpKey]int64{}}
	for batch := range cs.recs {
		for _, r := range batch {
			if err := s.produce(ctx, r); err != nil {
				return err
			}
		}
	}
	if cs.res.err != nil {
		return cs.res.err
	}
	return s.finishSnapshotChunk(ctx, cs.w.rs.ts, cs.chunk, cs.res.last, cs.res.lastKey, cs.res.n > 0)
}

// snapshotWorker copies tables from queue, chunk by chunk, into streams.
// meta holds the snapshot's commit LSN and time.
func (s *session) snapshotWorker(ctx context.Context, tx pgx.Tx, meta *txState, queue <-chan *snapshotWork, streams chan<- *chunkStream) {
	for w := range queue {
		if !s.snapshotTable(ctx, tx, w, meta, streams) {
			return
		}
	}
}

// snapshotTable reads one table in key order, chunk by chunk, with keyset
// pagination. It reports false when it stopped on an error or cancel.
func (s *session) snapshotTable(ctx context.Context, tx pgx.Tx, w *snapshotWork, meta *txState, streams chan<- *chunkStream) bool {
	ts := w.rs.ts
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
	part := kgo.StickyKeyPartitioner(nil).ForTopic(ts.Topic)
	last := w.after
	for chunk := w.first; ; chunk++ {
		var conds []string
		if w.st.where != "" {
			conds = append(conds, "("+w.st.where+")")
		}
		var args []any
		if last != nil {
			ph := make([]string, len(last))
			for i, v := range last {
				ph[i] = fmt.Sprintf("$%d::%s", i+1, ts.Table.Columns[ts.KeyColumns[i]].SQLType)
				args = append(args, v)
			}
			conds = append(conds, "("+order+") > ("+strings.Join(ph, ", ")+")")
		}
		q := base
		if len(conds) > 0 {
			q += " WHERE " + strings.Join(conds, " AND ")
		}
		q += fmt.Sprintf(" ORDER BY %s LIMIT %d", order, s.cfg.SnapshotChunkRows)
		cs := &chunkStream{w: w, chunk: chunk, recs: make(chan []*kgo.Record, recBatchesAhead)}
		select {
		case streams <- cs:
		case <-ctx.Done():
			return false
		}
		n, lastKey, err := s.readChunk(ctx, tx, w.rs, part, meta, q, args, cs.recs)
		if err == nil && ctx.Err() != nil {
			err = ctx.Err()
		}
		if n > 0 {
			last = lastKey
		}
		cs.res = chunkResult{n: n, lastKey: last, last: n < int64(s.cfg.SnapshotChunkRows), err: err}
		close(cs.recs)
		if err != nil {
			return false
		}
		if cs.res.last {
			return true
		}
	}
}

// readChunk runs one chunk's query and sends its rows as records. It returns
// the row count and the key text of the last row.
func (s *session) readChunk(ctx context.Context, tx pgx.Tx, rs *relState, part kgo.TopicPartitioner, meta *txState, q string, args []any, out chan<- []*kgo.Record) (int64, []string, error) {
	ts := rs.ts
	rows, err := tx.Query(ctx, q, append([]any{pgx.QueryResultFormats{pgx.TextFormatCode}}, args...)...)
	if err != nil {
		return 0, nil, fmt.Errorf("snapshot %s: %w", ts.Table, err)
	}
	defer rows.Close()
	var n int64
	var lastKey []string
	batch := make([]*kgo.Record, 0, recBatch)
	batchBytes := 0
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
		key, err := s.encodeKey(rs, tuple)
		if err != nil {
			return n, nil, permanent(fmt.Errorf("snapshot of table %s key %s: %w", ts.Table, rs.enc.KeyText(tuple), err))
		}
		r, err := s.encodeChange(rs, part, meta, n, 0, schemas.OpRead, key, nil, tuple)
		if err != nil {
			return n, nil, permanent(fmt.Errorf("snapshot of table %s key %s: %w", ts.Table, rs.enc.KeyText(tuple), err))
		}
		batch = append(batch, r)
		batchBytes += len(r.Key) + len(r.Value)
		if len(batch) == recBatch || batchBytes >= recBatchBytes {
			if err := sendBatch(ctx, out, batch); err != nil {
				return n, nil, err
			}
			batch, batchBytes = make([]*kgo.Record, 0, recBatch), 0
		}
		n++
		lastKey = lastKey[:0]
		for _, i := range ts.KeyColumns {
			lastKey = append(lastKey, string(raw[i]))
		}
	}
	if err := rows.Err(); err != nil {
		return n, nil, fmt.Errorf("snapshot %s: %w", ts.Table, err)
	}
	if len(batch) > 0 {
		if err := sendBatch(ctx, out, batch); err != nil {
			return n, nil, err
		}
	}
	return n, lastKey, nil
}

// Records go from a snapshot worker to the writer in batches of up to
// recBatch records or recBatchBytes of keys and values, and a worker reads
// at most recBatchesAhead batches ahead of the writer: with wide rows, about
// 6 MiB per worker at most (G6).
const (
	recBatch        = 256
	recBatchBytes   = 1 << 20
	recBatchesAhead = 4
)

func sendBatch(ctx context.Context, out chan<- []*kgo.Record, batch []*kgo.Record) error {
	select {
	case out <- batch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
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

// finishSnapshotChunk frames and commits one chunk, and records it in the
// session's snapshot state. lastKey is the key after which the next chunk
// starts; it is recorded in the frame only when the chunk has rows.
func (s *session) finishSnapshotChunk(ctx context.Context, ts *schemas.TableSchema, chunk int64, last bool, lastKey []string, hasRows bool) error {
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
	val := schemas.EncoderAppendFrame(schemas.AppendHeader(nil, s.frameID), &f)
	if err := s.send(ctx, &kgo.Record{Topic: s.txTopic, Partition: 0, Value: val}); err != nil {
		return err
	}
	s.tx = nil
	s.groupTxns++ // a chunk counts as one transaction in the metrics
	// Each chunk commits on its own: the snapshot's progress is what Kafka
	// holds.
	if err := s.commitGroup(ctx); err != nil {
		return err
	}
	name := ts.Table.String()
	s.snap[name] = append(s.snap[name], chunkDone{chunk: chunk, lastKey: lastKey, lsn: tx.commitLSN, last: last})
	return nil
}

func (s *session) reportSnapshot(p SnapshotProgress) {
	s.cfg.Observer.SnapshotProgress(p)
	attrs := []any{"table", p.Table, "rows", p.Rows, "estimate", p.Estimate, "rows_per_s", int64(p.Rate())}
	if eta, ok := p.ETA(); ok {
		attrs = append(attrs, "eta", eta.Round(time.Second).String())
	}
	if p.Done {
		s.log.Info("snapshot table done", attrs...)
	} else {
		s.log.Info("snapshot progress", attrs...)
	}
}

// SnapshotProgress is one table's initial snapshot progress, reported after
// every chunk written to Kafka.
type SnapshotProgress struct {
	Table    string    // schema.table
	Rows     int64     // rows written in this session
	Estimate int64     // pg_class.reltuples when the snapshot started
	Started  time.Time // when this session started the table
	Done     bool      // the table's last chunk is written
}

// Rate is rows per second since Started.
func (p SnapshotProgress) Rate() float64 {
	el := time.Since(p.Started).Seconds()
	if el <= 0 {
		return 0
	}
	return float64(p.Rows) / el
}

// ETA estimates the time left from the rate and the estimate.
func (p SnapshotProgress) ETA() (time.Duration, bool) {
	r := p.Rate()
	if p.Done || r <= 0 || p.Estimate <= p.Rows {
		return 0, false
	}
	return time.Duration(float64(p.Estimate-p.Rows) / r * float64(time.Second)), true
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
		s.log.Info("resuming the interrupted initial snapshot", "consistent_point", cp, "tables_started", len(s.snap))
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
func (s *session) inSnapshot(ctx context.Context, ts *schemas.TableSchema, commit pglogrepl.LSN, row *pglogrepl.TupleData) (bool, error) {
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
		c := row.Columns[i]
		if c.DataType != pglogrepl.TupleDataTypeText {
			return false, fmt.Errorf("key column %q is null", ts.Table.Columns[i].Name)
		}
		v, err := ts.Codecs[i].Decode(c.Data)
		if err != nil {
			return false, err
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
