package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/linkedin/goavro/v2"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog"
)

// decoder turns records into events. Tables and compiled decoders are cached
// by schema ID; the registry caches schema texts. A decoder is used by one
// goroutine.
//
// Envelopes are decoded with schemas.DecoderEnvelope compiled from each
// record's writer schema; a writer schema it cannot compile
// (ErrDecoderUnsupported) is decoded with goavro into the same
// DecodedEnvelope, so every sink sees one row representation. Frames are
// decoded by a txlog.FrameDecoder, which does the same for frames.
type decoder struct {
	reg    *schemas.Registry
	tables map[int]*Table
	envs   map[int]*schemas.DecoderEnvelope // nil value: decode with goavro
	dbz    map[int]bool                     // the schema is the Debezium envelope (decoded with goavro)
	frames *txlog.FrameDecoder
	env    schemas.DecodedEnvelope // reused between events
}

func newDecoder(reg *schemas.Registry) *decoder {
	return &decoder{reg: reg, tables: map[int]*Table{}, envs: map[int]*schemas.DecoderEnvelope{},
		dbz: map[int]bool{}, frames: txlog.NewFrameDecoder(reg)}
}

// schema splits a wire-format value and fetches its writer schema. An
// unknown schema ID or a malformed header is permanent; a registry that
// cannot be reached is not.
func (d *decoder) schema(ctx context.Context, b []byte) (int, []byte, *goavro.Codec, string, error) {
	id, body, err := schemas.SplitWire(b)
	if err != nil {
		return 0, nil, nil, "", Permanent(err)
	}
	codec, raw, err := d.reg.CodecAndSchema(ctx, id)
	if err != nil {
		if schemas.IsUnknownSchema(err) {
			return id, nil, nil, "", Permanent(fmt.Errorf("unknown schema id %d: %w", id, err))
		}
		return id, nil, nil, "", err
	}
	return id, body, codec, raw, nil
}

// native decodes a wire-format value with goavro.
func (d *decoder) native(ctx context.Context, b []byte) (any, int, string, error) {
	id, body, codec, raw, err := d.schema(ctx, b)
	if err != nil {
		return nil, id, "", err
	}
	v, rest, err := codec.NativeFromBinary(body)
	if err != nil {
		return nil, id, "", Permanent(fmt.Errorf("schema id %d: cannot decode Avro: %w", id, err))
	}
	if len(rest) != 0 {
		return nil, id, "", Permanent(fmt.Errorf("schema id %d: %d bytes left after the Avro record", id, len(rest)))
	}
	return v, id, raw, nil
}

// frame decodes a record of the transactions topic through txlog, the one
// reader of the frame format. A malformed frame (bad wire format, unknown
// schema ID, bytes that do not match their schema) is permanent; a registry
// that cannot be reached is not.
func (d *decoder) frame(ctx context.Context, r *kgo.Record) (schemas.Frame, error) {
	f, err := d.frames.Decode(ctx, r)
	if errors.Is(err, txlog.ErrMalformed) {
		return f, Permanent(err)
	}
	return f, err
}

// latestTable returns the table of topic's latest value schema, or nil when
// the registry has no schema for the topic.
func (d *decoder) latestTable(ctx context.Context, topic, schema, name string) (*Table, error) {
	ss, err := d.reg.Client().SchemaByVersion(ctx, schemas.ValueSubject(topic), -1)
	if err != nil {
		if schemas.IsUnknownSchema(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("latest schema of %s: %w", topic, err)
	}
	if t := d.tables[ss.ID]; t != nil {
		return t, nil
	}
	t, err := tableFromSchema(ss.Schema.Schema, ss.ID, schema, name, topic)
	if err != nil {
		return nil, Permanent(fmt.Errorf("schema id %d: %w", ss.ID, err))
	}
	d.tables[ss.ID] = t
	return t, nil
}

// message decodes a record of the messages topic.
func (d *decoder) message(ctx context.Context, r *kgo.Record) (*Message, error) {
	v, _, _, err := d.native(ctx, r.Value)
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, Permanent(errors.New("message is not a record"))
	}
	msg := &Message{}
	msg.Prefix, _ = m["prefix"].(string)
	msg.Content, _ = m["content"].([]byte)
	msg.Transactional, _ = m["transactional"].(bool)
	return msg, nil
}

