package schemas

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/tributary-cdc/tributary/schemas/internal/avrobin"
)

// This file is the producer's hot path: Avro binary written straight from
// PostgreSQL's text, without building goavro's native maps. Its output is
// byte for byte what the table's goavro codecs (TableSchema.KeyCodec and
// ValueCodec, the frame codec) write for the same event; encoder_test.go
// checks that on every type case and on random rows, and goavro stays the
// decoder everywhere else.

// encodeAppendFunc appends the Avro binary of one non-null column value
// given PostgreSQL's text form of it. Errors are Decode's errors.
type encodeAppendFunc func(dst, text []byte) ([]byte, error)

// Encoder writes the key and value of one table version's events in Avro
// binary. It is built once per TableSchema, is immutable and is safe for
// concurrent use; every method appends to a buffer the caller owns.
type Encoder struct {
	ts   *TableSchema
	cols []encodeAppendFunc // the typed branch of each column
	text []bool             // the column's union has the text branch

	// Debezium envelope only (WithToastPlaceholder): the unchanged TOAST
	// placeholder and its form per column.
	placeholder []byte
	toast       []debeziumToast
}

// NewEncoder compiles the encoder of ts: one append function per column,
// taken from the column's Codec.
func NewEncoder(ts *TableSchema) *Encoder {
	e := &Encoder{ts: ts, cols: make([]encodeAppendFunc, len(ts.Codecs)), text: make([]bool, len(ts.Codecs))}
	for i, c := range ts.Codecs {
		e.cols[i] = encodeColumnFunc(c)
		e.text[i] = c.Text
	}
	return e
}

// encodeColumnFunc returns c's direct text-to-binary function of its typed
// branch, or one that goes through its typed decoding and encodes the native
// value as goavro does.
func encodeColumnFunc(c Codec) encodeAppendFunc {
	if c.appendText != nil {
		return c.appendText
	}
	avro, decode := c.Avro, c.Decode
	if c.typed != nil {
		decode = c.typed
	}
	return func(dst, text []byte) ([]byte, error) {
		v, err := decode(text)
		if err != nil {
			return dst, err
		}
		return encodeNative(dst, avro, v)
	}
}

// EncoderTx holds the parts of the envelope's source and tx records that are
// the same for every event of one source transaction (or snapshot chunk),
// already encoded.
type EncoderTx struct {
	sourceMid  []byte // commit_lsn, xid, commit_ts
	sourceTail []byte // origin
	id         []byte // tx.id

	// The transaction itself, for the Debezium envelope.
	xid        uint32
	commitLSN  pglogrepl.LSN
	commitTime time.Time
	originLSN  pglogrepl.LSN
}

// NewEncoderTx encodes the per-transaction parts of source and tx. The
// producer calls it once per source transaction, so the parts share one
// buffer.
func NewEncoderTx(commitLSN pglogrepl.LSN, xid uint32, commitTime time.Time, origin string) *EncoderTx {
	t := &EncoderTx{xid: xid, commitLSN: commitLSN, commitTime: commitTime}
	b := make([]byte, 0, 3*binary.MaxVarintLen64+binary.MaxVarintLen64+len(origin)+32)
	b = avrobin.AppendLong(b, int64(commitLSN))
	b = avrobin.AppendLong(b, int64(xid))
	b = avrobin.AppendLong(b, avrobin.MicrosFromTime(commitTime))
	mid := len(b)
	b = avrobin.AppendNullableString(b, origin)
	tail := len(b)
	var id [32]byte // a uint32 and two 8-digit halves fit
	b = avrobin.AppendBytes(b, AppendTxID(id[:0], xid, commitLSN))
	t.sourceMid, t.sourceTail, t.id = b[:mid:mid], b[mid:tail:tail], b[tail:len(b):len(b)]
	return t
}

// WithOriginLSN sets the transaction's commit LSN on its origin (the
// Debezium envelope's source.origin_lsn; 0 for none) and returns t.
func (t *EncoderTx) WithOriginLSN(lsn pglogrepl.LSN) *EncoderTx {
	t.originLSN = lsn
	return t
}

