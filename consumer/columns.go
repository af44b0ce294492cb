package consumer

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tributary-cdc/tributary/schemas"
)

// What sinks that write rows through SQL share about a table's columns.

// NonKey returns the indexes of t's columns that are not in its key, in
// column order.
func (t *Table) NonKey() []int {
	var out []int
	for i := range t.Columns {
		if !slices.Contains(t.Key, i) {
			out = append(out, i)
		}
	}
	return out
}

// ColumnList is the quoted name of every column of t, after prefix and
// before suffix, joined by ", ": ColumnList("s.", "::text") is
// `s."a"::text, s."b"::text`.
func (t *Table) ColumnList(prefix, suffix string) string {
	parts := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		parts[i] = prefix + schemas.QuoteIdent(c.Name) + suffix
	}
	return strings.Join(parts, ", ")
}

// KeyList is the quoted names of t's key columns, after prefix, joined by
// ", ".
func (t *Table) KeyList(prefix string) string {
	parts := make([]string, len(t.Key))
	for i, k := range t.Key {
		parts[i] = prefix + schemas.QuoteIdent(t.Columns[k].Name)
	}
	return strings.Join(parts, ", ")
}

// KeyJoin is the SQL condition that the rows named a and b have the same
// key: `a."k1" = b."k1" AND a."k2" = b."k2"`.
func (t *Table) KeyJoin(a, b string) string {
	parts := make([]string, len(t.Key))
	for i, k := range t.Key {
		c := schemas.QuoteIdent(t.Columns[k].Name)
		parts[i] = a + "." + c + " = " + b + "." + c
	}
	return strings.Join(parts, " AND ")
}

// UnchangedFlags is the row of flags, one '0' or '1' a column of t, with
// which a sink records the columns whose values a row takes from the row
// before it: every non-key column when deleted (a delete carries them
// forward), and the unchanged TOAST columns (Event.Unchanged). ok is
// false, and flags empty, when there are neither.
func (t *Table) UnchangedFlags(unchanged []int, deleted bool) (flags string, ok bool) {
	if !deleted && len(unchanged) == 0 {
		return "", false
	}
	b := []byte(strings.Repeat("0", len(t.Columns)))
	if deleted {
		for i := range b {
			b[i] = '1'
		}
		for _, k := range t.Key {
			b[k] = '0'
		}
	}
	for _, i := range unchanged {
		b[i] = '1'
	}
	return string(b), true
}

// KeyChange returns what a sink applies for ev, given prev, the row change
// it received just before: nil when ev is not an insert that lacks values
// (Unchanged), else the update that prev and ev are the two halves of. The
// producer writes an UPDATE that changes a row's key as a delete of the old
// key and, next, an insert of the new one, at the same LSN. pgoutput does
// not send a TOASTed value that the UPDATE left as it was, and under a
// replica identity other than FULL the old row holds only the key, so the
// insert lacks the value: it is the old row's. A sink keeps it by changing
// the old row in place, as native logical replication does; the update has
// prev's before image (the old key) and ev's after image and Unchanged.
// When prev is not ev's delete half (per-key apply, whose halves go to the
// workers of their keys; conflict handling, which applies the delete on its
// own), the old row is not at hand and writing the row would lose the
// values: the error stops the sink there.
func KeyChange(prev, ev *Event) (*Event, error) {
	if ev.Op != schemas.OpInsert || len(ev.Unchanged) == 0 {
		return nil, nil
	}
	if prev == nil || prev.Op != schemas.OpDelete || prev.LSN != ev.LSN || !sameTxn(prev.Txn, ev.Txn) ||
		prev.Table == nil || ev.Table == nil || prev.Table.QualifiedName() != ev.Table.QualifiedName() {
		cols := make([]string, len(ev.Unchanged))
		for i, c := range ev.Unchanged {
			cols[i] = ev.Table.Columns[c].Name
		}
		return nil, ev.Wrap(Permanent(fmt.Errorf("an UPDATE changed the key of a row of %s and left %s unchanged (TOASTed values "+
			"pgoutput does not send), and the old row that holds them is not at hand (per-key apply and conflict handling "+
			"apply the delete of the old key on its own); set REPLICA IDENTITY FULL on the source table so that the producer "+
			"sends them (changes made before that still lack them), or apply the table in transactional mode without "+
			"conflict handling", ev.Table, strings.Join(cols, ", "))))
	}
	up := *ev
	up.Op, up.Before = schemas.OpUpdate, prev.Before
	up.Size += prev.Size
	return &up, nil
}

// sameTxn reports whether a and b are one source transaction (per-key
// apply makes a Txn per event).
func sameTxn(a, b *Txn) bool {
	return a == b || a != nil && b != nil && a.Xid == b.Xid && a.CommitLSN == b.CommitLSN
}

// KeyChanged reports whether an update's before image has another key than
// its after image. A key column that either image lacks did not change.
func (e *Event) KeyChanged() bool {
	for _, k := range e.Table.Key {
		a, b := e.Before[k], e.After[k]
		if a == nil || b == nil {
			continue // the before image lacks the key: it did not change
		}
		sa, err1 := e.Table.Columns[k].Encode(a)
		sb, err2 := e.Table.Columns[k].Encode(b)
		if err1 == nil && err2 == nil && sa != sb {
			return true
		}
	}
	return false
}

// Versions calls fn with each row version that e, a row change other than
// a truncate, adds to a history, in order, and stops at fn's first error: a
// delete's before image (op "d", deleted); an update's before image as a
// delete when its key changed, then its after image (op "u"); the after
// image of any other change, with e's op.
func (e *Event) Versions(fn func(op string, row []any, deleted bool) error) error {
	switch e.Op {
	case schemas.OpDelete:
		return fn("d", e.Before, true)
	case schemas.OpUpdate:
		if e.Before != nil && e.KeyChanged() {
			if err := fn("d", e.Before, true); err != nil {
				return err
			}
		}
		return fn("u", e.After, false)
	}
	return fn(string(e.Op), e.After, false)
}

// TruncateOnce passes one of the truncate events that every partition of a
// table's topic carries for one TRUNCATE. The zero value is ready; it is
// used by one goroutine.
type TruncateOnce struct{ last string }

// First reports whether ev, a truncate, is not a repeat of the truncate
// just before it (one of its transaction, on the same topic), and notes it.
func (o *TruncateOnce) First(ev *Event) bool {
	k := fmt.Sprintf("%p/%s", ev.Txn, ev.Table.Topic)
	if k == o.last {
		return false
	}
	o.last = k
	return true
}

// Reset notes an event that is not a truncate: a truncate after it is not
// a repeat.
func (o *TruncateOnce) Reset() { o.last = "" }
