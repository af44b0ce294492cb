package pgtarget

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// CreateOrigin creates the replication origin name when it is missing. The
// apply role needs superuser, or EXECUTE on pg_replication_origin_create,
// pg_replication_origin_session_setup, pg_replication_origin_session_reset
// and pg_replication_origin_xact_setup.
func CreateOrigin(ctx context.Context, c *pgx.Conn, name string) error {
	_, err := c.Exec(ctx, `SELECT pg_replication_origin_create($1)
		WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1)`, name)
	if err != nil {
		return fmt.Errorf("create replication origin %q (the apply role needs superuser or EXECUTE on "+
			"pg_replication_origin_create): %w", name, err)
	}
	return nil
}

// OriginSessionSetup makes every later transaction of c carry the
// replication origin name, until OriginSessionReset. An origin that another
// backend still holds (a killed consumer whose session has not ended yet) is
// a transient error.
func OriginSessionSetup(ctx context.Context, c *pgx.Conn, name string) error {
	_, err := c.Exec(ctx, `SELECT pg_replication_origin_session_setup($1)`, name)
	if err == nil {
		return nil
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "55006" { // object_in_use: another session holds it
		return fmt.Errorf("replication origin %q is in use by another session (a second consumer with this origin, "+
			"or a killed one whose session has not ended): %w", name, err)
	}
	return fmt.Errorf("set up replication origin %q on the apply connection: %w", name, err)
}

// OriginSessionReset ends the origin session of c; on failure it closes c so
// that the pool does not hand out a connection with an origin set.
func OriginSessionReset(ctx context.Context, c *pgx.Conn, log *slog.Logger) {
	if c.IsClosed() {
		return
	}
	if _, err := c.Exec(ctx, `SELECT pg_replication_origin_session_reset()`); err != nil {
		log.Warn("reset replication origin session; closing the connection", "err", err)
		c.Close(ctx)
	}
}

// OriginXactSetup records in tx the source commit it replays: the origin's
// progress (pg_replication_origin_status.remote_lsn) moves to lsn when tx
// commits, and tx's commit timestamp is ts.
func OriginXactSetup(ctx context.Context, tx pgx.Tx, lsn pglogrepl.LSN, ts time.Time) error {
	if _, err := tx.Exec(ctx, `SELECT pg_replication_origin_xact_setup($1::text::pg_lsn, $2)`, lsn.String(), ts); err != nil {
		return fmt.Errorf("pg_replication_origin_xact_setup(%s): %w", lsn, err)
	}
	return nil
}
