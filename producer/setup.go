package producer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tributary-cdc/tributary/internal/retry"
)

// ErrNoReplicaIdentity reports published tables whose updates and deletes
// cannot be keyed.
var ErrNoReplicaIdentity = errors.New("published table has no replica identity")

// ensurePublication creates the publication when it is missing, and checks
// that every requested table is in it and every published table can be keyed.
// It returns the published tables as schema.table. A publication that lacks
// a requested table, has none, or has one that cannot be keyed is a
// terminal error: a person must change it.
func ensurePublication(ctx context.Context, conn *pgx.Conn, name string, specs []TableSpec, log *slog.Logger) ([]string, error) {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1)`, name).Scan(&exists); err != nil {
		return nil, fmt.Errorf("publication %s: %w", name, err)
	}
	if !exists {
		target := "FOR ALL TABLES"
		if len(specs) > 0 {
			parts := make([]string, len(specs))
			for i, s := range specs {
				parts[i] = s.String()
			}
			target = "FOR TABLE " + strings.Join(parts, ", ")
		}
		sql := "CREATE PUBLICATION " + quoteIdent(name) + " " + target
		if _, err := conn.Exec(ctx, sql); err != nil {
			return nil, fmt.Errorf("create publication: %s: %w", sql, err)
		}
		log.Info("created publication", "publication", name, "sql", sql)
	}
	rows, err := conn.Query(ctx, `
		SELECT pt.schemaname, pt.tablename, c.relreplident::text,
		       EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
		FROM pg_catalog.pg_publication_tables pt
		JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
		JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
		WHERE pt.pubname = $1
		ORDER BY 1, 2`, name)
	if err != nil {
		return nil, fmt.Errorf("tables of publication %s: %w", name, err)
	}
	published := map[string]bool{}
	var tables []string
	var keyless []string
	for rows.Next() {
		var schema, table, ident string
		var hasPK bool
		if err := rows.Scan(&schema, &table, &ident, &hasPK); err != nil {
			rows.Close()
			return nil, err
		}
		full := schema + "." + table
		published[full] = true
		tables = append(tables, full)
		if ident == "n" || (ident == "d" && !hasPK) {
			keyless = append(keyless, fmt.Sprintf("%s (fix: ALTER TABLE %s.%s REPLICA IDENTITY USING INDEX <unique index>, or add a primary key, or REPLICA IDENTITY FULL)",
				full, quoteIdent(schema), quoteIdent(table)))
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("tables of publication %s: %w", name, err)
	}
	var missing []string
	for _, s := range specs {
		if !published[s.Schema+"."+s.Name] {
			missing = append(missing, s.Schema+"."+s.Name)
		}
	}
	if len(missing) > 0 {
		return nil, retry.Terminal(fmt.Errorf("publication %s does not include %s; add with ALTER PUBLICATION %s ADD TABLE %s",
			name, strings.Join(missing, ", "), quoteIdent(name), strings.Join(missing, ", ")))
	}
	if len(keyless) > 0 {
		return nil, retry.Terminal(fmt.Errorf("%w: %s", ErrNoReplicaIdentity, strings.Join(keyless, "; ")))
	}
	if len(tables) == 0 {
		return nil, retry.Terminal(fmt.Errorf("publication %s has no tables", name))
	}
	return tables, nil
}

// slotInfo is what pg_replication_slots says about the producer's slot.
type slotInfo struct {
	exists    bool
	active    bool
	activePID *int32
	plugin    string
	database  string
	confirmed *string
}

func readSlot(ctx context.Context, conn *pgx.Conn, slot string) (slotInfo, error) {
	var si slotInfo
	err := conn.QueryRow(ctx, `SELECT true, active, active_pid, plugin, database, confirmed_flush_lsn::text
		FROM pg_catalog.pg_replication_slots WHERE slot_name = $1`, slot).
		Scan(&si.exists, &si.active, &si.activePID, &si.plugin, &si.database, &si.confirmed)
	if errors.Is(err, pgx.ErrNoRows) {
		return slotInfo{}, nil
	}
	if err != nil {
		return si, fmt.Errorf("slot %s: %w", slot, err)
	}
	return si, nil
}
