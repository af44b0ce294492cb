package integration

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/duckdb"
	"github.com/tributary-cdc/tributary/consumer/history"
	"github.com/tributary-cdc/tributary/consumer/postgres"
	"github.com/tributary-cdc/tributary/integration/harness"
)

// TestSinksKeyEqualInAnotherForm: PostgreSQL logs an update's old key when
// the key's bytes change, also when the new key equals the old one
// (numeric 1.0 to 1.00, citext 'a' to 'A'), and the producer then sends a
// delete of the old key and an insert of the new, as for any key change.
// Keys that differ as text can be one key at the target, so no sink may
// tell keys apart by their text: each sink, with one source transaction a
// target transaction and with the whole backlog in one, must end with the
// source's rows, and the history must number the versions of one key in
// order whether they share a chunk of its writer or not.
func TestSinksKeyEqualInAnotherForm(t *testing.T) {
	e := newEnv(t)
	target := harness.StartPostgres(t)
	e.pg.Exec(t, `CREATE EXTENSION citext`,
		`CREATE TABLE nk (id numeric PRIMARY KEY, v int)`,
		`CREATE TABLE ck (id citext PRIMARY KEY, v int)`,
		`CREATE PUBLICATION pub FOR TABLE nk, ck`)
	e.runProducer(t, e.producerConfig(t))
	e.pg.Exec(t,
		`INSERT INTO nk VALUES (1.0, 1), (2, 1)`, `INSERT INTO ck VALUES ('a', 1), ('b', 1)`,
		// One change a transaction.
		`UPDATE nk SET id = 1.00, v = 2 WHERE id = 1`,
		`UPDATE ck SET id = 'A', v = 2 WHERE id = 'a'`,
		// Several changes of a key in one transaction.
		`BEGIN`, `UPDATE nk SET id = 1.000, v = 3 WHERE id = 1`, `UPDATE nk SET v = 4 WHERE id = 1`,
		`UPDATE ck SET id = 'a', v = 3 WHERE id = 'a'`, `UPDATE ck SET v = 4 WHERE id = 'a'`, `COMMIT`,
		// A key that really changes.
		`UPDATE nk SET id = 3 WHERE id = 2`, `UPDATE ck SET id = 'c' WHERE id = 'b'`)
	e.waitFrameCount(t, 7)
	const rowsSQL = `SELECT string_agg(id || '/' || v, ' ' ORDER BY id::text) FROM `
	src := e.pg.Conn(t)
	var end string
	must(t, src.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&end))
	want := rowsOf(t, src, rowsSQL, "nk", "ck")
	check := func(name, table, got string) {
		t.Helper()
		if got != want[table] {
			t.Errorf("%s: %s holds %s, the source %s", name, table, got, want[table])
		}
	}
	target.Exec(t, `CREATE EXTENSION citext`)
	tconn := target.Conn(t)
	for _, group := range []int{1, 100} {
		// The PostgreSQL sink, into a database of its own.
		db := fmt.Sprintf("plain%d", group)
		dsn := newDatabase(t, target, db)
		dbc := connect(t, dsn)
		if _, err := dbc.Exec(context.Background(), `CREATE EXTENSION citext`); err != nil {
			t.Fatal(err)
		}
		plain, err := postgres.New(postgres.Config{DSN: dsn, Consumer: db, CreateTables: true, Logger: testLog(t)})
		must(t, err)
		e.mustCatchUp(t, db, plain, group)
		for _, table := range []string{"nk", "ck"} {
			var got string
			must(t, dbc.QueryRow(context.Background(), rowsSQL+table).Scan(&got))
			check(db, table, got)
		}

		// The history sink: one row a chunk, or the transaction's rows in one.
		name := fmt.Sprintf("hist%d", group)
		hs := newHistorySink(t, target, name, group)
		e.mustCatchUp(t, name, hs, 1)
		for _, tc := range []struct{ table, want string }{
			{"nk", "1.0/1/c/1/f 2/1/c/1/f 1.0/2/d/1/f 1.00/3/c/2/f 1.00/4/d/2/f 1.000/5/c/3/f 1.000/6/u/4/t 2/2/d/1/f 3/1/c/1/t"},
			{"ck", "a/1/c/1/f b/1/c/1/f a/2/d/1/f A/3/c/2/f A/4/d/2/f a/5/c/3/f a/6/u/4/t b/2/d/1/f c/1/c/1/t"},
		} {
			var got string
			must(t, tconn.QueryRow(context.Background(), `SELECT string_agg(concat_ws('/', id, version, op, v, valid_to IS NULL), ' '
				ORDER BY commit_lsn, position, version) FROM `+name+`.`+tc.table+`_history`).Scan(&got))
			if got != tc.want {
				t.Errorf("%s: %s history (id/version/op/v/open):\n got %s\nwant %s", name, tc.table, got, tc.want)
			}
			must(t, tconn.QueryRow(context.Background(), `SELECT string_agg(id || '/' || v, ' ' ORDER BY id::text) FROM `+
				name+`.`+tc.table+`_as_of_lsn($1::pg_lsn)`, end).Scan(&got))
			check(name+" as of the end", tc.table, got)
		}

		// The DuckDB sink.
		name = fmt.Sprintf("duck%d", group)
		ds, path := newDuckSink(t, name)
		e.mustCatchUp(t, name, ds, group)
		ddb, err := sql.Open("duckdb", path)
		must(t, err)
		for _, table := range []string{"nk", "ck"} {
			var got string
			must(t, ddb.QueryRow(`SELECT string_agg(CAST(id AS VARCHAR) || '/' || v, ' ' ORDER BY CAST(id AS VARCHAR)) FROM public.`+table).Scan(&got))
			check(name, table, got)
		}
		must(t, ddb.Close())
	}
}