// envelope decodes a data record's value into d.env and returns its table.
func (d *decoder) envelope(ctx context.Context, r *kgo.Record) (*Table, error) {
	id, body, codec, raw, err := d.schema(ctx, r.Value)
	if err != nil {
		return nil, err
	}
	ed, ok := d.envs[id]
	if !ok {
		if d.dbz[id] = schemas.IsDebeziumEnvelope(raw); !d.dbz[id] {
			if ed, err = schemas.DecoderCompileEnvelope(raw); err != nil && !errors.Is(err, schemas.ErrDecoderUnsupported) {
				return nil, Permanent(fmt.Errorf("schema id %d: %w", id, err))
			}
		}
		d.envs[id] = ed
	}
	dbz := d.dbz[id]
	e := &d.env
	t := d.tables[id]
	if ed != nil {
		if err := ed.Decode(body, e); err != nil {
			return nil, Permanent(fmt.Errorf("schema id %d: cannot decode Avro: %w", id, err))
		}
	} else {
		v, rest, err := codec.NativeFromBinary(body)
		if err == nil && len(rest) != 0 {
			err = fmt.Errorf("%d bytes left after the Avro record", len(rest))
		}
		if err != nil {
			return nil, Permanent(fmt.Errorf("schema id %d: cannot decode Avro: %w", id, err))
		}
		if dbz {
			err = envelopeFromDebezium(v, e, r)
		} else {
			err = envelopeFromNative(v, e)
		}
		if err != nil {
			return nil, Permanent(fmt.Errorf("schema id %d: %w", id, err))
		}
	}
	if t == nil {
		if t, err = tableFromSchema(raw, id, e.Source.Schema, e.Source.Table, r.Topic); err != nil {
			return nil, Permanent(fmt.Errorf("schema id %d: %w", id, err))
		}
		if ed != nil {
			fields := ed.RowFields()
			if len(fields) != len(t.Columns) {
				return nil, Permanent(fmt.Errorf("schema id %d: %d row fields for %d columns", id, len(fields), len(t.Columns)))
			}
			for i, f := range fields {
				if t.Columns[i].Field != f {
					return nil, Permanent(fmt.Errorf("schema id %d: row field %d is %q, column %q", id, i, f, t.Columns[i].Field))
				}
			}
		}
		d.tables[id] = t
	}
	if ed == nil {
		// goavro's rows are maps: put them in column order.
		if e.Before, err = t.row(e.Before); err != nil {
			return nil, Permanent(fmt.Errorf("before: %w", err))
		}
		if e.After, err = t.row(e.After); err != nil {
			return nil, Permanent(fmt.Errorf("after: %w", err))
		}
	}
	if dbz && e.After != nil {
		// Unchanged TOAST columns hold the placeholder (or null): null, as
		// in Tributary's envelope; the event lists them as unchanged.
		for _, name := range e.UnchangedToast {
			if i := t.column(name); i >= 0 {
				e.After[i] = nil
			}
		}
	}
	t.readerValues(e.Before)
	t.readerValues(e.After)
	return t, nil
}

// readerValues turns the text-branch values of row (schemas/TYPES.md) into
// the natives their typed branch decodes to, where one holds the value, so
// that sinks and transforms see one form of each value whichever branch
// carried it (schemas.Codec.ReaderValue).
func (t *Table) readerValues(row []any) {
	for i, v := range row {
		if _, ok := v.(string); ok && t.Columns[i].reader != nil {
			row[i] = t.Columns[i].reader(v)
		}
	}
}

// envelopeRows fills e's op and row images from goavro's form of either
// envelope, leaving Before and After as the goavro row maps (one-element
// slices) for Table.row to order, and empties its unchanged TOAST list.
func envelopeRows(env map[string]any, e *schemas.DecodedEnvelope) {
	e.Op, _ = env["op"].(string)
	e.Before, e.After, e.UnchangedToast = nil, nil, e.UnchangedToast[:0]
	if b := schemas.UnwrapUnion(env["before"]); b != nil {
		e.Before = []any{b}
	}
	if a := schemas.UnwrapUnion(env["after"]); a != nil {
		e.After = []any{a}
	}
}

