package history

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/postgres/pgtarget"
	"github.com/tributary-cdc/tributary/schemas"
)

// flushBytes bounds the text one chunk holds, whatever FlushRows says.
const flushBytes = 16 << 20

// writer turns one Apply's events into history rows. Rows are buffered per
// history table and sent in chunks, set-based: one INSERT ... SELECT per
// chunk numbers and appends the new rows and, in a data-modifying CTE,
// closes the versions they replace.
// Chunks of one table are sent in event order; tables are independent.
type writer struct {
	s       *Sink
	tx      pgx.Tx
	bufs    map[string]*chunk // by history table
	created map[int]*layout   // layouts checked in this transaction
	rows    int
	truncs  consumer.TruncateOnce
	// forgotten are the source tables ("schema.table") whose layouts a
	// schema change made stale.
	forgotten []string
	// prev is the row change added last: the delete half of a key change
	// when the insert half follows (consumer.KeyChange).
	prev *consumer.Event
}

// chunk is the pending rows of one history table, column-wise.
type chunk struct {
	l      *layout
	evs    []*consumer.Event // the event of each row, for errors
	ord    []int32
	op     []string
	lsn    []string
	ts     []time.Time
	xid    []int64
	pos    []int64
	unch   []string
	cols   [][]*string
	bytes  int
	unchgd bool // some row needs the carry-forward statement
}

func newWriter(s *Sink, tx pgx.Tx) *writer {
	return &writer{s: s, tx: tx, bufs: map[string]*chunk{}, created: map[int]*layout{}}
}

func (w *writer) layout(ctx context.Context, ev *consumer.Event) (*layout, error) {
	id := ev.Table.SchemaID
	if l := w.created[id]; l != nil {
		return l, nil
	}
	w.s.mu.Lock()
	l := w.s.tables[id]
	w.s.mu.Unlock()
	if l != nil && !slices.Contains(w.forgotten, l.t.String()) {
		return l, nil
	}
	l, err := newLayout(ev.Table, w.s.cfg.Schema)
	if err != nil {
		return nil, ev.Wrap(consumer.Permanent(err))
	}
	// The table may have a chunk of an older schema version pending.
	if c := w.bufs[l.qname]; c != nil {
		if err := w.flush(ctx, c); err != nil {
			return nil, err
		}
	}
	for _, stmt := range l.ddl {
		if _, err := w.tx.Exec(ctx, stmt); err != nil {
			return nil, ev.Wrap(fmt.Errorf("create history table %s: %s: %w", l.qname, stmt, err))
		}
	}
	w.s.log.Info("history table checked", "table", ev.Table.String(), "history", l.schema+"."+l.name, "schema_id", id)
	w.created[id] = l
	return l, nil
}

