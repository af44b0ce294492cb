package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/schemas"
)

// message applies a logical decoding message that concerns the target: a
// captured schema change (with Config.ApplyDDL) and the source's sequence
// values. Both run in the apply transaction, at their place in it.
func (w *writer) message(ctx context.Context, ev *consumer.Event) error {
	switch ev.Message.Prefix {
	case schemas.DDLPrefix:
		if !w.s.cfg.ApplyDDL {
			return nil
		}
		if err := w.flush(ctx); err != nil {
			return err
		}
		w.infos = nil // the target's tables change
		return w.applyDDL(ctx, ev)
	case schemas.SequencesPrefix:
		return w.applySequences(ctx, ev)
	}
	return nil
}

// ddlStatements turns a captured change into the statements that make the
// target's table follow it. The statement text of the source is never run:
// it may hold other statements, data changes among them.
func ddlStatements(d schemas.DDL) []string {
	table := schemas.QuoteIdent(d.Schema) + "." + schemas.QuoteIdent(d.Table)
	q := schemas.QuoteIdent
	var out []string
	for _, c := range d.Changes {
		switch c.Op {
		case "create_table":
			var defs []string
			for _, col := range d.Columns {
				def := q(col.Name) + " " + col.Type
				if col.Default != "" {
					def += " DEFAULT " + col.Default
				}
				if col.NotNull {
					def += " NOT NULL"
				}
				defs = append(defs, def)
			}
			if len(d.PrimaryKey) > 0 {
				keys := make([]string, len(d.PrimaryKey))
				for i, k := range d.PrimaryKey {
					keys[i] = q(k)
				}
				defs = append(defs, "PRIMARY KEY ("+strings.Join(keys, ", ")+")")
			}
			out = append(out, "CREATE SCHEMA IF NOT EXISTS "+q(d.Schema), "CREATE TABLE IF NOT EXISTS "+table+" ("+strings.Join(defs, ", ")+")")
			for _, col := range d.Columns { // a table --create-tables made first
				out = append(out, "ALTER TABLE "+table+" ADD COLUMN IF NOT EXISTS "+q(col.Name)+" "+col.Type)
			}
		case "drop_table":
			out = append(out, "DROP TABLE IF EXISTS "+table)
		case "rename_table":
			if c.From != d.Table {
				out = append(out, "ALTER TABLE IF EXISTS "+q(c.FromSchema)+"."+q(c.From)+" RENAME TO "+q(d.Table))
			}
			if c.FromSchema != d.Schema {
				out = append(out, "ALTER TABLE IF EXISTS "+q(c.FromSchema)+"."+q(d.Table)+" SET SCHEMA "+q(d.Schema))
			}
		case "add_column":
			def := q(c.Column) + " " + c.Type
			if c.Default != "" {
				def += " DEFAULT " + c.Default
			}
			if c.NotNull {
				def += " NOT NULL"
			}
			out = append(out, "ALTER TABLE "+table+" ADD COLUMN IF NOT EXISTS "+def)
		case "drop_column":
			out = append(out, "ALTER TABLE "+table+" DROP COLUMN IF EXISTS "+q(c.Column))
		case "rename_column":
			out = append(out, "ALTER TABLE "+table+" RENAME COLUMN "+q(c.From)+" TO "+q(c.To))
		case "alter_column_type":
			out = append(out, "ALTER TABLE "+table+" ALTER COLUMN "+q(c.Column)+" TYPE "+c.Type+" USING "+q(c.Column)+"::"+c.Type)
		case "set_not_null":
			out = append(out, "ALTER TABLE "+table+" ALTER COLUMN "+q(c.Column)+" SET NOT NULL")
		case "drop_not_null":
			out = append(out, "ALTER TABLE "+table+" ALTER COLUMN "+q(c.Column)+" DROP NOT NULL")
		case "attach_partition":
			out = append(out, "ALTER TABLE "+table+" ATTACH PARTITION "+c.Partition+" "+c.Bound)
		case "detach_partition":
			out = append(out, "ALTER TABLE "+table+" DETACH PARTITION "+c.Partition)
		}
	}
	return out
}

// applyDDL runs a captured schema change at the target.
func (w *writer) applyDDL(ctx context.Context, ev *consumer.Event) error {
	d, err := schemas.ParseDDL(ev.Message.Content)
	if err != nil {
		return ev.Wrap(consumer.Permanent(err))
	}
	for _, stmt := range ddlStatements(d) {
		if _, err := w.tx.Exec(ctx, stmt); err != nil {
			return ev.Wrap(fmt.Errorf("apply the source's %s of %s.%s: %s: %w", d.Tag, d.Schema, d.Table, stmt, err))
		}
	}
	w.s.log.Info("schema change applied", "table", d.Schema+"."+d.Table, "tag", d.Tag, "changes", len(d.Changes),
		"commit_lsn", ev.Txn.CommitLSN)
	// The table's columns changed: check it again at its next schema.
	w.s.mu.Lock()
	clear(w.s.ensured)
	w.s.mu.Unlock()
	return nil
}

// applySequences moves each sequence of the target that the message names
// forward to the source's value, never back: nextval at the target then
// returns no value the source had used when it recorded them.
func (w *writer) applySequences(ctx context.Context, ev *consumer.Event) error {
	var seqs map[string]int64
	if err := json.Unmarshal(ev.Message.Content, &seqs); err != nil {
		return ev.Wrap(consumer.Permanent(fmt.Errorf("sequence values: %w", err)))
	}
	for name, v := range seqs {
		if _, err := w.tx.Exec(ctx, `SELECT pg_catalog.setval(c.oid, $2::bigint, true) FROM pg_catalog.pg_class c
			WHERE c.oid = pg_catalog.to_regclass($1) AND c.relkind = 'S'
			  AND coalesce(pg_catalog.pg_sequence_last_value(c.oid), $2::bigint - 1) < $2::bigint`, name, v); err != nil {
			return ev.Wrap(fmt.Errorf("advance sequence %s to %d: %w", name, v, err))
		}
	}
	return nil
}
