package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tributary-cdc/tributary/integration/harness"
)

// TestSchemaChangesInWALOrder captures DDL with tributary setup ddl while
// four clients write: columns added (with a default), renamed, retyped and
// dropped, a table created and filled, another renamed. The PostgreSQL
// target with --apply-ddl ends equal to the source; the history and the
// warehouse follow the renames (older versions keep their values under the
// new name) and hold every change of the ledger.
func TestSchemaChangesInWALOrder(t *testing.T) {
	e := newStateEnv(t)
	e.pg.Exec(t,
		`CREATE TABLE acct (id int PRIMARY KEY, bal int NOT NULL, note text)`,
		`CREATE TABLE ledger (id bigint PRIMARY KEY, w int)`,
		`CREATE TABLE old_name (id int PRIMARY KEY, v text)`,
		`INSERT INTO acct SELECT g, 0, 'n' || g FROM generate_series(1, 200) g`,
		`INSERT INTO old_name VALUES (1, 'a')`,
		`CREATE PUBLICATION pub FOR ALL TABLES`)
	setup := harness.StartTributary(t, nil, "setup", "ddl", "--apply", "--source", e.pg.DSN)
	<-waitExit(setup)
	if _, err := setup.Exited(); err != nil {
		t.Fatalf("tributary setup ddl: %v\n%s", err, setup.Output())
	}
	// A retyped column (int to bigint) is not a fully compatible Avro
	// change: the declared policy registers it.
	proc := harness.StartTributary(t, nil, e.producerArgs("--schema-change", "new-version")...)
	e.waitSlotActive(t, "slot", proc)
	e.target.Exec(t, `CREATE DATABASE hist`)
	histDSN := strings.Replace(e.target.DSN, "/postgres?", "/hist?", 1)
	duck := t.TempDir() + "/w.duckdb"

	// Four clients: each transaction moves money between two accounts and
	// writes a ledger row; none names a column the DDL changes.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := e.pg.Conn(t)
			for i := 0; ctx.Err() == nil; i++ {
				a, b := rand.IntN(200)+1, rand.IntN(200)+1
				if a > b {
					a, b = b, a
				}
				_, err := c.Exec(context.Background(), fmt.Sprintf(`BEGIN;
					UPDATE acct SET bal = bal - 1 WHERE id = %d; UPDATE acct SET bal = bal + 1 WHERE id = %d;
					INSERT INTO ledger VALUES (%d, %d); COMMIT`, a, b, ledgerIDs.Add(1), w))
				if err != nil && ctx.Err() == nil {
					_, _ = c.Exec(context.Background(), "ROLLBACK")
					if !strings.Contains(err.Error(), "deadlock") {
						t.Errorf("workload: %v", err)
						return
					}
				}
			}
		}(w)
	}
	stepConn := e.pg.Conn(t)
	step := func(sql ...string) {
		t.Helper()
		time.Sleep(300 * time.Millisecond)
		for _, s := range sql {
			for attempt := 1; ; attempt++ {
				_, err := stepConn.Exec(context.Background(), s)
				// An UPDATE of many rows locks them in another order than
				// the workload's transactions do, and PostgreSQL may abort
				// it as a deadlock; the statement was rolled back whole.
				var pe *pgconn.PgError
				if err == nil {
					break
				}
				if !errors.As(err, &pe) || pe.Code != "40P01" || attempt == 10 {
					t.Fatalf("exec %q: %v", s, err)
				}
			}
		}
	}
	step(`ALTER TABLE acct ADD COLUMN c1 int NOT NULL DEFAULT 7`)
	step(`UPDATE acct SET c1 = id WHERE id <= 10`)
	step(`ALTER TABLE acct RENAME COLUMN note TO memo`)
	step(`UPDATE acct SET memo = 'm' || id WHERE id <= 5`)
	step(`ALTER TABLE acct ALTER COLUMN bal TYPE bigint`)
	step(`ALTER TABLE acct DROP COLUMN c1`)
	step(`ALTER TABLE acct ADD COLUMN c2 text`)
	step(`UPDATE acct SET c2 = 'x' WHERE id % 3 = 0`)
	step(`CREATE TABLE fresh (id int PRIMARY KEY, v numeric(10, 2))`, `INSERT INTO fresh SELECT g, g / 3.0 FROM generate_series(1, 50) g`)
	step(`ALTER TABLE old_name RENAME TO new_name`, `INSERT INTO new_name VALUES (2, 'b')`)
	time.Sleep(300 * time.Millisecond)
	stop()
	wg.Wait()
	e.waitConfirmed(t, "slot", proc)

	catchUp(t, e.consumerArgs("replica", "--apply-ddl")...)
	requireEqualTables(t, e.pg, e.target, "acct", "ledger", "fresh", "new_name")
	var cols string
	if err := e.target.Conn(t).QueryRow(context.Background(), `SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)
		FROM pg_attribute WHERE attrelid = 'acct'::regclass AND attnum > 0 AND NOT attisdropped`).Scan(&cols); err != nil {
		t.Fatal(err)
	}
	if cols != "id integer, bal bigint, memo text, c2 text" {
		t.Fatalf("the target's acct has columns %q, the source's are id integer, bal bigint, memo text, c2 text", cols)
	}

	catchUp(t, append(e.consumerArgs("hist"), "--sink", "history", "--target", histDSN)...)
	hc := connect(t, histDSN)
	var renamed, ledgerRows, ledgerSource int64
	if err := hc.QueryRow(context.Background(), `SELECT count(*) FROM acct_history WHERE memo LIKE 'n%'`).Scan(&renamed); err != nil {
		t.Fatalf("history after the rename: %v", err)
	}
	if renamed < 200 {
		t.Fatalf("acct_history holds %d versions whose memo is the old note's value; want every account's initial version (200)", renamed)
	}
	if err := hc.QueryRow(context.Background(), `SELECT count(*) FROM ledger_history`).Scan(&ledgerRows); err != nil {
		t.Fatal(err)
	}
	if err := e.pg.Conn(t).QueryRow(context.Background(), `SELECT count(*) FROM ledger`).Scan(&ledgerSource); err != nil {
		t.Fatal(err)
	}
	if ledgerRows != ledgerSource {
		t.Fatalf("ledger_history holds %d versions, the source's ledger %d rows", ledgerRows, ledgerSource)
	}
	duckArgs := []string{"--brokers", e.kafka.Brokers[0], "--registry", e.kafka.RegistryURL, "--prefix", e.prefix,
		"--name", "duck", "--sink", "duckdb", "--duckdb-file", duck, "--log-format", "json"}
	catchUp(t, duckArgs...)
	if n := duckCount(t, duck, `SELECT count(*) FROM public.acct_history WHERE memo LIKE 'n%'`); n < 200 {
		t.Fatalf("the warehouse's acct_history holds %d versions with the old note's value under memo; want at least 200", n)
	}
	if n := duckCount(t, duck, `SELECT count(*) FROM public.ledger_history`); n != ledgerSource {
		t.Fatalf("the warehouse's ledger_history holds %d versions, the source's ledger %d rows", n, ledgerSource)
	}
	if n := duckCount(t, duck, `SELECT count(*) FROM public.new_name`); n != 2 {
		t.Fatalf("the warehouse's renamed table holds %d rows, want 2", n)
	}
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer exit after SIGTERM: %v\n%s", err, lastLines(proc.Output(), 15))
	}
}
