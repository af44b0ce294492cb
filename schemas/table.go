package schemas

import (
	"errors"
	"fmt"
	"strings"

	"github.com/linkedin/goavro/v2"
)

// ErrNoReplicationKey reports a published table without a primary key or a
// usable replica identity: its rows cannot be keyed, updated or deleted
// downstream.
var ErrNoReplicationKey = errors.New("table has no replication key")

// Column is one published column, as the pgoutput Relation message and the
// catalog describe it.
type Column struct {
	Name    string // PostgreSQL column name, exactly
	Type    PGType
	Typmod  int32
	SQLType string // format_type(atttypid, atttypmod), e.g. "numeric(10,2)"
	Key     bool   // part of the replication key (replica identity)
	// Nullable is true when the column has no NOT NULL constraint. It only
	// matters for key columns: the key record's field of a nullable key
	// column (REPLICA IDENTITY FULL keys by every column) is nullable.
	Nullable bool
}

// Table is one published table at one point of the stream.
type Table struct {
	Schema  string
	Name    string
	Columns []Column
}

// QualifiedName is schema.table with both parts quoted as SQL identifiers.
func (t Table) QualifiedName() string { return QuoteIdent(t.Schema) + "." + QuoteIdent(t.Name) }

// String is schema.table, unquoted, for messages and logs.
func (t Table) String() string { return t.Schema + "." + t.Name }

// QuoteIdent quotes a PostgreSQL identifier, doubling embedded quotes.
func QuoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// TableSchema is everything needed to encode one table version's events: the
// Avro key and value schemas, their codecs, and a type codec per column.
// It is immutable once built and safe for concurrent use.
type TableSchema struct {
	Table       Table
	Topic       string
	Fields      []string // Avro field name per column, in column order
	Codecs      []Codec  // type codec per column, in column order
	Branches    []string // goavro union branch name per column's typed branch
	KeyColumns  []int    // indexes into Table.Columns of the key, in column order
	RowName     string   // full name of the row record (union branch for before/after)
	KeySchema   string
	ValueSchema string
	KeyCodec    *goavro.Codec
	ValueCodec  *goavro.Codec
	// Envelope is the shape of ValueSchema (and the name of KeySchema's
	// record): EnvelopeTributary or EnvelopeDebezium.
	Envelope Envelope
}

// Attribute names that carry PostgreSQL facts in Avro field definitions.
const (
	AttrColumn  = "tributary.column"   // original column name
	AttrSQLType = "tributary.sql_type" // format_type of the column
	AttrKey     = "tributary.key"      // true on replication-key columns
)

// BuildTableSchema derives the key and value schemas of a table version.
// A table with no key column fails with ErrNoReplicationKey, and the error
// names the fix. A column type without a mapping fails under UnsupportedFail.
func BuildTableSchema(prefix string, t Table, policy UnsupportedPolicy) (*TableSchema, error) {
	return BuildTableSchemaEnvelope(prefix, t, policy, EnvelopeTributary)
}

// BuildTableSchemaEnvelope is BuildTableSchema for the value envelope env:
// the columns, their codecs and the key's fields are the same for every
// envelope; EnvelopeDebezium shapes the value as Debezium's PostgreSQL
// connector does (debezium.go) and names the key record as it does.
func BuildTableSchemaEnvelope(prefix string, t Table, policy UnsupportedPolicy, env Envelope) (*TableSchema, error) {
	switch env {
	case EnvelopeTributary, EnvelopeDebezium:
	default:
		return nil, fmt.Errorf("unknown envelope %q", env)
	}
	ts := &TableSchema{Table: t, Topic: TopicName(prefix, t.Schema, t.Name), Envelope: env}
	names := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		names[i] = c.Name
	}
	ts.Fields = uniqueAvroNames(names)
	ns := "tributary." + avroName(prefix) + "." + avroName(t.Schema) + "." + avroName(t.Name)
	ts.RowName = ns + ".Row"

	rowFields := make([]any, 0, len(t.Columns))
	keyFields := make([]any, 0, 1)
	for i, c := range t.Columns {
		codec, err := MapType(c.Type, c.Typmod, policy)
		if err != nil {
			return nil, fmt.Errorf("table %s column %q (%s): %w", t, c.Name, c.SQLType, err)
		}
		ts.Codecs = append(ts.Codecs, codec)
		ts.Branches = append(ts.Branches, TypeUnionBranch(codec.Avro))
		attrs := func(f map[string]any) map[string]any {
			f[AttrColumn] = c.Name
			f[AttrSQLType] = c.SQLType
			if c.Key {
				f[AttrKey] = true
			}
			return f
		}
		rowFields = append(rowFields, attrs(map[string]any{
			"name":    ts.Fields[i],
			"type":    codec.Field(),
			"default": nil,
		}))
		if c.Key {
			ts.KeyColumns = append(ts.KeyColumns, i)
			keyFields = append(keyFields, attrs(map[string]any{"name": ts.Fields[i], "type": codec.KeyField(c.Nullable)}))
		}
	}
	if len(ts.KeyColumns) == 0 {
		return nil, fmt.Errorf("%w: %s has no primary key and no usable replica identity; "+
			"add a primary key, or run ALTER TABLE %s REPLICA IDENTITY USING INDEX <unique index> "+
			"(or REPLICA IDENTITY FULL, which keys by every column)", ErrNoReplicationKey, t, t.QualifiedName())
	}

	var key, value any
	if env == EnvelopeDebezium {
		key, value = debeziumSchemas(ts, prefix, rowFields, keyFields)
	} else {
		row := map[string]any{"type": "record", "name": "Row", "namespace": ns, "fields": rowFields}
		key = AvroNamedTypesOnce(map[string]any{"type": "record", "name": "Key", "namespace": ns, "fields": keyFields})
		envelope := deepCopy(fixedRecords["Envelope"]).(map[string]any)
		envelope["namespace"] = ns
		value = AvroNamedTypesOnce(inlineNamed(envelope, map[string]any{"Row": row}, map[string]bool{}))
	}

	ts.KeySchema = mustJSON(key)
	ts.ValueSchema = mustJSON(value)
	var err error
	if ts.KeyCodec, err = goavro.NewCodec(ts.KeySchema); err != nil {
		return nil, fmt.Errorf("table %s: key schema: %w", t, err)
	}
	if ts.ValueCodec, err = goavro.NewCodec(ts.ValueSchema); err != nil {
		return nil, fmt.Errorf("table %s: value schema: %w", t, err)
	}
	return ts, nil
}

// Union wraps a non-null native value (what the column's Codec.Decode
// returns) for the nullable field of column i in the row record.
func (ts *TableSchema) Union(i int, v any) any {
	if v == nil {
		return nil
	}
	return goavro.Union(ts.Codecs[i].Branch(v), v)
}

// KeyUnion wraps a native value (nil for NULL) for the field of key column i
// in the key record: as is when that field is not a union.
func (ts *TableSchema) KeyUnion(i int, v any) any {
	if !ts.Table.Columns[i].Nullable && !ts.Codecs[i].Text || v == nil {
		return v
	}
	return goavro.Union(ts.Codecs[i].Branch(v), v)
}

// UnwrapUnion returns the value inside a decoded goavro union value (a map
// with one entry, keyed by the branch name), or nil for null. Call it only on
// values of union-typed fields.
func UnwrapUnion(v any) any {
	if m, ok := v.(map[string]any); ok && len(m) == 1 {
		for _, x := range m {
			return x
		}
	}
	return v
}
