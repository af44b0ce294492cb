package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/postgres/pgtarget"
	"github.com/tributary-cdc/tributary/schemas"
)

// Set-based apply.
//
// The writer flushes its pending events (at most flushAt or flushBytes, whole or parts of
// several source transactions of one target transaction) either in event
// order (flushOrdered: COPY for runs of inserts into one table, one
// pipelined statement per other change), or, when every pending event
// allows it, set-based (flushSet): the changes of each table in waves, each
// wave holding at most one change per key, applied per table and wave as
// one COPY of the inserts, one UPDATE ... FROM unnest(...) per set of
// changed columns and one DELETE ... USING unnest(...).
//
// Only the state at the target transaction's commit is visible, so the
// order of changes to different rows does not matter to a reader, and
// each row's changes stay in order (wave k holds each key's k-th change).
// A later full-row update of a key replaces the change before it (an
// insert stays an insert with the new values). Three things could still
// tell the orders apart, and each is excluded:
//   - triggers that fire during replay (ENABLE ALWAYS or REPLICA) see rows
//     in another order: a table that has one is applied in event order;
//   - a unique or exclusion constraint of other columns may fail in
//     between (a value moved from one row to another): the set-based flush
//     runs in a savepoint, and any error rolls it back and applies the same
//     events in event order, which then fails exactly where the source's
//     order fails, naming the event;
//   - a table without a unique key (REPLICA IDENTITY FULL), an update
//     that changes the key, a change marked pending by an online snapshot,
//     a snapshot read, a truncate, the upsert policy and a flush that holds
//     changes of one table under two versions of its schema keep event
//     order.
//
// Statements that change no row where one is expected (an update or delete
// of a missing key) also roll back to event order, whose checks name the
// event. Foreign keys are not checked during replay
// (session_replication_role = replica), as for event order.

// setMin is the shortest run of updates or deletes of one table, wave and
// column set that is sent as one set-based statement; shorter runs go as
// one statement per change (in the same pipeline).
const setMin = 4

// errSetFallback makes a set-based flush roll back and apply in event order.
var errSetFallback = errors.New("set-based apply: a change did not match; applying in event order")

// tableInfo is what the set-based flush knows about a target table, read
// once per Apply.
type tableInfo struct {
	ok    bool     // set-based statements may be used
	types []string // each column's type at the target, without typmod, in Table.Columns order
}

// info reads t's column types and replay triggers at the target.
func (w *writer) info(ctx context.Context, t *consumer.Table) (*tableInfo, error) {
	if ti := w.infos[t]; ti != nil {
		return ti, nil
	}
	names := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		names[i] = c.Name
	}
	var types []string
	var triggers bool
	err := w.tx.QueryRow(ctx, `SELECT (SELECT array_agg(format_type(a.atttypid, NULL) ORDER BY n.i)
		FROM unnest($2::text[]) WITH ORDINALITY AS n(name, i)
		JOIN pg_catalog.pg_attribute a ON a.attrelid = $1::regclass AND a.attname = n.name AND a.attnum > 0 AND NOT a.attisdropped),
		EXISTS (SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal AND tgenabled IN ('A', 'R'))`,
		t.QualifiedName(), names).Scan(&types, &triggers)
	if err != nil {
		return nil, fmt.Errorf("table %s: column types and triggers: %w", t, err)
	}
	ti := &tableInfo{types: types, ok: !triggers && len(types) == len(t.Columns)}
	if w.infos == nil {
		w.infos = map[*consumer.Table]*tableInfo{}
	}
	w.infos[t] = ti
	return ti, nil
}

// setItem is one change of a set-based flush.
type setItem struct {
	ev        *consumer.Event // the event, or the last of those merged into it
	op        schemas.Op      // insert, update or delete
	row       []any           // the after image (insert, update)
	key       []string        // key values as text, in Table.Key order
	unchanged []int
	wave      int
	merged    bool // later full-row updates replaced row
}

// setTable is one table's changes in a set-based flush.
type setTable struct {
	t     *consumer.Table
	info  *tableInfo
	items []*setItem
	last  map[string]*setItem // each key's latest change
	waves int
}

// newSetTable is t's part of a set-based flush of n events, its key map
// and change list sized for them.
func newSetTable(t *consumer.Table, ti *tableInfo, n int) *setTable {
	return &setTable{t: t, info: ti, last: make(map[string]*setItem, n), items: make([]*setItem, 0, n)}
}

