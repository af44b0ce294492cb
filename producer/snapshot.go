package producer

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/internal/pgexport"
	"github.com/tributary-cdc/tributary/internal/retry"
	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog"
)

// from is the FROM item that reads the table's own rows: ONLY for a table
// that may have inheritance children (their rows are theirs, as the
// publication publishes them), the table itself for a partitioned table
// (its rows are its partitions', published through it).
func (t pubTable) from(ts *schemas.TableSchema) string {
	if t.relkind == "p" {
		return ts.Table.QualifiedName()
	}
	return "ONLY " + ts.Table.QualifiedName()
}

// snapshot copies every published table inside the exported snapshot
// snapName, as op=r events, one frame per chunk of SnapshotChunkRows rows
// read in key order. Its frames carry the consistent point cp as commit
// LSN, so streaming, which starts there, follows them without overlap.
//
// First the tables' states are written (so that a restart knows every
// table the snapshot covers), then SnapshotWorkers connections import the
// snapshot and read key ranges in parallel, several ranges of one large
// table among them, each decoding and encoding its own rows; this goroutine
// writes the chunks to Kafka one whole chunk at a time, each with its
// table's progress, so a chunk's frame counts exactly its records and the
// state never runs ahead of Kafka. A worker reads at most one bounded
// buffer ahead. A snapshot interrupted by a restart continues online (see
// online.go), from the last key each range wrote.
func (s *session) snapshot(ctx context.Context, snapName string, cp pglogrepl.LSN) error {
	cfg := s.cfg
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
		conn, err := s.connect(ctx)
		if err != nil {
			return fmt.Errorf("snapshot connection: %w", err)
		}
		tx, err := pgexport.Import(ctx, conn, snapName)
		if err != nil {
			conn.Close(context.Background())
			return err
		}
		txs = append(txs, tx)
	}
	pub, all, err := listPublished(ctx, txs[0], cfg.Publication)
	if err != nil {
		return err
	}
	s.pubAll = all
	s.reconcile(pub, all, cp, cp)
	// Recorded before the work below can fail (a registry error, an
	// incompatible schema): a session that finds this slot then reads the
	// tables online (newSlotPending).
	if err := s.flushState(ctx); err != nil {
		return err
	}
	var work []*snapshotWork
	for _, pt := range pub {
		t := s.state.table(pt.fullName())
		if t == nil || t.Status != txlog.TableCaptured || t.Snapshot == nil || t.Snapshot.Kind != txlog.SnapshotInitial {
			continue
		}
		rel, err := relationOf(ctx, txs[0], pt)
		if err != nil {
			return err
		}
		if err := s.relation(ctx, rel); err != nil {
			return err
		}
		rs := s.relations[pt.oid]
		if err := s.plan(ctx, txs[0], rs.ts, pt, t.Snapshot, cfg.SnapshotWorkers); err != nil {
			return err
		}
		for i, r := range t.Snapshot.Ranges {
			if !r.Done {
				work = append(work, &snapshotWork{t: t, pt: pt, rs: rs, rng: i})
			}
		}
		if t.Snapshot.Done() { // an empty table
			t.Snapshot.Status, t.Snapshot.Finished = txlog.SnapshotDone, now()
		}
	}
	// The tables' states are in Kafka before any chunk.
	if err := s.flushState(ctx); err != nil {
		return err
	}

	commitTime := time.Now() // the snapshot's events carry the time it was taken
	commitLSN, _ := framedBelow(cp)
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
			s.snapshotWorker(wctx, tx, &txState{commitLSN: commitLSN, commitTime: commitTime}, queue, streams)
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
		name := cs.w.t.Name()
		pr := progress[name]
		if pr == nil {
			pr = &SnapshotProgress{Table: name, Estimate: cs.w.t.Snapshot.Estimate, Started: time.Now()}
			progress[name] = pr
		}
		if werr = s.writeSnapshotChunk(ctx, cs, cp, commitTime); werr != nil {
			cancel()
			continue
		}
		pr.Chunk, pr.SessionRows, pr.Rows = cs.res.n, pr.SessionRows+cs.res.n, cs.w.t.Snapshot.Rows
		pr.Done = cs.w.t.Snapshot.Status == txlog.SnapshotDone
		s.reportSnapshot(*pr)
	}
	if werr != nil {
		return werr
	}
	s.log.Info("snapshot complete", "tables", len(progress), "consistent_point", cp.String())
	return nil
}

// snapshotWork is one key range of a table still to copy.
type snapshotWork struct {
	t   *txlog.TableState
	pt  pubTable
	rs  *relState
	rng int // index into t.Snapshot.Ranges
}

// chunkStream carries one chunk from a worker to the writer: its records in
// key order, in batches of up to recBatch (one channel hand-off per record
// cost more than encoding it), then (when recs is closed) its result.
type chunkStream struct {
	w     *snapshotWork
	chunk chunk
	recs  chan []*kgo.Record
	res   chunkResult // valid once recs is closed
}

type chunkResult struct {
	n       int64
	lastKey []string // the last key read; nil for none
	err     error
}

