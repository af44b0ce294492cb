package integration

import (
	"context"
	"testing"
	"time"

	"github.com/tributary-cdc/tributary/integration/harness"
)

// TestReplayInCommitOrder is the seed's example ("Transaction Order for
// Replay", seed 002): transaction 1 starts first and updates tableA; then
// transaction 2 updates tableB to 10 and commits; then transaction 1 updates
// tableB to 20 and commits. Replayed by completion, colB ends at 20 on the
// target, and the target applied transaction 2 before transaction 1.
func TestReplayInCommitOrder(t *testing.T) {
	e := newEnv(t)
	target := harness.StartPostgres(t)
	for _, pg := range []*harness.Postgres{e.pg, target} {
		pg.Exec(t,
			`CREATE TABLE "tableA" (id int PRIMARY KEY, "colA" int)`,
			`CREATE TABLE "tableB" (id int PRIMARY KEY, "colB" int)`)
	}
	e.pg.Exec(t, `INSERT INTO "tableA" VALUES (1, 0)`, `INSERT INTO "tableB" VALUES (1, 0)`,
		`CREATE PUBLICATION pub FOR TABLE "tableA", "tableB"`)
	target.Exec(t, `INSERT INTO "tableA" VALUES (1, 0)`, `INSERT INTO "tableB" VALUES (1, 0)`,
		`CREATE TABLE applied (seq serial, tbl text, val int)`,
		`CREATE FUNCTION note_a() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
		   INSERT INTO applied (tbl, val) VALUES (TG_TABLE_NAME, NEW."colA"); RETURN NULL; END $$`,
		`CREATE FUNCTION note_b() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
		   INSERT INTO applied (tbl, val) VALUES (TG_TABLE_NAME, NEW."colB"); RETURN NULL; END $$`,
		`CREATE TRIGGER na AFTER UPDATE ON "tableA" FOR EACH ROW EXECUTE FUNCTION note_a()`,
		`CREATE TRIGGER nb AFTER UPDATE ON "tableB" FOR EACH ROW EXECUTE FUNCTION note_b()`,
		`ALTER TABLE "tableA" ENABLE ALWAYS TRIGGER na`, `ALTER TABLE "tableB" ENABLE ALWAYS TRIGGER nb`)
	e.runProducer(t, e.producerConfig(t))

	ctx := context.Background()
	t1, err := e.pg.Conn(t).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, t1, `UPDATE "tableA" SET "colA" = 1 WHERE id = 1`)
	t2, err := e.pg.Conn(t).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, t2, `UPDATE "tableB" SET "colB" = 10 WHERE id = 1`)
	if err := t2.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	mustExec(t, t1, `UPDATE "tableB" SET "colB" = 20 WHERE id = 1`)
	if err := t1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	e.waitConfirmed(t, "slot", nil)
	c := harness.StartTributary(t, nil, "consumer", "--brokers", e.kafka.Brokers[0], "--registry", e.kafka.RegistryURL,
		"--prefix", e.prefix, "--name", "order", "--target", target.DSN, "--until-caught-up", "--log-format", "json")
	select {
	case <-waitExit(c):
	case <-time.After(time.Minute):
		t.Fatalf("consumer did not catch up:\n%s", lastLines(c.Output(), 10))
	}
	if _, err := c.Exited(); err != nil {
		t.Fatalf("consumer: %v\n%s", err, lastLines(c.Output(), 10))
	}
	var colB int
	if err := target.Conn(t).QueryRow(ctx, `SELECT "colB" FROM "tableB" WHERE id = 1`).Scan(&colB); err != nil {
		t.Fatal(err)
	}
	if colB != 20 {
		t.Fatalf(`target "tableB"."colB" = %d, want 20: transactions were not replayed in commit order`, colB)
	}
	rows, err := target.Conn(t).Query(ctx, `SELECT tbl, val FROM applied ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for rows.Next() {
		var tbl string
		var val int
		if err := rows.Scan(&tbl, &val); err != nil {
			t.Fatal(err)
		}
		order = append(order, tbl+"="+itoa(val))
	}
	want := []string{"tableB=10", "tableA=1", "tableB=20"}
	if len(order) != 3 || order[0] != want[0] || order[1] != want[1] || order[2] != want[2] {
		t.Fatalf("target applied %v, want %v (transaction 2, then transaction 1)", order, want)
	}
}

func itoa(i int) string {
	if i < 0 {
		return "-" + itoa(-i)
	}
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}
