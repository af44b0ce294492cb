package schemas

import (
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/tributary-cdc/tributary/schemas/internal/avrobin"
)

// DecoderSchema is an Avro binary decoder compiled once from one writer
// schema. Its Native returns exactly the values goavro's NativeFromBinary
// returns for the same schema and bytes (records as map[string]any, non-null
// union values as a one-entry map keyed by goavro's branch name, logical
// types as time.Time, time.Duration and *big.Rat), so that anything written
// against goavro's forms keeps working; DecoderEnvelope and DecoderFrame read
// the two records the consumer reads on its hot path without building maps.
//
// A DecoderSchema is immutable and safe for concurrent use. Decoded []byte
// values alias the input, as goavro's do.
type DecoderSchema struct {
	root *avrobin.Node
}

// ErrDecoderUnsupported is wrapped by DecoderCompile's error for a schema
// construct the compiled decoder does not implement; callers then decode
// with goavro.
var ErrDecoderUnsupported = avrobin.ErrUnsupported

// DecoderCompile compiles the Avro JSON schema text of a writer schema.
func DecoderCompile(schema string) (*DecoderSchema, error) {
	root, err := avrobin.Compile(schema)
	if err != nil {
		return nil, err
	}
	return &DecoderSchema{root: root}, nil
}

// Native decodes one value of the schema from b, returning it in goavro's
// native form and the bytes after it.
func (d *DecoderSchema) Native(b []byte) (any, []byte, error) {
	return d.root.Native(b)
}

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
	fields    []avrobin.Setter[DecodedEnvelope]
	rowFields []string
	zero      []func(*DecodedEnvelope) // clear what the writer schema lacks
}

