package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	accounts       = 100
	initialBalance = 1000
)

// schemaSQL is the source schema. Every workload transaction inserts one
// txlog row with a unique id and the number of row changes it made
// (including that row), so the source itself records what must reach Kafka
// and the sinks, whatever the client saw of an interrupted COMMIT.
var schemaSQL = []string{
	`CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL)`,
	`CREATE TABLE transfers (id bigint PRIMARY KEY, from_acct int NOT NULL REFERENCES accounts(id),
		to_acct int NOT NULL REFERENCES accounts(id), amount bigint NOT NULL)`,
	`CREATE TABLE customers (id bigint PRIMARY KEY, owner int NOT NULL, name text NOT NULL, doc text NOT NULL)`,
	`ALTER TABLE customers ALTER COLUMN doc SET STORAGE EXTERNAL`, // TOASTed, uncompressed
	`CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers(id),
		qty int NOT NULL, status text NOT NULL)`,
	`CREATE TABLE bulk (id bigint PRIMARY KEY, v text NOT NULL)`,
	`CREATE TABLE txlog (id bigint PRIMARY KEY, kind text NOT NULL, changes int NOT NULL)`,
	`CREATE PUBLICATION pub FOR TABLE accounts, transfers, customers, orders, bulk, txlog`,
}

var dataTables = []string{"accounts", "transfers", "customers", "orders", "bulk", "txlog"}

