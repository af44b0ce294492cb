package schemas

import (
	"encoding/json"
	"fmt"
)

// Schema changes and sequence values travel as logical decoding messages on
// <prefix>.messages, at their place in their source transaction: the
// producer writes sequence values, and the event triggers that `tributary
// setup ddl` installs write the DDL (see package producer, ddl.go).

// DDLPrefix is the logical decoding message prefix of captured DDL. The
// producer passes these messages on to <prefix>.messages like any other;
// consumers apply them (consumer --apply-ddl).
const DDLPrefix = "tributary.ddl"

// SequencesPrefix is the logical decoding message prefix of the sequence
// values the producer records, periodically and after schema changes: a
// JSON object of the last value of each sequence that a published table
// owns, by its qualified name.
const SequencesPrefix = "tributary.sequences"

// DDL is the content of a DDLPrefix message: one table's change.
type DDL struct {
	RelID  uint32 `json:"relid"`
	Schema string `json:"schema"`
	Table  string `json:"table"`
	Tag    string `json:"tag"` // the command tag: CREATE TABLE, ALTER TABLE, DROP TABLE...
	// Changes, in the order to apply them.
	Changes []DDLChange `json:"changes"`
	// Columns are the table's columns after the change, in attnum order.
	Columns []DDLColumn `json:"columns,omitempty"`
	// PrimaryKey names the primary key's columns after the change.
	PrimaryKey []string `json:"primary_key,omitempty"`
	// Statement is the source's statement text (current_query()), for
	// logs only: it may hold other statements too.
	Statement string `json:"statement,omitempty"`
}

// DDLChange is one change of a table.
type DDLChange struct {
	// Op is create_table, drop_table, rename_table, add_column,
	// drop_column, rename_column, alter_column_type, set_not_null,
	// drop_not_null, attach_partition or detach_partition.
	Op string `json:"op"`
	// Column is the column added, dropped, retyped or whose NOT NULL
	// changed; From and To a renamed column's or table's old and new
	// names, and FromSchema a renamed table's old schema (its new one is
	// DDL.Schema); Partition the partition attached or detached
	// (schema-qualified, quoted as regclass prints it).
	Column     string `json:"column,omitempty"`
	From       string `json:"from,omitempty"`
	FromSchema string `json:"from_schema,omitempty"`
	To         string `json:"to,omitempty"`
	Type       string `json:"type,omitempty"` // format_type of an added or retyped column
	NotNull    bool   `json:"not_null,omitempty"`
	Default    string `json:"default,omitempty"` // an added column's default expression
	Partition  string `json:"partition,omitempty"`
	Bound      string `json:"bound,omitempty"` // an attached partition's bound (FOR VALUES ...)
}

// DDLColumn is one column after a change.
type DDLColumn struct {
	AttNum  int    `json:"attnum"`
	Name    string `json:"name"`
	Type    string `json:"type"`
	NotNull bool   `json:"not_null"`
	Default string `json:"default,omitempty"`
}

// ParseDDL parses the content of a DDLPrefix message.
func ParseDDL(content []byte) (DDL, error) {
	var d DDL
	if err := json.Unmarshal(content, &d); err != nil {
		return d, fmt.Errorf("DDL message: %w", err)
	}
	return d, nil
}
