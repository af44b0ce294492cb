package transform

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/schemas"
)

// Step is one transformation of a table's rows. The declarative steps of the
// YAML configuration are Steps, and so are custom transforms written in Go
// (see WithStep and WithTable).
type Step interface {
	// Bind checks the step against the table as the steps before it left
	// it, updates s to describe the step's output (columns added, replaced,
	// renamed, dropped; the target table) and returns the function that
	// transforms each row, or nil when the step changes only the schema.
	// An error says what does not fit (wrap it with ColumnError to name the
	// column). Bind is called once per source table version: at start-up
	// (Pipeline.Check) and when a new schema version appears in the stream.
	Bind(s *Schema) (RowFunc, error)
}

// RowFunc transforms one row image in place: it reads the columns it looked
// up in Bind with Row.Get, writes those it added or replaced with Row.Set, and
// may call Row.Drop to filter the row out. It must not retain r. It is called
// concurrently for different rows (per-key mode), so any state it keeps must
// be safe for that. An error should be wrapped with ColumnError when it is
// about one column.
type RowFunc func(r *Row) error

// StepFunc adapts a function to Step.
type StepFunc func(s *Schema) (RowFunc, error)

// Bind calls f.
func (f StepFunc) Bind(s *Schema) (RowFunc, error) { return f(s) }

// Col is a handle on a column of a Schema, valid for rows of the table
// version it was bound against.
type Col struct {
	Name string
	Type Type
	Key  bool // part of the replication key
	slot int
}

// Schema is a table as a step sees it while it is bound: the target table
// name and the columns visible at that step. Column values live in slots;
// renaming or dropping a column changes only what later steps and the sink
// see, so a RowFunc can still read a column that a later step drops.
type Schema struct {
	// TargetSchema and TargetTable name the table the sink writes; they
	// start as the source's and steps may change them.
	TargetSchema, TargetTable string

	src    *consumer.Table
	cols   []Col
	slots  []Type
	reads  []int
	writes []int
}

func newSchema(src *consumer.Table) (*Schema, error) {
	s := &Schema{TargetSchema: src.Schema, TargetTable: src.Name, src: src}
	for i, c := range src.Columns {
		t, err := typeOf(c)
		if err != nil {
			return nil, err
		}
		s.cols = append(s.cols, Col{Name: c.Name, Type: t, Key: c.Key, slot: i})
		s.slots = append(s.slots, t)
	}
	return s, nil
}

// Source is the source table version being bound.
func (s *Schema) Source() *consumer.Table { return s.src }

// Columns returns the visible columns, in order.
func (s *Schema) Columns() []Col { return slices.Clone(s.cols) }

// Index is the position of the visible column name, or -1.
func (s *Schema) Index(name string) int {
	for i, c := range s.cols {
		if c.Name == name {
			return i
		}
	}
	return -1
}

// Column looks up a visible column that the step reads. An unknown name is an
// error that lists the columns there are.
func (s *Schema) Column(name string) (Col, error) {
	i := s.Index(name)
	if i < 0 {
		names := make([]string, len(s.cols))
		for j, c := range s.cols {
			names[j] = c.Name
		}
		return Col{}, ColumnError(name, fmt.Errorf("unknown column (the table has: %s)", strings.Join(names, ", ")))
	}
	s.reads = append(s.reads, s.cols[i].slot)
	return s.cols[i], nil
}

// Add adds a column that the step writes, at position pos of the visible
// columns (pos < 0 or past the end appends). The name must be new.
func (s *Schema) Add(name string, t Type, pos int) (Col, error) {
	if name == "" {
		return Col{}, errors.New("empty column name")
	}
	if s.Index(name) >= 0 {
		return Col{}, ColumnError(name, errors.New("column already exists (drop or rename it first)"))
	}
	c := Col{Name: name, Type: t, slot: s.newSlot(t)}
	if pos < 0 || pos > len(s.cols) {
		pos = len(s.cols)
	}
	s.cols = slices.Insert(s.cols, pos, c)
	return c, nil
}