// envelopeFromNative fills e from goavro's form of an envelope, leaving
// Before and After as the goavro row maps (one-element slices) for
// Table.row to order.
func envelopeFromNative(v any, e *schemas.DecodedEnvelope) error {
	env, ok := v.(map[string]any)
	if !ok {
		return errors.New("value is not an envelope record")
	}
	envelopeRows(env, e)
	src, _ := env["source"].(map[string]any)
	e.Source = schemas.Source{}
	e.Source.Schema, _ = src["schema"].(string)
	e.Source.Table, _ = src["table"].(string)
	if n, ok := src["xid"].(int64); ok {
		e.Source.Xid = uint32(n)
	}
	if n, ok := src["commit_lsn"].(int64); ok {
		e.Source.CommitLSN = pglogrepl.LSN(n)
	}
	if n, ok := src["lsn"].(int64); ok {
		e.Source.LSN = pglogrepl.LSN(n)
	}
	e.Source.CommitTime, _ = src["commit_ts"].(time.Time)
	e.Source.Snapshot, _ = src["snapshot"].(bool)
	if o, ok := schemas.UnwrapUnion(src["origin"]).(string); ok {
		e.Source.Origin = o
	}
	ut, _ := env["unchanged_toast"].([]any)
	for _, n := range ut {
		name, _ := n.(string)
		e.UnchangedToast = append(e.UnchangedToast, name)
	}
	return nil
}

// envelopeFromDebezium fills e from goavro's form of a Debezium envelope
// (schemas.EnvelopeDebezium) and the headers of its record r: the commit
// LSN, which the envelope does not carry, and the unchanged TOAST columns.
func envelopeFromDebezium(v any, e *schemas.DecodedEnvelope, r *kgo.Record) error {
	env, ok := v.(map[string]any)
	if !ok {
		return errors.New("value is not an envelope record")
	}
	envelopeRows(env, e)
	src, ok := env["source"].(map[string]any)
	if !ok {
		return errors.New("Debezium envelope without a source record")
	}
	e.Source = schemas.Source{}
	e.Source.Version, _ = src["version"].(string)
	e.Source.Prefix, _ = src["name"].(string)
	e.Source.DB, _ = src["db"].(string)
	e.Source.Schema, _ = src["schema"].(string)
	e.Source.Table, _ = src["table"].(string)
	if n, ok := schemas.UnwrapUnion(src["txId"]).(int64); ok {
		e.Source.Xid = uint32(n)
	}
	if n, ok := schemas.UnwrapUnion(src["lsn"]).(int64); ok && e.Op != string(schemas.OpRead) {
		e.Source.LSN = pglogrepl.LSN(n) // a snapshot read's is the snapshot's, not a change's
	}
	if us, ok := schemas.UnwrapUnion(src["ts_us"]).(int64); ok {
		e.Source.CommitTime = time.UnixMicro(us).UTC()
	} else if ms, ok := src["ts_ms"].(int64); ok {
		e.Source.CommitTime = time.UnixMilli(ms).UTC()
	}
	if snap, ok := schemas.UnwrapUnion(src["snapshot"]).(string); ok {
		e.Source.Snapshot = snap != "" && snap != schemas.DebeziumSnapshotFalse
	}
	if o, ok := schemas.UnwrapUnion(src["origin"]).(string); ok {
		e.Source.Origin = o
	}
	lsn, ok := headerLSN(r)
	if !ok {
		return fmt.Errorf("Debezium envelope without a valid %s header", schemas.HeaderCommitLSN)
	}
	e.Source.CommitLSN = lsn
	for _, h := range r.Headers {
		if h.Key == schemas.HeaderUnchangedToast {
			if err := json.Unmarshal(h.Value, &e.UnchangedToast); err != nil {
				return fmt.Errorf("header %s: %w", schemas.HeaderUnchangedToast, err)
			}
		}
	}
	return nil
}