// setEligible reports whether ev may be applied set-based.
func (w *writer) setEligible(ev *consumer.Event) bool {
	switch ev.Op {
	case schemas.OpInsert, schemas.OpUpdate, schemas.OpDelete:
	default:
		return false
	}
	return !ev.Idempotent() && !ev.Table.Unkeyed()
}

// flushSet applies evs set-based and reports true, or reports false (having
// changed nothing) when evs must be applied in event order.
func (w *writer) flushSet(ctx context.Context, evs []*consumer.Event) (bool, error) {
	if len(evs) < 2 || w.s.cfg.OnConflict == OnConflictUpsert {
		return false, nil
	}
	events := map[*consumer.Table]int{} // each table's, to size its key map once
	for _, ev := range evs {
		if !w.setEligible(ev) {
			return false, nil
		}
		events[ev.Table]++
	}
	if len(events) > 1 {
		// Waves order the changes of one key within one schema version of
		// its table: a row changed under two versions keeps event order.
		names := make(map[string]bool, len(events))
		for t := range events {
			if names[t.QualifiedName()] {
				return false, nil
			}
			names[t.QualifiedName()] = true
		}
	}
	var tables []*setTable
	byTable := make(map[*consumer.Table]*setTable, len(events))
	for _, ev := range evs {
		st := byTable[ev.Table]
		if st == nil {
			ti, err := w.info(ctx, ev.Table)
			if err != nil {
				return false, err
			}
			if !ti.ok {
				return false, nil
			}
			st = newSetTable(ev.Table, ti, events[ev.Table])
			byTable[ev.Table] = st
			tables = append(tables, st)
		}
		if ok, err := st.add(ev); !ok || err != nil {
			return false, err
		}
	}
	if _, err := w.tx.Exec(ctx, "SAVEPOINT tributary_set"); err != nil {
		return false, err
	}
	err := w.applySet(ctx, tables)
	var pe *pgconn.PgError
	if err != nil && (errors.Is(err, errSetFallback) || errors.As(err, &pe)) {
		if _, err := w.tx.Exec(ctx, "ROLLBACK TO SAVEPOINT tributary_set"); err != nil {
			return false, err
		}
		w.s.setFellBack.Add(1)
		w.s.log.Debug("set-based apply rolled back; applying in event order", "events", len(evs), "error", err)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if _, err := w.tx.Exec(ctx, "RELEASE SAVEPOINT tributary_set"); err != nil {
		return false, err
	}
	w.s.setApplied.Add(1)
	return true, nil
}

// add places ev in its key's next wave, or merges a full-row update into
// the key's change before it. It reports false for an event whose key has
// a NULL (then event order reports what is wrong) and for an update that
// changes the key.
func (st *setTable) add(ev *consumer.Event) (bool, error) {
	row := ev.After
	if ev.Op == schemas.OpDelete || ev.Op == schemas.OpUpdate && ev.Before != nil {
		row = ev.Before
	}
	key, ks, ok, err := st.key(ev, row)
	if !ok || err != nil {
		return false, err
	}
	if ev.Op == schemas.OpUpdate && ev.Before != nil {
		// The producer sends a change of the key as a delete and an insert;
		// an update that changes it would link two keys' histories, which
		// waves keyed by one key cannot order: event order applies it.
		_, after, ok, err := st.key(ev, ev.After)
		if !ok || err != nil || after != ks {
			return false, err
		}
	}
	prev := st.last[ks]
	if prev != nil && ev.Op == schemas.OpUpdate && len(ev.Unchanged) == 0 && prev.op != schemas.OpDelete {
		// The whole row replaces the change before: an insert stays an
		// insert (of the new values), an update becomes this one.
		prev.ev, prev.row, prev.unchanged, prev.merged = ev, ev.After, nil, true
		return true, nil
	}
	it := &setItem{ev: ev, op: ev.Op, row: ev.After, key: key, unchanged: ev.Unchanged}
	if prev != nil {
		it.wave = prev.wave + 1
	}
	st.waves = max(st.waves, it.wave+1)
	st.last[ks] = it
	st.items = append(st.items, it)
	return true, nil
}

// key returns the key values of row as text, and as one string that tells
// keys apart; ok is false when a key column is NULL.
func (st *setTable) key(ev *consumer.Event, row []any) (key []string, ks string, ok bool, err error) {
	key = make([]string, len(st.t.Key))
	var b strings.Builder
	for i, k := range st.t.Key {
		if row == nil || row[k] == nil {
			return nil, "", false, nil
		}
		s, err := pgtarget.Encode(ev, k, row[k])
		if err != nil {
			return nil, "", false, err
		}
		key[i] = s
		b.WriteString(strconv.Itoa(len(s)))
		b.WriteByte(':')
		b.WriteString(s)
	}
	return key, b.String(), true, nil
}

// setStmt is a queued statement of a set-based flush and what its result
// must show.
type setStmt struct {
	rows int  // a set statement of this many changes: its result is the count of those that matched
	one  bool // one update or delete: it must change a row
}

// applySet sends the waves: per wave, one pipeline of every table's deletes,
// updates and short runs of inserts, then a COPY per table of the longer
// runs of inserts.
func (w *writer) applySet(ctx context.Context, tables []*setTable) error {
	waves := 0
	for _, st := range tables {
		waves = max(waves, st.waves)
	}
	for wave := 0; wave < waves; wave++ {
		var batch pgx.Batch
		var stmts []setStmt
		var copies [][]*consumer.Event
		for _, st := range tables {
			var dels []*setItem
			var ins []*consumer.Event
			ups := map[string][]*setItem{}
			var upOrder []string
			for _, it := range st.items {
				if it.wave != wave {
					continue
				}
				switch it.op {
				case schemas.OpDelete:
					dels = append(dels, it)
				case schemas.OpUpdate:
					sig := fmt.Sprint(it.unchanged)
					if _, ok := ups[sig]; !ok {
						upOrder = append(upOrder, sig)
					}
					ups[sig] = append(ups[sig], it)
				case schemas.OpInsert:
					if it.merged {
						// An insert merged with later updates: COPY reads ev.After.
						ev := *it.ev
						ev.Op, ev.After, ev.Before, ev.Unchanged = schemas.OpInsert, it.row, nil, nil
						ins = append(ins, &ev)
					} else {
						ins = append(ins, it.ev)
					}
				}
			}
			if err := w.queueDeletes(st, dels, &batch, &stmts); err != nil {
				return err
			}
			for _, sig := range upOrder {
				if err := w.queueUpdates(st, ups[sig], &batch, &stmts); err != nil {
					return err
				}
			}
			if len(ins) >= w.s.cfg.CopyMin {
				copies = append(copies, ins)
			} else {
				for _, ev := range ins {
					args, err := pgtarget.Values(ev, ev.After, w.plan(st.t).all)
					if err != nil {
						return err
					}
					batch.Queue(w.s.insertSQL(st.t, false), args...)
					stmts = append(stmts, setStmt{})
				}
			}
		}
		if err := w.sendSet(ctx, &batch, stmts); err != nil {
			return err
		}
		for _, evs := range copies {
			if err := w.copyRows(ctx, evs); err != nil {
				return err
			}
		}
	}
	return nil
}

// sendSet sends a wave's pipeline and checks every result.
func (w *writer) sendSet(ctx context.Context, batch *pgx.Batch, stmts []setStmt) error {
	if len(stmts) == 0 {
		return nil
	}
	br := w.tx.SendBatch(ctx, batch)
	defer br.Close()
	for _, st := range stmts {
		if st.rows > 0 {
			var n int64
			if err := br.QueryRow().Scan(&n); err != nil {
				return err
			}
			if n != int64(st.rows) {
				return errSetFallback
			}
			continue
		}
		ct, err := br.Exec()
		if err != nil {
			return err
		}
		if st.one && ct.RowsAffected() == 0 {
			return errSetFallback
		}
	}
	return br.Close()
}

// textColumn collects one column of a set statement's parameters.
func textColumn(n int) []*string { return make([]*string, 0, n) }

// encodeInto appends the text of column ci of row (nil for NULL) to col.
func encodeInto(col []*string, ev *consumer.Event, ci int, row []any) ([]*string, error) {
	if row[ci] == nil {
		return append(col, nil), nil
	}
	s, err := pgtarget.Encode(ev, ci, row[ci])
	if err != nil {
		return nil, err
	}
	return append(col, &s), nil
}

func keyColumns(st *setTable, items []*setItem) [][]*string {
	cols := make([][]*string, len(st.t.Key))
	for i := range cols {
		cols[i] = textColumn(len(items))
		for _, it := range items {
			s := it.key[i]
			cols[i] = append(cols[i], &s)
		}
	}
	return cols
}

func (w *writer) queueDeletes(st *setTable, items []*setItem, batch *pgx.Batch, stmts *[]setStmt) error {
	if len(items) < setMin {
		for _, it := range items {
			args := make([]any, len(it.key))
			for i := range it.key {
				args[i] = it.key[i]
			}
			batch.Queue(w.s.deleteSQL(st.t), args...)
			*stmts = append(*stmts, setStmt{one: true})
		}
		return nil
	}
	var args []any
	for _, c := range keyColumns(st, items) {
		args = append(args, c)
	}
	batch.Queue(w.setDeleteSQL(st), args...)
	*stmts = append(*stmts, setStmt{rows: len(items)})
	return nil
}

func (w *writer) queueUpdates(st *setTable, items []*setItem, batch *pgx.Batch, stmts *[]setStmt) error {
	set, sql := w.update(st.t, items[0].unchanged)
	if len(items) < setMin {
		for _, it := range items {
			args, err := pgtarget.Values(it.ev, it.row, set)
			if err != nil {
				return err
			}
			for i := range it.key {
				args = append(args, it.key[i])
			}
			batch.Queue(sql, args...)
			*stmts = append(*stmts, setStmt{one: true})
		}
		return nil
	}
	var args []any
	for _, ci := range set {
		col := textColumn(len(items))
		for _, it := range items {
			var err error
			if col, err = encodeInto(col, it.ev, ci, it.row); err != nil {
				return err
			}
		}
		args = append(args, col)
	}
	for _, c := range keyColumns(st, items) {
		args = append(args, c)
	}
	batch.Queue(w.setUpdateSQL(st, set), args...)
	*stmts = append(*stmts, setStmt{rows: len(items)})
	return nil
}

// setUpdateSQL updates the rows whose keys are in the key arrays with the
// values in the set columns' arrays (text, cast to each column's type
// without typmod, so that assigning checks the typmod as a plain UPDATE
// does), and returns how many of the arrays' entries matched a row.
func (w *writer) setUpdateSQL(st *setTable, set []int) string {
	t := st.t
	return w.s.cached(fmt.Sprintf("U%d/%v/%s", t.SchemaID, set, strings.Join(st.info.types, ",")), func() string {
		var params, names, sets, match []string
		n := 0
		for i, ci := range set {
			n++
			params = append(params, "$"+strconv.Itoa(n)+"::text[]")
			names = append(names, "c"+strconv.Itoa(i))
			sets = append(sets, schemas.QuoteIdent(t.Columns[ci].Name)+" = u.c"+strconv.Itoa(i)+"::"+st.info.types[ci])
		}
		for i, k := range t.Key {
			n++
			params = append(params, "$"+strconv.Itoa(n)+"::text[]")
			names = append(names, "k"+strconv.Itoa(i))
			match = append(match, "tgt."+schemas.QuoteIdent(t.Columns[k].Name)+" = u.k"+strconv.Itoa(i)+"::"+st.info.types[k])
		}
		return "WITH u AS (SELECT * FROM unnest(" + strings.Join(params, ", ") + ") WITH ORDINALITY AS u(" + strings.Join(names, ", ") + ", i)), " +
			"x AS (UPDATE " + t.QualifiedName() + " AS tgt SET " + strings.Join(sets, ", ") + " FROM u WHERE " + strings.Join(match, " AND ") +
			" RETURNING u.i) SELECT count(DISTINCT i) FROM x"
	})
}

// setDeleteSQL deletes the rows whose keys are in the key arrays and
// returns how many of the arrays' entries matched a row.
func (w *writer) setDeleteSQL(st *setTable) string {
	t := st.t
	return w.s.cached(fmt.Sprintf("D%d/%s", t.SchemaID, strings.Join(st.info.types, ",")), func() string {
		var params, names, match []string
		for i, k := range t.Key {
			params = append(params, "$"+strconv.Itoa(i+1)+"::text[]")
			names = append(names, "k"+strconv.Itoa(i))
			match = append(match, "tgt."+schemas.QuoteIdent(t.Columns[k].Name)+" = u.k"+strconv.Itoa(i)+"::"+st.info.types[k])
		}
		return "WITH u AS (SELECT * FROM unnest(" + strings.Join(params, ", ") + ") WITH ORDINALITY AS u(" + strings.Join(names, ", ") + ", i)), " +
			"x AS (DELETE FROM " + t.QualifiedName() + " AS tgt USING u WHERE " + strings.Join(match, " AND ") +
			" RETURNING u.i) SELECT count(DISTINCT i) FROM x"
	})
}
