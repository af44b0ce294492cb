package duckdb

import (
	"context"
	"database/sql/driver"
	"fmt"
	"slices"
	"strconv"
	"strings"

	ddb "github.com/duckdb/duckdb-go/v2"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/schemas"
)

// layout is the DuckDB tables of one value schema and the SQL that loads them.
type layout struct {
	t     *consumer.Table
	types []colType
	cur   string // quoted schema.table
	hist  string // quoted schema.table_history
	stage string // temp staging table name, unquoted
	// resolved is the temp table of the staged rows, typed and completed,
	// unquoted. Like the stage, it is created once per connection and
	// emptied after each merge: a temp table created and dropped per merge
	// would stay in memory until the DuckDB transaction ends, so a large
	// source transaction would need memory in proportion to its size.
	resolved string
	ddl      []string
	resolve  string // INSERT INTO resolved from the stage
	// typed is resolve for a stage in which no row has an unchanged
	// value (nor is a delete): only the casts, without the window over the
	// staged rows and the join to the current state, which would carry
	// nothing forward.
	typed  string
	nonKey []int
}

func q(s string) string { return schemas.QuoteIdent(s) }

func newLayout(t *consumer.Table) *layout {
	l := &layout{t: t, cur: q(t.Schema) + "." + q(t.Name), hist: q(t.Schema) + "." + q(t.Name+"_history"),
		stage: "_trb_stage_" + strconv.Itoa(t.SchemaID), resolved: "_trb_resolved_" + strconv.Itoa(t.SchemaID)}
	for _, c := range t.Columns {
		l.types = append(l.types, typeOf(c))
	}
	l.nonKey = t.NonKey()
	l.ddl = l.buildDDL()
	l.resolve, l.typed = l.buildResolve()
	return l
}

func (l *layout) col(i int) string { return q(l.t.Columns[i].Name) }

func (l *layout) buildDDL() []string {
	defs := make([]string, len(l.t.Columns))
	stageDefs := []string{"_ord BIGINT", "_op VARCHAR", "_lsn UBIGINT", "_pos BIGINT", "_xid BIGINT", "_ts TIMESTAMPTZ", "_unch VARCHAR"}
	for i := range l.t.Columns {
		defs[i] = l.col(i) + " " + l.types[i].duck
		stageDefs = append(stageDefs, "c"+strconv.Itoa(i)+" VARCHAR")
	}
	stmts := []string{
		"CREATE SCHEMA IF NOT EXISTS " + q(l.t.Schema),
		"CREATE TABLE IF NOT EXISTS " + l.cur + " (" + strings.Join(defs, ", ") + ")",
		"CREATE TABLE IF NOT EXISTS " + l.hist + " (" + strings.Join(defs, ", ") +
			", op VARCHAR NOT NULL, commit_lsn UBIGINT NOT NULL, commit_ts TIMESTAMPTZ NOT NULL, xid BIGINT NOT NULL, position BIGINT NOT NULL)",
	}
	for i := range l.t.Columns {
		for _, tb := range []string{l.cur, l.hist} {
			stmts = append(stmts, "ALTER TABLE "+tb+" ADD COLUMN IF NOT EXISTS "+defs[i])
		}
	}
	stmts = append(stmts, "INSERT INTO main.tributary_export SELECT "+quoteLit(l.hist)+", "+quoteLit(l.t.String())+
		", 0, NULL WHERE NOT EXISTS (SELECT 1 FROM main.tributary_export WHERE history = "+quoteLit(l.hist)+")")
	stmts = append(stmts, "CREATE TEMP TABLE IF NOT EXISTS "+q(l.stage)+" ("+strings.Join(stageDefs, ", ")+")",
		"CREATE TEMP TABLE IF NOT EXISTS "+q(l.resolved)+" (_ord BIGINT, _op VARCHAR, _lsn UBIGINT, _pos BIGINT, _xid BIGINT, _ts TIMESTAMPTZ, "+
			strings.Join(defs, ", ")+")")
	keys := l.t.KeyList("")
	latest := "SELECT * EXCLUDE (_trb_rn) FROM (SELECT *, row_number() OVER (PARTITION BY " + keys +
		" ORDER BY commit_lsn DESC, position DESC) AS _trb_rn FROM " + l.hist + " WHERE %s) WHERE _trb_rn = 1 AND op NOT IN ('d', 't')"
	fn := func(suffix string) string { return q(l.t.Schema) + "." + q(l.t.Name+suffix) }
	params := make([]string, len(l.t.Key))
	where := make([]string, len(l.t.Key))
	for i, k := range l.t.Key {
		params[i] = "_trb_k" + strconv.Itoa(i)
		where[i] = l.col(k) + " = " + params[i]
	}
	stmts = append(stmts,
		"CREATE OR REPLACE MACRO "+fn("_as_of")+"(_trb_at) AS TABLE "+fmt.Sprintf(latest, "commit_ts <= _trb_at"),
		"CREATE OR REPLACE MACRO "+fn("_as_of_lsn")+"(_trb_at) AS TABLE "+fmt.Sprintf(latest, "commit_lsn <= _trb_at"),
		"CREATE OR REPLACE MACRO "+fn("_versions")+"("+strings.Join(params, ", ")+") AS TABLE SELECT row_number() OVER "+
			"(ORDER BY commit_lsn, position) AS version, * FROM "+l.hist+" WHERE "+strings.Join(where, " AND ")+
			" ORDER BY commit_lsn, position")
	return stmts
}

