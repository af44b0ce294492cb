package producer

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/tributary-cdc/tributary/schemas"
)

// Schema changes in WAL order. PostgreSQL's logical decoding carries no DDL:
// pgoutput describes a table's new columns with its next change, and says
// nothing of a rename, a dropped table or an attached partition. An event
// trigger that `tributary setup ddl` installs fills the gap: at the end of
// each CREATE TABLE, ALTER TABLE and DROP TABLE it writes a transactional
// logical decoding message (prefix schemas.DDLPrefix) describing the change, so the
// change sits in the stream exactly between the data before it and after it
// (pgstream captures DDL the same way; Debezium's connector does not).
//
// The trigger keeps each table's columns by attribute number in the table
// tributary.schema_log, so that it tells a renamed column (same attnum, new
// name) from a dropped and an added one, and a retyped column from a new
// one. The message is structured (schemas.DDL); sinks apply it without
// replaying the statement text, which may hold other statements too.

// InternalSchema holds DDL capture's objects (tributary setup ddl). The
// producer never captures its tables.
const InternalSchema = "tributary"

// DDLCaptureSQL is the SQL that installs DDL capture in schema (the
// schema_log table, the functions and the event triggers) and records every
// existing table; running it again replaces the functions and keeps the
// log. Event triggers need a superuser.
func DDLCaptureSQL(schema string) string {
	s := quoteIdent(schema)
	return strings.NewReplacer("@S@", s, "@LITS@", quoteLiteral(schema)).Replace(ddlCaptureSQL)
}