// event decodes a data record into ev (whose Txn and place are already set).
func (d *decoder) event(ctx context.Context, r *kgo.Record, ev *Event) error {
	t, err := d.envelope(ctx, r)
	if err != nil {
		return err
	}
	e := &d.env
	ev.Table = t
	if ev.Txn == nil {
		ev.Txn = txnFromSource(&e.Source)
	}
	ev.Op = schemas.Op(e.Op)
	switch ev.Op {
	case schemas.OpInsert, schemas.OpUpdate, schemas.OpDelete, schemas.OpRead, schemas.OpTruncate:
	default:
		return Permanent(fmt.Errorf("unknown op %q", e.Op))
	}
	ev.Before, ev.After = e.Before, e.After
	for _, name := range e.UnchangedToast {
		i := t.column(name)
		if i < 0 {
			return Permanent(fmt.Errorf("unchanged_toast names unknown column %q", name))
		}
		ev.Unchanged = append(ev.Unchanged, i)
	}
	switch ev.Op {
	case schemas.OpInsert, schemas.OpRead, schemas.OpUpdate:
		if ev.After == nil {
			return Permanent(fmt.Errorf("op %q without an after image", e.Op))
		}
	case schemas.OpDelete:
		if ev.Before == nil {
			return Permanent(errors.New("delete without a before image"))
		}
	}
	ev.LSN = e.Source.LSN
	for _, h := range r.Headers {
		switch h.Key {
		case schemas.HeaderSnapshot:
			ev.Pending = string(h.Value) == "pending"
		case schemas.HeaderTruncate:
			if len(h.Value) > 0 {
				ev.Truncate = strings.Split(string(h.Value), ",")
			}
		}
	}
	return nil
}

func (t *Table) column(name string) int {
	for i, c := range t.Columns {
		if c.Name == name {
			return i
		}
	}
	return -1
}

// row puts a goavro row record (the single entry of img, as
// envelopeFromNative leaves it) in column order.
func (t *Table) row(img []any) ([]any, error) {
	if img == nil {
		return nil, nil
	}
	v := img[0]
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("row is %T, not a record", v)
	}
	out := make([]any, len(t.Columns))
	for i, c := range t.Columns {
		out[i] = schemas.UnwrapUnion(m[c.Field])
	}
	return out, nil
}

// TableFromValueSchema builds the Table of an envelope value schema (raw, the
// registry's text of schema id) of schema.table on topic, as the consumer
// does for the events it decodes. Transforms use it to check their
// configuration against a table's latest schema at start-up.
func TableFromValueSchema(raw string, id int, schema, name, topic string) (*Table, error) {
	return tableFromSchema(raw, id, schema, name, topic)
}

// tableFromSchema reads the column attributes of the Row record inside an
// envelope value schema.
func tableFromSchema(raw string, id int, schema, name, topic string) (*Table, error) {
	var env map[string]any
	if err := json.Unmarshal([]byte(raw), &env); err != nil {
		return nil, fmt.Errorf("schema is not JSON: %w", err)
	}
	var row map[string]any
	fields, _ := env["fields"].([]any)
	for _, f := range fields {
		fm, _ := f.(map[string]any)
		if fm["name"] != "before" && fm["name"] != "after" {
			continue
		}
		if u, ok := fm["type"].([]any); ok {
			for _, b := range u {
				if bm, ok := b.(map[string]any); ok && bm["type"] == "record" {
					row = bm
				}
			}
		}
		if row != nil {
			break
		}
	}
	if row == nil {
		return nil, errors.New("not a Tributary envelope: no Row record in before or after")
	}
	t := &Table{Schema: schema, Name: name, Topic: topic, SchemaID: id}
	rfields, _ := row["fields"].([]any)
	for _, f := range rfields {
		fm, _ := f.(map[string]any)
		c := Column{}
		c.Field, _ = fm["name"].(string)
		c.Name, _ = fm[schemas.AttrColumn].(string)
		c.SQLType, _ = fm[schemas.AttrSQLType].(string)
		c.Key, _ = fm[schemas.AttrKey].(bool)
		if c.Name == "" {
			c.Name = c.Field
		}
		typ := avroTypedBranch(fm["type"])
		pt, typmod, err := pgTypeForAvro(typ)
		if err != nil {
			return nil, fmt.Errorf("column %q (%s): %w", c.Name, c.SQLType, err)
		}
		codec, err := schemas.MapType(pt, typmod, schemas.UnsupportedFail)
		if err != nil {
			return nil, fmt.Errorf("column %q (%s): %w", c.Name, c.SQLType, err)
		}
		c.Type, c.Typmod, c.Encode = pt, typmod, codec.Encode
		if codec.Text {
			c.reader = codec.ReaderValue
		}
		if c.Key {
			t.Key = append(t.Key, len(t.Columns))
		}
		t.Columns = append(t.Columns, c)
	}
	if len(t.Key) == 0 {
		return nil, fmt.Errorf("table %s: no column has %s", t, schemas.AttrKey)
	}
	return t, nil
}