// envelopeZero clears each field of DecodedEnvelope that Decode fills,
// keyed by its path in the envelope schema.
var envelopeZero = map[string]func(*DecodedEnvelope){
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

// DecoderCompileEnvelope compiles the writer schema text of an envelope
// (a data topic's value schema). Fields it does not know are decoded and
// ignored; fields it knows with an unexpected type are an error at decode
// time. An error wrapping ErrDecoderUnsupported means the schema uses a
// construct only goavro decodes.
func DecoderCompileEnvelope(schema string) (*DecoderEnvelope, error) {
	root, err := compileRecord(schema, "envelope")
	if err != nil {
		return nil, err
	}
	d := &DecoderEnvelope{}
	for _, f := range root.Fields {
		var set avrobin.Setter[DecodedEnvelope]
		switch f.Name {
		case "op":
			set = avrobin.SetString(f, func(e *DecodedEnvelope) *string { return &e.Op })
		case "before", "after":
			row := rowNode(f.Node)
			if row == nil {
				return nil, fmt.Errorf("envelope field %q is not a nullable record", f.Name)
			}
			names := make([]string, len(row.Fields))
			for i, rf := range row.Fields {
				names[i] = rf.Name
			}
			if d.rowFields == nil {
				d.rowFields = names
			} else if fmt.Sprint(names) != fmt.Sprint(d.rowFields) {
				return nil, errors.New("envelope before and after have different row records")
			}
			set = rowSetter(f, f.Name == "before")
		case "source":
			src, err := avrobin.SetRecord(f, sourceSetter)
			if err != nil {
				return nil, err
			}
			set = func(b []byte, e *DecodedEnvelope) ([]byte, error) { return src(b, &e.Source) }
		case "tx":
			tx, err := avrobin.SetRecord(f, func(tf avrobin.Field) avrobin.Setter[DecodedEnvelope] {
				switch tf.Name {
				case "id":
					return avrobin.SetString(tf, func(e *DecodedEnvelope) *string { return &e.TxID })
				case "position":
					return avrobin.SetLong(tf, func(e *DecodedEnvelope) *int64 { return &e.TxPosition })
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
			set = tx
		case "unchanged_toast":
			set = avrobin.SetStrings(f, func(e *DecodedEnvelope) *[]string { return &e.UnchangedToast })
		default:
			set = avrobin.Skip[DecodedEnvelope](f)
		}
		d.fields = append(d.fields, set)
	}
	if d.rowFields == nil {
		return nil, errors.New("not a Tributary envelope: no Row record in before or after")
	}
	present := map[string]bool{}
	for _, f := range root.Fields {
		present[f.Name] = true
		if (f.Name == "source" || f.Name == "tx") && f.Node.Kind == avrobin.KindRecord {
			for _, sf := range f.Node.Fields {
				present[f.Name+"."+sf.Name] = true
			}
		}
	}
	for path, z := range envelopeZero {
		if !present[path] {
			d.zero = append(d.zero, z)
		}
	}
	return d, nil
}

// compileRecord compiles a writer schema whose root must be a record.
func compileRecord(schema, what string) (*avrobin.Node, error) {
	root, err := avrobin.Compile(schema)
	if err != nil {
		return nil, err
	}
	if root.Kind != avrobin.KindRecord {
		return nil, fmt.Errorf("%s schema is not a record", what)
	}
	return root, nil
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

// rowNode returns the Row record of a before or after field: the record
// itself or the record member of a union.
func rowNode(n *avrobin.Node) *avrobin.Node {
	if n.Kind == avrobin.KindRecord {
		return n
	}
	if n.Kind != avrobin.KindUnion {
		return nil
	}
	var rec *avrobin.Node
	for _, b := range n.Branches {
		switch b.Kind {
		case avrobin.KindRecord:
			rec = b
		case avrobin.KindNull:
		default:
			return nil
		}
	}
	return rec
}

// rowSetter decodes a before or after field into the envelope's row image,
// one unwrapped value a column.
func rowSetter(f avrobin.Field, before bool) avrobin.Setter[DecodedEnvelope] {
	return func(b []byte, e *DecodedEnvelope) ([]byte, error) {
		rec := f.Node
		if rec.Kind == avrobin.KindUnion {
			i, rest, err := avrobin.ReadLong(b)
			if err != nil {
				return nil, fmt.Errorf("field %q: %w", f.Name, err)
			}
			if i < 0 || i >= int64(len(rec.Branches)) {
				return nil, fmt.Errorf("field %q: union index %d out of range", f.Name, i)
			}
			b, rec = rest, rec.Branches[i]
			if rec.Kind == avrobin.KindNull {
				return b, nil
			}
		}
		row := make([]any, len(rec.Fields))
		for j, rf := range rec.Fields {
			v, rest, err := columnNative(rf.Node, b)
			if err != nil {
				return nil, fmt.Errorf("field %q column %q: %w", f.Name, rf.Name, err)
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

// columnNative decodes one column value with its union unwrapped.
func columnNative(n *avrobin.Node, b []byte) (any, []byte, error) {
	if n.Kind != avrobin.KindUnion {
		return n.Native(b)
	}
	i, b, err := avrobin.ReadLong(b)
	if err != nil {
		return nil, nil, err
	}
	if i < 0 || i >= int64(len(n.Branches)) {
		return nil, nil, fmt.Errorf("union index %d out of range", i)
	}
	return n.Branches[i].Native(b)
}

// sourceSetter picks the setter of a field of the envelope's source record.
func sourceSetter(f avrobin.Field) avrobin.Setter[Source] {
	switch f.Name {
	case "version":
		return avrobin.SetString(f, func(s *Source) *string { return &s.Version })
	case "prefix":
		return avrobin.SetString(f, func(s *Source) *string { return &s.Prefix })
	case "db":
		return avrobin.SetString(f, func(s *Source) *string { return &s.DB })
	case "schema":
		return avrobin.SetString(f, func(s *Source) *string { return &s.Schema })
	case "table":
		return avrobin.SetString(f, func(s *Source) *string { return &s.Table })
	case "origin":
		return avrobin.SetString(f, func(s *Source) *string { return &s.Origin })
	case "lsn":
		return avrobin.SetLong(f, func(s *Source) *pglogrepl.LSN { return &s.LSN })
	case "commit_lsn":
		return avrobin.SetLong(f, func(s *Source) *pglogrepl.LSN { return &s.CommitLSN })
	case "xid":
		return avrobin.SetLong(f, func(s *Source) *uint32 { return &s.Xid })
	case "commit_ts":
		return avrobin.SetTime(f, func(s *Source) *time.Time { return &s.CommitTime })
	case "snapshot":
		return avrobin.SetBool(f, func(s *Source) *bool { return &s.Snapshot })
	}
	return nil
}

// DecoderFrame decodes the commit frames of one writer schema of the
// transactions topic straight into a Frame. It is immutable and safe for
// concurrent use.
type DecoderFrame struct {
	fields []avrobin.Setter[Frame]
}

// DecoderCompileFrame compiles the writer schema text of a frame.
func DecoderCompileFrame(schema string) (*DecoderFrame, error) {
	root, err := compileRecord(schema, "frame")
	if err != nil {
		return nil, err
	}
	d := &DecoderFrame{}
	for _, f := range root.Fields {
		var set avrobin.Setter[Frame]
		switch f.Name {
		case "xid":
			set = avrobin.SetLong(f, func(fr *Frame) *uint32 { return &fr.Xid })
		case "commit_lsn":
			set = avrobin.SetLong(f, func(fr *Frame) *pglogrepl.LSN { return &fr.CommitLSN })
		case "end_lsn":
			set = avrobin.SetLong(f, func(fr *Frame) *pglogrepl.LSN { return &fr.EndLSN })
		case "commit_ts":
			set = avrobin.SetTime(f, func(fr *Frame) *time.Time { return &fr.CommitTime })
		case "origin":
			set = avrobin.SetString(f, func(fr *Frame) *string { return &fr.Origin })
		case "event_count":
			set = avrobin.SetLong(f, func(fr *Frame) *int64 { return &fr.Events })
		case "snapshot", "snapshot_request":
			set = snapshotSetter(f)
		case "partitions":
			if f.Node.Kind != avrobin.KindArray || f.Node.Elem.Kind != avrobin.KindRecord {
				return nil, errors.New("frame field \"partitions\" is not an array of records")
			}
			pc, err := avrobin.SetRecord(avrobin.Field{Name: "partitions", Node: f.Node.Elem}, func(pf avrobin.Field) avrobin.Setter[PartitionCount] {
				switch pf.Name {
				case "topic":
					return avrobin.SetString(pf, func(p *PartitionCount) *string { return &p.Topic })
				case "partition":
					return avrobin.SetLong(pf, func(p *PartitionCount) *int32 { return &p.Partition })
				case "count":
					return avrobin.SetLong(pf, func(p *PartitionCount) *int64 { return &p.Count })
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
			set = func(b []byte, fr *Frame) ([]byte, error) {
				for {
					cnt, rest, err := avrobin.ReadBlockCount(b)
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
			set = avrobin.Skip[Frame](f)
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

// snapshotSetter reads the rare snapshot chunk or snapshot request
// (field f) through the native form.
func snapshotSetter(f avrobin.Field) avrobin.Setter[Frame] {
	return func(b []byte, fr *Frame) ([]byte, error) {
		v, rest, err := f.Node.Native(b)
		if err != nil {
			return nil, fmt.Errorf("field %q: %w", f.Name, err)
		}
		if s := UnwrapUnion(v); s != nil {
			sub, err := FrameFromNative(map[string]any{"xid": int64(0), "commit_lsn": int64(0), "end_lsn": int64(0),
				"commit_ts": time.Time{}, f.Name: s, "event_count": int64(0), "partitions": []any{}})
			if err != nil {
				return nil, fmt.Errorf("field %q: %w", f.Name, err)
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
