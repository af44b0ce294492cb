package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tributary-cdc/tributary/integration/harness"
)

// tableDump is a table's rows as text, in key order, for comparing databases.
func tableDump(t *testing.T, pg *harness.Postgres, table string) []string {
	t.Helper()
	c := pg.Conn(t)
	rows, err := c.Query(context.Background(), fmt.Sprintf(`SELECT t::text FROM %s t ORDER BY 1`, table))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// TestEndToEndKillNineConsumer runs the producer and `tributary consumer` as
// users do, kills the consumer with SIGKILL at random points while a money
// transfer workload runs, and checks that the target equals the source and
// that a target-side ENABLE ALWAYS audit trigger saw each change once.
func TestEndToEndKillNineConsumer(t *testing.T) {
	e := newEnv(t)
	target := harness.StartPostgres(t)
	const accounts = 40
	for _, pg := range []*harness.Postgres{e.pg, target} {
		pg.Exec(t,
			`CREATE TABLE checking (id int PRIMARY KEY, balance bigint NOT NULL)`,
			`CREATE TABLE savings (id int PRIMARY KEY, balance bigint NOT NULL)`)
	}
	e.pg.Exec(t,
		fmt.Sprintf(`INSERT INTO checking SELECT g, 1000 FROM generate_series(1, %d) g`, accounts),
		fmt.Sprintf(`INSERT INTO savings SELECT g, 1000 FROM generate_series(1, %d) g`, accounts),
		`CREATE PUBLICATION pub FOR TABLE checking, savings`)
	target.Exec(t,
		`CREATE TABLE audit (tbl text, id int, balance bigint)`,
		`CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$
		 BEGIN INSERT INTO audit VALUES (TG_TABLE_NAME, NEW.id, NEW.balance); RETURN NEW; END $$`,
		`CREATE TRIGGER a1 AFTER INSERT OR UPDATE ON checking FOR EACH ROW EXECUTE FUNCTION audit()`,
		`CREATE TRIGGER a2 AFTER INSERT OR UPDATE ON savings FOR EACH ROW EXECUTE FUNCTION audit()`,
		`ALTER TABLE checking ENABLE ALWAYS TRIGGER a1`,
		`ALTER TABLE savings ENABLE ALWAYS TRIGGER a2`)
	cfg := e.producerConfig(t)
	cfg.Snapshot = "initial"
	e.runProducer(t, cfg)

	consumerArgs := []string{"consumer", "--brokers", e.kafka.Brokers[0], "--registry", e.kafka.RegistryURL,
		"--prefix", e.prefix, "--name", "replica", "--target", target.DSN, "--log-format", "json"}
	ctx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var changes atomic.Int64
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := e.pg.Conn(t)
			for ctx.Err() == nil {
				id := rand.IntN(accounts) + 1
				amt := rand.IntN(50) + 1
				_, err := c.Exec(context.Background(), fmt.Sprintf(`BEGIN;
					UPDATE checking SET balance = balance - %d WHERE id = %d;
					UPDATE savings SET balance = balance + %d WHERE id = %d;
					COMMIT`, amt, id, amt, id))
				if err != nil {
					t.Errorf("workload: %v", err)
					return
				}
				changes.Add(2)
			}
		}()
	}
	proc := harness.StartTributary(t, nil, consumerArgs...)
	for i := 0; i < 5; i++ {
		time.Sleep(time.Duration(400+rand.IntN(1200)) * time.Millisecond)
		if exited, err := proc.Exited(); exited {
			t.Fatalf("consumer exited on its own (%v):\n%s", err, lastLines(proc.Output(), 15))
		}
		proc.Kill()
		proc = harness.StartTributary(t, nil, consumerArgs...)
	}
	stopLoad()
	wg.Wait()
	proc.Kill()
	// Wait until Kafka holds everything, then catch up and exit.
	e.waitFrameCount(t, int(changes.Load()/2)+2) // + the two snapshot chunks
	final := harness.StartTributary(t, nil, append(consumerArgs, "--until-caught-up")...)
	select {
	case <-waitExit(final):
	case <-time.After(2 * time.Minute):
		t.Fatalf("consumer --until-caught-up did not finish:\n%s", lastLines(final.Output(), 15))
	}
	if _, err := final.Exited(); err != nil {
		t.Fatalf("consumer --until-caught-up: %v\n%s", err, lastLines(final.Output(), 15))
	}
	for _, tbl := range []string{"checking", "savings"} {
		src, dst := tableDump(t, e.pg, tbl), tableDump(t, target, tbl)
		if fmt.Sprint(src) != fmt.Sprint(dst) {
			t.Fatalf("%s differs:\nsource %v\ntarget %v", tbl, src, dst)
		}
	}
	var audited int64
	target.Conn(t).QueryRow(context.Background(), `SELECT count(*) FROM audit`).Scan(&audited)
	if want := changes.Load() + 2*accounts; audited != want {
		t.Fatalf("audit trigger saw %d row changes, want %d (%d snapshot rows + %d updates): a change was applied twice or lost",
			audited, want, 2*accounts, changes.Load())
	}
	t.Logf("%d changes, 5 consumer kill -9s: target equals source, each change applied once", changes.Load())
}

func waitExit(p *harness.Proc) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		for {
			if exited, _ := p.Exited(); exited {
				close(ch)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return ch
}
