package producer

import (
	"encoding/binary"
	"fmt"

	"github.com/jackc/pglogrepl"
)

// parsePgoutput decodes one pgoutput message.
//
// Insert, Update and Delete messages are decoded by decodeChange: their
// column values are slices of data, not copies. pglogrepl copies each value
// byte by byte into a new slice, which was the largest cost of the producer
// with 16-KB rows. A message decoded here is therefore valid only as long as
// data is, which for the replication stream is until the next receive on the
// connection: handle encodes every change into new records before that.
//
// Other messages go to pglogrepl, which indexes into its input without
// bounds checks in places, so a malformed message is turned from a panic
// into an error, and a Truncate's relation count is checked against its
// length first.
func parsePgoutput(data []byte) (msg pglogrepl.Message, err error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("empty pgoutput message")
	}
	switch data[0] {
	case 'I', 'U', 'D':
		return decodeChange(data)
	case 'T':
		// pglogrepl allocates the relation count it reads, up to 16 GB.
		if len(data) >= 6 && int64(binary.BigEndian.Uint32(data[1:]))*4 > int64(len(data)-6) {
			return nil, fmt.Errorf("malformed pgoutput truncate message: %d relations in %d bytes", binary.BigEndian.Uint32(data[1:]), len(data))
		}
	}
	defer func() {
		if r := recover(); r != nil {
			msg, err = nil, fmt.Errorf("malformed pgoutput message %q: %v", clip(data), r)
		}
	}()
	return pglogrepl.Parse(data)
}

// decodeChange decodes an Insert ('I' relation 'N' tuple), Update ('U'
// relation ['K'|'O' tuple] 'N' tuple) or Delete ('D' relation 'K'|'O' tuple)
// message of pgoutput protocol version 1, checking every length against the
// message before using it. Column values alias data.
func decodeChange(data []byte) (pglogrepl.Message, error) {
	d := changeDecoder{data: data, i: 5}
	if len(data) < 5 {
		return nil, d.errorf("shorter than its relation ID")
	}
	rel := binary.BigEndian.Uint32(data[1:])
	var msg pglogrepl.Message
	switch data[0] {
	case 'I':
		if d.marker() != 'N' {
			return nil, d.errorf("insert without a new tuple")
		}
		m := &pglogrepl.InsertMessage{RelationID: rel, Tuple: d.tuple()}
		m.SetType(pglogrepl.MessageTypeInsert)
		msg = m
	case 'U':
		m := &pglogrepl.UpdateMessage{RelationID: rel}
		switch k := d.marker(); k {
		case 'K', 'O':
			m.OldTupleType, m.OldTuple = k, d.tuple()
			if d.marker() != 'N' {
				return nil, d.errorf("update without a new tuple")
			}
		case 'N':
		default:
			return nil, d.errorf("update tuple marker %q", k)
		}
		m.NewTuple = d.tuple()
		m.SetType(pglogrepl.MessageTypeUpdate)
		msg = m
	case 'D':
		m := &pglogrepl.DeleteMessage{RelationID: rel}
		switch k := d.marker(); k {
		case 'K', 'O':
			m.OldTupleType, m.OldTuple = k, d.tuple()
		default:
			return nil, d.errorf("delete tuple marker %q", k)
		}
		m.SetType(pglogrepl.MessageTypeDelete)
		msg = m
	}
	if d.err != nil {
		return nil, d.err
	}
	if d.i != len(data) {
		return nil, d.errorf("%d bytes after the last tuple", len(data)-d.i)
	}
	return msg, nil
}

// changeDecoder reads a change message; after the first error it reads
// nothing more and keeps that error.
type changeDecoder struct {
	data []byte
	i    int
	err  error
}

func (d *changeDecoder) errorf(format string, args ...any) error {
	if d.err == nil {
		d.err = fmt.Errorf("malformed pgoutput %q message at byte %d: %s", d.data[:1], d.i, fmt.Sprintf(format, args...))
	}
	return d.err
}

// marker reads a tuple marker byte ('K', 'O' or 'N'); 0 after an error.
func (d *changeDecoder) marker() byte {
	if d.err != nil {
		return 0
	}
	if d.i >= len(d.data) {
		d.errorf("missing tuple")
		return 0
	}
	d.i++
	return d.data[d.i-1]
}

// tuple reads TupleData: a column count, then per column its kind ('n'
// null, 'u' unchanged TOAST, 't' text, 'b' binary) and, for 't' and 'b', a
// length and the value.
func (d *changeDecoder) tuple() *pglogrepl.TupleData {
	if d.err != nil {
		return nil
	}
	if d.i+2 > len(d.data) {
		d.errorf("missing column count")
		return nil
	}
	n := int(binary.BigEndian.Uint16(d.data[d.i:]))
	d.i += 2
	cols := make([]pglogrepl.TupleDataColumn, n)
	t := &pglogrepl.TupleData{ColumnNum: uint16(n), Columns: make([]*pglogrepl.TupleDataColumn, n)}
	for c := range cols {
		if d.i >= len(d.data) {
			d.errorf("column %d of %d missing", c+1, n)
			return nil
		}
		col := &cols[c]
		col.DataType = d.data[d.i]
		d.i++
		switch col.DataType {
		case pglogrepl.TupleDataTypeText, pglogrepl.TupleDataTypeBinary:
			if d.i+4 > len(d.data) {
				d.errorf("column %d: missing length", c+1)
				return nil
			}
			l := int64(binary.BigEndian.Uint32(d.data[d.i:]))
			d.i += 4
			if l > int64(len(d.data)-d.i) {
				d.errorf("column %d: length %d past the end of the message", c+1, l)
				return nil
			}
			end := d.i + int(l)
			col.Length, col.Data = uint32(l), d.data[d.i:end:end]
			d.i = end
		case pglogrepl.TupleDataTypeNull, pglogrepl.TupleDataTypeToast:
		default:
			d.errorf("column %d: unknown kind %q", c+1, col.DataType)
			return nil
		}
		t.Columns[c] = col
	}
	return t
}