const ddlCaptureSQL = `CREATE SCHEMA IF NOT EXISTS @S@;

-- Each table's columns by attribute number, as of its last captured change.
CREATE TABLE IF NOT EXISTS @S@.schema_log (
    relid       oid PRIMARY KEY,
    schema_name text NOT NULL,
    table_name  text NOT NULL,
    columns     jsonb NOT NULL,
    partitions  jsonb NOT NULL DEFAULT '[]'
);

CREATE OR REPLACE FUNCTION @S@.ddl_columns(rel oid) RETURNS jsonb LANGUAGE sql STABLE AS $f$
    SELECT coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object('attnum', a.attnum, 'name', a.attname,
               'type', pg_catalog.format_type(a.atttypid, a.atttypmod), 'not_null', a.attnotnull,
               'default', pg_catalog.pg_get_expr(d.adbin, d.adrelid))) ORDER BY a.attnum), '[]')
    FROM pg_catalog.pg_attribute a
    LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.attgenerated = ''
    WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
$f$;

CREATE OR REPLACE FUNCTION @S@.ddl_partitions(rel oid) RETURNS jsonb LANGUAGE sql STABLE AS $f$
    SELECT coalesce(jsonb_agg(i.inhrelid::regclass::text ORDER BY i.inhrelid::regclass::text), '[]')
    FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhparent
    WHERE i.inhparent = rel AND c.relkind = 'p'
$f$;

CREATE OR REPLACE FUNCTION @S@.ddl_primary_key(rel oid) RETURNS jsonb LANGUAGE sql STABLE AS $f$
    SELECT coalesce(jsonb_agg(a.attname ORDER BY k.n), '[]')
    FROM pg_catalog.pg_index i
    CROSS JOIN LATERAL unnest((i.indkey::int2[])[0:i.indnkeyatts - 1]) WITH ORDINALITY AS k(attnum, n)
    JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = rel AND i.indisprimary
$f$;

CREATE OR REPLACE FUNCTION @S@.capture_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $f$
DECLARE
    r record;
    prev @S@.schema_log;
    cols jsonb;
    parts jsonb;
    changes jsonb;
    c jsonb;
    p jsonb;
    v text;
BEGIN
    -- The tables the command changed, and the partitioned tables that
    -- gained a partition it created.
    FOR r IN WITH cmd AS (
                 SELECT d.objid, d.command_tag FROM pg_catalog.pg_event_trigger_ddl_commands() d
                 WHERE d.classid = 'pg_catalog.pg_class'::regclass
             ), rel AS (
                 SELECT objid, command_tag FROM cmd
                 UNION SELECT i.inhparent, 'ALTER TABLE' FROM cmd JOIN pg_catalog.pg_inherits i ON i.inhrelid = cmd.objid
             )
             SELECT DISTINCT rel.objid, rel.command_tag, n.nspname, c.relname
             FROM rel
             JOIN pg_catalog.pg_class c ON c.oid = rel.objid
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p' AND n.nspname <> @LITS@
             ORDER BY rel.command_tag DESC
    LOOP
        cols := @S@.ddl_columns(r.objid);
        parts := @S@.ddl_partitions(r.objid);
        SELECT * INTO prev FROM @S@.schema_log WHERE relid = r.objid;
        changes := '[]';
        IF prev.relid IS NULL THEN
            changes := jsonb_build_array(jsonb_build_object('op', 'create_table'));
        ELSE
            IF prev.schema_name <> r.nspname OR prev.table_name <> r.relname THEN
                changes := changes || jsonb_build_object('op', 'rename_table',
                    'from_schema', prev.schema_name, 'from', prev.table_name, 'to', r.relname);
            END IF;
            FOR p IN SELECT value FROM jsonb_array_elements(prev.columns) LOOP
                IF NOT EXISTS (SELECT 1 FROM jsonb_array_elements(cols) x WHERE x.value->'attnum' = p->'attnum') THEN
                    changes := changes || jsonb_build_object('op', 'drop_column', 'column', p->>'name');
                END IF;
            END LOOP;
            FOR c IN SELECT value FROM jsonb_array_elements(cols) LOOP
                SELECT x.value INTO p FROM jsonb_array_elements(prev.columns) x WHERE x.value->'attnum' = c->'attnum';
                IF p IS NULL THEN
                    changes := changes || jsonb_strip_nulls(jsonb_build_object('op', 'add_column', 'column', c->>'name',
                        'type', c->>'type', 'not_null', (c->>'not_null')::boolean, 'default', c->>'default'));
                    CONTINUE;
                END IF;
                IF p->>'name' <> c->>'name' THEN
                    changes := changes || jsonb_build_object('op', 'rename_column', 'from', p->>'name', 'to', c->>'name');
                END IF;
                IF p->>'type' <> c->>'type' THEN
                    changes := changes || jsonb_build_object('op', 'alter_column_type', 'column', c->>'name', 'type', c->>'type');
                END IF;
                IF p->>'not_null' <> c->>'not_null' THEN
                    changes := changes || jsonb_build_object('op',
                        CASE WHEN (c->>'not_null')::boolean THEN 'set_not_null' ELSE 'drop_not_null' END, 'column', c->>'name');
                END IF;
            END LOOP;
            FOR v IN SELECT value FROM jsonb_array_elements_text(parts) EXCEPT SELECT value FROM jsonb_array_elements_text(prev.partitions) LOOP
                changes := changes || jsonb_build_object('op', 'attach_partition', 'partition', v,
                    'bound', (SELECT pg_catalog.pg_get_expr(c.relpartbound, c.oid) FROM pg_catalog.pg_class c WHERE c.oid = v::regclass));
            END LOOP;
            FOR v IN SELECT value FROM jsonb_array_elements_text(prev.partitions) EXCEPT SELECT value FROM jsonb_array_elements_text(parts) LOOP
                changes := changes || jsonb_build_object('op', 'detach_partition', 'partition', v);
            END LOOP;
        END IF;
        IF jsonb_array_length(changes) > 0 THEN
            PERFORM pg_catalog.pg_logical_emit_message(true, 'tributary.ddl', jsonb_build_object(
                'relid', r.objid::bigint, 'schema', r.nspname, 'table', r.relname, 'tag', r.command_tag,
                'changes', changes, 'columns', cols, 'primary_key', @S@.ddl_primary_key(r.objid),
                'statement', left(current_query(), 10000))::text);
        END IF;
        INSERT INTO @S@.schema_log AS l VALUES (r.objid, r.nspname, r.relname, cols, parts)
        ON CONFLICT (relid) DO UPDATE SET schema_name = EXCLUDED.schema_name, table_name = EXCLUDED.table_name,
            columns = EXCLUDED.columns, partitions = EXCLUDED.partitions;
    END LOOP;
END
$f$;

CREATE OR REPLACE FUNCTION @S@.capture_drop() RETURNS event_trigger LANGUAGE plpgsql AS $f$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT l.* FROM pg_catalog.pg_event_trigger_dropped_objects() o
             JOIN @S@.schema_log l ON l.relid = o.objid
             WHERE o.classid = 'pg_catalog.pg_class'::regclass AND o.objsubid = 0
    LOOP
        PERFORM pg_catalog.pg_logical_emit_message(true, 'tributary.ddl', jsonb_build_object(
            'relid', r.relid::bigint, 'schema', r.schema_name, 'table', r.table_name, 'tag', 'DROP TABLE',
            'changes', jsonb_build_array(jsonb_build_object('op', 'drop_table')),
            'statement', left(current_query(), 10000))::text);
        DELETE FROM @S@.schema_log WHERE relid = r.relid;
    END LOOP;
END
$f$;

DROP EVENT TRIGGER IF EXISTS tributary_capture_ddl;
CREATE EVENT TRIGGER tributary_capture_ddl ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE')
    EXECUTE FUNCTION @S@.capture_ddl();
DROP EVENT TRIGGER IF EXISTS tributary_capture_drop;
CREATE EVENT TRIGGER tributary_capture_drop ON sql_drop
    WHEN TAG IN ('DROP TABLE')
    EXECUTE FUNCTION @S@.capture_drop();

-- The tables as they are now.
INSERT INTO @S@.schema_log
SELECT c.oid, n.nspname, c.relname, @S@.ddl_columns(c.oid), @S@.ddl_partitions(c.oid)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', @LITS@) AND n.nspname NOT LIKE 'pg\_%'
ON CONFLICT (relid) DO NOTHING;
`

