package pgtarget

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/schemas"
)

// CheckpointTable is the quoted name of the tributary_checkpoint table in
// schema, where every PostgreSQL sink keeps its consumers' checkpoints.
func CheckpointTable(schema string) string {
	return schemas.QuoteIdent(schema) + "." + schemas.QuoteIdent("tributary_checkpoint")
}

// Querier is what ReadCheckpoints reads through: a *pgx.Conn, a pgx.Tx or a
// pool.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// ReadCheckpoints reads the rows of the tributary_checkpoint table in schema
// through q: those of consumer name, or of every consumer when name is "",
// ordered by consumer, kind, topic and partition; and the database's clock
// at the read (now(), the start of q's transaction), against which the rows'
// AppliedAt are ages. A missing table is an error wrapping
// consumer.ErrNoCheckpointTable; the table is looked up before it is read, so a
// transaction that must go on (a snapshot) is not aborted by it.
//
// It is the one reader of the table besides the sink's own compare-and-set
// in Checkpoints.Write: the consumer resuming (Checkpoints.Read), verify,
// status and reseed all read through it.
func ReadCheckpoints(ctx context.Context, q Querier, schema, name string) ([]consumer.CheckpointRow, time.Time, error) {
	table := CheckpointTable(schema)
	var exists bool
	var now time.Time
	if err := q.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL, now()`, table).Scan(&exists, &now); err != nil {
		return nil, now, fmt.Errorf("look for %s: %w", table, err)
	}
	if !exists {
		return nil, now, fmt.Errorf("%w %s", consumer.ErrNoCheckpointTable, table)
	}
	rows, err := q.Query(ctx, `SELECT consumer, kind, topic, partition, next_offset, coalesce(commit_lsn::text, ''), commit_ts, applied_at
		FROM `+table+` WHERE $1 = '' OR consumer = $1 ORDER BY consumer, kind, topic, partition`, name)
	if err != nil {
		return nil, now, fmt.Errorf("read checkpoints from %s: %w", table, err)
	}
	defer rows.Close()
	var out []consumer.CheckpointRow
	for rows.Next() {
		var r consumer.CheckpointRow
		var kind, lsn string
		var ts *time.Time
		if err := rows.Scan(&r.Consumer, &kind, &r.Stream.Topic, &r.Stream.Partition, &r.Next, &lsn, &ts, &r.AppliedAt); err != nil {
			return nil, now, fmt.Errorf("read checkpoints from %s: %w", table, err)
		}
		r.Stream.Kind = consumer.StreamKind(kind)
		if lsn != "" {
			if r.CommitLSN, err = pglogrepl.ParseLSN(lsn); err != nil {
				return nil, now, fmt.Errorf("read checkpoints from %s: consumer %s commit_lsn %q: %w", table, r.Consumer, lsn, err)
			}
		}
		if ts != nil {
			r.CommitTime = *ts
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, now, fmt.Errorf("read checkpoints from %s: %w", table, err)
	}
	return out, now, nil
}