// workload runs workers that each loop over random transactions on their own
// connection, reconnecting and resynchronising after any error.
type workload struct {
	t       *testing.T
	dsn     string
	nextID  atomic.Int64
	ok      atomic.Int64 // transactions the client saw commit
	errs    atomic.Int64 // failed attempts (faults make these)
	lastErr atomic.Value
	pause   time.Duration
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// newWorkload returns a workload whose workers pause for pace between
// their transactions.
func newWorkload(t *testing.T, dsn string, pace time.Duration) *workload {
	w := &workload{t: t, dsn: dsn, pause: pace}
	w.nextID.Store(1_000_000)
	return w
}

func (w *workload) id() int64 { return w.nextID.Add(1) }

// seed inserts the accounts in one workload transaction.
func (w *workload) seed(ctx context.Context) error {
	return w.txn(ctx, nil, "seed", func(tx pgx.Tx) (int, error) {
		tag, err := tx.Exec(ctx, fmt.Sprintf(`INSERT INTO accounts SELECT g, %d FROM generate_series(1, %d) g`, initialBalance, accounts))
		return int(tag.RowsAffected()), err
	})
}

// txn runs body in a transaction and appends its txlog row. conn nil means
// a fresh connection.
func (w *workload) txn(ctx context.Context, c *pgx.Conn, kind string, body func(pgx.Tx) (int, error)) error {
	if c == nil {
		cc, err := pgx.Connect(ctx, w.dsn)
		if err != nil {
			return err
		}
		defer cc.Close(context.Background())
		c = cc
	}
	tx, err := c.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	n, err := body(tx)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO txlog VALUES ($1, $2, $3)`, w.id(), kind, n+1); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

func (w *workload) start(workers int) {
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	for i := 0; i < workers; i++ {
		w.wg.Add(1)
		go func(owner int) { defer w.wg.Done(); w.worker(ctx, owner) }(i)
	}
}

func (w *workload) stop() {
	w.cancel()
	w.wg.Wait()
}

func (w *workload) fail(err error) {
	w.errs.Add(1)
	w.lastErr.Store(err.Error())
}

func (w *workload) worker(ctx context.Context, owner int) {
	var c *pgx.Conn
	var live []int64 // this worker's customers, re-read after every error
	defer func() {
		if c != nil {
			c.Close(context.Background())
		}
	}()
	for ctx.Err() == nil {
		if c == nil {
			cc, err := pgx.Connect(ctx, w.dsn)
			if err != nil {
				w.fail(err)
				sleep(ctx, 200*time.Millisecond)
				continue
			}
			c = cc
			live = live[:0]
			rows, err := c.Query(ctx, `SELECT id FROM customers WHERE owner = $1`, owner)
			if err == nil {
				for rows.Next() {
					var id int64
					if rows.Scan(&id) == nil {
						live = append(live, id)
					}
				}
				rows.Close()
				err = rows.Err()
			}
			if err != nil {
				w.fail(err)
				c.Close(context.Background())
				c = nil
				continue
			}
		}
		var added, removed int64
		var err error
		switch r := rand.IntN(100); {
		case r < 50 || len(live) == 0 && r >= 65:
			err = w.txn(ctx, c, "transfer", func(tx pgx.Tx) (int, error) {
				a, b := rand.IntN(accounts)+1, rand.IntN(accounts)+1
				for a == b {
					b = rand.IntN(accounts) + 1
				}
				amt := rand.IntN(100) + 1
				lo, hi, dlo, dhi := a, b, -amt, amt
				if lo > hi { // lock in id order: no deadlocks between workers
					lo, hi, dlo, dhi = b, a, amt, -amt
				}
				return execAll(ctx, tx,
					q{`UPDATE accounts SET balance = balance + $2 WHERE id = $1`, []any{lo, dlo}},
					q{`UPDATE accounts SET balance = balance + $2 WHERE id = $1`, []any{hi, dhi}},
					q{`INSERT INTO transfers VALUES ($1, $2, $3, $4)`, []any{w.id(), a, b, amt}})
			})
		case r < 65:
			id := w.id()
			err = w.txn(ctx, c, "new-customer", func(tx pgx.Tx) (int, error) {
				qs := []q{{`INSERT INTO customers SELECT $1::bigint, $2::int, 'c' || $1::bigint,
					string_agg(md5($3::bigint || '-' || g), '') FROM generate_series(1, 250) g`, []any{id, owner, rand.Int64()}}}
				for i := 0; i < 1+rand.IntN(3); i++ {
					qs = append(qs, q{`INSERT INTO orders (id, customer_id, qty, status) VALUES ($1, $2, $3, 'new')`,
						[]any{w.id(), id, rand.IntN(9) + 1}})
				}
				return execAll(ctx, tx, qs...)
			})
			added = id
		case r < 90:
			id := live[rand.IntN(len(live))]
			err = w.txn(ctx, c, "update-customer", func(tx pgx.Tx) (int, error) {
				upd := q{`UPDATE customers SET name = 'c' || id || '-' || $2::int WHERE id = $1`, []any{id, rand.IntN(1000)}}
				if rand.IntN(4) == 0 { // a new TOASTed value; otherwise doc is unchanged TOAST
					upd = q{`UPDATE customers SET doc = (SELECT string_agg(md5($2::bigint || '-' || g), '') FROM generate_series(1, 250) g) WHERE id = $1`,
						[]any{id, rand.Int64()}}
				}
				return execAll(ctx, tx, upd,
					q{`UPDATE orders SET qty = qty + 1, status = 'changed' WHERE customer_id = $1`, []any{id}})
			})
		default:
			id := live[rand.IntN(len(live))]
			err = w.txn(ctx, c, "delete-customer", func(tx pgx.Tx) (int, error) {
				return execAll(ctx, tx,
					q{`DELETE FROM orders WHERE customer_id = $1`, []any{id}},
					q{`DELETE FROM customers WHERE id = $1`, []any{id}})
			})
			removed = id
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// The connection may be broken and the COMMIT's outcome unknown:
			// reconnect and re-read this worker's customers.
			w.fail(err)
			c.Close(context.Background())
			c = nil
			sleep(ctx, 100*time.Millisecond)
			continue
		}
		w.ok.Add(1)
		if added != 0 {
			live = append(live, added)
		}
		if removed != 0 {
			for i, x := range live {
				if x == removed {
					live = append(live[:i], live[i+1:]...)
					break
				}
			}
		}
		sleep(ctx, w.pause)
	}
}

type q struct {
	sql  string
	args []any
}

// execAll runs the statements and returns the rows they changed.
func execAll(ctx context.Context, tx pgx.Tx, qs ...q) (int, error) {
	n := 0
	for _, s := range qs {
		tag, err := tx.Exec(ctx, s.sql, s.args...)
		if err != nil {
			return n, err
		}
		n += int(tag.RowsAffected())
	}
	return n, nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// retry runs f until it succeeds, for operations the test itself makes
// during faults (a DDL statement, the huge transaction, a probe).
func retry(t *testing.T, what string, f func(ctx context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		err := f(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after 3 minutes: %v", what, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