// pgTypeForAvro finds the PostgreSQL type whose schemas.Codec has the Avro
// form avro, so that its Encode turns decoded values back into PostgreSQL
// text. The Avro form determines the conversion; the exact PostgreSQL type
// (varchar or text, int2 or int4) only matters to the target column, which
// parses the text.
func pgTypeForAvro(avro any) (schemas.PGType, int32, error) {
	base := func(oid uint32, name string) (schemas.PGType, int32, error) {
		return schemas.PGType{OID: oid, Name: name, Kind: schemas.KindBase}, -1, nil
	}
	switch v := avro.(type) {
	case string:
		switch v {
		case "boolean":
			return base(pgtype.BoolOID, "bool")
		case "int":
			return base(pgtype.Int4OID, "int4")
		case "long":
			return base(pgtype.Int8OID, "int8")
		case "float":
			return base(pgtype.Float4OID, "float4")
		case "double":
			return base(pgtype.Float8OID, "float8")
		case "string":
			return base(pgtype.TextOID, "text")
		case "bytes":
			return base(pgtype.ByteaOID, "bytea")
		case schemas.TypeIntervalRecordName:
			return base(pgtype.IntervalOID, "interval")
		}
	case map[string]any:
		typ, _ := v["type"].(string)
		lt, _ := v["logicalType"].(string)
		switch {
		case typ == "bytes" && lt == "decimal":
			p, s := jsonInt(v["precision"]), jsonInt(v["scale"])
			t, _, _ := base(pgtype.NumericOID, "numeric")
			return t, int32((p<<16)|s) + 4, nil
		case typ == "int" && lt == "date":
			return base(pgtype.DateOID, "date")
		case typ == "long" && lt == "time-micros":
			return base(pgtype.TimeOID, "time")
		case typ == "long" && lt == "timestamp-micros":
			return base(pgtype.TimestamptzOID, "timestamptz")
		case typ == "long" && lt == "local-timestamp-micros":
			return base(pgtype.TimestampOID, "timestamp")
		case typ == "string" && lt == "uuid":
			return base(pgtype.UUIDOID, "uuid")
		case typ == "string" && v["tributary.numeric"] == true:
			return base(pgtype.NumericOID, "numeric")
		case typ == "record" && (v["name"] == schemas.TypeIntervalRecordName || v["name"] == "Interval"):
			return base(pgtype.IntervalOID, "interval")
		case typ == "array":
			et, typmod, err := pgTypeForAvro(avroTypedBranch(v["items"]))
			if err != nil {
				return et, 0, err
			}
			return schemas.PGType{Name: "_" + et.Name, Kind: schemas.KindArray, Elem: &et}, typmod, nil
		case lt == "" && typ != "":
			return pgTypeForAvro(typ)
		}
	}
	b, _ := json.Marshal(avro)
	return schemas.PGType{}, 0, fmt.Errorf("no PostgreSQL conversion for Avro type %s", b)
}

// avroTypedBranch is the typed member of a field's union: the first one that
// is not "null". A value of the text branch that may follow it (TYPES.md)
// decodes to a Go string, which the typed member's Codec.Encode takes as
// the value's exact text form.
func avroTypedBranch(typ any) any {
	if u, ok := typ.([]any); ok {
		for _, b := range u {
			if b != "null" {
				return b
			}
		}
	}
	return typ
}

func jsonInt(v any) int {
	switch n := v.(type) {
	case float64:
		return int(n)
	case int:
		return n
	}
	return 0
}

// headerLSN and headerInt read the decimal headers of a data record.
func headerInt(r *kgo.Record, key string) (int64, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			n, ok := parseDecimal(h.Value)
			return int64(n), ok
		}
	}
	return 0, false
}

// parseDecimal is strconv.ParseUint(string(b), 10, 64) without the string,
// which escapes into ParseUint's error: it ran for every data record.
func parseDecimal(b []byte) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (math.MaxUint64-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

func headerLSN(r *kgo.Record) (pglogrepl.LSN, bool) {
	n, ok := headerInt(r, schemas.HeaderCommitLSN)
	return pglogrepl.LSN(n), ok
}

// txnFromSource builds the Txn of a record read without its frame (per-key
// mode) from the envelope's source block.
func txnFromSource(src *schemas.Source) *Txn {
	return &Txn{Offset: -1, Xid: src.Xid, CommitLSN: src.CommitLSN, CommitTime: src.CommitTime,
		Snapshot: src.Snapshot, Origin: src.Origin}
}