// EncoderSourceHead encodes the per-table start of the envelope's source
// record: version, prefix, db, schema and table.
func EncoderSourceHead(version, prefix, db, schema, table string) []byte {
	b := avrobin.AppendString(nil, version)
	b = avrobin.AppendString(b, prefix)
	b = avrobin.AppendString(b, db)
	b = avrobin.AppendString(b, schema)
	return avrobin.AppendString(b, table)
}

// EncoderEvent is one change to encode: the row images as pgoutput tuples
// (or snapshot rows in the same form), nil for an absent image.
type EncoderEvent struct {
	Op         Op
	Before     *pglogrepl.TupleData
	After      *pglogrepl.TupleData
	SourceHead []byte // EncoderSourceHead of the table
	LSN        pglogrepl.LSN
	Tx         *EncoderTx
	Snapshot   bool
	Position   int64
	// Debezium is set for AppendDebeziumValue.
	Debezium *DebeziumEvent
}

// AppendValue appends the Avro binary of ev's envelope (without the wire
// format header) to dst. Unchanged TOAST columns of After are null and listed
// in unchanged_toast. An error names the column, its SQL type and value.
func (e *Encoder) AppendValue(dst []byte, ev *EncoderEvent) ([]byte, error) {
	dst = avrobin.AppendString(dst, string(ev.Op))
	var err error
	if dst, err = e.appendRowUnion(dst, ev.Before, false); err != nil {
		return dst, err
	}
	if dst, err = e.appendRowUnion(dst, ev.After, false); err != nil {
		return dst, err
	}
	dst = append(dst, ev.SourceHead...)
	dst = avrobin.AppendLong(dst, int64(ev.LSN))
	dst = append(dst, ev.Tx.sourceMid...)
	dst = avrobin.AppendBool(dst, ev.Snapshot)
	dst = append(dst, ev.Tx.sourceTail...)
	dst = append(dst, ev.Tx.id...)
	dst = avrobin.AppendLong(dst, ev.Position)
	// unchanged_toast: one block of the TOAST column names, then the end.
	toast := 0
	if ev.After != nil {
		for _, c := range ev.After.Columns {
			if c.DataType == pglogrepl.TupleDataTypeToast {
				toast++
			}
		}
	}
	if toast > 0 {
		dst = avrobin.AppendLong(dst, int64(toast))
		for i, c := range ev.After.Columns {
			if c.DataType == pglogrepl.TupleDataTypeToast {
				dst = avrobin.AppendString(dst, e.ts.Table.Columns[i].Name)
			}
		}
	}
	return append(dst, 0), nil
}

// appendRowUnion appends the ["null", Row] union of one row image; with
// placeholders, unchanged TOAST values are written as the Debezium
// envelope's placeholder, else as null.
func (e *Encoder) appendRowUnion(dst []byte, t *pglogrepl.TupleData, placeholders bool) ([]byte, error) {
	if t == nil {
		return append(dst, 0), nil
	}
	if err := e.checkTuple(t); err != nil {
		return dst, err
	}
	dst = append(dst, 2)
	for i, c := range t.Columns {
		switch c.DataType {
		case pglogrepl.TupleDataTypeNull:
			dst = append(dst, 0)
		case pglogrepl.TupleDataTypeToast:
			if placeholders {
				dst = e.appendToastPlaceholder(dst, i)
			} else {
				dst = append(dst, 0)
			}
		case pglogrepl.TupleDataTypeText:
			var err error
			if dst, err = e.appendField(dst, i, c.Data, 1); err != nil {
				return dst, err
			}
		default:
			return dst, fmt.Errorf("column %q: unexpected tuple data type %q", e.ts.Table.Columns[i].Name, c.DataType)
		}
	}
	return dst, nil
}

