package integration

import (
	"context"
	"errors"
	"iter"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/schemas"
)

// TestHandlerSinkWholeTransactions runs the public whole-transaction API
// (consumer.HandlerSink with FileCheckpoints) against the real producer: a
// workload of transactions that each touch two tables over several
// partitions, one of 5,000 rows, and a consumer stopped inside its handler
// half-way. Every transaction reaches the handler whole (exactly its rows,
// no other transaction's), in commit order; after the restart only
// transactions past the saved checkpoint are handed over again, and an
// application that skips commit LSNs it has handled sees each exactly once.
func TestHandlerSinkWholeTransactions(t *testing.T) {
	e := newLedgerEnv(t, 0)

	// Transaction k moves money between accounts with 1 + k%4 transfers:
	// two acct updates and two ledger rows each. Transaction 40 is big.
	const txns = 80
	want := map[int]int{} // txn -> events it must have
	src := e.pg.Conn(t)
	for k := 1; k <= txns; k++ {
		transfers := 1 + k%4
		if k == 40 {
			transfers = 2500
		}
		tx, err := src.Begin(context.Background())
		must(t, err)
		for i := 0; i < transfers; i++ {
			from, to := 1+(k+i)%50, 1+(k+i+7)%50
			_, err = tx.Exec(context.Background(), `UPDATE acct SET balance = balance - 1 WHERE id = $1`, from)
			must(t, err)
			_, err = tx.Exec(context.Background(), `UPDATE acct SET balance = balance + 1 WHERE id = $1`, to)
			must(t, err)
			_, err = tx.Exec(context.Background(), `INSERT INTO ledger (txn, acct, amount) VALUES ($1, $2, -1), ($1, $3, 1)`, k, from, to)
			must(t, err)
		}
		must(t, tx.Commit(context.Background()))
		want[k] = 4 * transfers
	}

	type handled struct {
		lsn    pglogrepl.LSN
		txn    int // the ledger rows' txn
		events int
	}
	var (
		seen   []handled // every call, redeliveries included
		app    = map[int]bool{}
		appLSN pglogrepl.LSN // the application's own high-water mark
	)
	stopAfter := 30 // stop the first consumer inside its 30th handler call
	restarted := false
	errStopped := errors.New("stopped inside the handler")
	handler := func(_ context.Context, txn *consumer.Txn, events iter.Seq2[*consumer.Event, error]) error {
		h := handled{lsn: txn.CommitLSN, txn: -1}
		messages := 0
		for ev, err := range events {
			if err != nil {
				return err
			}
			if ev.Message != nil {
				messages++ // the producer's own (sequence values)
				continue
			}
			h.events++
			if ev.Table.Name != "ledger" {
				continue
			}
			k := int(ev.After[1].(int32))
			if h.txn != -1 && h.txn != k {
				t.Errorf("commit %s: ledger rows of transactions %d and %d in one call", txn.CommitLSN, h.txn, k)
			}
			h.txn = k
		}
		if h.events == 0 && messages > 0 {
			return nil
		}
		if stopAfter--; stopAfter <= 0 && !restarted {
			// The first consumer fails from its 30th call on, also when it
			// retries the group one transaction at a time.
			return consumer.Permanent(errStopped)
		}
		seen = append(seen, h)
		if txn.CommitLSN <= appLSN {
			return nil // handled before the restart
		}
		if h.txn < 0 || h.events != want[h.txn] {
			t.Errorf("commit %s: %d events of transaction %d, want %d", txn.CommitLSN, h.events, h.txn, want[h.txn])
		}
		if app[h.txn] {
			t.Errorf("transaction %d handled twice past the application's mark", h.txn)
		}
		app[h.txn], appLSN = true, txn.CommitLSN
		return nil
	}
	store := consumer.FileCheckpoints(filepath.Join(t.TempDir(), "checkpoint.json"))
	run := func(untilCaughtUp bool) error {
		c, err := consumer.New(consumer.Config{Kafka: []kgo.Opt{kgo.SeedBrokers(e.kafka.Brokers...)}, Registry: e.reg,
			Prefix: e.prefix, Name: "app", Sink: consumer.HandlerSink(store, handler), Logger: testLog(t),
			GroupMaxTxns: 7, UntilCaughtUp: untilCaughtUp, RetryMaxElapsed: time.Second})
		must(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		return c.Run(ctx)
	}
	e.waitFrameCount(t, txns)
	if err := run(true); !errors.Is(err, errStopped) {
		t.Fatalf("first consumer: %v, want the handler's stop", err)
	}
	saved, err := store.Load(context.Background())
	must(t, err)
	firstRun := len(seen)
	restarted = true
	if err := run(true); err != nil {
		t.Fatalf("second consumer: %v", err)
	}
	for k := 1; k <= txns; k++ {
		if !app[k] {
			t.Errorf("transaction %d never handled", k)
		}
	}
	// Redelivered: exactly the transactions past the saved checkpoint that
	// the first consumer had handed over, then everything after, in order.
	var prev pglogrepl.LSN
	for i, h := range seen[firstRun:] {
		if h.lsn <= saved.CommitLSN {
			t.Errorf("after the restart, call %d: commit %s is not past the saved checkpoint %s", i, h.lsn, saved.CommitLSN)
		}
		if h.lsn <= prev {
			t.Errorf("after the restart, call %d: commit %s after %s", i, h.lsn, prev)
		}
		prev = h.lsn
	}
	redelivered := 0
	for _, h := range seen[:firstRun] {
		if h.lsn > saved.CommitLSN {
			redelivered++
		}
	}
	if redelivered == 0 || redelivered > 7 {
		t.Errorf("%d transactions past the checkpoint when the first consumer stopped, want 1..7 (GroupMaxTxns)", redelivered)
	}
	t.Logf("%d transactions (%s); first consumer stopped in call %d with %d unsaved; %d calls in all",
		txns, schemas.TransactionsTopic(e.prefix), firstRun, redelivered, len(seen))
}

// newLedgerEnv starts a producer, on 3 partitions per table, for a source
// with 50 accounts (acct) and a ledger of transfers, the workload of the
// whole-transaction reader tests. heartbeat is the producer's heartbeat
// interval (0 for the tests' default, negative for none).
func newLedgerEnv(t *testing.T, heartbeat time.Duration) *env {
	e := newEnv(t)
	e.pg.Exec(t,
		`CREATE TABLE acct (id int PRIMARY KEY, balance bigint NOT NULL)`,
		`CREATE TABLE ledger (id bigserial PRIMARY KEY, txn int NOT NULL, acct int NOT NULL, amount bigint NOT NULL)`,
		`INSERT INTO acct SELECT g, 1000 FROM generate_series(1, 50) g`,
		`CREATE PUBLICATION pub FOR TABLE acct, ledger`)
	cfg := e.producerConfig(t)
	cfg.Partitions = 3
	if heartbeat != 0 {
		cfg.HeartbeatInterval = heartbeat
	}
	e.runProducer(t, cfg)
	return e
}
