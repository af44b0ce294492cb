package verify

import (
	"context"
	"fmt"
	"strings"

	"github.com/tributary-cdc/tributary/schemas"
)

// historyLayout maps a table to the history sink's table of it (see
// docs/SINKS.md): <schema>.<table>_history, in the --history-schema when one
// is set, holding every version of every row.
type historyLayout struct {
	schema string // --history-schema; "" means the table's own schema
}

// table names the history table of schema.name.
func (h *historyLayout) table(schema, name string) (string, string) {
	if h.schema != "" {
		schema = h.schema
	}
	return schema, name + "_history"
}

// current is the predicate, on alias a, of a key's current version: the
// open one (valid_to NULL) that is not a delete or truncate record. The sink
// closes delete and truncate records at once, so the op test only matters
// when the history is damaged.
func (h *historyLayout) current(a string) string {
	return a + ".valid_to IS NULL AND " + a + ".op NOT IN ('d', 't')"
}

// NewHistoryTarget connects to the database of a history sink (--sink
// history). Each source table is compared with the current versions of its
// history table; historySchema is the consumer's --history-schema ("" means
// each source table's schema). Its snapshots also check the history's own
// invariants when Config.CheckInvariants is set.
func NewHistoryTarget(ctx context.Context, dsn, consumer, checkpointSchema, historySchema string) (Target, error) {
	t, err := NewPostgresTarget(ctx, dsn, consumer, checkpointSchema)
	if err != nil {
		return nil, err
	}
	p := t.(*postgresTarget)
	p.hist = &historyLayout{schema: historySchema}
	p.desc += " (history)"
	return p, nil
}

// Invariants checks the whole history table of t in the snapshot: per key,
// versions are 1..n in (commit_lsn, position) order (a break is reported at
// the version after it), every version but the
// last is closed no later than the next one opens, no range ends before it
// starts, and delete and truncate records are closed at once. It returns the
// number of violating rows and up to max of them, described.
func (s *pgSnapshot) Invariants(ctx context.Context, t *TableDef, max int) (int64, []string, error) {
	if s.hist == nil {
		return 0, nil, nil
	}
	keys := make([]string, len(t.Key))
	keyTexts := make([]string, len(t.Key))
	for i, c := range t.Key {
		keys[i] = "h." + schemas.QuoteIdent(c.Name)
		keyTexts[i] = "'" + strings.ReplaceAll(c.Name, "'", "''") + "=' || coalesce(" + keys[i] + "::text, 'NULL')"
	}
	keyDesc := strings.Join(keyTexts, " || ', ' || ")
	part := strings.Join(keys, ", ")
	q := `SELECT x.k, x.version, x.op, x.problem, count(*) OVER () FROM (
	SELECT y.*, CASE
		WHEN y.prev IS NULL AND y.version <> 1 THEN 'the first version is ' || y.version || ', not 1 (a gap, a duplicate or out of order)'
		WHEN y.version <> y.prev + 1 THEN 'version ' || y.version || ' follows version ' || y.prev || ' (a gap, a duplicate or out of order)'
		WHEN y.valid_to < y.valid_from THEN 'valid_to is before valid_from'
		WHEN y.op IN ('d', 't') AND y.valid_to IS DISTINCT FROM y.valid_from THEN 'a ' || y.op || ' record is not closed at once'
		WHEN y.next_from IS NOT NULL AND y.valid_to IS NULL THEN 'not the last version, but still open'
		WHEN y.next_from IS NOT NULL AND y.valid_to > y.next_from THEN 'overlaps the next version'
		END AS problem
	FROM (SELECT ` + keyDesc + ` AS k, h.version, h.op, h.valid_from, h.valid_to, h.commit_lsn, h.position,
		lag(h.version) OVER w AS prev, lead(h.valid_from) OVER w AS next_from
		FROM ` + qualified(t) + ` h
		WINDOW w AS (PARTITION BY ` + part + ` ORDER BY h.commit_lsn, h.position)) y
) x WHERE x.problem IS NOT NULL ORDER BY x.k, x.commit_lsn, x.position LIMIT $1`
	rows, err := s.tx.Query(ctx, q, max+1)
	if err != nil {
		return 0, nil, fmt.Errorf("%s: check the history invariants of %s: %w", s.role, t, err)
	}
	defer rows.Close()
	var n int64
	var out []string
	for rows.Next() {
		var k, op, problem string
		var version int64
		if err := rows.Scan(&k, &version, &op, &problem, &n); err != nil {
			return 0, nil, fmt.Errorf("%s: check the history invariants of %s: %w", s.role, t, err)
		}
		if len(out) < max {
			out = append(out, fmt.Sprintf("%s version %d (op %s): %s", k, version, op, problem))
		}
	}
	if err := rows.Err(); err != nil {
		return 0, nil, fmt.Errorf("%s: check the history invariants of %s: %w", s.role, t, err)
	}
	return n, out, nil
}