// AppendKey appends the Avro binary of the key record of row image t.
func (e *Encoder) AppendKey(dst []byte, t *pglogrepl.TupleData) ([]byte, error) {
	if t == nil {
		return dst, errors.New("no row image to take the key from")
	}
	if err := e.checkTuple(t); err != nil {
		return dst, err
	}
	for _, i := range e.ts.KeyColumns {
		c := t.Columns[i]
		nullable := e.ts.Table.Columns[i].Nullable
		switch {
		case c.DataType == pglogrepl.TupleDataTypeNull && nullable:
			dst = append(dst, 0)
			continue
		case c.DataType != pglogrepl.TupleDataTypeText:
			return dst, fmt.Errorf("key column %q is null or unchanged TOAST", e.ts.Table.Columns[i].Name)
		}
		typed := -1 // no union
		switch {
		case nullable:
			typed = 1 // ["null", typed, (text)]
		case e.text[i]:
			typed = 0 // [typed, text]
		}
		var err error
		if dst, err = e.appendField(dst, i, c.Data, typed); err != nil {
			return dst, err
		}
	}
	return dst, nil
}

// appendField appends the non-null value text of column i: the union index
// typed (none when negative) and the typed branch, or, when the typed branch
// cannot carry the value (ErrUnrepresentable) and the column has the text
// branch, the next union index and the text itself.
func (e *Encoder) appendField(dst []byte, i int, text []byte, typed int) ([]byte, error) {
	mark := len(dst)
	if typed >= 0 {
		dst = avrobin.AppendLong(dst, int64(typed))
	}
	out, err := e.cols[i](dst, text)
	if err == nil {
		return out, nil
	}
	if !e.text[i] || typed < 0 || !errors.Is(err, ErrUnrepresentable) {
		return dst[:mark], e.columnError(i, text, err)
	}
	if terr := typeTextCheck(text); terr != nil {
		return dst[:mark], e.columnError(i, text, fmt.Errorf("%w (and %w)", err, terr))
	}
	return avrobin.AppendBytes(avrobin.AppendLong(dst[:mark], int64(typed+1)), text), nil
}

// KeyText renders the key columns of t as "(col=text, ...)" for error
// messages; a column that is not text shows as its tuple data kind.
func (e *Encoder) KeyText(t *pglogrepl.TupleData) string {
	if t == nil || len(t.Columns) != len(e.ts.Fields) {
		return "?"
	}
	b := []byte{'('}
	for n, i := range e.ts.KeyColumns {
		if n > 0 {
			b = append(b, ", "...)
		}
		b = append(b, e.ts.Table.Columns[i].Name...)
		b = append(b, '=')
		switch c := t.Columns[i]; c.DataType {
		case pglogrepl.TupleDataTypeText:
			b = append(b, encodeClip(c.Data)...)
		case pglogrepl.TupleDataTypeNull:
			b = append(b, "<null>"...)
		default:
			b = append(b, "<unchanged toast>"...)
		}
	}
	return string(append(b, ')'))
}

func (e *Encoder) checkTuple(t *pglogrepl.TupleData) error {
	if int(t.ColumnNum) != len(e.ts.Fields) || len(t.Columns) != len(e.ts.Fields) {
		return fmt.Errorf("tuple has %d columns, relation has %d", len(t.Columns), len(e.ts.Fields))
	}
	return nil
}

func (e *Encoder) columnError(i int, text []byte, err error) error {
	c := e.ts.Table.Columns[i]
	return fmt.Errorf("column %q (%s) value %q: %w", c.Name, c.SQLType, encodeClip(text), err)
}

// encodeClip shortens a value for an error message.
func encodeClip(b []byte) string {
	if len(b) > 64 {
		return string(b[:61]) + "..."
	}
	return string(b)
}

