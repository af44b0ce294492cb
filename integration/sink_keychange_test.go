package integration

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/postgres"
	"github.com/tributary-cdc/tributary/integration/harness"
)

// TestSinksKeyChangeKeepsUnchangedTOAST: an UPDATE that changes a row's key
// and leaves a large (TOASTed, stored out of line) value as it was. pgoutput
// does not send that value ("unchanged TOAST"), and the producer writes a
// key change as a delete of the old key and an insert of the new one, so the
// insert lacks it: the value is the old row's. Native logical replication
// applies the change as one UPDATE and keeps it. Every sink must end with
// the source's rows, under REPLICA IDENTITY DEFAULT (the old key only) and
// FULL (the whole old row), with one source transaction a target
// transaction and with the backlog in one, and the history's current
// versions must hold the value too.
func TestSinksKeyChangeKeepsUnchangedTOAST(t *testing.T) {
	e := newEnv(t)
	target := harness.StartPostgres(t)
	const big = `(SELECT string_agg(md5(g::text || $$%s$$), '') FROM generate_series(1, 1000) g)` // 32 KB, stored out of line
	e.pg.Exec(t,
		`CREATE TABLE kd (id int PRIMARY KEY, v int, doc text)`,
		`CREATE TABLE kf (id int PRIMARY KEY, v int, doc text)`,
		`ALTER TABLE kf REPLICA IDENTITY FULL`,
		`CREATE PUBLICATION pub FOR TABLE kd, kf`)
	e.runProducer(t, e.producerConfig(t))
	for _, tb := range []string{"kd", "kf"} {
		e.pg.Exec(t,
			fmt.Sprintf(`INSERT INTO %s SELECT g, 1, %s FROM generate_series(1, 4) g`, tb, fmt.Sprintf(big, "a")),
			// The key alone changes.
			`UPDATE `+tb+` SET id = 11 WHERE id = 1`,
			// The key and another column change; then, in one transaction,
			// the key twice and the new key's row again.
			`UPDATE `+tb+` SET id = 12, v = 2 WHERE id = 2`,
			`BEGIN`, `UPDATE `+tb+` SET id = 13 WHERE id = 3`, `UPDATE `+tb+` SET id = 23, v = 3 WHERE id = 13`,
			`UPDATE `+tb+` SET v = 4 WHERE id = 23`, `COMMIT`,
			// The key and the large value change: the value is sent.
			fmt.Sprintf(`UPDATE %s SET id = 14, doc = %s WHERE id = 4`, tb, fmt.Sprintf(big, "b")))
	}
	e.waitFrameCount(t, 10)
	const rowsSQL = `SELECT string_agg(concat_ws('/', id, v, length(doc), md5(doc)), ' ' ORDER BY id) FROM `
	want := rowsOf(t, e.pg.Conn(t), rowsSQL, "kd", "kf")
	check := func(name, table, got string) {
		t.Helper()
		if got != want[table] {
			t.Errorf("%s: %s holds (id/v/length/md5 of doc)\n%s\nthe source\n%s", name, table, got, want[table])
		}
	}
	tconn := target.Conn(t)
	for _, group := range []int{1, 100} {
		db := fmt.Sprintf("plain%d", group)
		dsn := newDatabase(t, target, db)
		plain, err := postgres.New(postgres.Config{DSN: dsn, Consumer: db, CreateTables: true, Logger: testLog(t)})
		must(t, err)
		e.mustCatchUp(t, db, plain, group)
		dbc := connect(t, dsn)
		for _, tb := range []string{"kd", "kf"} {
			var got string
			must(t, dbc.QueryRow(context.Background(), rowsSQL+tb).Scan(&got))
			check(db, tb, got)
		}

		name := fmt.Sprintf("hist%d", group)
		hs := newHistorySink(t, target, name, group)
		e.mustCatchUp(t, name, hs, group)
		for _, tb := range []string{"kd", "kf"} {
			var got string
			must(t, tconn.QueryRow(context.Background(), rowsSQL+name+`.`+tb+`_history WHERE valid_to IS NULL AND op NOT IN ('d', 't')`).Scan(&got))
			check(name+" (current versions)", tb, got)
		}

		name = fmt.Sprintf("duck%d", group)
		ds, path := newDuckSink(t, name)
		e.mustCatchUp(t, name, ds, group)
		ddb, err := sql.Open("duckdb", path)
		must(t, err)
		for _, tb := range []string{"kd", "kf"} {
			var got string
			must(t, ddb.QueryRow(`SELECT string_agg(concat_ws('/', id, v, length(doc), md5(doc)), ' ' ORDER BY id) FROM public.`+tb).Scan(&got))
			check(name, tb, got)
		}
		must(t, ddb.Close())
	}

	// Under --on-conflict upsert the target may have diverged: here it
	// holds a row of a key change's new key already (id 11). The moving
	// row takes its place, with its value.
	dsn := newDatabase(t, target, "upsert")
	dbc := connect(t, dsn)
	for _, tb := range []string{"kd", "kf"} {
		if _, err := dbc.Exec(context.Background(), `CREATE TABLE `+tb+` (id int PRIMARY KEY, v int, doc text)`); err != nil {
			t.Fatal(err)
		}
		if _, err := dbc.Exec(context.Background(), `INSERT INTO `+tb+` VALUES (11, 9, 'diverged')`); err != nil {
			t.Fatal(err)
		}
	}
	up, err := postgres.New(postgres.Config{DSN: dsn, Consumer: "upsert", OnConflict: postgres.OnConflictUpsert, Logger: testLog(t)})
	must(t, err)
	e.mustCatchUp(t, "upsert", up, 1)
	for _, tb := range []string{"kd", "kf"} {
		var got string
		must(t, dbc.QueryRow(context.Background(), rowsSQL+tb).Scan(&got))
		check("upsert", tb, got)
	}

	// Per key, the halves of a key change are applied by the workers of
	// their keys' partitions. Where those differ, the insert's worker lacks
	// the old row: it must stop, naming the remedy, and never write the row
	// without its value. The table with REPLICA IDENTITY FULL is complete.
	dsn = newDatabase(t, target, "perkey")
	pk, err := postgres.New(postgres.Config{DSN: dsn, Consumer: "perkey", CreateTables: true, Logger: testLog(t)})
	must(t, err)
	err = e.catchUpSink(t, "perkey", pk, 1, consumer.ModePerKey)
	t.Logf("per-key: %v", err)
	if err != nil && !strings.Contains(err.Error(), "REPLICA IDENTITY FULL") {
		t.Fatalf("per-key: %v", err)
	}
	dbc = connect(t, dsn)
	var made bool // the worker's transaction that would make the table may have stopped
	must(t, dbc.QueryRow(context.Background(), `SELECT to_regclass('public.kd') IS NOT NULL`).Scan(&made))
	var lost int
	if made {
		must(t, dbc.QueryRow(context.Background(), `SELECT count(*) FROM kd WHERE doc IS NULL`).Scan(&lost))
	}
	if lost > 0 {
		t.Errorf("per-key: %d row(s) of kd written without their unchanged value", lost)
	}
	if err == nil {
		var got string
		must(t, dbc.QueryRow(context.Background(), rowsSQL+"kd").Scan(&got))
		check("perkey", "kd", got)
	}
}