// writeSnapshotChunk produces one chunk's records, frames it with its
// table's progress and commits it.
func (s *session) writeSnapshotChunk(ctx context.Context, cs *chunkStream, cp pglogrepl.LSN, commitTime time.Time) error {
	commit, end := framedBelow(cp)
	s.tx = &txState{commitLSN: commit, commitTime: commitTime, counts: map[tpKey]int64{}}
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
	t := cs.w.t
	sn := t.Snapshot
	r := &sn.Ranges[cs.w.rng]
	cs.chunk.advance(r, cs.res.n, cs.res.lastKey, s.cfg.SnapshotChunkRows, false)
	sn.Chunks++
	sn.Rows += cs.res.n
	if sn.Done() {
		sn.Status, sn.Finished = txlog.SnapshotDone, now()
	}
	s.state.changed(t)
	s.tx.snapChunk = &schemas.SnapshotChunk{Slot: s.cfg.Slot, Schema: t.Schema, Table: t.Table, Chunk: sn.Chunks - 1,
		Last: sn.Status == txlog.SnapshotDone, ID: sn.ID}
	if cs.res.n > 0 && !cs.chunk.ctid {
		s.tx.snapChunk.LastKey = append([]string(nil), cs.res.lastKey...)
	}
	if err := s.finishTx(ctx, end); err != nil {
		return err
	}
	// Each chunk commits on its own: the snapshot's progress is what Kafka
	// holds.
	return s.commitGroup(ctx)
}

// snapshotWorker copies ranges from queue, chunk by chunk, into streams.
// meta holds the snapshot's commit LSN and time.
func (s *session) snapshotWorker(ctx context.Context, tx pgx.Tx, meta *txState, queue <-chan *snapshotWork, streams chan<- *chunkStream) {
	for w := range queue {
		if !s.snapshotRange(ctx, tx, w, meta, streams) {
			return
		}
	}
}

