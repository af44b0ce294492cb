package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/tributary-cdc/tributary/integration/harness"
)

// TestProducerStopsWhenTheSourceWentBack: Kafka holds a slot's transactions
// up to a position, and the producer is then pointed (same --prefix and
// --slot) at a source whose WAL history does not hold that position: a
// copy of the cluster from before it, started as it was (its WAL ends below
// the position) or restored to a new timeline and written to until its WAL
// passes the position, and a cluster made anew with initdb, written to as
// far. Its commits would be taken for ones Kafka holds and skipped without a
// word, or ordered among transactions it never had; the producer must stop
// instead, naming the reason and the remedy, before it creates a slot. A
// failover that kept the position (the source itself promoted to a new
// timeline) must not stop it, nor another cluster that the operator adopts
// (--adopt-source, for pg_upgrade).
func TestProducerStopsWhenTheSourceWentBack(t *testing.T) {
	e := newEnv(t)
	ddl := []string{`CREATE TABLE wb (id int PRIMARY KEY)`, `CREATE PUBLICATION pub FOR TABLE wb`}
	e.pg.Exec(t, ddl...)
	// Two copies of the source as it is before the producer starts.
	e.pg.Stop(t, "fast")
	asWas, restored := e.pg.Copy(t), e.pg.Copy(t)
	e.pg.Start(t)

	argsFor := func(pg *harness.Postgres) []string {
		args := e.producerArgs("--snapshot", "never")
		for i, a := range args {
			if a == e.pg.DSN {
				args[i] = pg.DSN
			}
		}
		return args
	}
	// run runs the producer on pg until pg's WAL is in Kafka, with id
	// committed first.
	run := func(pg *harness.Postgres, id int, extra ...string) {
		t.Helper()
		on := &env{pg: pg, kafka: e.kafka, reg: e.reg, prefix: e.prefix}
		proc := harness.StartTributary(t, nil, append(argsFor(pg), extra...)...)
		on.waitSlotActive(t, "slot", proc)
		pg.Exec(t, `INSERT INTO wb VALUES (`+itoa(id)+`)`)
		on.waitConfirmed(t, "slot", proc)
		if err := proc.Stop(t, 30*time.Second); err != nil {
			t.Fatalf("producer exit after SIGTERM: %v\n%s", err, lastLines(proc.Output(), 15))
		}
	}
	walEnd := func(pg *harness.Postgres) pglogrepl.LSN {
		t.Helper()
		var lsn pglogrepl.LSN
		must(t, pg.Conn(t).QueryRow(context.Background(), `SELECT pg_current_wal_lsn()`).Scan(&lsn))
		return lsn
	}
	// pastPosition writes to pg until its WAL passes the source's: a check
	// of the WAL's end alone lets the producer through.
	pastPosition := func(pg *harness.Postgres) {
		t.Helper()
		end := walEnd(e.pg)
		for range 20 {
			if walEnd(pg) > end {
				return
			}
			pg.Exec(t, `CREATE TABLE IF NOT EXISTS pad (v text)`, `INSERT INTO pad SELECT md5(g::text) FROM generate_series(1, 1000) g`,
				`SELECT pg_switch_wal()`)
		}
		t.Fatalf("%s's WAL is still below %s", pg.Dir, end)
	}
	refused := func(pg *harness.Postgres, want string) {
		t.Helper()
		proc := harness.StartTributary(t, nil, argsFor(pg)...)
		if exited, _ := proc.Wait(60 * time.Second); !exited {
			t.Fatalf("the producer did not stop on a source without its position (want %q):\n%s", want, lastLines(proc.Output(), 15))
		}
		out := proc.Output()
		t.Logf("%s: %s", want, lastLines(out, 1))
		for _, w := range []string{want, "new --prefix"} {
			if !strings.Contains(out, w) {
				t.Fatalf("the producer's error does not say %q:\n%s", w, lastLines(out, 15))
			}
		}
		var slots int
		must(t, pg.Conn(t).QueryRow(context.Background(), `SELECT count(*) FROM pg_replication_slots`).Scan(&slots))
		if slots != 0 {
			t.Errorf("%d slot(s) on the source the producer refused", slots)
		}
	}

	run(e.pg, 1)

	// The copy as it was: the same cluster and timeline, its WAL below.
	asWas.Start(t)
	refused(asWas, "the source's WAL ends at")

	// The copy restored to a new timeline, which leaves timeline 1 below
	// the position, and written to past it.
	restored.Promote(t)
	pastPosition(restored)
	refused(restored, "left timeline 1 at")

	// The source itself promoted: its new timeline begins past the
	// position, and the producer goes on, on it.
	e.pg.Stop(t, "fast")
	e.pg.Promote(t)
	run(e.pg, 2)

	// A cluster made anew, written to past the position.
	other := harness.StartPostgres(t)
	other.Exec(t, ddl...)
	pastPosition(other)
	refused(other, "another PostgreSQL cluster")
	// Adopted, as after pg_upgrade, it is the source from then on.
	run(other, 3, "--adopt-source")
}