// EncoderAppendFrame appends the Avro binary of commit frame f (without the
// wire format header): what goavro writes for FrameSchema and f.Native().
func EncoderAppendFrame(dst []byte, f *Frame) []byte {
	dst = avrobin.AppendLong(dst, int64(f.Xid))
	dst = avrobin.AppendLong(dst, int64(f.CommitLSN))
	dst = avrobin.AppendLong(dst, int64(f.EndLSN))
	dst = avrobin.AppendLong(dst, avrobin.MicrosFromTime(f.CommitTime))
	dst = avrobin.AppendNullableString(dst, f.Origin)
	if s := f.Snapshot; s == nil {
		dst = append(dst, 0)
	} else {
		dst = append(dst, 2)
		dst = avrobin.AppendString(dst, s.Slot)
		dst = avrobin.AppendString(dst, s.Schema)
		dst = avrobin.AppendString(dst, s.Table)
		dst = avrobin.AppendLong(dst, s.Chunk)
		dst = avrobin.AppendBool(dst, s.Last)
		if s.LastKey == nil {
			dst = append(dst, 0)
		} else {
			dst = append(dst, 2)
			if len(s.LastKey) > 0 {
				dst = avrobin.AppendLong(dst, int64(len(s.LastKey)))
				for _, k := range s.LastKey {
					dst = avrobin.AppendString(dst, k)
				}
			}
			dst = append(dst, 0)
		}
		dst = avrobin.AppendString(dst, s.ID)
	}
	dst = avrobin.AppendLong(dst, f.Events)
	if len(f.Partitions) > 0 {
		dst = avrobin.AppendLong(dst, int64(len(f.Partitions)))
		for _, p := range f.Partitions {
			dst = avrobin.AppendString(dst, p.Topic)
			dst = avrobin.AppendLong(dst, int64(p.Partition))
			dst = avrobin.AppendLong(dst, p.Count)
		}
	}
	dst = append(dst, 0)
	if r := f.Request; r == nil {
		dst = append(dst, 0)
	} else {
		dst = append(dst, 2)
		dst = avrobin.AppendString(dst, r.Slot)
		dst = avrobin.AppendString(dst, r.ID)
		if len(r.Tables) > 0 {
			dst = avrobin.AppendLong(dst, int64(len(r.Tables)))
			for _, t := range r.Tables {
				dst = avrobin.AppendString(dst, t)
			}
		}
		dst = append(dst, 0)
	}
	return dst
}

// encodeNative appends the Avro binary of native value v (what a Codec's
// Decode returns) for the non-null schema avro, as goavro's BinaryFromNative
// does. It serves the types without a direct text path: decimals,
// intervals and arrays.
func encodeNative(dst []byte, avro any, v any) ([]byte, error) {
	switch x := v.(type) {
	case bool:
		return avrobin.AppendBool(dst, x), nil
	case int32:
		return avrobin.AppendLong(dst, int64(x)), nil
	case int64:
		return avrobin.AppendLong(dst, x), nil
	case float32:
		return avrobin.AppendFloat(dst, x), nil
	case float64:
		return avrobin.AppendDouble(dst, x), nil
	case string:
		return avrobin.AppendString(dst, x), nil
	case []byte:
		return avrobin.AppendBytes(dst, x), nil
	case *big.Rat:
		m, _ := avro.(map[string]any)
		scale, _ := m["scale"].(int)
		n := new(big.Int).Mul(x.Num(), new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(scale)), nil))
		return avrobin.AppendDecimalBig(dst, n.Div(n, x.Denom())), nil
	case map[string]any: // tributary.Interval
		mo, ok1 := x["months"].(int32)
		d, ok2 := x["days"].(int32)
		us, ok3 := x["micros"].(int64)
		if !ok1 || !ok2 || !ok3 {
			return dst, fmt.Errorf("encode: malformed interval %v", x)
		}
		return avrobin.AppendLong(avrobin.AppendLong(avrobin.AppendLong(dst, int64(mo)), int64(d)), us), nil
	case []any:
		m, _ := avro.(map[string]any)
		items, _ := m["items"].([]any)
		if len(items) != 2 {
			return dst, fmt.Errorf("encode: array value for schema %v", avro)
		}
		if len(x) > 0 {
			dst = avrobin.AppendLong(dst, int64(len(x)))
		}
		for _, e := range x {
			if e == nil {
				dst = append(dst, 0)
				continue
			}
			um, ok := e.(map[string]any)
			if !ok || len(um) != 1 {
				return dst, fmt.Errorf("encode: array element %v is not a union value", e)
			}
			dst = append(dst, 2)
			for _, ev := range um {
				var err error
				if dst, err = encodeNative(dst, items[1], ev); err != nil {
					return dst, err
				}
			}
		}
		return append(dst, 0), nil
	}
	return dst, fmt.Errorf("encode: unexpected native %T", v)
}