// snapshotRange reads one key range in key order, chunk by chunk, with
// keyset pagination. It reports false when it stopped on an error or cancel.
func (s *session) snapshotRange(ctx context.Context, tx pgx.Tx, w *snapshotWork, meta *txState, streams chan<- *chunkStream) bool {
	ts := w.rs.ts
	part := kgo.StickyKeyPartitioner(nil).ForTopic(ts.Topic)
	r := w.t.Snapshot.Ranges[w.rng] // this worker's copy; the writer advances the state's
	for {
		c := nextChunk(ts, w.pt, w.t.Snapshot, r, s.cfg.SnapshotChunkRows)
		cs := &chunkStream{w: w, chunk: c, recs: make(chan []*kgo.Record, recBatchesAhead)}
		select {
		case streams <- cs:
		case <-ctx.Done():
			return false
		}
		n, lastKey, err := s.readChunk(ctx, tx, w.rs, part, meta, c.query, c.args, cs.recs)
		if err == nil && ctx.Err() != nil {
			err = ctx.Err()
		}
		cs.res = chunkResult{n: n, lastKey: lastKey, err: err}
		close(cs.recs)
		if err != nil {
			return false
		}
		c.advance(&r, n, lastKey, s.cfg.SnapshotChunkRows, false)
		if r.Done {
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
			return n, nil, retry.Terminal(fmt.Errorf("snapshot of table %s key %s: %w", ts.Table, rs.enc.KeyText(tuple), err))
		}
		r, err := s.encodeChange(rs, part, meta, n, 0, schemas.OpRead, key, nil, tuple)
		if err != nil {
			return n, nil, retry.Terminal(fmt.Errorf("snapshot of table %s key %s: %w", ts.Table, rs.enc.KeyText(tuple), err))
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

// relationOf describes a published table as pgoutput's Relation message
// would: the publication's column list, no generated columns, and the
// replica identity's columns flagged as key.
func relationOf(ctx context.Context, q querier, t pubTable) (*pglogrepl.RelationMessage, error) {
	rel := &pglogrepl.RelationMessage{RelationID: t.oid, Namespace: t.schema, RelationName: t.name}
	if len(t.ident) == 1 {
		rel.ReplicaIdentity = t.ident[0]
	}
	cols, err := q.Query(ctx, `
		SELECT a.attname, a.atttypid, a.atttypmod,
		       COALESCE(a.attnum = ANY((i.indkey::int2[])[0:i.indnkeyatts - 1]), false)
		FROM pg_catalog.pg_attribute a
		LEFT JOIN pg_catalog.pg_index i ON i.indrelid = a.attrelid AND
		     (CASE WHEN $2 = 'i' THEN i.indisreplident ELSE i.indisprimary END)
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
		  AND a.attname = ANY($3)
		ORDER BY a.attnum`, t.oid, t.ident, t.attnames)
	if err != nil {
		return nil, fmt.Errorf("columns of %s: %w", t.fullName(), err)
	}
	for cols.Next() {
		var c pglogrepl.RelationMessageColumn
		var key bool
		if err := cols.Scan(&c.Name, &c.DataType, &c.TypeModifier, &key); err != nil {
			cols.Close()
			return nil, err
		}
		if key || t.ident == "f" {
			c.Flags = 1
		}
		rel.Columns = append(rel.Columns, &c)
	}
	if err := cols.Err(); err != nil {
		return nil, fmt.Errorf("columns of %s: %w", t.fullName(), err)
	}
	rel.ColumnNum = uint16(len(rel.Columns))
	return rel, nil
}

// onlineRelation returns the relation state of a table an online snapshot
// reads, registering its schema from the catalog when the stream has not
// described it yet, and its publication entry. Both are nil when the table
// is no longer published.
func (s *session) onlineRelation(ctx context.Context, t *txlog.TableState) (*relState, pubTable, error) {
	if pt, ok := s.online.pubs[t.Name()]; ok && pt.oid == t.OID {
		if rs := s.relations[pt.oid]; rs != nil && rs.ts != nil {
			return rs, pt, nil
		}
	}
	pub, _, err := listPublished(ctx, s.db, s.cfg.Publication)
	if err != nil {
		return nil, pubTable{}, err
	}
	for _, pt := range pub {
		if pt.fullName() != t.Name() || pt.oid != t.OID {
			continue
		}
		s.online.pubs[pt.fullName()] = pt
		if rs := s.relations[pt.oid]; rs != nil && rs.ts != nil {
			return rs, pt, nil
		}
		rel, err := relationOf(ctx, s.db, pt)
		if err != nil {
			return nil, pt, err
		}
		if err := s.relation(ctx, rel); err != nil {
			return nil, pt, err
		}
		return s.relations[pt.oid], pt, nil
	}
	return nil, pubTable{}, nil
}

// planRanges splits a table's key order into up to n ranges of about equal
// row counts, from a sample of its keys, so that n workers read it in
// parallel. A table smaller than two chunks is one range.
func (s *session) planRanges(ctx context.Context, q querier, ts *schemas.TableSchema, pt pubTable, n int) ([]txlog.KeyRange, error) {
	one := []txlog.KeyRange{{}}
	if n <= 1 || pt.relkind == "p" || pt.estimate < 2*int64(s.cfg.SnapshotChunkRows) {
		return one, nil
	}
	// About 100 sampled keys per range.
	pct := min(100, float64(100*n)*100/float64(pt.estimate))
	var keys []string
	for _, i := range ts.KeyColumns {
		keys = append(keys, quoteIdent(ts.Table.Columns[i].Name))
	}
	order := strings.Join(keys, ", ")
	texts := make([]string, len(keys))
	for i, k := range keys {
		texts[i] = k + "::text"
	}
	sql := fmt.Sprintf("SELECT %s FROM %s TABLESAMPLE SYSTEM (%g) ORDER BY %s", strings.Join(texts, ", "), pt.from(ts), pct, order)
	rows, err := q.Query(ctx, sql)
	if err != nil {
		return nil, fmt.Errorf("sample the keys of %s: %w", ts.Table, err)
	}
	var sample [][]string
	for rows.Next() {
		vals := make([]*string, len(keys))
		dst := make([]any, len(keys))
		for i := range vals {
			dst[i] = &vals[i]
		}
		if err := rows.Scan(dst...); err != nil {
			rows.Close()
			return nil, err
		}
		k := make([]string, len(keys))
		ok := true
		for i, v := range vals {
			if v == nil {
				ok = false
				break
			}
			k[i] = *v
		}
		if ok {
			sample = append(sample, k)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sample the keys of %s: %w", ts.Table, err)
	}
	if len(sample) < 2*n {
		return one, nil
	}
	var ranges []txlog.KeyRange
	var from []string
	for i := 1; i < n; i++ {
		b := sample[i*len(sample)/n]
		if from != nil && strings.Join(b, "\x00") == strings.Join(from, "\x00") {
			continue
		}
		ranges = append(ranges, txlog.KeyRange{From: from, To: b})
		from = b
	}
	ranges = append(ranges, txlog.KeyRange{From: from})
	return ranges, nil
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

// SnapshotProgress is one table's snapshot progress, reported after every
// chunk written to Kafka.
type SnapshotProgress struct {
	Table       string    // schema.table
	Chunk       int64     // rows of the chunk just written
	SessionRows int64     // rows written since Started
	Rows        int64     // rows of the snapshot written so far, before restarts included
	Estimate    int64     // the table's estimated rows when the snapshot started
	Started     time.Time // when this session started the table
	Done        bool      // the table's last chunk is written
}

// Rate is rows per second since Started.
func (p SnapshotProgress) Rate() float64 {
	el := time.Since(p.Started).Seconds()
	if el <= 0 {
		return 0
	}
	return float64(p.SessionRows) / el
}

// ETA estimates the time left from the rate and the estimate.
func (p SnapshotProgress) ETA() (time.Duration, bool) {
	r := p.Rate()
	if p.Done || r <= 0 || p.Estimate <= p.Rows {
		return 0, false
	}
	return time.Duration(float64(p.Estimate-p.Rows) / r * float64(time.Second)), true
}
