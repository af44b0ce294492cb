package producer

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/tributary-cdc/tributary/internal/retry"
	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog"
)

// Online snapshots read a table while the stream goes on, without locks,
// by the watermark method of Netflix's DBLog (Andreas Andreakis and Ioannis
// Papapanagiotou, "DBLog: A Watermark Based Change-Data-Capture Framework",
// 2019), which Debezium's incremental snapshots also use. A worker reads
// one chunk of the table in key order between two logical decoding
// messages, a low and a high watermark, that it writes into the WAL itself:
//
//  1. It writes the low watermark L (a transactional message, its own
//     transaction).
//  2. It reads the chunk in a new REPEATABLE READ transaction whose snapshot
//     S was taken after L committed, and reports S (xmin, xmax, running
//     xids) with the rows. In PostgreSQL the order of commit records is
//     not the order of visibility: a transaction that wrote its commit
//     record just before L's, and had not yet left the procarray when S was
//     taken (a backend descheduled there, or waiting for a synchronous
//     standby), streams before L yet is invisible in S. The stream remembers
//     the xids of the last transactions that changed tables under an
//     online snapshot; at H, a chunk whose table such a transaction before L
//     changed invisibly to S is read again in a new window.
//  3. It hands the rows to the stream and writes the high watermark H,
//     which commits after S was taken: every transaction visible in S
//     streams before H.
//
// The stream notes the keys that transactions between L and H change, and
// at H drops those keys from the chunk (the stream already carries them,
// newer or as new) and writes the rest as snapshot reads (op r) in H's
// place in the stream, as the frame of H's transaction. So a streamed
// change always wins over a chunk row that is older than it, and every row
// arrives once more as a read unless it changed while its chunk was read.
//
// Changes to a table whose online snapshot is active carry the header
// tributary.snapshot=pending: the row they change may not be at the reader
// yet, so sinks apply them leniently (an update of a missing row inserts it,
// a delete of a missing row does nothing).

// Logical decoding message prefixes the producer reads and does not publish.
const (
	// WatermarkPrefix marks the low and high watermarks of online snapshot
	// chunks.
	WatermarkPrefix = "tributary.watermark"
	// SignalPrefix carries requests to the producer (see Signal).
	SignalPrefix = "tributary.signal"
)

// pendingHeader is the schemas.HeaderSnapshot value of change records of a
// table whose online snapshot is active.
var pendingHeader = []byte("pending")

const (
	// onlineChunkBytes bounds the text of the rows one online chunk holds
	// in memory until its high watermark (G6).
	onlineChunkBytes = 16 << 20
	// maxWindowKeys bounds the keys a chunk's window remembers; a chunk
	// whose table changed more keys than this while it was read is read
	// again.
	maxWindowKeys = 100_000
)

// watermark is the content of a watermark message.
type watermark struct {
	Slot  string `json:"slot"`
	Chunk string `json:"chunk"`
	Mark  string `json:"mark"` // "low" or "high"
}

// chunkJob is one chunk of one key range of a table's online snapshot.
type chunkJob struct {
	id     string // unique in the session; the watermarks carry it
	table  string // schema.table
	snapID string
	relID  uint32 // the table's OID, its relation ID in the stream
	rng    int    // index into the snapshot's ranges
	chunk  chunk  // its query, and how its range moves once it is written
	rs     *relState

	// Set by the stream goroutine.
	open     bool
	keys     map[string]struct{} // keys changed between the watermarks
	overflow bool
	preL     []uint32 // xids of the last transactions before L that changed the table

	// Set by the worker under online.mu before it writes the high
	// watermark.
	delivered bool
	snap      pgSnapshot // the read's snapshot
	rows      []*pglogrepl.TupleData
	rowKeys   [][]byte
	lastKey   []string
	full      bool // the read stopped at onlineChunkBytes
}

// online runs a session's online snapshots. The stream goroutine owns the
// state and the windows; workers read chunks on their own connections.
type online struct {
	s      *session
	wake   func() // interrupts the stream's receive
	nonce  string
	seq    int64
	jobs   chan *chunkJob
	errc   chan error
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	nwork  int

	mu       sync.Mutex
	inflight map[string]*chunkJob // by chunk id, from before its low watermark

	// Stream goroutine only.
	pubs     map[string]pubTable     // table -> its publication entry, until the next listing
	running  map[string]map[int]bool // table -> ranges with a chunk in flight
	recent   [recentTxns]recentTxn   // ring of the last transactions that changed tables under online snapshots
	nrecent  int
	windows  map[string][]*chunkJob       // table -> chunks between their watermarks
	progress map[string]*SnapshotProgress // table -> this session's progress
}