// catchUpSink runs a consumer named name of e's prefix into sink, in mode,
// with up to groupMaxTxns source transactions a target transaction, until
// it has applied everything committed, and returns why it stopped.
func (e *env) catchUpSink(t *testing.T, name string, sink consumer.Sink, groupMaxTxns int, mode consumer.Mode) error {
	t.Helper()
	c, err := consumer.New(consumer.Config{Kafka: []kgo.Opt{kgo.SeedBrokers(e.kafka.Brokers...)}, Registry: e.reg,
		Prefix: e.prefix, Name: name, Sink: sink, Logger: testLog(t), UntilCaughtUp: true, RetryMaxElapsed: 5 * time.Second,
		GroupMaxTxns: groupMaxTxns, Mode: mode})
	must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return c.Run(ctx)
}

// mustCatchUp is catchUpSink in transactional mode, failing the test when
// the consumer stops with an error.
func (e *env) mustCatchUp(t *testing.T, name string, sink consumer.Sink, groupMaxTxns int) {
	t.Helper()
	if err := e.catchUpSink(t, name, sink, groupMaxTxns, consumer.ModeTransactional); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

// rowsOf returns, by table, the one text value that query, followed by the
// table's name, returns on c.
func rowsOf(t *testing.T, c *pgx.Conn, query string, tables ...string) map[string]string {
	t.Helper()
	out := make(map[string]string, len(tables))
	for _, table := range tables {
		var rows string
		must(t, c.QueryRow(context.Background(), query+table).Scan(&rows))
		out[table] = rows
	}
	return out
}

// newDatabase creates database name in pg and returns its DSN.
func newDatabase(t *testing.T, pg *harness.Postgres, name string) string {
	t.Helper()
	pg.Exec(t, `CREATE DATABASE `+name)
	return strings.Replace(pg.DSN, "/postgres?", "/"+name+"?", 1)
}

// newHistorySink is a history sink named name into schema name of pg, with
// up to flushRows rows a statement.
func newHistorySink(t *testing.T, pg *harness.Postgres, name string, flushRows int) consumer.Sink {
	t.Helper()
	pg.Exec(t, `CREATE SCHEMA `+name)
	hs, err := history.New(history.Config{DSN: pg.DSN, Consumer: name, Schema: name, FlushRows: flushRows, Logger: testLog(t)})
	must(t, err)
	return hs
}

// newDuckSink is a DuckDB sink named name into a database file of its own,
// whose path it returns.
func newDuckSink(t *testing.T, name string) (consumer.Sink, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".duckdb")
	ds, err := duckdb.New(duckdb.Config{Path: path, Consumer: name, Logger: testLog(t)})
	must(t, err)
	return ds, path
}