// buildResolve: the staged rows, typed, with unchanged values carried
// forward from earlier staged rows of the key or from the current state
// (resolve), and the staged rows only typed (plain), for a stage in which no
// row has an unchanged value.
func (l *layout) buildResolve() (resolve, plain string) {
	var b strings.Builder
	typed := make([]string, len(l.t.Columns))
	for i := range l.t.Columns {
		typed[i] = l.types[i].conv("c"+strconv.Itoa(i)) + " AS " + l.col(i)
	}
	into := "INSERT INTO " + q(l.resolved) + " (_ord, _op, _lsn, _pos, _xid, _ts, " + l.t.ColumnList("", "") + ") "
	plain = into + "SELECT _ord, _op, _lsn, _pos, _xid, _ts, " + strings.Join(typed, ", ") + " FROM " + q(l.stage)
	b.WriteString(into + "WITH s AS (SELECT _ord, _op, _lsn, _pos, _xid, _ts, _unch, ")
	b.WriteString(strings.Join(typed, ", "))
	b.WriteString(" FROM " + q(l.stage) + ") SELECT s._ord, s._op, s._lsn, s._pos, s._xid, s._ts")
	isNon := map[int]bool{}
	for _, i := range l.nonKey {
		isNon[i] = true
	}
	win := "OVER (PARTITION BY " + l.t.KeyList("s.") + " ORDER BY s._ord ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)"
	first := l.col(l.t.Key[0])
	for i := range l.t.Columns {
		c := l.col(i)
		if !isNon[i] {
			b.WriteString(", s." + c)
			continue
		}
		flag := "substr(s._unch, " + strconv.Itoa(i+1) + ", 1) = '1'"
		b.WriteString(", CASE WHEN " + flag + " THEN coalesce(last_value(CASE WHEN NOT (" + flag + ") THEN {'v': s." + c +
			"} END IGNORE NULLS) " + win + ", CASE WHEN c." + first + " IS NOT NULL THEN {'v': c." + c + "} END, {'v': s." + c +
			"}).v ELSE s." + c + " END AS " + c)
	}
	b.WriteString(" FROM s LEFT JOIN " + l.cur + " c ON " + l.t.KeyJoin("s", "c"))
	return b.String(), plain
}