func newOnline(s *session, wake func()) *online {
	ctx, cancel := context.WithCancel(context.Background())
	return &online{s: s, wake: wake, nonce: fmt.Sprintf("%x", time.Now().UnixNano()), jobs: make(chan *chunkJob, 1024), errc: make(chan error, 1),
		ctx: ctx, cancel: cancel, inflight: map[string]*chunkJob{}, pubs: map[string]pubTable{}, running: map[string]map[int]bool{},
		windows: map[string][]*chunkJob{}, progress: map[string]*SnapshotProgress{}}
}

// close stops the workers and waits for them.
func (o *online) close() {
	o.cancel()
	o.wg.Wait()
}

// err returns a worker's error once one has failed.
func (o *online) err() error {
	select {
	case err := <-o.errc:
		return err
	default:
		return nil
	}
}

// schedule hands a chunk to the workers for every range of every active,
// unpaused online snapshot that has none in flight. It runs on the stream
// goroutine after anything that changes snapshots.
func (o *online) schedule(ctx context.Context) error {
	s := o.s
	for _, t := range s.state.activeSnapshots() {
		sn := t.Snapshot
		if sn.Kind != txlog.SnapshotOnline || sn.Status == txlog.SnapshotPaused {
			continue
		}
		rs, pt, err := s.onlineRelation(ctx, t)
		if err != nil {
			return err
		}
		if rs == nil {
			continue // no longer published; reconcile marks it
		}
		if sn.Ranges == nil {
			if err := s.plan(ctx, s.db, rs.ts, pt, sn, s.cfg.SnapshotWorkers); err != nil {
				return err
			}
			if sn.Done() { // an empty table
				sn.Status, sn.Finished = txlog.SnapshotDone, now()
				s.setPending(t)
			}
			s.state.changed(t)
			if sn.Status == txlog.SnapshotDone {
				continue
			}
		}
		if sn.Status == txlog.SnapshotPending {
			if sn.Estimate == 0 {
				sn.Estimate = max(pt.estimate, 0)
			}
			sn.Status = txlog.SnapshotRunning
			s.state.changed(t)
			s.log.Info("online snapshot starts", "table", t.Name(), "snapshot", sn.ID, "reason", sn.Reason,
				"ranges", len(sn.Ranges), "estimate", sn.Estimate)
		}
		if o.progress[t.Name()] == nil {
			o.progress[t.Name()] = &SnapshotProgress{Table: t.Name(), Estimate: sn.Estimate, Started: time.Now()}
		}
		busy := o.running[t.Name()]
		if busy == nil {
			busy = map[int]bool{}
			o.running[t.Name()] = busy
		}
		for i := range sn.Ranges {
			r := &sn.Ranges[i]
			if r.Done || busy[i] {
				continue
			}
			o.seq++
			j := &chunkJob{id: fmt.Sprintf("%s-%d", o.nonce, o.seq), table: t.Name(), snapID: sn.ID, relID: t.OID, rng: i,
				chunk: nextChunk(rs.ts, pt, sn, *r, s.cfg.SnapshotChunkRows), rs: rs}
			select {
			case o.jobs <- j:
				busy[i] = true
			default:
				return nil // the queue is full; the next schedule hands it out
			}
		}
	}
	o.startWorkers()
	return nil
}

// startWorkers starts SnapshotWorkers workers the first time there is work.
func (o *online) startWorkers() {
	if o.nwork > 0 || len(o.jobs) == 0 {
		return
	}
	o.nwork = o.s.cfg.SnapshotWorkers
	for i := 0; i < o.nwork; i++ {
		o.wg.Add(1)
		go func() {
			defer o.wg.Done()
			if err := o.work(); err != nil && o.ctx.Err() == nil {
				select {
				case o.errc <- err:
				default:
				}
				o.wake()
			}
		}()
	}
}

// work reads chunks until the session ends, on a connection of its own.
func (o *online) work() error {
	ctx := o.ctx
	conn, err := o.s.connect(ctx)
	if err != nil {
		return fmt.Errorf("online snapshot connection: %w", err)
	}
	defer conn.Close(context.Background())
	for {
		select {
		case <-ctx.Done():
			return nil
		case j := <-o.jobs:
			if err := o.runChunk(ctx, conn, j); err != nil {
				return fmt.Errorf("online snapshot of %s: %w", j.table, err)
			}
		}
	}
}

