package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/conflict"
	"github.com/tributary-cdc/tributary/consumer/postgres/pgtarget"
	"github.com/tributary-cdc/tributary/schemas"
)

// flushAt and flushBytes bound what the writer holds before sending it: so
// many events, or so many bytes of their Kafka records (consumer.Event.Size),
// so that memory does not grow with row size.
const (
	flushAt    = 2000
	flushBytes = 8 << 20
)

// writer sends one Apply's events: pending events are flushed in order, runs
// of plain inserts into one table with COPY, the rest as one pipelined batch.
type writer struct {
	s       *Sink
	tx      pgx.Tx
	pending []*consumer.Event
	held    int // Size of the pending events
	newIDs  map[int]bool
	// cs writes the changes of the tables the conflict engine handles.
	cs *conflict.Session
	// plans caches per-table statement parts for this Apply.
	plans map[*consumer.Table]*tablePlan
	// infos caches what the set-based flush knows of each target table;
	// a schema change at the target clears it.
	infos map[*consumer.Table]*tableInfo
}

func (w *writer) add(ctx context.Context, ev *consumer.Event) error {
	if ev.Op == "" { // a logical decoding message: a schema change, sequence values
		return w.message(ctx, ev)
	}
	if e := w.s.cfg.Conflicts; e != nil && e.Own(ev.Txn) {
		return nil // made at this site and forwarded back by a hub: already here
	}
	// The truncate records of one TRUNCATE statement (one per partition of
	// each table, same transaction and LSN) stay together in pending, so
	// that statements sends them as one TRUNCATE.
	inTruncate := ev.Op == schemas.OpTruncate && len(w.pending) > 0 && sameTruncate(w.pending[len(w.pending)-1], ev)
	if w.s.cfg.CreateTables && !w.ensured(ev.Table.SchemaID) {
		// Pending statements go first, except the truncate this one
		// continues: creating another table does not change it.
		if !inTruncate {
			if err := w.flush(ctx); err != nil {
				return err
			}
		}
		if err := w.ensureTable(ctx, ev.Table); err != nil {
			return ev.Wrap(err)
		}
		w.infos = nil
		w.newIDs[ev.Table.SchemaID] = true
	}
	var prev *consumer.Event
	if n := len(w.pending); n > 0 {
		prev = w.pending[n-1]
	}
	if up, err := consumer.KeyChange(prev, ev); err != nil || up != nil {
		if err == nil {
			// Its delete is the last pending event: flush checks run before
			// an event is appended, never between the halves.
			w.pending[len(w.pending)-1] = up
			w.held += ev.Size
		}
		return err
	}
	if w.cs != nil && w.s.cfg.Conflicts.Handles(ev.Table) {
		// One by one, after what is pending, so that event order holds.
		if err := w.flush(ctx); err != nil {
			return err
		}
		return w.cs.Apply(ctx, w.tx, ev)
	}
	if (len(w.pending) >= flushAt || w.held >= flushBytes) && !inTruncate {
		if err := w.flush(ctx); err != nil {
			return err
		}
	}
	w.pending = append(w.pending, ev)
	w.held += ev.Size
	return nil
}

// sameTruncate reports whether two truncate events come from one TRUNCATE
// statement of the source.
func sameTruncate(a, b *consumer.Event) bool {
	return a.Op == schemas.OpTruncate && b.Op == schemas.OpTruncate && a.Txn == b.Txn && a.LSN == b.LSN
}

func (w *writer) ensured(id int) bool {
	if w.newIDs[id] {
		return true
	}
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	return w.s.ensured[id]
}

