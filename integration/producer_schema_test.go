package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tributary-cdc/tributary/integration/harness"
	"github.com/tributary-cdc/tributary/schemas"
)

// TestProducerSchemaChanges: an added column is a new compatible schema
// version; a column type change is refused under the default policy, with a
// clear error and a non-zero exit, not a crash loop; with
// --schema-change new-version it is registered and streaming goes on.
func TestProducerSchemaChanges(t *testing.T) {
	e := newEnv(t)
	e.pg.Exec(t,
		`CREATE TABLE s (id int PRIMARY KEY, a int)`,
		`CREATE PUBLICATION pub FOR TABLE s`)
	proc := harness.StartTributary(t, nil, e.producerArgs("--snapshot", "never")...)
	e.waitSlotActive(t, "slot", proc)
	e.pg.Exec(t,
		`INSERT INTO s VALUES (1, 1)`,
		`ALTER TABLE s ADD COLUMN b text`,
		`INSERT INTO s VALUES (2, 2, 'two')`)
	e.waitFrameCount(t, 2)
	log := harness.ReadLog(t, e.kafka, e.reg, e.prefix)
	if got := log.Txns[1].Events[0].After["b"]; got != "two" {
		t.Fatalf("row after ADD COLUMN: b = %v, want two", got)
	}
	rc := e.reg.Client()
	subject := schemas.ValueSubject(schemas.TopicName(e.prefix, "public", "s"))
	versions, err := rc.SubjectVersions(context.Background(), subject)
	if err != nil {
		t.Fatal(err)
	}
	if len(versions) != 2 {
		t.Fatalf("%s has versions %v, want 2 after ADD COLUMN", subject, versions)
	}

	// An incompatible change: the default policy stops the producer.
	e.pg.Exec(t, `ALTER TABLE s ALTER COLUMN a TYPE text`, `INSERT INTO s VALUES (3, 'three', 'x')`)
	select {
	case <-waitExit(proc):
	case <-time.After(time.Minute):
		t.Fatalf("producer did not stop on an incompatible schema change:\n%s", lastLines(proc.Output(), 10))
	}
	exited, perr := proc.Exited()
	out := proc.Output()
	if !exited || perr == nil {
		t.Fatalf("producer exit: %v, want a non-zero exit", perr)
	}
	for _, want := range []string{"incompatible schema change", subject, "--schema-change new-version"} {
		if !strings.Contains(out, want) {
			t.Fatalf("error does not mention %q:\n%s", want, lastLines(out, 5))
		}
	}
	if n := strings.Count(out, "replication session failed; retrying"); n > 0 {
		t.Fatalf("the incompatible change was retried %d times; it is permanent", n)
	}
	// Nothing past the last good transaction was confirmed, so a restart with
	// the other policy picks the change up.
	proc = harness.StartTributary(t, nil, e.producerArgs("--snapshot", "never", "--schema-change", "new-version")...)
	e.waitFrameCount(t, 3)
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer: %v\n%s", err, lastLines(proc.Output(), 10))
	}
	log = harness.ReadLog(t, e.kafka, e.reg, e.prefix)
	if got := log.Txns[2].Events[0].After["a"]; got != "three" {
		t.Fatalf("row after ALTER TYPE: a = %v, want three", got)
	}
	if !strings.Contains(proc.Output(), "registering an incompatible schema version") {
		t.Fatalf("no warning for the incompatible version:\n%s", lastLines(proc.Output(), 10))
	}
}

// TestProducerIdleSlotAdvances: while the published tables are idle and other
// databases of the cluster write WAL, the slot's confirmed position still
// moves, so an idle source does not hold WAL forever (G5).
func TestProducerIdleSlotAdvances(t *testing.T) {
	e := newEnv(t)
	e.pg.Exec(t,
		`CREATE TABLE quiet (id int PRIMARY KEY)`,
		`CREATE PUBLICATION pub FOR TABLE quiet`,
		`CREATE DATABASE busy`)
	e.runProducer(t, e.producerConfig(t))
	// A slot being created has no confirmed position yet.
	e.waitSlotActive(t, "slot")
	c := e.pg.Conn(t)
	var start string
	if err := c.QueryRow(context.Background(), `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'slot'`).Scan(&start); err != nil {
		t.Fatal(err)
	}
	busy, err := pgx.Connect(context.Background(), strings.Replace(e.pg.DSN, "/postgres?", "/busy?", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close(context.Background())
	if _, err := busy.Exec(context.Background(), `CREATE TABLE noise (v text); INSERT INTO noise SELECT md5(g::text) FROM generate_series(1, 50000) g`); err != nil {
		t.Fatal(err)
	}
	var target string
	if err := c.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&target); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		var moved bool
		if err := c.QueryRow(context.Background(), `SELECT confirmed_flush_lsn >= $1::pg_lsn FROM pg_replication_slots WHERE slot_name = 'slot'`, target).Scan(&moved); err != nil {
			t.Fatal(err)
		}
		if moved {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot confirmed position stayed below %s (started at %s) while only other databases wrote", target, start)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := harness.CountFrames(t, e.kafka, e.prefix); n != 0 {
		t.Fatalf("%d frames published for an idle publication; heartbeats must not be published", n)
	}
}

// TestProducerDroppedTypeBehind: the producer is behind while a column's
// type is changed and its old type dropped (an enum retyped to text, then
// DROP TYPE). The changes made before hold the old type, which the catalog
// no longer knows; they are carried as their text form rather than stopping
// the producer, which waiting would never mend.
func TestProducerDroppedTypeBehind(t *testing.T) {
	e := newEnv(t)
	e.pg.Exec(t, `CREATE TYPE mood AS ENUM ('calm', 'glad')`,
		`CREATE TABLE dt (id int PRIMARY KEY, m mood)`,
		`CREATE PUBLICATION pub FOR TABLE dt`)
	proc := harness.StartTributary(t, nil, e.producerArgs("--snapshot", "never")...)
	e.waitSlotActive(t, "slot", proc)
	e.waitConfirmed(t, "slot", proc)
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer exit after SIGTERM: %v\n%s", err, lastLines(proc.Output(), 15))
	}
	e.pg.Exec(t, `INSERT INTO dt VALUES (1, 'glad')`,
		`ALTER TABLE dt ALTER COLUMN m TYPE text USING m::text`, `DROP TYPE mood`,
		`INSERT INTO dt VALUES (2, 'other')`)
	proc = harness.StartTributary(t, nil, e.producerArgs("--snapshot", "never", "--schema-change", "new-version")...)
	e.waitFrameCount(t, 2)
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer exit after SIGTERM: %v\n%s", err, lastLines(proc.Output(), 15))
	}
	var got []string
	for _, tx := range harness.ReadLog(t, e.kafka, e.reg, e.prefix).Txns {
		for _, ev := range tx.Events {
			got = append(got, fmt.Sprint(ev.After["id"], " ", ev.After["m"]))
		}
	}
	if strings.Join(got, ",") != "1 glad,2 other" {
		t.Fatalf("Kafka holds %q, want the two rows with their values as text", got)
	}
}
