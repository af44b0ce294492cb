package integration

import (
	"fmt"
	"testing"

	"github.com/tributary-cdc/tributary/integration/harness"
)

// TestNonTransactionalMessagesHaveTheirOwnCommitLSN: PostgreSQL reports a
// non-transactional logical decoding message (the producer's heartbeats, an
// application's outbox message outside a transaction) at the END of its WAL
// record, which is where the next record starts. When that record is a
// commit, the message and the transaction arrive with the same LSN. Their
// frames must still have distinct, increasing commit LSNs: a resume point
// at "everything up to commit LSN X is in Kafka" would otherwise skip the
// transaction that commits at X after the message's frame.
//
// Each transaction here ends with a non-transactional message, so its
// commit record follows the message's record directly (the chaos suite hit
// this with heartbeats under load).
func TestNonTransactionalMessagesHaveTheirOwnCommitLSN(t *testing.T) {
	e := newEnv(t)
	e.pg.Exec(t, `CREATE TABLE t (id int PRIMARY KEY)`, `CREATE PUBLICATION pub FOR TABLE t`)
	cfg := e.producerConfig(t)
	stop := e.runProducer(t, cfg)
	const n = 20
	for i := 0; i < n; i++ {
		e.pg.Exec(t, fmt.Sprintf(`BEGIN; INSERT INTO t VALUES (%d); SELECT pg_logical_emit_message(false, 'app.outbox', 'after %d'); COMMIT`, i, i))
	}
	e.waitFrameCount(t, 2*n)
	stop()
	log := harness.ReadLog(t, e.kafka, e.reg, e.prefix) // fails on a repeated commit LSN
	adjacent := 0
	for i := 1; i < len(log.Txns); i++ {
		prev, cur := log.Txns[i-1].Frame, log.Txns[i].Frame
		if prev.Xid == 0 && cur.Xid != 0 && prev.EndLSN == cur.CommitLSN {
			adjacent++ // the message's record ends where the commit record starts
		}
	}
	if len(log.Txns) < 2*n || adjacent == 0 {
		t.Fatalf("%d frames, %d messages directly followed by a commit; want %d frames and some adjacent (the test no longer makes the case)", len(log.Txns), adjacent, 2*n)
	}
	t.Logf("%d frames; %d messages ended where the next commit record began", len(log.Txns), adjacent)
}