// ensureTable creates the target table of t if missing and adds the columns
// it lacks.
func (w *writer) ensureTable(ctx context.Context, t *consumer.Table) error {
	var pk []string
	if !t.Unkeyed() { // equal rows and NULLs cannot be in a primary key
		pk = append(pk, "PRIMARY KEY ("+strings.Join(pgtarget.KeyNames(t), ", ")+")")
	}
	stmts := pgtarget.EnsureColumns(t, t.Schema, t.Name, pk...)
	for _, s := range stmts {
		if _, err := w.tx.Exec(ctx, s); err != nil {
			return fmt.Errorf("create table %s: %s: %w", t, s, err)
		}
	}
	w.s.log.Info("target table checked", "table", t.String(), "schema_id", t.SchemaID)
	return nil
}

// flush sends the pending events: set-based when they allow it (see
// flushSet), else in event order.
func (w *writer) flush(ctx context.Context) error {
	evs := w.pending
	w.pending, w.held = w.pending[:0], 0
	if done, err := w.flushSet(ctx, evs); done || err != nil {
		clear(evs)
		return err
	}
	return w.flushOrdered(ctx, evs)
}

// flushOrdered sends evs in event order.
func (w *writer) flushOrdered(ctx context.Context, evs []*consumer.Event) error {
	upsert := w.s.cfg.OnConflict == OnConflictUpsert
	for i := 0; i < len(evs); {
		if j := w.copyRun(evs, i, upsert); j > i {
			if err := w.copy(ctx, evs[i:j]); err != nil {
				return err
			}
			i = j
			continue
		}
		// Statements up to the next COPY run.
		k := i + 1
		for k < len(evs) && w.copyRun(evs, k, upsert) == k {
			k++
		}
		if err := w.statements(ctx, evs[i:k]); err != nil {
			return err
		}
		i = k
	}
	clear(evs)
	return nil
}

// copyRun returns the end of the run of evs from i that goes with one COPY,
// or i when none does: consecutive inserts into one table, at least CopyMin
// of them, or any number of snapshot reads (their COPY falls back to
// upserts when a row exists, see copy). Idempotent events and plain inserts
// go in separate runs; under OnConflictUpsert only reads do.
//
// A table without a unique key (Table.Unkeyed) may hold equal rows, which
// only order tells apart: the initial snapshot's reads of it are copied as
// they are (plain inserts, exact), and an online snapshot's reads go as
// statements that insert a row unless an equal one is there.
func (w *writer) copyRun(evs []*consumer.Event, i int, upsert bool) int {
	first := evs[i]
	if !isInsert(first) || upsert && first.Op != schemas.OpRead || first.Table.Unkeyed() && first.Idempotent() && !initialRead(first) {
		return i
	}
	j := i
	for j < len(evs) && isInsert(evs[j]) && evs[j].Table == first.Table && copyIdempotent(evs[j]) == copyIdempotent(first) {
		j++
	}
	if j-i < w.s.cfg.CopyMin && first.Op != schemas.OpRead {
		return i
	}
	return j
}

// initialRead is a read of the initial snapshot.
func initialRead(ev *consumer.Event) bool { return ev.Op == schemas.OpRead && ev.Txn.Initial }

// copyIdempotent is whether a COPY of ev falls back to upserts when a row
// exists: not for the initial snapshot's reads of a table without a
// unique key, which are copied as they are.
func copyIdempotent(ev *consumer.Event) bool {
	return ev.Idempotent() && !(ev.Table.Unkeyed() && initialRead(ev))
}

func isInsert(ev *consumer.Event) bool { return ev.Op == schemas.OpInsert || ev.Op == schemas.OpRead }

// check says what a statement's result must show.
type check int

const (
	checkNone    check = iota
	checkOneRow        // error when no row matched (OnConflictError)
	checkToastOK       // upsert: an update of a missing row with unknown TOAST values
)

type stmt struct {
	ev    *consumer.Event
	check check
}

