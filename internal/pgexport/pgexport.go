// Package pgexport is the one implementation of a logical replication slot's
// exported snapshot: the slot is created on a replication connection with
// EXPORT_SNAPSHOT, and ordinary connections import the snapshot with SET
// TRANSACTION SNAPSHOT. The snapshot sees exactly the commits before the
// slot's consistent point, and the slot streams exactly those after it, so
// a copy read in it and the stream from the slot neither overlap nor leave a
// gap. The producer's initial snapshot (its own slot) and tributary reseed
// (a temporary slot at the donor) both take their snapshot through it.
package pgexport

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Options say how CreateSlot creates the slot.
type Options struct {
	// Export exports the slot's snapshot. It can be imported while repl
	// stays idle: the next command on repl, or closing it, ends the export
	// (an imported snapshot lives on in the transactions that imported it).
	Export bool
	// Temporary makes a slot that PostgreSQL drops when repl closes.
	Temporary bool
}

// Slot is a logical replication slot that CreateSlot created.
type Slot struct {
	Name string
	// ConsistentPoint is where the slot starts streaming: the snapshot sees
	// every commit before it and none at or after it.
	ConsistentPoint pglogrepl.LSN
	// Snapshot is the exported snapshot's name; "" unless Options.Export.
	Snapshot string
}

// CreateSlot creates the pgoutput slot name on the replication connection
// repl (a connection with replication=database).
func CreateSlot(ctx context.Context, repl *pgconn.PgConn, name string, o Options) (Slot, error) {
	action := "NOEXPORT_SNAPSHOT"
	if o.Export {
		action = "EXPORT_SNAPSHOT"
	}
	res, err := pglogrepl.CreateReplicationSlot(ctx, repl, name, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Temporary: o.Temporary, Mode: pglogrepl.LogicalReplication, SnapshotAction: action})
	if err != nil {
		return Slot{}, fmt.Errorf("create replication slot %s: %w", name, err)
	}
	cp, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return Slot{}, fmt.Errorf("create replication slot %s: consistent point %q: %w", name, res.ConsistentPoint, err)
	}
	s := Slot{Name: name, ConsistentPoint: cp}
	if o.Export {
		s.Snapshot = res.SnapshotName
	}
	return s, nil
}

// Import begins on conn a REPEATABLE READ, READ ONLY transaction that sees
// the exported snapshot. On error nothing is left open on conn.
func Import(ctx context.Context, conn *pgx.Conn, snapshot string) (pgx.Tx, error) {
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("import snapshot %s: begin: %w", snapshot, err)
	}
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+strings.ReplaceAll(snapshot, "'", "''")+"'"); err != nil {
		tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // the import's error is the one to report
		return nil, fmt.Errorf("import snapshot %s: %w", snapshot, err)
	}
	return tx, nil
}
