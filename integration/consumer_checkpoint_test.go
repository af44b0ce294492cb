package integration

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/postgres/pgtarget"
	"github.com/tributary-cdc/tributary/integration/harness"
)

// TestCheckpointCompareAndSet: a session that read its checkpoint before an
// older session's last commit finished must not apply the same transactions
// again. Its checkpoint write waits for the older transaction and then fails
// with ErrCheckpointMoved, so its whole target transaction rolls back. A
// write is one round trip to the target: its lock, read and upsert are one
// pipeline.
func TestCheckpointCompareAndSet(t *testing.T) {
	pg := harness.StartPostgres(t)
	ctx := context.Background()
	trips := &roundTrips{}
	cfg, err := pgx.ParseConfig(pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Tracer = trips
	c1, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close(ctx)
	c2 := pg.Conn(t)
	old := pgtarget.NewCheckpoints("public", "race")
	if err := old.Create(ctx, c1); err != nil {
		t.Fatal(err)
	}
	txs := consumer.Stream{Kind: consumer.StreamTransactions, Topic: "p.transactions"}
	data := consumer.Stream{Kind: consumer.StreamData, Topic: "p.public.t", Partition: 1}
	first := consumer.Checkpoint{Next: map[consumer.Stream]int64{txs: 3, data: 7}, CommitLSN: 0x100, CommitTime: time.Now()}
	if _, err := old.Read(ctx, c1); err != nil {
		t.Fatal(err)
	}
	tx, _ := c1.Begin(ctx)
	if err := old.Write(ctx, tx, first); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	old.Committed(first)

	// The old session applies the next batch; its commit is still open when
	// a new session reads the checkpoint and applies the same batch.
	next := consumer.Checkpoint{Next: map[consumer.Stream]int64{txs: 4, data: 9}, CommitLSN: 0x200, CommitTime: time.Now()}
	oldTx, _ := c1.Begin(ctx)
	trips.reset()
	if err := old.Write(ctx, oldTx, next); err != nil {
		t.Fatal(err)
	}
	if n := trips.count(); n != 1 {
		t.Fatalf("a checkpoint write took %d round trips to the target, want 1", n)
	}
	fresh := pgtarget.NewCheckpoints("public", "race")
	if cp, err := fresh.Read(ctx, c2); err != nil || cp.Next[txs] != 3 {
		t.Fatalf("new session read %v, %v; want the committed offset 3", cp.Next, err)
	}
	done := make(chan error, 1)
	go func() {
		newTx, _ := c2.Begin(ctx)
		err := fresh.Write(ctx, newTx, next)
		newTx.Rollback(ctx)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("the new session's checkpoint write did not wait for the old session: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	if err := oldTx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, pgtarget.ErrCheckpointMoved) {
			t.Fatalf("new session's write: %v, want ErrCheckpointMoved", err)
		}
		if consumer.IsPermanent(err) {
			t.Fatalf("ErrCheckpointMoved must be retried from a fresh checkpoint, not stop the consumer")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the new session's write still waits after the old session committed")
	}
	// After re-reading, the new session goes on from the old one's commit.
	if cp, err := fresh.Read(ctx, c2); err != nil || cp.Next[txs] != 4 || cp.Next[data] != 9 {
		t.Fatalf("re-read %v, %v; want 4 and 9", cp.Next, err)
	}
	tx2, _ := c2.Begin(ctx)
	if err := fresh.Write(ctx, tx2, consumer.Checkpoint{Next: map[consumer.Stream]int64{txs: 5}}); err != nil {
		t.Fatalf("write after re-read: %v", err)
	}
	tx2.Rollback(ctx)
}

// roundTrips counts the round trips of a pgx connection: each query sent on
// its own and each batch (a pipeline) is one.
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) reset()       { r.n.Store(0) }
func (r *roundTrips) count() int64 { return r.n.Load() }

func (r *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	r.n.Add(1)
	return ctx
}
func (r *roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (r *roundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	r.n.Add(1)
	return ctx
}
func (r *roundTrips) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (r *roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}