func (w *writer) statements(ctx context.Context, evs []*consumer.Event) error {
	if len(evs) == 0 {
		return nil
	}
	upsert := w.s.cfg.OnConflict == OnConflictUpsert
	var batch pgx.Batch
	stmts := make([]stmt, 0, len(evs))
	for i := 0; i < len(evs); i++ {
		ev := evs[i]
		t := ev.Table
		var sql string
		var args []any
		var err error
		ck := checkNone
		switch ev.Op {
		case schemas.OpInsert, schemas.OpRead:
			if ev.Idempotent() && !upsert {
				sql = w.s.upsertSQL(t)
			} else {
				sql = w.s.insertSQL(t, upsert)
			}
			args, err = pgtarget.Values(ev, ev.After, w.plan(t).all)
		case schemas.OpUpdate:
			if upsert && len(ev.Unchanged) == 0 {
				sql = w.s.insertSQL(t, true)
				args, err = pgtarget.Values(ev, ev.After, w.plan(t).all)
				break
			}
			if ev.Pending && len(ev.Unchanged) == 0 {
				sql = w.s.upsertSQL(t)
				args, err = pgtarget.Values(ev, ev.After, w.plan(t).all)
				break
			}
			var set []int
			moved := false
			if len(ev.Unchanged) > 0 && ev.Before != nil && ev.KeyChanged() {
				// A key change whose new row lacks values (consumer.KeyChange):
				// the row moves to its new key and keeps them.
				set = sentColumns(t, ev.Unchanged)
				sql = w.s.updateSQL(t, set)
				if moved = ev.Pending || upsert; moved {
					// The old row may be missing (a snapshot still to read
					// it, a diverged target): the new one is then written
					// with the values sent. Under upsert a row of the new
					// key gives way to the moving one.
					sql = w.s.moveSQL(t, set, upsert)
					if upsert {
						var dargs []any
						if dargs, err = keyChangeArgs(ev); err != nil {
							return err
						}
						batch.Queue(w.s.displaceSQL(t), dargs...)
						stmts = append(stmts, stmt{ev: ev})
					}
				}
			} else {
				set, sql = w.update(t, ev.Unchanged)
			}
			args, err = pgtarget.Values(ev, ev.After, set)
			if err == nil {
				var keyArgs []any
				keyRow := ev.Before
				if keyRow == nil {
					keyRow = ev.After
				}
				keyArgs, err = pgtarget.Values(ev, keyRow, t.Key)
				args = append(args, keyArgs...)
			}
			switch {
			case moved:
			case ev.Pending:
				// The row may not be here yet: the snapshot's read of it
				// follows, with every column.
			case upsert:
				ck = checkToastOK
			default:
				ck = checkOneRow
			}
		case schemas.OpDelete:
			sql = w.s.deleteSQL(t)
			args, err = pgtarget.Values(ev, ev.Before, t.Key)
			if !upsert && !ev.Pending {
				ck = checkOneRow
			}
		case schemas.OpTruncate:
			// One statement for the tables one TRUNCATE of the source
			// truncated together (foreign keys between them), with its
			// options.
			names := []string{t.QualifiedName()}
			for i+1 < len(evs) && sameTruncate(ev, evs[i+1]) {
				i++
				if n := evs[i].Table.QualifiedName(); !slices.Contains(names, n) {
					names = append(names, n)
				}
			}
			sql = "TRUNCATE " + strings.Join(names, ", ")
			if slices.Contains(ev.Truncate, "restart_identity") {
				sql += " RESTART IDENTITY"
			}
			if slices.Contains(ev.Truncate, "cascade") {
				sql += " CASCADE"
			}
		}
		if err != nil {
			return err
		}
		batch.Queue(sql, args...)
		stmts = append(stmts, stmt{ev: ev, check: ck})
	}
	br := w.tx.SendBatch(ctx, &batch)
	defer br.Close()
	var missed []stmt // changed no row where one was expected
	for _, st := range stmts {
		ct, err := br.Exec()
		if err != nil {
			return st.ev.Wrap(err)
		}
		if ct.RowsAffected() == 0 && st.check != checkNone {
			missed = append(missed, st)
		}
	}
	if err := br.Close(); err != nil {
		return err
	}
	for _, st := range missed {
		// A trigger of the target that fires during replay (ENABLE
		// ALWAYS or REPLICA) may skip a row by returning NULL, as native
		// replication allows: then the change is done.
		skipped, err := w.s.skippingTrigger(ctx, w.tx, st.ev.Table, st.ev.Op)
		if err != nil {
			return st.ev.Wrap(err)
		}
		if skipped {
			continue
		}
		switch st.check {
		case checkOneRow:
			return st.ev.Wrap(consumer.Permanent(fmt.Errorf("%s matched no row in the target (--on-conflict error; "+
				"use --on-conflict upsert to tolerate a diverged target)", strings.ToLower(opName(st.ev.Op)))))
		case checkToastOK:
			return st.ev.Wrap(consumer.Permanent(errors.New("update matched no row in the target, and it cannot be " +
				"inserted: the values of its unchanged TOASTed columns are unknown")))
		}
	}
	return nil
}