// runChunk reads one chunk between its watermarks.
func (o *online) runChunk(ctx context.Context, conn *pgx.Conn, j *chunkJob) error {
	o.mu.Lock()
	o.inflight[j.id] = j
	o.mu.Unlock()
	if err := o.emit(ctx, conn, j.id, "low"); err != nil {
		return err
	}
	snap, rows, keys, lastKey, full, err := o.read(ctx, conn, j)
	if err != nil {
		return err
	}
	o.mu.Lock()
	j.snap, j.rows, j.rowKeys, j.lastKey, j.full, j.delivered = snap, rows, keys, lastKey, full, true
	o.mu.Unlock()
	return o.emit(ctx, conn, j.id, "high")
}

func (o *online) emit(ctx context.Context, conn *pgx.Conn, chunk, mark string) error {
	b, _ := json.Marshal(watermark{Slot: o.s.cfg.Slot, Chunk: chunk, Mark: mark})
	if _, err := conn.Exec(ctx, `SELECT pg_catalog.pg_logical_emit_message(true, $1, $2::text)`, WatermarkPrefix, string(b)); err != nil {
		return fmt.Errorf("%s watermark: %w", mark, err)
	}
	return nil
}

// snapshotSQL is the first statement of a chunk's read transaction: it
// takes the transaction's snapshot and returns it.
const snapshotSQL = `SELECT pg_catalog.pg_snapshot_xmin(s)::text, pg_catalog.pg_snapshot_xmax(s)::text,
	ARRAY(SELECT pg_catalog.pg_snapshot_xip(s))::text[] FROM pg_catalog.pg_current_snapshot() s`

// read reads the chunk's rows in a snapshot taken after the low watermark,
// and returns that snapshot.
func (o *online) read(ctx context.Context, conn *pgx.Conn, j *chunkJob) (pgSnapshot, []*pglogrepl.TupleData, [][]byte, []string, bool, error) {
	ts := j.rs.ts
	var snap pgSnapshot
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return snap, nil, nil, nil, false, err
	}
	defer tx.Rollback(context.Background())
	var xmin, xmax string
	var xip []string
	if err := tx.QueryRow(ctx, snapshotSQL).Scan(&xmin, &xmax, &xip); err != nil {
		return snap, nil, nil, nil, false, fmt.Errorf("the chunk's snapshot: %w", err)
	}
	if snap, err = parseSnapshot(xmin, xmax, xip); err != nil {
		return snap, nil, nil, nil, false, retry.Terminal(err)
	}
	rows, err := tx.Query(ctx, j.chunk.query, append([]any{pgx.QueryResultFormats{pgx.TextFormatCode}}, j.chunk.args...)...)
	if err != nil {
		return snap, nil, nil, nil, false, fmt.Errorf("%s: %w", ts.Table, err)
	}
	defer rows.Close()
	var out []*pglogrepl.TupleData
	var keys [][]byte
	var lastKey []string
	size, full := 0, false
	for rows.Next() {
		t := copyTuple(rows.RawValues())
		key, err := o.s.encodeKey(j.rs, t)
		if err != nil {
			return snap, nil, nil, nil, false, retry.Terminal(fmt.Errorf("table %s key %s: %w", ts.Table, j.rs.enc.KeyText(t), err))
		}
		out, keys = append(out, t), append(keys, key)
		lastKey = keyText(ts, t)
		for _, c := range t.Columns {
			size += len(c.Data) + 16
		}
		if size >= onlineChunkBytes && !j.chunk.ctid { // a block range is read whole
			full = true
			break
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return snap, nil, nil, nil, false, fmt.Errorf("%s: %w", ts.Table, err)
	}
	return snap, out, keys, lastKey, full, nil
}

// pgSnapshot is a PostgreSQL MVCC snapshot: which transactions it sees.
// Xids are compared as PostgreSQL compares them, modulo 2^32.
type pgSnapshot struct {
	xmin, xmax uint32
	xip        map[uint32]bool
}