// merge statements, run after resolve. inOrder says the resolved rows are
// already in staging order (the plain resolve scans the stage, and DuckDB
// preserves insertion order), so the history needs no sort to be appended in
// source order.
func (l *layout) mergeSQL(inOrder bool) []string {
	cols := l.t.ColumnList("", "")
	res := q(l.resolved)
	order := " ORDER BY _ord"
	if inOrder {
		order = ""
	}
	same := make([]string, len(l.t.Columns))
	for i := range l.t.Columns {
		same[i] = "c." + l.col(i) + " IS NOT DISTINCT FROM r." + l.col(i)
	}
	return []string{
		// A snapshot read of a row equal to its current state is no new
		// version (the loader merges before reads, so the current state is
		// the key's latest).
		"DELETE FROM " + res + " r WHERE r._op = 'r' AND EXISTS (SELECT 1 FROM " + l.cur + " c WHERE " + strings.Join(same, " AND ") + ")",
		"INSERT INTO " + l.hist + " (" + cols + ", op, commit_lsn, commit_ts, xid, position) SELECT " + cols +
			", _op, _lsn, _ts, _xid, _pos FROM " + res + order,
		"DELETE FROM " + l.cur + " c WHERE EXISTS (SELECT 1 FROM " + res + " r WHERE " + l.t.KeyJoin("r", "c") + ")",
		"INSERT INTO " + l.cur + " (" + cols + ") SELECT " + cols + " FROM (SELECT *, row_number() OVER (PARTITION BY " +
			l.t.KeyList("") + " ORDER BY _ord DESC) AS _trb_rn FROM " + res + ") WHERE _trb_rn = 1 AND _op NOT IN ('d', 't')",
		"DELETE FROM " + q(l.stage),
		"DELETE FROM " + res,
	}
}

// stage is one table's staged rows in the current Apply.
type stage struct {
	l    *layout
	app  *ddb.Appender
	rows int
	unch bool              // some staged row has an unchanged value
	evs  []*consumer.Event // first and last event, for errors
	vals []driver.Value    // one row's values, reused: AppendRow copies them
}

// loader loads one Apply's events.
type loader struct {
	s         *Sink
	ctx       context.Context
	stages    map[string]*stage // by current-state table
	created   map[int]*layout
	forgotten []string        // source tables whose layouts a schema change made stale
	touched   map[string]bool // current-state tables this transaction changed
	rows      int
	truncs    consumer.TruncateOnce
	span      span // the micro-batch, for errors
	// prev is the row change added last: the delete half of a key change
	// when the insert half follows (consumer.KeyChange).
	prev *consumer.Event
}

func (w *loader) layout(ev *consumer.Event) (*layout, error) {
	id := ev.Table.SchemaID
	if l := w.s.tables[id]; l != nil && !slices.Contains(w.forgotten, l.t.String()) {
		return l, nil
	}
	if l := w.created[id]; l != nil {
		return l, nil
	}
	l := newLayout(ev.Table)
	if w.touched[l.cur] {
		// DuckDB cannot alter a table that the transaction has changed:
		// this source transaction starts the next one.
		return nil, &consumer.CutBatchError{FrameOffset: ev.Txn.Offset, Reason: "table " + ev.Table.String() + " has a new schema"}
	}
	if st := w.stages[l.cur]; st != nil { // an older schema version of the table is staged
		if err := w.merge(st); err != nil {
			return nil, err
		}
		delete(w.stages, l.cur)
	}
	for _, stmt := range l.ddl {
		if _, err := w.s.conn.ExecContext(w.ctx, stmt); err != nil {
			return nil, ev.Wrap(w.s.errorf(w.ctx, err, "create tables of %s: %s", ev.Table, stmt))
		}
	}
	w.s.log.Info("warehouse tables checked", "table", ev.Table.String(), "schema_id", id)
	if w.created == nil {
		w.created = map[int]*layout{}
	}
	w.created[id] = l
	return l, nil
}

func (w *loader) add(ev *consumer.Event) error {
	if ev.Op == "" { // a logical decoding message: a schema change is followed
		return w.message(ev)
	}
	l, err := w.layout(ev)
	if err != nil {
		return err
	}
	st := w.stages[l.cur]
	if st == nil {
		st = &stage{l: l}
		if err := w.s.rawConn(func(dc driver.Conn) error {
			var err error
			st.app, err = ddb.NewAppender(dc, "temp", "main", l.stage)
			return err
		}); err != nil {
			return ev.Wrap(w.s.errorf(w.ctx, err, "appender for %s", ev.Table))
		}
		w.stages[l.cur] = st
	}
	switch ev.Op {
	case schemas.OpTruncate:
		if !w.truncs.First(ev) {
			return nil
		}
		if err := w.merge(st); err != nil {
			return err
		}
		return w.truncate(l, ev)
	case schemas.OpRead:
		// A read is compared with its key's current state, so the rows
		// staged before it are merged first; a chunk's reads are of
		// distinct keys.
		if len(st.evs) > 0 {
			if last := st.evs[len(st.evs)-1]; last.Txn != ev.Txn || last.Op != schemas.OpRead {
				if err := w.merge(st); err != nil {
					return err
				}
			}
		}
	}
	w.truncs.Reset()
	prev := w.prev
	w.prev = ev
	if up, err := consumer.KeyChange(prev, ev); err != nil || up != nil {
		if err != nil {
			return err
		}
		return w.keyChange(st, prev, ev)
	}
	return ev.Versions(func(op string, row []any, deleted bool) error { return w.stageRow(st, ev, op, row, deleted) })
}

