package schemas

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/tributary-cdc/tributary/schemas/internal/avrobin"
)

// Envelope is the shape of a data record's value.
type Envelope string

// The envelopes a producer writes (--envelope).
const (
	// EnvelopeTributary is Tributary's own envelope (avro/envelope.avsc).
	EnvelopeTributary Envelope = "tributary"
	// EnvelopeDebezium is the value as Debezium's PostgreSQL connector
	// shapes it (docs/CONSUMING.md, "Debezium envelope").
	EnvelopeDebezium Envelope = "debezium"
)

// ParseEnvelope reads an --envelope value; "" is EnvelopeTributary.
func ParseEnvelope(s string) (Envelope, error) {
	switch Envelope(s) {
	case "", EnvelopeTributary:
		return EnvelopeTributary, nil
	case EnvelopeDebezium:
		return EnvelopeDebezium, nil
	}
	return "", fmt.Errorf("envelope %q: want tributary or debezium", s)
}

// Names and values of the Debezium envelope, as Debezium 3.x's PostgreSQL
// connector writes them (io.debezium.schema.SchemaFactory,
// PostgresSourceInfoStructMaker) and Confluent's AvroConverter translates
// them to Avro.
const (
	DebeziumConnector  = "postgresql"
	DebeziumSourceName = "io.debezium.connector.postgresql.Source"
	// DebeziumBlockName is the Connect name of the transaction block,
	// Avro record "block" in namespace "event".
	DebeziumBlockName = "event.block"
	// DebeziumToastPlaceholder is unavailable.value.placeholder's default.
	DebeziumToastPlaceholder = "__debezium_unavailable_value"
	// debeziumSnapshotAllowed are the values of io.debezium.data.Enum
	// source.snapshot: SnapshotRecord's constants, lower case.
	debeziumSnapshotAllowed = "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"
)

// Values of source.snapshot the producer writes.
const (
	DebeziumSnapshotFalse       = "false"       // a change from the stream
	DebeziumSnapshotTrue        = "true"        // a row read by the initial snapshot
	DebeziumSnapshotIncremental = "incremental" // a row read by an online snapshot
)

// HeaderUnchangedToast is on Debezium-envelope records whose after image has
// columns with an unchanged TOASTed value: a JSON array of their names.
// Those columns hold the TOAST placeholder (or null, for types it cannot
// be written in), which Tributary's consumer replaces by the value it has.
const HeaderUnchangedToast = "tributary.unchanged_toast"

// DebeziumNamespace is the Avro namespace of a table's Debezium records:
// "<prefix>.<schema>.<table>", each part made a valid Avro name.
func DebeziumNamespace(prefix, schema, table string) string {
	return avroName(prefix) + "." + avroName(schema) + "." + avroName(table)
}

func nullable(t any) []any { return []any{"null", t} }

func optionalField(name string, t any) map[string]any {
	return map[string]any{"name": name, "type": nullable(t), "default": nil}
}

func requiredField(name string, t any) map[string]any {
	return map[string]any{"name": name, "type": t}
}

// DebeziumSourceSchema is the Avro schema of the source block: Debezium's
// io.debezium.connector.postgresql.Source as AvroConverter writes it
// (optional fields are ["null", T] with default null; the optional
// snapshot enum with default "false" is [string, "null"]).
func DebeziumSourceSchema() map[string]any {
	return map[string]any{
		"type": "record", "name": "Source", "namespace": "io.debezium.connector.postgresql",
		"fields": []any{
			requiredField("version", "string"),
			requiredField("connector", "string"),
			requiredField("name", "string"),
			requiredField("ts_ms", "long"),
			map[string]any{"name": "snapshot", "type": []any{map[string]any{
				"type": "string", "connect.version": 1, "connect.parameters": map[string]any{"allowed": debeziumSnapshotAllowed},
				"connect.default": "false", "connect.name": "io.debezium.data.Enum",
			}, "null"}, "default": "false"},
			requiredField("db", "string"),
			optionalField("sequence", "string"),
			optionalField("ts_us", "long"),
			optionalField("ts_ns", "long"),
			requiredField("schema", "string"),
			requiredField("table", "string"),
			optionalField("txId", "long"),
			optionalField("lsn", "long"),
			optionalField("xmin", "long"),
			optionalField("origin", "string"),
			optionalField("origin_lsn", "long"),
		},
		"connect.version": 1, "connect.name": DebeziumSourceName,
	}
}

// debeziumBlockSchema is the transaction block (Connect "event.block").
func debeziumBlockSchema() map[string]any {
	return map[string]any{
		"type": "record", "name": "block", "namespace": "event",
		"fields": []any{
			requiredField("id", "string"),
			requiredField("total_order", "long"),
			requiredField("data_collection_order", "long"),
		},
		"connect.version": 1, "connect.name": DebeziumBlockName,
	}
}