func parseSnapshot(xmin, xmax string, xip []string) (pgSnapshot, error) {
	xid := func(s string) (uint32, error) {
		v, err := strconv.ParseUint(s, 10, 64)
		return uint32(v), err // an xid8 holds the epoch above the 32-bit xid
	}
	var s pgSnapshot
	var err error
	if s.xmin, err = xid(xmin); err != nil {
		return s, fmt.Errorf("snapshot xmin %q: %w", xmin, err)
	}
	if s.xmax, err = xid(xmax); err != nil {
		return s, fmt.Errorf("snapshot xmax %q: %w", xmax, err)
	}
	s.xip = make(map[uint32]bool, len(xip))
	for _, x := range xip {
		v, err := xid(x)
		if err != nil {
			return s, fmt.Errorf("snapshot xip %q: %w", x, err)
		}
		s.xip[v] = true
	}
	return s, nil
}

// sees reports whether the snapshot sees the effects of transaction xid (if
// it committed).
func (s pgSnapshot) sees(xid uint32) bool {
	switch {
	case int32(xid-s.xmin) < 0:
		return true
	case int32(xid-s.xmax) >= 0:
		return false
	}
	return !s.xip[xid]
}

// recentTxns is how many of the last transactions that changed tables under
// an online snapshot the stream remembers, for the check at each high
// watermark.
const recentTxns = 256

// recentTxn is one transaction that changed tables under online snapshots.
type recentTxn struct {
	xid    uint32
	tables []string
}

// noteTxn records a committed transaction that changed the given tables
// under online snapshots.
func (o *online) noteTxn(xid uint32, tables []string) {
	o.recent[o.nrecent%recentTxns] = recentTxn{xid: xid, tables: tables}
	o.nrecent++
}

// recentFor returns the xids of the remembered transactions that changed
// table, oldest first.
func (o *online) recentFor(table string) []uint32 {
	var out []uint32
	for i := max(0, o.nrecent-recentTxns); i < o.nrecent; i++ {
		r := o.recent[i%recentTxns]
		for _, t := range r.tables {
			if t == table {
				out = append(out, r.xid)
				break
			}
		}
	}
	return out
}

// copyTuple copies one row's text values, which pgx reuses.
func copyTuple(raw [][]byte) *pglogrepl.TupleData {
	t := &pglogrepl.TupleData{ColumnNum: uint16(len(raw)), Columns: make([]*pglogrepl.TupleDataColumn, len(raw))}
	for i, v := range raw {
		if v == nil {
			t.Columns[i] = &pglogrepl.TupleDataColumn{DataType: pglogrepl.TupleDataTypeNull}
		} else {
			t.Columns[i] = &pglogrepl.TupleDataColumn{DataType: pglogrepl.TupleDataTypeText, Data: append([]byte(nil), v...)}
		}
	}
	return t
}

// keyText is the text of a row's key columns, in key order.
func keyText(ts *schemas.TableSchema, t *pglogrepl.TupleData) []string {
	out := make([]string, len(ts.KeyColumns))
	for n, i := range ts.KeyColumns {
		out[n] = string(t.Columns[i].Data)
	}
	return out
}

// watermarkMessage handles a watermark message of the stream: a low one
// opens its chunk's window, a high one writes the chunk into the current
// transaction. Watermarks of other slots and sessions are ignored.
func (o *online) watermarkMessage(ctx context.Context, m *pglogrepl.LogicalDecodingMessage) error {
	var w watermark
	if err := json.Unmarshal(m.Content, &w); err != nil || w.Slot != o.s.cfg.Slot {
		return nil
	}
	o.mu.Lock()
	j := o.inflight[w.Chunk]
	o.mu.Unlock()
	if j == nil {
		return nil // an earlier session's, or a cancelled chunk's
	}
	switch w.Mark {
	case "low":
		j.open, j.keys, j.preL = true, map[string]struct{}{}, o.recentFor(j.table)
		o.windows[j.table] = append(o.windows[j.table], j)
		return nil
	case "high":
		return o.high(ctx, j)
	}
	return nil
}

// noteKey records a key changed in the stream in the open windows of table.
func (o *online) noteKey(table string, key []byte) {
	for _, j := range o.windows[table] {
		if j.overflow {
			continue
		}
		j.keys[string(key)] = struct{}{}
		if len(j.keys) > maxWindowKeys {
			j.overflow, j.keys = true, nil
		}
	}
}

