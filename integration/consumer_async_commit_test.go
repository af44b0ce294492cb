package integration

import (
	"math/rand/v2"
	"testing"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/postgres"
	"github.com/tributary-cdc/tributary/schemas"
)

// TestConsumerTargetCrashAsyncCommit: the PostgreSQL sink commits with
// synchronous_commit off, so an immediate shutdown of the target loses the
// transactions it applied last. The WAL writer is slowed down so that every
// round loses some; the checkpoint must be lost with them, and the next run
// must apply them again exactly once (a re-applied insert would hit the
// primary key). With synchronous_commit=on in the DSN nothing is lost.
func TestConsumerTargetCrashAsyncCommit(t *testing.T) {
	for _, tc := range []struct {
		name    string
		dsnOpts string
		lose    bool
	}{
		{"default off", "", true},
		{"dsn on", "&options=-c%20synchronous_commit%3Don", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newConsumerEnv(t)
			// WAL of asynchronous commits then waits up to 10 s in
			// wal_buffers, where an immediate shutdown loses it.
			e.target.Exec(t, bankSchema, `ALTER SYSTEM SET wal_writer_delay = '10s'`, `SELECT pg_reload_conf()`)
			bk := newBank(e, 10)
			e.prod.addTable(accountTable("acc_c"), 2)
			mod := func(_ *consumer.Config, pc *postgres.Config) {
				pc.DSN += tc.dsnOpts
				pc.CreateTables = true
			}
			r := rand.New(rand.NewPCG(7, 8))
			inserted, lost := 0, 0
			checkpoint := func() int64 {
				return e.queryInt(e.target.Conn(t), `SELECT coalesce(sum(next_offset), 0)::bigint
					FROM tributary_checkpoint WHERE consumer = 'crash'`)
			}
			for round := range 2 {
				for range 20 {
					bk.transfer(e, r)
					e.prod.commit([]change{{table: "acc_c", op: schemas.OpInsert, after: acct(inserted, 1, "c")}})
					inserted++
				}
				must(t, e.catchUp("crash", mod))
				before := checkpoint()
				e.target.Stop(t, "immediate")
				e.target.Start(t)
				after := checkpoint()
				t.Logf("round %d: checkpoint offsets %d before the crash, %d after", round, before, after)
				if after > before {
					t.Fatalf("round %d: checkpoint moved forward across the crash: %d -> %d", round, before, after)
				}
				if after < before {
					lost++
				}
			}
			must(t, e.catchUp("crash", mod))
			e.checkBank(bk)
			if n := e.queryInt(e.target.Conn(t), `SELECT count(*) FROM acc_c`); n != int64(inserted) {
				t.Fatalf("acc_c has %d rows, want %d", n, inserted)
			}
			if tc.lose && lost == 0 {
				t.Fatal("no round lost an applied transaction: the sink did not commit asynchronously")
			}
			if !tc.lose && lost != 0 {
				t.Fatalf("%d rounds lost applied transactions with synchronous_commit=on", lost)
			}
		})
	}
}
