package integration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tributary-cdc/tributary/integration/harness"
	"github.com/tributary-cdc/tributary/producer"
	"github.com/tributary-cdc/tributary/schemas"
)

// env is one test's source database, broker and registry.
type env struct {
	pg     *harness.Postgres
	kafka  *harness.Kafka
	reg    *schemas.Registry
	prefix string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{pg: harness.StartPostgres(t), kafka: harness.StartKafka(t, ""), prefix: harness.Prefix(t)}
	var err error
	if e.reg, err = schemas.NewRegistry([]string{e.kafka.RegistryURL}, testLog(t)); err != nil {
		t.Fatal(err)
	}
	return e
}

func testLog(t testing.TB) *slog.Logger {
	lv := slog.LevelWarn
	if os.Getenv("TRIBUTARY_TEST_LOG") != "" {
		lv = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv})).With("test", t.Name())
}

func (e *env) producerConfig(t *testing.T) producer.Config {
	return producer.Config{
		SourceDSN: e.pg.DSN, Publication: "pub", Slot: "slot", Prefix: e.prefix,
		KafkaOpts: e.kafka.Opts(), Registry: e.reg, Snapshot: producer.SnapshotNever,
		Log: testLog(t), HeartbeatInterval: time.Second, StatusInterval: time.Second,
	}
}

// runProducer runs a producer in process until the returned stop is called
// (or the test ends), and fails the test if it stops with an error.
func (e *env) runProducer(t *testing.T, cfg producer.Config) (stop func()) {
	t.Helper()
	p, err := producer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("producer: %v", err)
				}
			case <-time.After(60 * time.Second):
				t.Errorf("producer did not stop within 60s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	e.waitSlotActive(t, cfg.Slot)
	return stop
}

// waitSlotActive waits until a producer streams from slot: changes committed
// before the slot's consistent point are not in its stream.
// On failure it prints what the optional proc printed.
func (e *env) waitSlotActive(t *testing.T, slot string, proc ...*harness.Proc) {
	t.Helper()
	c := e.pg.Conn(t)
	deadline := time.Now().Add(time.Minute)
	for {
		var active bool
		err := c.QueryRow(context.Background(), `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&active)
		if err == nil && active {
			return
		}
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			out := ""
			for _, p := range proc {
				out += p.Output()
			}
			t.Fatalf("slot %s not active after a minute\n%s", slot, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitFrames waits until the transactions topic holds at least n frames and
// returns the validated log. Call it when the workload has ended: frames of
// commits made while it reads would look like unframed records.
func (e *env) waitFrames(t *testing.T, n int) *harness.Log {
	t.Helper()
	e.waitFrameCount(t, n)
	return harness.ReadLog(t, e.kafka, e.reg, e.prefix)
}

// waitFrameCount waits until the transactions topic holds at least n frames.
// It reads only frames.
func (e *env) waitFrameCount(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		got := harness.CountFrames(t, e.kafka, e.prefix)
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d frames after 2 minutes", got, n)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func TestProducerFramesConcurrentTransactionsInCommitOrder(t *testing.T) {
	e := newEnv(t)
	e.pg.Exec(t,
		`CREATE TABLE a (id int PRIMARY KEY, v text)`,
		`CREATE TABLE b (id bigint PRIMARY KEY, n numeric(10,2))`,
		`CREATE PUBLICATION pub FOR TABLE a, b`)
	stop := e.runProducer(t, e.producerConfig(t))
	ctx := context.Background()

	// T1 starts first and commits second (seed 002, "Transaction Order for Replay").
	c1, c2 := e.pg.Conn(t), e.pg.Conn(t)
	t1, err := c1.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, t1, `INSERT INTO a VALUES (1, 'first-started')`)
	t2, err := c2.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, t2, `INSERT INTO a VALUES (2, 'second-started')`, `INSERT INTO b VALUES (2, 2.50)`)
	if err := t2.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	mustExec(t, t1, `UPDATE a SET v = 'updated' WHERE id = 1`, `INSERT INTO b VALUES (1, 1.25)`)
	if err := t1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// Many small concurrent transactions across both tables.
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c, err := pgx.Connect(ctx, e.pg.DSN)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close(ctx)
			for i := 0; i < 25; i++ {
				id := 1000 + w*100 + i
				if _, err := c.Exec(ctx, fmt.Sprintf(`BEGIN; INSERT INTO a VALUES (%d, 'w'); INSERT INTO b VALUES (%d, %d.01); DELETE FROM a WHERE id = %d; COMMIT`, id, id, i, id)); err != nil {
					t.Error(err)
				}
			}
		}(w)
	}
	wg.Wait()
	e.waitFrameCount(t, 102)
	stop()
	log := harness.ReadLog(t, e.kafka, e.reg, e.prefix)
	if len(log.Txns) != 102 {
		t.Fatalf("%d frames, want 102 (one per source transaction)", len(log.Txns))
	}
	first, second := log.Txns[0], log.Txns[1]
	if len(first.Events) != 2 || first.Events[0].After["v"] != "second-started" {
		t.Fatalf("first frame should be the transaction that committed first, got %v %+v", first, first.Events)
	}
	if len(second.Events) != 3 || second.Events[1].Op != schemas.OpUpdate || second.Events[1].After["v"] != "updated" {
		t.Fatalf("second frame should be the first-started transaction, got %v %+v", second, second.Events)
	}
	// Cross-partition reassembly is exercised: data spans several partitions.
	parts := map[string]bool{}
	for _, tx := range log.Txns {
		for _, p := range tx.Frame.Partitions {
			parts[fmt.Sprintf("%s/%d", p.Topic, p.Partition)] = true
		}
	}
	if len(parts) < 4 {
		t.Fatalf("events used only %d topic-partitions; want the 3-partition topics exercised", len(parts))
	}
	for _, tx := range log.Txns[2:] {
		if len(tx.Events) != 3 || tx.Events[0].Op != schemas.OpInsert || tx.Events[2].Op != schemas.OpDelete {
			t.Fatalf("workload transaction %v: %+v", tx, tx.Events)
		}
	}
}

func mustExec(t *testing.T, tx pgx.Tx, sql ...string) {
	t.Helper()
	for _, s := range sql {
		if _, err := tx.Exec(context.Background(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}