// keyChange loads ins, the insert half of a key change that lacks values
// (consumer.KeyChange), with the values of the old key's row: those its
// delete version carried forward into the history. It merges the stage to
// copy them, typed, into the new row's version and current state, before
// a later change of the row can carry them further.
func (w *loader) keyChange(st *stage, del, ins *consumer.Event) error {
	filled := *ins
	filled.Unchanged = nil
	if err := w.stageRow(st, &filled, string(ins.Op), ins.After, false); err != nil {
		return err
	}
	if err := w.merge(st); err != nil {
		return err
	}
	l := st.l
	set := make([]string, len(ins.Unchanged))
	for j, i := range ins.Unchanged {
		set[j] = l.col(i) + " = d." + l.col(i)
	}
	stmts := []string{
		"UPDATE " + l.hist + " h SET " + strings.Join(set, ", ") + " FROM " + l.hist +
			" d WHERE h.commit_lsn = ? AND h.position = ? AND d.commit_lsn = ? AND d.position = ?",
		"UPDATE " + l.cur + " c SET " + strings.Join(set, ", ") + " FROM " + l.hist + " d, " + l.hist +
			" h WHERE h.commit_lsn = ? AND h.position = ? AND d.commit_lsn = ? AND d.position = ? AND " + l.t.KeyJoin("c", "h"),
	}
	for _, stmt := range stmts {
		if _, err := w.s.conn.ExecContext(w.ctx, stmt, uint64(ins.Txn.CommitLSN), ins.Position, uint64(del.Txn.CommitLSN), del.Position); err != nil {
			return ins.Wrap(w.s.errorf(w.ctx, err, "%s: the values the key change left unchanged, from the old key's delete version", ins.Table))
		}
	}
	return nil
}

func (w *loader) stageRow(st *stage, ev *consumer.Event, op string, row []any, deleted bool) error {
	l := st.l
	if w.touched == nil {
		w.touched = map[string]bool{}
	}
	w.touched[l.cur] = true
	if st.vals == nil {
		st.vals = make([]driver.Value, 7+len(l.t.Columns))
	}
	vals := st.vals
	clear(vals)
	unch, ok := l.t.UnchangedFlags(ev.Unchanged, deleted)
	if ok {
		st.unch = true
	}
	vals[0], vals[1], vals[2], vals[3] = int64(st.rows), op, uint64(ev.Txn.CommitLSN), ev.Position
	vals[4], vals[5], vals[6] = int64(ev.Txn.Xid), ev.Txn.CommitTime, unch
	for i, c := range l.t.Columns {
		v := row[i]
		if v == nil {
			continue
		}
		var s string
		var err error
		if l.types[i].list {
			s, err = listJSON(v)
		} else {
			s, err = c.Encode(v)
		}
		if err != nil {
			return ev.Wrap(consumer.Permanent(fmt.Errorf("column %q (%s): %w", c.Name, c.SQLType, err)))
		}
		vals[7+i] = s
	}
	if err := st.app.AppendRow(vals...); err != nil {
		return ev.Wrap(w.s.errorf(w.ctx, err, "stage row of %s", ev.Table))
	}
	if len(st.evs) < 2 {
		st.evs = append(st.evs, ev)
	} else {
		st.evs[1] = ev
	}
	st.rows++
	return nil
}

// merge applies st's staged rows: resolve, append to history, replace the
// changed keys in the current state, clear the stage.
func (w *loader) merge(st *stage) error {
	if st.rows == 0 {
		return nil
	}
	if err := st.app.Flush(); err != nil {
		return w.mergeErr(st, err, "stage")
	}
	l := st.l
	resolve := l.typed
	if st.unch {
		resolve = l.resolve
	}
	for _, stmt := range append([]string{resolve}, l.mergeSQL(!st.unch)...) {
		if _, err := w.s.conn.ExecContext(w.ctx, stmt); err != nil {
			return w.mergeErr(st, err, "merge")
		}
	}
	w.rows += st.rows
	st.rows, st.unch, st.evs = 0, false, st.evs[:0]
	return nil
}