func (w *writer) add(ctx context.Context, ev *consumer.Event) error {
	if ev.Op == "" { // a logical decoding message: a schema change is followed
		return w.message(ctx, ev)
	}
	l, err := w.layout(ctx, ev)
	if err != nil {
		return err
	}
	c := w.bufs[l.qname]
	if c != nil && c.l != l {
		if err := w.flush(ctx, c); err != nil {
			return err
		}
		c = nil
	}
	if c == nil {
		c = &chunk{l: l, cols: make([][]*string, len(l.t.Columns))}
		w.bufs[l.qname] = c
	}
	switch ev.Op {
	case schemas.OpTruncate:
		if !w.truncs.First(ev) {
			return nil
		}
		if err := w.flush(ctx, c); err != nil {
			return err
		}
		return w.truncate(ctx, l, ev)
	case schemas.OpRead:
		// A read is compared with its key's latest recorded version, so
		// the rows before it are recorded first; a chunk's reads are of
		// distinct keys.
		if len(c.evs) > 0 && (c.evs[len(c.evs)-1].Txn != ev.Txn || c.op[len(c.op)-1] != "r") {
			if err := w.flush(ctx, c); err != nil {
				return err
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
		return w.keyChange(ctx, c, prev, ev)
	}
	return ev.Versions(func(op string, row []any, deleted bool) error { return w.row(ctx, c, ev, op, row, deleted, nil) })
}

// keyChange records ins, the insert half of a key change that lacks values
// (consumer.KeyChange), with the values of the old key's row: those its
// delete version, recorded just before, carried forward.
func (w *writer) keyChange(ctx context.Context, c *chunk, del, ins *consumer.Event) error {
	if err := w.flush(ctx, c); err != nil {
		return err
	}
	l := c.l
	cols := make([]string, len(ins.Unchanged))
	for j, i := range ins.Unchanged {
		cols[j] = l.col(i) + "::text"
	}
	where := []string{"commit_lsn = $1::pg_lsn", "position = $2"}
	args := []any{del.Txn.CommitLSN.String(), del.Position}
	for _, k := range l.t.Key {
		v, err := pgtarget.Encode(del, k, del.Before[k])
		if err != nil {
			return err
		}
		args = append(args, v)
		where = append(where, fmt.Sprintf("%s = $%d::%s", l.col(k), len(args), l.t.Columns[k].SQLType))
	}
	vals := make([]*string, len(cols))
	dest := make([]any, len(cols))
	for j := range vals {
		dest[j] = &vals[j]
	}
	q := "SELECT " + strings.Join(cols, ", ") + " FROM " + l.qname + " WHERE " + strings.Join(where, " AND ")
	if err := w.tx.QueryRow(ctx, q, args...).Scan(dest...); err != nil {
		return ins.Wrap(fmt.Errorf("%s: the values the key change left unchanged, from the old key's delete version: %w", l.qname, err))
	}
	text := make([]*string, len(l.t.Columns))
	for j, i := range ins.Unchanged {
		text[i] = vals[j]
	}
	filled := *ins
	filled.Unchanged = nil
	return w.row(ctx, c, &filled, string(ins.Op), ins.After, false, text)
}

// row appends one history row built from row (column order), or from
// text where it has a column's value as text. A delete carries every
// non-key column forward; an update its unchanged TOAST ones.
func (w *writer) row(ctx context.Context, c *chunk, ev *consumer.Event, op string, row []any, deleted bool, text []*string) error {
	l := c.l
	unch, ok := l.t.UnchangedFlags(ev.Unchanged, deleted)
	if ok {
		c.unchgd = true
	}
	for i := range l.t.Columns {
		var p *string
		if text != nil && text[i] != nil {
			p = text[i]
			c.bytes += len(*p)
		} else if v := row[i]; v != nil {
			s, err := pgtarget.Encode(ev, i, v)
			if err != nil {
				return err
			}
			p = &s
			c.bytes += len(s)
		}
		c.cols[i] = append(c.cols[i], p)
	}
	c.evs = append(c.evs, ev)
	c.ord = append(c.ord, int32(len(c.ord)))
	c.op = append(c.op, op)
	c.lsn = append(c.lsn, ev.Txn.CommitLSN.String())
	c.ts = append(c.ts, ev.Txn.CommitTime)
	c.xid = append(c.xid, int64(ev.Txn.Xid))
	c.pos = append(c.pos, ev.Position)
	c.unch = append(c.unch, unch)
	if len(c.ord) >= w.s.cfg.FlushRows || c.bytes >= flushBytes {
		return w.flush(ctx, c)
	}
	return nil
}

func (w *writer) flushAll(ctx context.Context) error {
	for _, c := range w.bufs {
		if err := w.flush(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// flush sends c's rows in one statement, which also closes the versions
// they replace.
func (w *writer) flush(ctx context.Context, c *chunk) error {
	if len(c.ord) == 0 {
		return nil
	}
	l := c.l
	args := []any{c.ord, c.op, c.lsn, c.ts, c.xid, c.pos, c.unch}
	for i := range l.t.Columns {
		args = append(args, c.cols[i])
	}
	ins := l.insert
	if c.unchgd {
		ins = l.carry
	}
	ct, err := w.tx.Exec(ctx, ins, args...)
	if err == nil {
		w.rows += int(ct.RowsAffected())
	}
	if err != nil {
		// The statement covers the whole chunk; name its first and last event.
		first, last := c.evs[0], c.evs[len(c.evs)-1]
		return first.Wrap(fmt.Errorf("append %d history row(s) to %s (through commit_lsn %s key %s): %w",
			len(c.ord), l.qname, last.Txn.CommitLSN, last.KeyString(), err))
	}
	n := len(l.t.Columns)
	*c = chunk{l: l, cols: make([][]*string, n)}
	return nil
}

// truncate records a TRUNCATE of l's table: an op-t row for every current
// version, which it closes.
func (w *writer) truncate(ctx context.Context, l *layout, ev *consumer.Event) error {
	ct, err := w.tx.Exec(ctx, l.trunc, ev.Txn.CommitLSN.String(), ev.Txn.CommitTime, int64(ev.Txn.Xid), ev.Position)
	if err != nil {
		return ev.Wrap(fmt.Errorf("record truncate in %s: %w", l.qname, err))
	}
	w.rows += int(ct.RowsAffected())
	w.s.log.Info("truncate recorded", "table", ev.Table.String(), "history", l.schema+"."+l.name,
		"closed_versions", ct.RowsAffected(), "commit_lsn", ev.Txn.CommitLSN, "xid", ev.Txn.Xid)
	return nil
}

// message follows a captured schema change (schemas.DDLPrefix) in the
// history table of its source table: a renamed column or table is renamed,
// a retyped column retyped (its older versions converted as the source
// converted its rows). A dropped column stays, holding the older versions'
// values; an added one arrives with the table's next schema.
func (w *writer) message(ctx context.Context, ev *consumer.Event) error {
	if ev.Message.Prefix != schemas.DDLPrefix {
		return nil
	}
	d, err := schemas.ParseDDL(ev.Message.Content)
	if err != nil {
		return ev.Wrap(consumer.Permanent(err))
	}
	if err := w.flushAll(ctx); err != nil {
		return err
	}
	histSchema := func(source string) string {
		if w.s.cfg.Schema != "" {
			return w.s.cfg.Schema
		}
		return source
	}
	hist := schemas.QuoteIdent(histSchema(d.Schema)) + "." + schemas.QuoteIdent(d.Table+"_history")
	var stmts []string
	for _, c := range d.Changes {
		switch c.Op {
		case "rename_column":
			stmts = append(stmts, "ALTER TABLE IF EXISTS "+hist+" RENAME COLUMN "+schemas.QuoteIdent(c.From)+" TO "+schemas.QuoteIdent(c.To))
		case "alter_column_type":
			col := schemas.QuoteIdent(c.Column)
			stmts = append(stmts, "ALTER TABLE IF EXISTS "+hist+" ALTER COLUMN "+col+" TYPE "+c.Type+" USING "+col+"::"+c.Type)
		case "rename_table":
			old := schemas.QuoteIdent(histSchema(c.FromSchema)) + "." + schemas.QuoteIdent(c.From+"_history")
			if c.From != d.Table {
				stmts = append(stmts, "ALTER TABLE IF EXISTS "+old+" RENAME TO "+schemas.QuoteIdent(d.Table+"_history"))
			}
			if histSchema(c.FromSchema) != histSchema(d.Schema) {
				stmts = append(stmts, "ALTER TABLE IF EXISTS "+schemas.QuoteIdent(histSchema(c.FromSchema))+"."+
					schemas.QuoteIdent(d.Table+"_history")+" SET SCHEMA "+schemas.QuoteIdent(histSchema(d.Schema)))
			}
		}
	}
	for _, stmt := range stmts {
		if _, err := w.tx.Exec(ctx, stmt); err != nil {
			return ev.Wrap(fmt.Errorf("follow the source's %s of %s.%s in the history: %s: %w", d.Tag, d.Schema, d.Table, stmt, err))
		}
	}
	if len(stmts) > 0 {
		w.s.log.Info("history follows a schema change", "table", d.Schema+"."+d.Table, "tag", d.Tag, "statements", len(stmts))
	}
	// The table's layouts name its old columns: build them again.
	w.forget(d.Schema, d.Table)
	for _, c := range d.Changes {
		if c.Op == "rename_table" {
			w.forget(c.FromSchema, c.From)
		}
	}
	return nil
}

// forget drops the cached layouts of a source table, in this transaction
// and, once it commits, in the sink.
func (w *writer) forget(schema, table string) {
	for id, l := range w.created {
		if l.t.Schema == schema && l.t.Name == table {
			delete(w.created, id)
		}
	}
	w.forgotten = append(w.forgotten, schema+"."+table)
}