// skippingTrigger reports whether table t has a BEFORE ROW trigger for op
// that fires during replay (session_replication_role = replica fires the
// ENABLE ALWAYS and ENABLE REPLICA ones): such a trigger may skip the row.
func (s *Sink) skippingTrigger(ctx context.Context, tx pgx.Tx, t *consumer.Table, op schemas.Op) (bool, error) {
	bit := map[schemas.Op]int{schemas.OpInsert: 4, schemas.OpRead: 4, schemas.OpDelete: 8, schemas.OpUpdate: 16}[op]
	var found bool
	err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
		WHERE tgrelid = $1::regclass AND NOT tgisinternal AND tgenabled IN ('A', 'R')
		  AND tgtype & 1 <> 0 AND tgtype & 2 <> 0 AND tgtype & $2 <> 0)`, t.QualifiedName(), bit).Scan(&found)
	return found, err
}

func opName(op schemas.Op) string {
	switch op {
	case schemas.OpUpdate:
		return "UPDATE"
	case schemas.OpDelete:
		return "DELETE"
	}
	return string(op)
}

var copyLine = regexp.MustCompile(`COPY [^,]*, line (\d+)`)

// copyBufs holds COPY data buffers between runs, so that steady streams do
// not allocate one per run. Buffers grown past copyBufKeep are dropped, so
// memory stays bounded after a large transaction.
var copyBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

const copyBufKeep = 4 << 20

// copy sends a run of inserts into one table with COPY FROM STDIN (text).
// A run of idempotent events (snapshot reads, pending inserts) is copied
// inside a savepoint: when a row already exists (a unique violation), the
// run is applied again as upserts instead.
func (w *writer) copy(ctx context.Context, evs []*consumer.Event) error {
	if !copyIdempotent(evs[0]) {
		return w.copyRows(ctx, evs)
	}
	if _, err := w.tx.Exec(ctx, "SAVEPOINT tributary_copy"); err != nil {
		return err
	}
	err := w.copyRows(ctx, evs)
	var pe *pgconn.PgError
	if err != nil && errors.As(err, &pe) && pe.Code == "23505" {
		if _, err := w.tx.Exec(ctx, "ROLLBACK TO SAVEPOINT tributary_copy"); err != nil {
			return err
		}
		err = w.statements(ctx, evs)
	}
	if err != nil {
		return err
	}
	if _, err := w.tx.Exec(ctx, "RELEASE SAVEPOINT tributary_copy"); err != nil {
		return err
	}
	return nil
}

// copyRows sends evs with one COPY.
func (w *writer) copyRows(ctx context.Context, evs []*consumer.Event) error {
	t := evs[0].Table
	buf := copyBufs.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= copyBufKeep {
			copyBufs.Put(buf)
		}
	}()
	for _, ev := range evs {
		for i := range t.Columns {
			if i > 0 {
				buf.WriteByte('\t')
			}
			v := ev.After[i]
			if v == nil {
				buf.WriteString(`\N`)
				continue
			}
			s, err := pgtarget.Encode(ev, i, v)
			if err != nil {
				return err
			}
			copyEscape(buf, s)
		}
		buf.WriteByte('\n')
	}
	sql := w.s.cached("c"+strconv.Itoa(t.SchemaID), func() string {
		cols := make([]string, len(t.Columns))
		for i, c := range t.Columns {
			cols[i] = schemas.QuoteIdent(c.Name)
		}
		return "COPY " + t.QualifiedName() + " (" + strings.Join(cols, ", ") + ") FROM STDIN"
	})
	_, err := w.tx.Conn().PgConn().CopyFrom(ctx, buf, sql)
	if err != nil {
		ev := evs[0]
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			if m := copyLine.FindStringSubmatch(pe.Where); m != nil {
				if n, _ := strconv.Atoi(m[1]); n >= 1 && n <= len(evs) {
					ev = evs[n-1]
				}
			}
		}
		return ev.Wrap(err)
	}
	return nil
}

// copyEscape writes s in COPY text format: backslash, newline, carriage
// return and tab are escaped. It runs for every text value the sink copies,
// so it scans once with a table and writes the runs between escapes whole.
func copyEscape(b *bytes.Buffer, s string) {
	start := 0
	for i := 0; i < len(s); i++ {
		esc := copyEscapes[s[i]]
		if esc == "" {
			continue
		}
		b.WriteString(s[start:i])
		b.WriteString(esc)
		start = i + 1
	}
	b.WriteString(s[start:])
}

// copyEscapes maps the bytes COPY text format escapes to their escapes.
var copyEscapes = [256]string{'\\': `\\`, '\n': `\n`, '\r': `\r`, '\t': `\t`}

// tablePlan holds what the statements of one table version reuse within an
// Apply: every column, and the UPDATE of an event without unchanged TOAST.
type tablePlan struct {
	all       []int
	set       []int
	updateSQL string
}

func (w *writer) plan(t *consumer.Table) *tablePlan {
	p := w.plans[t]
	if p == nil {
		p = &tablePlan{all: allColumns(t), set: setColumns(t, nil)}
		p.updateSQL = w.s.updateSQL(t, p.set)
		if w.plans == nil {
			w.plans = map[*consumer.Table]*tablePlan{}
		}
		w.plans[t] = p
	}
	return p
}

// update returns the columns and statement of an UPDATE of t.
func (w *writer) update(t *consumer.Table, unchanged []int) ([]int, string) {
	if len(unchanged) == 0 {
		p := w.plan(t)
		return p.set, p.updateSQL
	}
	set := setColumns(t, unchanged)
	return set, w.s.updateSQL(t, set)
}

func allColumns(t *consumer.Table) []int {
	out := make([]int, len(t.Columns))
	for i := range out {
		out[i] = i
	}
	return out
}

// sentColumns are t's columns but unchanged, the key included.
func sentColumns(t *consumer.Table, unchanged []int) []int {
	var out []int
	for i := range t.Columns {
		if !slices.Contains(unchanged, i) {
			out = append(out, i)
		}
	}
	return out
}

// setColumns are the columns an UPDATE sets: every non-key column whose value
// was sent, or the key columns when there are none (so that the statement
// still reports whether the row exists).
func setColumns(t *consumer.Table, unchanged []int) []int {
	skip := make(map[int]bool, len(unchanged)+len(t.Key))
	for _, i := range unchanged {
		skip[i] = true
	}
	for _, i := range t.Key {
		skip[i] = true
	}
	var out []int
	for i := range t.Columns {
		if !skip[i] {
			out = append(out, i)
		}
	}
	if len(out) == 0 {
		out = append(out, t.Key...)
	}
	return out
}

func (s *Sink) cached(key string, build func() string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if q, ok := s.sql[key]; ok {
		return q
	}
	q := build()
	if len(s.sql) > 10000 {
		clear(s.sql)
	}
	s.sql[key] = q
	return q
}

func (s *Sink) insertSQL(t *consumer.Table, upsert bool) string {
	return s.cached(fmt.Sprintf("i%d/%t", t.SchemaID, upsert), func() string {
		cols := make([]string, len(t.Columns))
		ph := make([]string, len(t.Columns))
		for i, c := range t.Columns {
			cols[i] = schemas.QuoteIdent(c.Name)
			ph[i] = "$" + strconv.Itoa(i+1)
		}
		q := "INSERT INTO " + t.QualifiedName() + " (" + strings.Join(cols, ", ") + ") VALUES (" + strings.Join(ph, ", ") + ")"
		if upsert {
			keys := make([]string, len(t.Key))
			isKey := map[int]bool{}
			for i, k := range t.Key {
				keys[i] = cols[k]
				isKey[k] = true
			}
			var set []string
			for i := range t.Columns {
				if !isKey[i] {
					set = append(set, cols[i]+" = EXCLUDED."+cols[i])
				}
			}
			if len(set) == 0 {
				q += " ON CONFLICT (" + strings.Join(keys, ", ") + ") DO NOTHING"
			} else {
				q += " ON CONFLICT (" + strings.Join(keys, ", ") + ") DO UPDATE SET " + strings.Join(set, ", ")
			}
		}
		return q
	})
}

// upsertSQL writes a whole row whether or not its key exists at the target,
// without needing a unique constraint there (ON CONFLICT would): an UPDATE
// of the key, and an INSERT when it matched nothing. Parameters are every
// column, in order.
func (s *Sink) upsertSQL(t *consumer.Table) string {
	return s.cached(fmt.Sprintf("x%d", t.SchemaID), func() string {
		isKey := map[int]bool{}
		for _, k := range t.Key {
			isKey[k] = true
		}
		cols := make([]string, len(t.Columns))
		vals := make([]string, len(t.Columns))
		var set, keyParams []string
		for i, c := range t.Columns {
			cols[i] = schemas.QuoteIdent(c.Name)
			vals[i] = "$" + strconv.Itoa(i+1)
			if !isKey[i] {
				set = append(set, cols[i]+" = "+vals[i])
			}
		}
		for _, k := range t.Key {
			keyParams = append(keyParams, vals[k])
		}
		if len(set) == 0 {
			set = append(set, cols[t.Key[0]]+" = "+vals[t.Key[0]])
		}
		return "WITH u AS (UPDATE " + t.QualifiedName() + " SET " + strings.Join(set, ", ") + " WHERE " + keyMatch(t, keyParams) +
			" RETURNING 1) INSERT INTO " + t.QualifiedName() + " (" + strings.Join(cols, ", ") + ") SELECT " + strings.Join(vals, ", ") +
			" WHERE NOT EXISTS (SELECT 1 FROM u)"
	})
}

func (s *Sink) updateSQL(t *consumer.Table, set []int) string {
	key := fmt.Sprintf("u%d/%v", t.SchemaID, set)
	return s.cached(key, func() string {
		parts := make([]string, len(set))
		for i, c := range set {
			parts[i] = schemas.QuoteIdent(t.Columns[c].Name) + " = $" + strconv.Itoa(i+1)
		}
		return "UPDATE " + t.QualifiedName() + " SET " + strings.Join(parts, ", ") + " WHERE " + keyWhere(t, len(set))
	})
}

// moveSQL moves the row of the old key (the parameters after set's) to
// its new key, setting the columns of set, or, when there is no such row,
// inserts the new one with those columns; under upsert a row already there
// with the new key is updated instead.
func (s *Sink) moveSQL(t *consumer.Table, set []int, upsert bool) string {
	move := s.updateSQL(t, set) // outside cached, which holds its lock while building
	return s.cached(fmt.Sprintf("m%d/%v/%t", t.SchemaID, set, upsert), func() string {
		cols := make([]string, len(set))
		vals := make([]string, len(set))
		var upd []string
		for i, c := range set {
			cols[i] = schemas.QuoteIdent(t.Columns[c].Name)
			vals[i] = "$" + strconv.Itoa(i+1)
			if !slices.Contains(t.Key, c) {
				upd = append(upd, cols[i]+" = EXCLUDED."+cols[i])
			}
		}
		q := "WITH m AS (" + move + " RETURNING 1) INSERT INTO " + t.QualifiedName() + " (" + strings.Join(cols, ", ") +
			") SELECT " + strings.Join(vals, ", ") + " WHERE NOT EXISTS (SELECT 1 FROM m)"
		if upsert {
			q += " ON CONFLICT (" + strings.Join(pgtarget.KeyNames(t), ", ") + ")"
			if len(upd) == 0 {
				q += " DO NOTHING"
			} else {
				q += " DO UPDATE SET " + strings.Join(upd, ", ")
			}
		}
		return q
	})
}

// displaceSQL deletes the row of a key change's new key (the first
// parameters) when the row of its old key (the next) is there to take its
// place: under upsert a diverged target may hold both.
func (s *Sink) displaceSQL(t *consumer.Table) string {
	return s.cached(fmt.Sprintf("v%d", t.SchemaID), func() string {
		return "DELETE FROM " + t.QualifiedName() + " WHERE " + keyWhere(t, 0) + " AND EXISTS (SELECT 1 FROM " + t.QualifiedName() +
			" WHERE " + keyWhere(t, len(t.Key)) + ")"
	})
}

// keyChangeArgs are displaceSQL's parameters for ev: its new key, then its
// old one.
func keyChangeArgs(ev *consumer.Event) ([]any, error) {
	args, err := pgtarget.Values(ev, ev.After, ev.Table.Key)
	if err != nil {
		return nil, err
	}
	old, err := pgtarget.Values(ev, ev.Before, ev.Table.Key)
	return append(args, old...), err
}

func (s *Sink) deleteSQL(t *consumer.Table) string {
	return s.cached(fmt.Sprintf("d%d", t.SchemaID), func() string {
		return "DELETE FROM " + t.QualifiedName() + " WHERE " + keyWhere(t, 0)
	})
}

// keyWhere is the WHERE condition of an UPDATE or DELETE whose key values
// are the parameters after offset, in key order.
func keyWhere(t *consumer.Table, offset int) string {
	params := make([]string, len(t.Key))
	for i := range t.Key {
		params[i] = "$" + strconv.Itoa(offset+i+1)
	}
	return keyMatch(t, params)
}

// keyMatch is the condition that selects the row with the key whose values
// are params (in key order). The parameters are cast to their columns'
// types, so that a composite or a polymorphic key type still resolves. A
// table keyed by every column (REPLICA IDENTITY FULL without a primary
// key) may hold equal rows and NULLs: the condition then selects one row
// whose every column equals, NULL included, through each type's text form
// (which every type has, equality operator or not), as native replication
// changes exactly one row per change.
func keyMatch(t *consumer.Table, params []string) string {
	parts := make([]string, len(t.Key))
	full := len(t.Key) == len(t.Columns)
	for i, k := range t.Key {
		c := t.Columns[k]
		cast := params[i] + "::" + c.SQLType
		if full {
			parts[i] = schemas.QuoteIdent(c.Name) + "::text IS NOT DISTINCT FROM (" + cast + ")::text"
		} else {
			parts[i] = schemas.QuoteIdent(c.Name) + " = " + cast
		}
	}
	cond := strings.Join(parts, " AND ")
	if !full {
		return cond
	}
	return "(tableoid, ctid) = (SELECT tableoid, ctid FROM " + t.QualifiedName() + " WHERE " + cond + " LIMIT 1)"
}