func (w *loader) mergeErr(st *stage, err error, what string) error {
	first, last := st.evs[0], st.evs[len(st.evs)-1]
	return first.Wrap(w.s.errorf(w.ctx, err, "%s %d row(s) into %s (through commit_lsn %s key %s)",
		what, st.rows, st.l.t, last.Txn.CommitLSN, last.KeyString()))
}

func (w *loader) mergeAll() error {
	for _, st := range w.stages {
		if err := w.merge(st); err != nil {
			return err
		}
	}
	return nil
}

func (w *loader) closeAppenders() {
	for _, st := range w.stages {
		if st.app != nil {
			_ = st.app.Close()
		}
	}
}

// truncate records an op-t history row for every live key and empties the
// current state.
func (w *loader) truncate(l *layout, ev *consumer.Event) error {
	if w.touched == nil {
		w.touched = map[string]bool{}
	}
	w.touched[l.cur] = true
	cols := l.t.ColumnList("", "")
	res, err := w.s.conn.ExecContext(w.ctx, "INSERT INTO "+l.hist+" ("+cols+", op, commit_lsn, commit_ts, xid, position) SELECT "+
		cols+", 't', ?, ?, ?, ? FROM "+l.cur, uint64(ev.Txn.CommitLSN), ev.Txn.CommitTime, int64(ev.Txn.Xid), ev.Position)
	if err == nil {
		_, err = w.s.conn.ExecContext(w.ctx, "DELETE FROM "+l.cur)
	}
	if err != nil {
		return ev.Wrap(w.s.errorf(w.ctx, err, "truncate %s", ev.Table))
	}
	n, _ := res.RowsAffected()
	w.s.log.Info("truncate loaded", "table", ev.Table.String(), "live_rows", n, "commit_lsn", ev.Txn.CommitLSN)
	return nil
}

// message follows a captured schema change (schemas.DDLPrefix) in the
// warehouse: a renamed column or table is renamed in both the current-state
// and the history table. A dropped column stays; an added one arrives with
// the table's next schema; a retyped column keeps its warehouse type (the
// mapping of the old PostgreSQL type).
func (w *loader) message(ev *consumer.Event) error {
	if ev.Message.Prefix != schemas.DDLPrefix {
		return nil
	}
	d, err := schemas.ParseDDL(ev.Message.Content)
	if err != nil {
		return ev.Wrap(consumer.Permanent(err))
	}
	if err := w.mergeAll(); err != nil {
		return err
	}
	cur := q(d.Schema) + "." + q(d.Table)
	hist := q(d.Schema) + "." + q(d.Table+"_history")
	if w.touched[cur] {
		return &consumer.CutBatchError{FrameOffset: ev.Txn.Offset, Reason: "table " + d.Schema + "." + d.Table + " changes schema"}
	}
	var stmts []string
	for _, c := range d.Changes {
		switch c.Op {
		case "rename_column":
			for _, tb := range []string{cur, hist} {
				stmts = append(stmts, "ALTER TABLE IF EXISTS "+tb+" RENAME COLUMN "+q(c.From)+" TO "+q(c.To))
			}
		case "rename_table":
			if c.From != d.Table && c.FromSchema == d.Schema {
				stmts = append(stmts, "ALTER TABLE IF EXISTS "+q(d.Schema)+"."+q(c.From)+" RENAME TO "+q(d.Table),
					"ALTER TABLE IF EXISTS "+q(d.Schema)+"."+q(c.From+"_history")+" RENAME TO "+q(d.Table+"_history"))
			}
			w.forgotten = append(w.forgotten, c.FromSchema+"."+c.From)
		}
	}
	for _, stmt := range stmts {
		if _, err := w.s.conn.ExecContext(w.ctx, stmt); err != nil {
			return ev.Wrap(w.s.errorf(w.ctx, err, "follow the source's %s of %s.%s: %s", d.Tag, d.Schema, d.Table, stmt))
		}
	}
	for id, l := range w.created {
		if l.t.Schema == d.Schema && l.t.Name == d.Table {
			delete(w.created, id)
		}
	}
	w.forgotten = append(w.forgotten, d.Schema+"."+d.Table)
	return nil
}
