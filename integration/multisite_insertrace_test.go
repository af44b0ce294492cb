package integration

import (
	"context"
	"testing"
)

// TestMultisiteInsertRacesApply: a remote insert of a key that no local row
// holds when the consumer looks, while a local transaction inserts the same
// key and commits only once the consumer's INSERT waits on it. The
// consumer's read of the local row (FOR UPDATE) locks nothing, as no row is
// there, so the race is PostgreSQL's unique index: the consumer must not
// stop on the duplicate key, but resolve the change as the conflict it is
// (an insert of an existing row), record it, and converge.
func TestMultisiteInsertRacesApply(t *testing.T) {
	sites := newSites(t, "ri", []string{`CREATE TABLE ri (id int PRIMARY KEY, v text)`, `ALTER TABLE ri REPLICA IDENTITY FULL`}, "A", "B")
	a, b := sites[0], sites[1]
	a.produce(t)
	const yml = "priority: [A, B]\ntables:\n  public.ri:\n    method: site-priority\n"

	// B's local insert holds the key, uncommitted.
	local := b.env.pg.Conn(t)
	ctx := context.Background()
	tx, err := local.Begin(ctx)
	must(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	if _, err := tx.Exec(ctx, `INSERT INTO ri VALUES (1, 'b')`); err != nil {
		t.Fatal(err)
	}
	a.env.pg.Exec(t, `INSERT INTO ri VALUES (1, 'a')`)
	a.waitPublished(t)
	b.consume(t, a, yml)
	// The consumer's INSERT waits for the local transaction.
	waitValue(t, b, "true", `SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity s USING (pid)
		WHERE NOT l.granted AND l.locktype = 'transactionid' AND s.application_name <> 'psql' AND l.pid <> $1)::text`,
		local.PgConn().PID())
	must(t, tx.Commit(ctx))
	// A ranks first: its row wins, and B records the conflict.
	waitValue(t, b, "a", `SELECT v FROM ri WHERE id = 1`)
	waitValue(t, b, "1", `SELECT count(*)::text FROM tributary_conflicts WHERE table_name = 'public.ri'`)
}