// debeziumSchemas builds the key and value schemas of ts in the Debezium
// shape from the row and key fields BuildTableSchemaEnvelope derived.
func debeziumSchemas(ts *TableSchema, prefix string, rowFields, keyFields []any) (key, value any) {
	ns := DebeziumNamespace(prefix, ts.Table.Schema, ts.Table.Name)
	ts.RowName = ns + ".Value"
	row := map[string]any{"type": "record", "name": "Value", "namespace": ns, "fields": rowFields, "connect.name": ns + ".Value"}
	env := map[string]any{
		"type": "record", "name": "Envelope", "namespace": ns,
		"fields": []any{
			optionalField("before", row),
			optionalField("after", ns+".Value"),
			requiredField("source", DebeziumSourceSchema()),
			optionalField("transaction", debeziumBlockSchema()),
			requiredField("op", "string"),
			optionalField("ts_ms", "long"),
			optionalField("ts_us", "long"),
			optionalField("ts_ns", "long"),
		},
		"connect.version": 2, "connect.name": ns + ".Envelope",
	}
	key = AvroNamedTypesOnce(map[string]any{"type": "record", "name": "Key", "namespace": ns, "fields": keyFields, "connect.name": ns + ".Key"})
	return key, AvroNamedTypesOnce(env)
}

// IsDebeziumEnvelope reports whether raw, a data topic's value schema, is
// the Debezium envelope: a record whose source field is Debezium's
// PostgreSQL Source record.
func IsDebeziumEnvelope(raw string) bool {
	var env struct {
		Fields []struct {
			Name string          `json:"name"`
			Type json.RawMessage `json:"type"`
		} `json:"fields"`
	}
	if json.Unmarshal([]byte(raw), &env) != nil {
		return false
	}
	for _, f := range env.Fields {
		if f.Name != "source" {
			continue
		}
		var src struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		}
		if json.Unmarshal(f.Type, &src) != nil {
			return false
		}
		return src.Name == DebeziumSourceName || src.Namespace+"."+src.Name == DebeziumSourceName
	}
	return false
}

// DebeziumSourceHead holds the per-table parts of the Debezium source block,
// already encoded.
type DebeziumSourceHead struct {
	head        []byte // version, connector, name
	db          []byte
	schemaTable []byte
}

// NewDebeziumSourceHead encodes the per-table parts of the source block.
func NewDebeziumSourceHead(version, prefix, db, schema, table string) *DebeziumSourceHead {
	h := &DebeziumSourceHead{}
	h.head = avrobin.AppendString(avrobin.AppendString(avrobin.AppendString(nil, version), DebeziumConnector), prefix)
	h.db = avrobin.AppendString(nil, db)
	h.schemaTable = avrobin.AppendString(avrobin.AppendString(nil, schema), table)
	return h
}

// DebeziumEvent is what a Debezium envelope has beyond EncoderEvent.
type DebeziumEvent struct {
	Head *DebeziumSourceHead
	// Snapshot is source.snapshot: DebeziumSnapshotFalse, ...True or
	// ...Incremental.
	Snapshot string
	// LastCommit is the end LSN of the source transaction before this one
	// (sequence[0]); 0 writes null.
	LastCommit pglogrepl.LSN
	// TotalOrder and CollectionOrder are the transaction block's 1-based
	// orders; TotalOrder 0 writes a null block (snapshot reads).
	TotalOrder, CollectionOrder int64
	// Now is the envelope's ts_ms/ts_us/ts_ns: when the producer wrote it.
	Now time.Time
}

// debeziumToast is how an unchanged TOAST column is written in an after
// image of the Debezium envelope.
type debeziumToast int8

const (
	toastNull        debeziumToast = iota // null
	toastString                           // the placeholder as a string
	toastBytes                            // the placeholder's bytes
	toastStringArray                      // a one-element array of the placeholder
)

// debeziumToastKind is the placeholder form of a column with typed branch
// avro: the string, bytes and string-array forms Debezium writes; every
// other type gets null.
func debeziumToastKind(c Codec) debeziumToast {
	plainString := func(a any) bool {
		switch v := a.(type) {
		case string:
			return v == "string"
		case map[string]any:
			lt, _ := v["logicalType"].(string)
			return v["type"] == "string" && lt == ""
		}
		return false
	}
	if plainString(c.Avro) {
		return toastString
	}
	switch v := c.Avro.(type) {
	case string:
		if v == "bytes" {
			return toastBytes
		}
	case map[string]any:
		if v["type"] == "bytes" && v["logicalType"] == nil {
			return toastBytes
		}
		if v["type"] == "array" {
			if items, ok := v["items"].([]any); ok && len(items) == 2 && items[0] == "null" && plainString(items[1]) {
				return toastStringArray
			}
		}
	}
	return toastNull
}

// WithToastPlaceholder returns a copy of e that writes Debezium envelopes
// (AppendDebeziumValue) with placeholder p for unchanged TOAST values.
func (e *Encoder) WithToastPlaceholder(p string) *Encoder {
	c := *e
	c.placeholder = []byte(p)
	c.toast = make([]debeziumToast, len(e.ts.Codecs))
	for i, codec := range e.ts.Codecs {
		c.toast[i] = debeziumToastKind(codec)
	}
	return &c
}

