package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tributary-cdc/tributary/integration/harness"
)

// TestProducerStopsWhenTheSourceWentBack: Kafka holds a slot's transactions
// up to an LSN, and the producer is then pointed (same --prefix and --slot)
// at a source whose WAL ends below it: a cluster made anew, as after a
// restore or a failover to a standby that had replayed less. Its commits
// would be taken for ones Kafka holds and skipped without a word; the
// producer must stop instead, naming both positions and the remedy, before
// it creates a slot.
func TestProducerStopsWhenTheSourceWentBack(t *testing.T) {
	e := newEnv(t)
	ddl := []string{`CREATE TABLE wb (id int PRIMARY KEY)`, `CREATE PUBLICATION pub FOR TABLE wb`}
	e.pg.Exec(t, ddl...)
	proc := harness.StartTributary(t, nil, e.producerArgs("--snapshot", "never")...)
	// Push the first source's WAL well past a new cluster's, then commit.
	for range 3 {
		e.pg.Exec(t, `CREATE TABLE IF NOT EXISTS pad (v text)`, `INSERT INTO pad SELECT md5(g::text) FROM generate_series(1, 1000) g`,
			`SELECT pg_switch_wal()`)
	}
	e.pg.Exec(t, `INSERT INTO wb VALUES (1)`)
	e.waitSlotActive(t, "slot", proc)
	e.waitConfirmed(t, "slot", proc)
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer exit after SIGTERM: %v\n%s", err, lastLines(proc.Output(), 15))
	}

	other := harness.StartPostgres(t)
	other.Exec(t, ddl...)
	args := e.producerArgs("--snapshot", "never")
	for i, a := range args {
		if a == e.pg.DSN {
			args[i] = other.DSN
		}
	}
	proc = harness.StartTributary(t, nil, args...)
	if exited, _ := proc.Wait(60 * time.Second); !exited {
		t.Fatalf("the producer did not stop on a source whose WAL ends below Kafka's position:\n%s", lastLines(proc.Output(), 15))
	}
	out := proc.Output()
	for _, want := range []string{"the source's WAL ends at", "new --prefix"} {
		if !strings.Contains(out, want) {
			t.Fatalf("the producer's error does not say %q:\n%s", want, lastLines(out, 15))
		}
	}
	var slots int
	must(t, other.Conn(t).QueryRow(context.Background(), `SELECT count(*) FROM pg_replication_slots`).Scan(&slots))
	if slots != 0 {
		t.Errorf("the producer created %d slot(s) on the source it refused", slots)
	}
}
