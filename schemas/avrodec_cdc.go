package schemas

import (
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
)

// DecodedEnvelope is one envelope as DecoderEnvelope.Decode reads it.
type DecodedEnvelope struct {
	Op string
	// Before and After are the row images, nil when null. Entry i is the
	// value of the writer Row record's field i (DecoderEnvelope.RowFields),
	// in goavro's native form with the field's nullable union unwrapped
	// (what UnwrapUnion returns for goavro's value); nil for SQL NULL.
	// Decode allocates them afresh for every envelope, so they may be kept.
	Before, After []any
	Source        Source
	TxID          string
	TxPosition    int64
	// UnchangedToast names the columns whose TOASTed value was not sent.
	UnchangedToast []string
}

// DecoderEnvelope decodes the envelopes of one writer value schema straight
// into a DecodedEnvelope, without maps. It is immutable and safe for
// concurrent use.
type DecoderEnvelope struct {
	fields    []decSetter[DecodedEnvelope]
	rowFields []string
	zero      []func(*DecodedEnvelope) // clear what the writer schema lacks
}

// decEnvelopeZero clears each field of DecodedEnvelope that Decode fills,
// keyed by its path in the envelope schema.
var decEnvelopeZero = map[string]func(*DecodedEnvelope){
	"op":                func(e *DecodedEnvelope) { e.Op = "" },
	"tx.id":             func(e *DecodedEnvelope) { e.TxID = "" },
	"tx.position":       func(e *DecodedEnvelope) { e.TxPosition = 0 },
	"source.version":    func(e *DecodedEnvelope) { e.Source.Version = "" },
	"source.prefix":     func(e *DecodedEnvelope) { e.Source.Prefix = "" },
	"source.db":         func(e *DecodedEnvelope) { e.Source.DB = "" },
	"source.schema":     func(e *DecodedEnvelope) { e.Source.Schema = "" },
	"source.table":      func(e *DecodedEnvelope) { e.Source.Table = "" },
	"source.lsn":        func(e *DecodedEnvelope) { e.Source.LSN = 0 },
	"source.commit_lsn": func(e *DecodedEnvelope) { e.Source.CommitLSN = 0 },
	"source.xid":        func(e *DecodedEnvelope) { e.Source.Xid = 0 },
	"source.commit_ts":  func(e *DecodedEnvelope) { e.Source.CommitTime = time.Time{} },
	"source.snapshot":   func(e *DecodedEnvelope) { e.Source.Snapshot = false },
	"source.origin":     func(e *DecodedEnvelope) { e.Source.Origin = "" },
}

type decSetter[T any] func(b []byte, out *T) ([]byte, error)