// Replace gives the visible column name a new value of type t, written by
// the step; it keeps its position and key flag.
func (s *Schema) Replace(name string, t Type) (Col, error) {
	i := s.Index(name)
	if i < 0 {
		return Col{}, ColumnError(name, errors.New("unknown column"))
	}
	s.cols[i].Type, s.cols[i].slot = t, s.newSlot(t)
	return s.cols[i], nil
}

// Rename renames a visible column.
func (s *Schema) Rename(old, name string) error {
	i := s.Index(old)
	if i < 0 {
		_, err := s.Column(old)
		return err
	}
	if j := s.Index(name); j >= 0 && j != i {
		return ColumnError(name, fmt.Errorf("cannot rename %q: column already exists", old))
	}
	s.cols[i].Name = name
	return nil
}

// Drop removes a visible column. A key column cannot be dropped: the target
// needs the replication key to apply updates and deletes.
func (s *Schema) Drop(name string) error {
	i := s.Index(name)
	if i < 0 {
		_, err := s.Column(name)
		return err
	}
	if s.cols[i].Key {
		return ColumnError(name, errors.New("cannot drop a replication-key column: the target applies updates and deletes by it"))
	}
	s.cols = slices.Delete(s.cols, i, i+1)
	return nil
}

func (s *Schema) newSlot(t Type) int {
	s.slots = append(s.slots, t)
	s.writes = append(s.writes, len(s.slots)-1)
	return len(s.slots) - 1
}

// Row is one row image (the before or the after image of a change) being
// transformed. It is valid only during the RowFunc call it is passed to.
type Row struct {
	vals    []any
	ev      *consumer.Event
	dropped bool
	act     activation
}

// Get returns c's value: nil for NULL, else the Go form of c.Type.
func (r *Row) Get(c Col) any { return r.vals[c.slot] }

// Set sets c's value: nil for NULL, else a value of the Go form of c.Type
// (see Type).
func (r *Row) Set(c Col, v any) { r.vals[c.slot] = v }

// Drop filters the row out: an insert is not applied, an update that moves a
// row out becomes a delete, and so on (see the package documentation).
func (r *Row) Drop() { r.dropped = true }

// Op is the change the row belongs to.
func (r *Row) Op() schemas.Op { return r.ev.Op }

// Key renders the source row's key, as errors show it.
func (r *Row) Key() string { return r.ev.KeyString() }

// columnError names the column an error is about.
type columnError struct {
	column string
	err    error
}

func (e *columnError) Error() string { return e.err.Error() }
func (e *columnError) Unwrap() error { return e.err }

// ColumnError marks err as being about column; Error reports it.
func ColumnError(column string, err error) error {
	if err == nil {
		return nil
	}
	return &columnError{column: column, err: err}
}

// Error is a transform error: it names the source table, the step, the
// column and the row's key (empty when the error is about the schema).
type Error struct {
	Table  string // source schema.table
	Step   string // the step, e.g. `step 2 "convert" (line 14)`
	Column string
	Key    string // "(id)=(7)"
	Err    error
}