// sequences returns the last value of every sequence that a published
// table owns (serial and identity columns), by name.
func (s *session) sequences(ctx context.Context) (map[string]int64, error) {
	rows, err := s.db.Query(ctx, `
		SELECT d.objid::regclass::text, pg_catalog.pg_sequence_last_value(d.objid)
		FROM pg_catalog.pg_depend d
		JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
		JOIN pg_catalog.pg_class t ON t.oid = d.refobjid
		JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
		JOIN pg_catalog.pg_publication_tables pt ON pt.pubname = $1 AND pt.schemaname = n.nspname AND pt.tablename = t.relname
		WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
		  AND d.deptype IN ('a', 'i')`, s.cfg.Publication)
	if err != nil {
		return nil, fmt.Errorf("sequences of the published tables: %w", err)
	}
	out := map[string]int64{}
	for rows.Next() {
		var name string
		var v *int64
		if err := rows.Scan(&name, &v); err != nil {
			rows.Close()
			return nil, err
		}
		if v != nil { // NULL: never called
			out[name] = *v
		}
	}
	return out, rows.Err()
}

// recordSequences writes the published tables' sequence values into the
// WAL as a schemas.SequencesPrefix message when any moved since the last one, so
// that targets advance their sequences past every value the source used
// (native logical replication before PostgreSQL 19 does not).
func (s *session) recordSequences(ctx context.Context) error {
	seqs, err := s.sequences(ctx)
	if err != nil || len(seqs) == 0 {
		return err
	}
	changed := false
	for n, v := range seqs {
		if s.lastSeqs[n] != v {
			changed = true
		}
	}
	if !changed {
		return nil
	}
	b, err := json.Marshal(seqs)
	if err != nil {
		return err
	}
	if _, err := s.db.Exec(ctx, `SELECT pg_catalog.pg_logical_emit_message(true, $1, $2::text)`, schemas.SequencesPrefix, string(b)); err != nil {
		return fmt.Errorf("record sequence values: %w", err)
	}
	s.lastSeqs = seqs
	return nil
}