// DecoderCompileEnvelope compiles the writer schema text of an envelope
// (a data topic's value schema). Fields it does not know are decoded and
// ignored; fields it knows with an unexpected type are an error at decode
// time. An error wrapping ErrDecoderUnsupported means the schema uses a
// construct only goavro decodes.
func DecoderCompileEnvelope(schema string) (*DecoderEnvelope, error) {
	root, err := decCompileRecord(schema, "envelope")
	if err != nil {
		return nil, err
	}
	d := &DecoderEnvelope{}
	for _, f := range root.fields {
		var set decSetter[DecodedEnvelope]
		switch f.name {
		case "op":
			set = decSetString(f, func(e *DecodedEnvelope) *string { return &e.Op })
		case "before", "after":
			row := decRowNode(f.node)
			if row == nil {
				return nil, fmt.Errorf("envelope field %q is not a nullable record", f.name)
			}
			names := make([]string, len(row.fields))
			for i, rf := range row.fields {
				names[i] = rf.name
			}
			if d.rowFields == nil {
				d.rowFields = names
			} else if fmt.Sprint(names) != fmt.Sprint(d.rowFields) {
				return nil, errors.New("envelope before and after have different row records")
			}
			set = decRowSetter(f, f.name == "before")
		case "source":
			src, err := decRecordSetter(f, decSourceSetter)
			if err != nil {
				return nil, err
			}
			set = func(b []byte, e *DecodedEnvelope) ([]byte, error) { return src(b, &e.Source) }
		case "tx":
			tx, err := decRecordSetter(f, func(tf decField) decSetter[DecodedEnvelope] {
				switch tf.name {
				case "id":
					return decSetString(tf, func(e *DecodedEnvelope) *string { return &e.TxID })
				case "position":
					return decSetLong(tf, func(e *DecodedEnvelope) *int64 { return &e.TxPosition })
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
			set = tx
		case "unchanged_toast":
			set = decStringArray(f, func(e *DecodedEnvelope) *[]string { return &e.UnchangedToast })
		default:
			set = decSkip[DecodedEnvelope](f)
		}
		d.fields = append(d.fields, set)
	}
	if d.rowFields == nil {
		return nil, errors.New("not a Tributary envelope: no Row record in before or after")
	}
	present := map[string]bool{}
	for _, f := range root.fields {
		present[f.name] = true
		if (f.name == "source" || f.name == "tx") && f.node.kind == decRecord {
			for _, sf := range f.node.fields {
				present[f.name+"."+sf.name] = true
			}
		}
	}
	for path, z := range decEnvelopeZero {
		if !present[path] {
			d.zero = append(d.zero, z)
		}
	}
	return d, nil
}

// decCompileRecord compiles a writer schema whose root must be a record.
func decCompileRecord(schema, what string) (*decNode, error) {
	s, err := DecoderCompile(schema)
	if err != nil {
		return nil, err
	}
	if s.root.kind != decRecord {
		return nil, fmt.Errorf("%s schema is not a record", what)
	}
	return s.root, nil
}

// RowFields are the names of the writer Row record's fields, in the order
// of DecodedEnvelope.Before and After.
func (d *DecoderEnvelope) RowFields() []string { return d.rowFields }

// Decode decodes one envelope body (without the wire-format header) into e.
// Bytes left after the envelope are an error. Every field of e is set (to
// its zero value when the writer schema lacks it); strings equal to the ones
// e already holds are kept rather than allocated again, so reusing e across
// envelopes saves those allocations. UnchangedToast reuses its array.
func (d *DecoderEnvelope) Decode(b []byte, e *DecodedEnvelope) error {
	e.Before, e.After, e.UnchangedToast = nil, nil, e.UnchangedToast[:0]
	for _, z := range d.zero {
		z(e)
	}
	var err error
	for _, set := range d.fields {
		if b, err = set(b, e); err != nil {
			return err
		}
	}
	if len(b) != 0 {
		return fmt.Errorf("%d bytes left after the envelope", len(b))
	}
	return nil
}

// decRowNode returns the Row record of a before or after field: the record
// itself or the record member of a union.
func decRowNode(n *decNode) *decNode {
	if n.kind == decRecord {
		return n
	}
	if n.kind != decUnion {
		return nil
	}
	var rec *decNode
	for _, b := range n.branches {
		switch b.kind {
		case decRecord:
			rec = b
		case decNull:
		default:
			return nil
		}
	}
	return rec
}

func decRowSetter(f decField, before bool) decSetter[DecodedEnvelope] {
	return func(b []byte, e *DecodedEnvelope) ([]byte, error) {
		rec := f.node
		if rec.kind == decUnion {
			i, rest, err := decReadLong(b)
			if err != nil {
				return nil, fmt.Errorf("field %q: %w", f.name, err)
			}
			if i < 0 || i >= int64(len(rec.branches)) {
				return nil, fmt.Errorf("field %q: union index %d out of range", f.name, i)
			}
			b, rec = rest, rec.branches[i]
			if rec.kind == decNull {
				return b, nil
			}
		}
		row := make([]any, len(rec.fields))
		for j, rf := range rec.fields {
			v, rest, err := decColumn(rf.node, b)
			if err != nil {
				return nil, fmt.Errorf("field %q column %q: %w", f.name, rf.name, err)
			}
			row[j], b = v, rest
		}
		if before {
			e.Before = row
		} else {
			e.After = row
		}
		return b, nil
	}
}

// decColumn decodes one column value with its union unwrapped.
func decColumn(n *decNode, b []byte) (any, []byte, error) {
	if n.kind != decUnion {
		return n.native(b)
	}
	i, b, err := decReadLong(b)
	if err != nil {
		return nil, nil, err
	}
	if i < 0 || i >= int64(len(n.branches)) {
		return nil, nil, fmt.Errorf("union index %d out of range", i)
	}
	return n.branches[i].native(b)
}

// decRecordSetter compiles a record field whose fields pick assigns.
func decRecordSetter[U any](f decField, pick func(decField) decSetter[U]) (decSetter[U], error) {
	if f.node.kind != decRecord {
		return nil, fmt.Errorf("field %q is not a record", f.name)
	}
	var sets []decSetter[U]
	for _, sf := range f.node.fields {
		s := pick(sf)
		if s == nil {
			s = decSkip[U](sf)
		}
		sets = append(sets, s)
	}
	return func(b []byte, out *U) ([]byte, error) {
		var err error
		for _, s := range sets {
			if b, err = s(b, out); err != nil {
				return nil, fmt.Errorf("field %q: %w", f.name, err)
			}
		}
		return b, nil
	}, nil
}

func decSourceSetter(f decField) decSetter[Source] {
	switch f.name {
	case "version":
		return decSetString(f, func(s *Source) *string { return &s.Version })
	case "prefix":
		return decSetString(f, func(s *Source) *string { return &s.Prefix })
	case "db":
		return decSetString(f, func(s *Source) *string { return &s.DB })
	case "schema":
		return decSetString(f, func(s *Source) *string { return &s.Schema })
	case "table":
		return decSetString(f, func(s *Source) *string { return &s.Table })
	case "origin":
		return decSetString(f, func(s *Source) *string { return &s.Origin })
	case "lsn":
		return decSetLong(f, func(s *Source) *pglogrepl.LSN { return &s.LSN })
	case "commit_lsn":
		return decSetLong(f, func(s *Source) *pglogrepl.LSN { return &s.CommitLSN })
	case "xid":
		return decSetLong(f, func(s *Source) *uint32 { return &s.Xid })
	case "commit_ts":
		return decSetTime(f, func(s *Source) *time.Time { return &s.CommitTime })
	case "snapshot":
		return decBoolField(f, func(s *Source) *bool { return &s.Snapshot })
	}
	return nil
}

func decSkip[T any](f decField) decSetter[T] {
	return func(b []byte, _ *T) ([]byte, error) {
		_, rest, err := f.node.native(b)
		if err != nil {
			return nil, fmt.Errorf("field %q: %w", f.name, err)
		}
		return rest, nil
	}
}

// decString reads a string or nullable string field (null is ""), keeping
// the current string when the bytes are equal to it.
func decSetString[T any](f decField, at func(*T) *string) decSetter[T] {
	n := f.node
	return func(b []byte, out *T) ([]byte, error) {
		if n.kind == decUnion {
			i, rest, err := decReadLong(b)
			if err != nil || i < 0 || i >= int64(len(n.branches)) {
				return nil, fmt.Errorf("field %q: bad union index", f.name)
			}
			b = rest
			switch n.branches[i].kind {
			case decNull:
				*at(out) = ""
				return b, nil
			case decString:
			default:
				return nil, fmt.Errorf("field %q: union member %s is not a string", f.name, n.branches[i].name)
			}
		} else if n.kind != decString {
			return nil, fmt.Errorf("field %q: %s is not a string", f.name, n.name)
		}
		bs, rest, err := decReadBytes(b)
		if err != nil {
			return nil, fmt.Errorf("field %q: %w", f.name, err)
		}
		if p := at(out); *p != string(bs) {
			*p = string(bs)
		}
		return rest, nil
	}
}

func decSetLong[T any, I ~int64 | ~uint64 | ~uint32 | ~int32](f decField, at func(*T) *I) decSetter[T] {
	n := f.node
	return func(b []byte, out *T) ([]byte, error) {
		var v int64
		var err error
		switch n.kind {
		case decLong:
			v, b, err = decReadLong(b)
		case decInt:
			var i int32
			i, b, err = decReadInt(b)
			v = int64(i)
		default:
			return nil, fmt.Errorf("field %q: %s is not a long", f.name, n.name)
		}
		if err != nil {
			return nil, fmt.Errorf("field %q: %w", f.name, err)
		}
		*at(out) = I(v)
		return b, nil
	}
}

func decSetTime[T any](f decField, at func(*T) *time.Time) decSetter[T] {
	n := f.node
	return func(b []byte, out *T) ([]byte, error) {
		if n.kind != decTsMicros {
			v, rest, err := n.native(b)
			if err != nil {
				return nil, fmt.Errorf("field %q: %w", f.name, err)
			}
			t, ok := v.(time.Time)
			if !ok {
				return nil, fmt.Errorf("field %q: %T is not a timestamp", f.name, v)
			}
			*at(out) = t
			return rest, nil
		}
		us, rest, err := decReadLong(b)
		if err != nil {
			return nil, fmt.Errorf("field %q: %w", f.name, err)
		}
		*at(out) = decTimeMicrosValue(us)
		return rest, nil
	}
}

func decBoolField[T any](f decField, at func(*T) *bool) decSetter[T] {
	n := f.node
	return func(b []byte, out *T) ([]byte, error) {
		if n.kind != decBool {
			return nil, fmt.Errorf("field %q: %s is not a boolean", f.name, n.name)
		}
		v, rest, err := decReadBool(b)
		if err != nil {
			return nil, fmt.Errorf("field %q: %w", f.name, err)
		}
		*at(out) = v
		return rest, nil
	}
}

func decStringArray[T any](f decField, at func(*T) *[]string) decSetter[T] {
	n := f.node
	return func(b []byte, out *T) ([]byte, error) {
		if n.kind != decArray || n.elem.kind != decString {
			return nil, fmt.Errorf("field %q: %s is not an array of strings", f.name, n.name)
		}
		p := at(out)
		for {
			cnt, rest, err := decBlockCount(b)
			if err != nil {
				return nil, fmt.Errorf("field %q: %w", f.name, err)
			}
			b = rest
			if cnt == 0 {
				return b, nil
			}
			for j := int64(0); j < cnt; j++ {
				s, rest, err := decReadString(b)
				if err != nil {
					return nil, fmt.Errorf("field %q item %d: %w", f.name, len(*p)+1, err)
				}
				*p = append(*p, s)
				b = rest
			}
		}
	}
}

// DecoderFrame decodes the commit frames of one writer schema of the
// transactions topic straight into a Frame. It is immutable and safe for
// concurrent use.
type DecoderFrame struct {
	fields []decSetter[Frame]
}

// DecoderCompileFrame compiles the writer schema text of a frame.
func DecoderCompileFrame(schema string) (*DecoderFrame, error) {
	root, err := decCompileRecord(schema, "frame")
	if err != nil {
		return nil, err
	}
	d := &DecoderFrame{}
	for _, f := range root.fields {
		var set decSetter[Frame]
		switch f.name {
		case "xid":
			set = decSetLong(f, func(fr *Frame) *uint32 { return &fr.Xid })
		case "commit_lsn":
			set = decSetLong(f, func(fr *Frame) *pglogrepl.LSN { return &fr.CommitLSN })
		case "end_lsn":
			set = decSetLong(f, func(fr *Frame) *pglogrepl.LSN { return &fr.EndLSN })
		case "commit_ts":
			set = decSetTime(f, func(fr *Frame) *time.Time { return &fr.CommitTime })
		case "origin":
			set = decSetString(f, func(fr *Frame) *string { return &fr.Origin })
		case "event_count":
			set = decSetLong(f, func(fr *Frame) *int64 { return &fr.Events })
		case "snapshot", "snapshot_request":
			set = decSnapshotSetter(f)
		case "partitions":
			if f.node.kind != decArray || f.node.elem.kind != decRecord {
				return nil, errors.New("frame field \"partitions\" is not an array of records")
			}
			pc, err := decRecordSetter(decField{name: "partitions", node: f.node.elem}, func(pf decField) decSetter[PartitionCount] {
				switch pf.name {
				case "topic":
					return decSetString(pf, func(p *PartitionCount) *string { return &p.Topic })
				case "partition":
					return decSetLong(pf, func(p *PartitionCount) *int32 { return &p.Partition })
				case "count":
					return decSetLong(pf, func(p *PartitionCount) *int64 { return &p.Count })
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
			set = func(b []byte, fr *Frame) ([]byte, error) {
				for {
					cnt, rest, err := decBlockCount(b)
					if err != nil {
						return nil, fmt.Errorf("field \"partitions\": %w", err)
					}
					b = rest
					if cnt == 0 {
						return b, nil
					}
					for j := int64(0); j < cnt; j++ {
						var p PartitionCount
						if b, err = pc(b, &p); err != nil {
							return nil, err
						}
						fr.Partitions = append(fr.Partitions, p)
					}
				}
			}
		default:
			set = decSkip[Frame](f)
		}
		d.fields = append(d.fields, set)
	}
	return d, nil
}

// Decode decodes one frame body (without the wire-format header). Bytes
// left after the frame are an error.
func (d *DecoderFrame) Decode(b []byte) (Frame, error) {
	var f Frame
	var err error
	for _, set := range d.fields {
		if b, err = set(b, &f); err != nil {
			return Frame{}, err
		}
	}
	if len(b) != 0 {
		return Frame{}, fmt.Errorf("%d bytes left after the frame", len(b))
	}
	return f, nil
}

// decSnapshotSetter reads the rare snapshot chunk or snapshot request
// (field f) through the native form.
func decSnapshotSetter(f decField) decSetter[Frame] {
	return func(b []byte, fr *Frame) ([]byte, error) {
		v, rest, err := f.node.native(b)
		if err != nil {
			return nil, fmt.Errorf("field %q: %w", f.name, err)
		}
		if s := UnwrapUnion(v); s != nil {
			sub, err := FrameFromNative(map[string]any{"xid": int64(0), "commit_lsn": int64(0), "end_lsn": int64(0),
				"commit_ts": time.Time{}, f.name: s, "event_count": int64(0), "partitions": []any{}})
			if err != nil {
				return nil, fmt.Errorf("field %q: %w", f.name, err)
			}
			if sub.Snapshot != nil {
				fr.Snapshot = sub.Snapshot
			}
			if sub.Request != nil {
				fr.Request = sub.Request
			}
		}
		return rest, nil
	}
}