// UnchangedToastHeader is the HeaderUnchangedToast value of after image t,
// or nil when no column of it is unchanged TOAST.
func (e *Encoder) UnchangedToastHeader(t *pglogrepl.TupleData) []byte {
	if t == nil {
		return nil
	}
	var names []string
	for i, c := range t.Columns {
		if c.DataType == pglogrepl.TupleDataTypeToast && i < len(e.ts.Table.Columns) {
			names = append(names, e.ts.Table.Columns[i].Name)
		}
	}
	if names == nil {
		return nil
	}
	b, _ := json.Marshal(names)
	return b
}

// AppendDebeziumValue appends the Avro binary of ev's Debezium envelope
// (without the wire format header) to dst: what goavro writes for the
// table's EnvelopeDebezium ValueSchema. Unchanged TOAST columns of After
// hold the placeholder in its form for the column's type (see
// WithToastPlaceholder), or null.
func (e *Encoder) AppendDebeziumValue(dst []byte, ev *EncoderEvent) ([]byte, error) {
	d := ev.Debezium
	if d == nil || d.Head == nil {
		return dst, fmt.Errorf("no Debezium event data")
	}
	var err error
	if dst, err = e.appendRowUnion(dst, ev.Before, false); err != nil {
		return dst, err
	}
	if dst, err = e.appendRowUnion(dst, ev.After, true); err != nil {
		return dst, err
	}
	tx := ev.Tx
	// source
	dst = append(dst, d.Head.head...)
	dst = avrobin.AppendLong(dst, tx.commitTime.UnixMilli())
	dst = avrobin.AppendString(append(dst, 0), d.Snapshot) // [string, null]: branch 0
	dst = append(dst, d.Head.db...)
	lsn := ev.LSN
	if lsn == 0 && d.Snapshot == DebeziumSnapshotTrue {
		lsn = tx.commitLSN + 1 // the initial snapshot's consistent point (see Frame.InitialChunk)
	}
	seq := make([]byte, 0, 48)
	seq = append(seq, '[')
	if d.LastCommit != 0 {
		seq = strconv.AppendQuote(seq, strconv.FormatUint(uint64(d.LastCommit), 10))
	} else {
		seq = append(seq, "null"...)
	}
	seq = append(seq, ',')
	if lsn != 0 {
		seq = strconv.AppendQuote(seq, strconv.FormatUint(uint64(lsn), 10))
	} else {
		seq = append(seq, "null"...)
	}
	seq = append(seq, ']')
	dst = avrobin.AppendBytes(append(dst, 2), seq)
	dst = avrobin.AppendLong(append(dst, 2), avrobin.MicrosFromTime(tx.commitTime))
	dst = avrobin.AppendLong(append(dst, 2), tx.commitTime.UnixNano())
	dst = append(dst, d.Head.schemaTable...)
	if tx.xid != 0 {
		dst = avrobin.AppendLong(append(dst, 2), int64(tx.xid))
	} else {
		dst = append(dst, 0)
	}
	if lsn != 0 {
		dst = avrobin.AppendLong(append(dst, 2), int64(lsn))
	} else {
		dst = append(dst, 0)
	}
	dst = append(dst, 0) // xmin
	dst = append(dst, tx.sourceTail...)
	if tx.originLSN != 0 {
		dst = avrobin.AppendLong(append(dst, 2), int64(tx.originLSN))
	} else {
		dst = append(dst, 0)
	}
	// transaction
	if d.TotalOrder > 0 {
		dst = append(dst, 2)
		dst = avrobin.AppendString(dst, strconv.FormatUint(uint64(tx.xid), 10)+":"+strconv.FormatUint(uint64(ev.LSN), 10))
		dst = avrobin.AppendLong(dst, d.TotalOrder)
		dst = avrobin.AppendLong(dst, d.CollectionOrder)
	} else {
		dst = append(dst, 0)
	}
	dst = avrobin.AppendString(dst, string(ev.Op))
	dst = avrobin.AppendLong(append(dst, 2), d.Now.UnixMilli())
	dst = avrobin.AppendLong(append(dst, 2), avrobin.MicrosFromTime(d.Now))
	dst = avrobin.AppendLong(append(dst, 2), d.Now.UnixNano())
	return dst, nil
}

// appendToastPlaceholder appends column i's placeholder, union index
// included, for an unchanged TOAST value of a Debezium after image.
func (e *Encoder) appendToastPlaceholder(dst []byte, i int) []byte {
	if e.toast == nil {
		return append(dst, 0)
	}
	switch e.toast[i] {
	case toastString, toastBytes:
		return avrobin.AppendBytes(append(dst, 2), e.placeholder)
	case toastStringArray:
		dst = append(dst, 2, 2, 2) // typed branch; a block of one item; item's string branch
		return append(avrobin.AppendBytes(dst, e.placeholder), 0)
	}
	return append(dst, 0)
}
