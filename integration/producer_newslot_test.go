package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tributary-cdc/tributary/integration/harness"
	"github.com/tributary-cdc/tributary/schemas"
)

// TestProducerNewSlotSnapshotSurvivesFailedStart: the slot is dropped (as
// `tributary slot drop` does) while the producer's state stays in Kafka,
// and rows are written and a column retyped meanwhile. The producer started
// again with --snapshot initial creates a new slot and must snapshot every
// table, since the changes made without a slot are in no stream. Its first
// session stops before any chunk, at the retyped column's incompatible
// schema (--schema-change fail); the restarted producer finds the slot it
// created and its old state. It must still take the snapshot (online): the
// rows written while the slot was gone reach Kafka.
func TestProducerNewSlotSnapshotSurvivesFailedStart(t *testing.T) {
	e := newEnv(t)
	e.pg.Exec(t,
		`CREATE TABLE ns (id int PRIMARY KEY, v int)`,
		`INSERT INTO ns SELECT g, g FROM generate_series(1, 10) g`,
		`CREATE PUBLICATION pub FOR TABLE ns`)
	proc := harness.StartTributary(t, nil, e.producerArgs("--snapshot", "initial")...)
	e.waitSnapshotsDone(t, proc, "public.ns")
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer exit after SIGTERM: %v\n%s", err, lastLines(proc.Output(), 15))
	}

	e.pg.Exec(t, `SELECT pg_drop_replication_slot('slot')`,
		`INSERT INTO ns SELECT g, g FROM generate_series(11, 20) g`,
		`ALTER TABLE ns ALTER COLUMN v TYPE bigint`)
	proc = harness.StartTributary(t, nil, e.producerArgs("--snapshot", "initial")...)
	if exited, _ := proc.Wait(60 * time.Second); !exited {
		t.Fatalf("the producer did not stop at the incompatible schema:\n%s", lastLines(proc.Output(), 15))
	}
	if out := proc.Output(); !strings.Contains(out, "incompatible schema change") || !strings.Contains(out, "created replication slot") {
		t.Fatalf("want a new slot, then a stop at the incompatible schema:\n%s", lastLines(out, 15))
	}

	proc = harness.StartTributary(t, nil, e.producerArgs("--snapshot", "initial", "--schema-change", "new-version")...)
	e.pg.Exec(t, `INSERT INTO ns VALUES (100, 100)`) // streamed: the producer has started once the slot passes it
	e.waitSnapshotsDone(t, proc, "public.ns")
	e.waitConfirmed(t, "slot", proc)
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer exit after SIGTERM: %v\n%s", err, lastLines(proc.Output(), 15))
	}
	seen := map[string]bool{} // "id v" of every row image in Kafka
	num := func(v any) int64 {
		switch x := v.(type) {
		case int32:
			return int64(x)
		case int64:
			return x
		}
		t.Fatalf("unexpected value %T %v", v, v)
		return 0
	}
	for _, tx := range harness.ReadLog(t, e.kafka, e.reg, e.prefix).Txns {
		for _, ev := range tx.Events {
			if ev.Topic == schemas.TopicName(e.prefix, "public", "ns") && ev.After != nil {
				seen[fmt.Sprint(num(ev.After["id"]), num(ev.After["v"]))] = true
			}
		}
	}
	rows, err := e.pg.Conn(t).Query(context.Background(), `SELECT id::bigint, v::bigint FROM ns ORDER BY id`)
	must(t, err)
	var missing []string
	n := 0
	for rows.Next() {
		var id, v int64
		must(t, rows.Scan(&id, &v))
		n++
		if !seen[fmt.Sprint(id, v)] {
			missing = append(missing, fmt.Sprint(id))
		}
	}
	must(t, rows.Err())
	if n != 21 {
		t.Fatalf("the source holds %d rows, want 21", n)
	}
	if len(missing) > 0 {
		t.Fatalf("rows written while the slot was gone never reached Kafka: ids %v\n%s", missing, lastLines(proc.Output(), 20))
	}
}