func (e *Error) Error() string {
	s := "transform " + e.Table
	if e.Step != "" {
		s += " " + e.Step
	}
	if e.Column != "" {
		s += fmt.Sprintf(" column %q", e.Column)
	}
	if e.Key != "" {
		s += " key " + e.Key
	}
	return s + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// ErrSchema is wrapped by errors about a transform that does not fit a source
// table version: an unknown column, an expression that does not type-check.
// The consumer stops on them whatever its error policy: the fix is a config
// change.
var ErrSchema = errors.New("transform does not fit the source schema")

func newError(table, step string, key string, err error) *Error {
	e := &Error{Table: table, Step: step, Key: key, Err: err}
	var ce *columnError
	if errors.As(err, &ce) {
		e.Column = ce.column
	}
	return e
}

// boundStep is a step bound to one source table version.
type boundStep struct {
	label  string
	fn     RowFunc
	reads  []int
	writes []int
}

// bound is a table pipeline bound to one source table version.
type bound struct {
	src     *consumer.Table
	out     *consumer.Table
	steps   []boundStep
	nslots  int
	proj    []int // slot of each output column
	keySlot []int // slots of the output key columns
	filters bool  // some step may drop rows
	allKey  bool  // every source column is a key column
	pool    sync.Pool
}

func (b *bound) row(ev *consumer.Event) *Row {
	r, _ := b.pool.Get().(*Row)
	if r == nil {
		r = &Row{vals: make([]any, b.nslots)}
	}
	r.ev = ev
	return r
}

func (b *bound) release(r *Row) {
	clear(r.vals)
	r.ev, r.dropped = nil, false
	r.act.reset()
	b.pool.Put(r)
}

// runMode says how run treats a row image.
type runMode struct {
	stopOnDrop bool // stop at the first step that drops the row
	lenient    bool // a failing step leaves its outputs NULL (partial before images)
	unknown    []bool
}

// run loads img into r and runs the steps. It returns whether a step dropped
// the row.
func (b *bound) run(r *Row, img []any, m runMode) (dropped bool, err error) {
	copy(r.vals, img)
	clear(r.vals[len(img):])
	r.dropped = false
steps:
	for i := range b.steps {
		st := &b.steps[i]
		if st.fn == nil {
			continue
		}
		if m.unknown != nil {
			for _, s := range st.reads {
				if m.unknown[s] {
					for _, w := range st.writes {
						m.unknown[w] = true
					}
					continue steps
				}
			}
		}
		if err := st.fn(r); err != nil {
			if m.lenient {
				for _, w := range st.writes {
					r.vals[w] = nil
				}
				continue
			}
			return false, newError(b.src.String(), st.label, r.ev.KeyString(), err)
		}
		if r.dropped && m.stopOnDrop {
			return true, nil
		}
	}
	return r.dropped, nil
}

// project writes the output columns of r into dst's backing array when it is
// large enough (the decoded image is not needed any more), else a new slice.
func (b *bound) project(r *Row, dst []any) []any {
	if cap(dst) < len(b.proj) {
		dst = make([]any, len(b.proj))
	}
	dst = dst[:len(b.proj)]
	for i, s := range b.proj {
		dst[i] = r.vals[s]
	}
	return dst
}

func (b *bound) keyNil(r *Row) bool {
	for _, s := range b.keySlot {
		if r.vals[s] == nil {
			return true
		}
	}
	return false
}

// complete reports whether a before image carries the whole row rather than
// only its key (REPLICA IDENTITY DEFAULT). A row whose non-key columns are
// all NULL looks like a key-only image; see the package documentation.
func (b *bound) complete(img []any) bool {
	if img == nil {
		return false
	}
	if b.allKey {
		return true
	}
	for i, c := range b.src.Columns {
		if !c.Key && img[i] != nil {
			return true
		}
	}
	return false
}

// apply transforms ev; see Pipeline.Transform.
func (b *bound) apply(ev *consumer.Event) (bool, error) {
	if ev.Op == schemas.OpTruncate {
		ev.Table = b.out
		return true, nil
	}
	r := b.row(ev)
	defer b.release(r)
	fail := func(format string, args ...any) (bool, error) {
		return false, newError(b.src.String(), "", ev.KeyString(), fmt.Errorf(format, args...))
	}
	var unknown []bool
	var outUnchanged []int
	if len(ev.Unchanged) > 0 && ev.After != nil {
		unknown = make([]bool, b.nslots)
		for _, i := range ev.Unchanged {
			unknown[i] = true
		}
	}
	switch ev.Op {
	case schemas.OpInsert, schemas.OpRead:
		// An insert lacks values when it is the new key's half of an
		// update that changed the key and left TOASTed values unsent.
		dropped, err := b.run(r, ev.After, runMode{stopOnDrop: unknown == nil, unknown: unknown})
		if err != nil {
			return false, err
		}
		if unknown != nil {
			if outUnchanged, err = b.unsent(unknown); err != nil {
				return fail("%w", err)
			}
		}
		if dropped {
			return false, nil
		}
		after := b.project(r, ev.After)
		ev.Table, ev.After, ev.Before, ev.Unchanged = b.out, after, nil, outUnchanged
		return true, nil

	case schemas.OpDelete:
		before := ev.Before
		if b.filters && b.complete(before) {
			dropped, err := b.run(r, before, runMode{stopOnDrop: true, lenient: true})
			if err != nil {
				return false, err
			}
			if dropped {
				return false, nil
			}
		} else if _, err := b.run(r, before, runMode{lenient: true}); err != nil {
			return false, err
		}
		if b.keyNil(r) {
			return fail("the deleted row's target key cannot be computed from its before image (NULL)")
		}
		ev.Table, ev.Before, ev.After = b.out, b.project(r, before), nil
		return true, nil

	case schemas.OpUpdate:
		droppedAfter, err := b.run(r, ev.After, runMode{unknown: unknown})
		if err != nil {
			return false, err
		}
		if unknown != nil {
			if outUnchanged, err = b.unsent(unknown); err != nil {
				return fail("%w", err)
			}
		}
		after := b.project(r, nil) // not ev.After: ev must stay intact until no error can occur
		// The before image decides whether the row was in the filter.
		known, droppedBefore := false, false
		var before []any
		if ev.Before != nil {
			wasComplete := b.complete(ev.Before)
			r2 := b.row(ev)
			d, err := b.run(r2, ev.Before, runMode{lenient: true})
			if err == nil && !b.keyNil(r2) {
				before = b.project(r2, nil)
			}
			b.release(r2)
			if err == nil && wasComplete {
				known, droppedBefore = true, d
			}
		}
		if !b.filters {
			droppedAfter, droppedBefore, known = false, false, true
		}
		ev.Table = b.out
		switch {
		case !known && !droppedAfter, known && !droppedBefore && !droppedAfter:
			// In the filter (before unknown: an upsert target applies it
			// whether or not the row was there).
			ev.Before, ev.After, ev.Unchanged = before, after, outUnchanged
		case !known && droppedAfter, known && !droppedBefore && droppedAfter:
			// Moves out of the filter (or may have): delete at the target.
			if before == nil {
				before = after
			}
			ev.Op, ev.Before, ev.After, ev.Unchanged = schemas.OpDelete, before, nil, nil
		case known && droppedBefore && !droppedAfter:
			// Moves into the filter: insert the whole row.
			if len(outUnchanged) > 0 {
				return fail("the row moves into the filter, but TOASTed columns were not sent with the update; " +
					"give the source table REPLICA IDENTITY FULL")
			}
			ev.Op, ev.Before, ev.After, ev.Unchanged = schemas.OpInsert, nil, after, nil
		default: // out before and after
			return false, nil
		}
		return true, nil
	}
	ev.Table = b.out
	return true, nil
}

// unsent returns the output columns whose values were not sent, given the
// slots that a run left unknown, and an error when a target key column or a
// filter depends on one.
func (b *bound) unsent(unknown []bool) ([]int, error) {
	for _, s := range b.keySlot {
		if unknown[s] {
			return nil, errors.New("a target key column depends on a TOASTed column whose value was not sent")
		}
	}
	if b.filters && filterReadsUnknown(b, unknown) {
		return nil, errors.New("a filter reads a TOASTed column whose value was not sent; give the source table REPLICA IDENTITY FULL")
	}
	var out []int
	for i, s := range b.proj {
		if unknown[s] {
			out = append(out, i)
		}
	}
	return out, nil
}

// filterReadsUnknown reports whether a step that may drop rows read a column
// whose value was not sent. Filters are the steps with reads and no writes.
func filterReadsUnknown(b *bound, unknown []bool) bool {
	for _, st := range b.steps {
		if st.fn == nil || len(st.writes) > 0 {
			continue
		}
		for _, s := range st.reads {
			if unknown[s] {
				return true
			}
		}
	}
	return false
}