// closeWindow forgets a chunk: its window and its place in flight.
func (o *online) closeWindow(j *chunkJob) {
	ws := o.windows[j.table]
	for i, w := range ws {
		if w == j {
			o.windows[j.table] = append(ws[:i:i], ws[i+1:]...)
			break
		}
	}
	if len(o.windows[j.table]) == 0 {
		delete(o.windows, j.table)
	}
	delete(o.running[j.table], j.rng)
	o.mu.Lock()
	delete(o.inflight, j.id)
	o.mu.Unlock()
}

// dropTable forgets every chunk of table in flight: its snapshot ended.
// Workers still reading one finish, and their high watermark is ignored.
func (o *online) dropTable(table string) {
	o.mu.Lock()
	for id, j := range o.inflight {
		if j.table == table {
			delete(o.inflight, id)
		}
	}
	o.mu.Unlock()
	delete(o.windows, table)
	delete(o.running, table)
	delete(o.progress, table)
}

// high writes a chunk at its high watermark: the rows whose keys did not
// change between the watermarks, as snapshot reads in the current source
// transaction (the watermark's), whose frame then carries the chunk.
func (o *online) high(ctx context.Context, j *chunkJob) error {
	s := o.s
	o.closeWindow(j)
	o.mu.Lock()
	delivered, snap, rows, keys := j.delivered, j.snap, j.rows, j.rowKeys
	o.mu.Unlock()
	t := s.state.table(j.table)
	rs := s.relations[j.relID]
	var unseen uint32
	for _, x := range j.preL {
		if !snap.sees(x) {
			unseen = x
		}
	}
	switch {
	case !delivered || !j.open || t == nil || t.Snapshot == nil || t.Snapshot.ID != j.snapID || !t.Snapshot.Status.Active():
		return o.schedule(ctx) // not this session's chunk any more
	case j.overflow || rs == nil || rs.ts != j.rs.ts || unseen != 0:
		// The table changed too much to remember, its schema changed
		// while the chunk was read, or a change before the low watermark
		// was not visible to the read: read the chunk again.
		s.log.Info("online snapshot chunk read again", "table", j.table, "window_overflow", j.overflow,
			"schema_changed", rs == nil || rs.ts != j.rs.ts, "unseen_xid_before_low_watermark", unseen)
		return o.schedule(ctx)
	}
	sn := t.Snapshot
	r := &sn.Ranges[j.rng]
	if s.tx == nil || s.tx.skip {
		return o.schedule(ctx)
	}
	part := rs.topic.part
	written := int64(0)
	for i, row := range rows {
		if _, changed := j.keys[string(keys[i])]; changed {
			continue
		}
		rec, err := s.encodeChange(rs, part, s.tx, s.tx.pos, 0, schemas.OpRead, keys[i], nil, row)
		if err != nil {
			return s.eventError(rs, 0, rs.enc.KeyText(row), err)
		}
		if err := s.produce(ctx, rec); err != nil {
			return err
		}
		written++
	}
	j.chunk.advance(r, int64(len(rows)), j.lastKey, s.cfg.SnapshotChunkRows, j.full)
	sn.Chunks++
	sn.Rows += written
	done := sn.Done()
	if done {
		sn.Status, sn.Finished = txlog.SnapshotDone, now()
	}
	s.state.changed(t)
	s.tx.snapChunk = &schemas.SnapshotChunk{Slot: s.cfg.Slot, Schema: t.Schema, Table: t.Table, Chunk: sn.Chunks - 1, Last: done, ID: sn.ID}
	if !j.chunk.ctid {
		s.tx.snapChunk.LastKey = j.lastKey
	}
	s.tx.forceFrame = true
	if p := o.progress[j.table]; p != nil {
		p.Chunk, p.SessionRows, p.Rows = written, p.SessionRows+written, sn.Rows
		p.Done = done
		s.reportSnapshot(*p)
	}
	if done {
		s.log.Info("online snapshot done", "table", j.table, "snapshot", sn.ID, "rows", sn.Rows, "chunks", sn.Chunks)
		o.dropTable(j.table)
		s.setPending(t)
	}
	return o.schedule(ctx)
}

// setPending sets whether changes of t's relation carry the pending
// snapshot header.
func (s *session) setPending(t *txlog.TableState) {
	pending := t.Snapshot != nil && t.Snapshot.Kind == txlog.SnapshotOnline && t.Snapshot.Status.Active()
	if rs := s.relations[t.OID]; rs != nil {
		rs.pending = pending
	}
}
