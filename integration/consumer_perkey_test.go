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

// TestPerKeyModeConvergesExactlyOnce runs `tributary consumer --mode per-key`
// (partitions applied in parallel, order per key only) through a workload of
// inserts, updates and deletes with two SIGKILLs, then catches up: the target
// equals the source and an ENABLE ALWAYS audit trigger saw each change once.
func TestPerKeyModeConvergesExactlyOnce(t *testing.T) {
	e := newEnv(t)
	target := harness.StartPostgres(t)
	for _, pg := range []*harness.Postgres{e.pg, target} {
		pg.Exec(t, `CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, note text)`,
			`CREATE TABLE tags (k text PRIMARY KEY, v int)`)
	}
	e.pg.Exec(t, `CREATE PUBLICATION pub FOR TABLE items, tags`)
	target.Exec(t,
		`CREATE TABLE audit (n int)`,
		`CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO audit VALUES (1); RETURN NULL; END $$`,
		`CREATE TRIGGER a1 AFTER INSERT OR UPDATE OR DELETE ON items FOR EACH ROW EXECUTE FUNCTION audit()`,
		`CREATE TRIGGER a2 AFTER INSERT OR UPDATE OR DELETE ON tags FOR EACH ROW EXECUTE FUNCTION audit()`,
		`ALTER TABLE items ENABLE ALWAYS TRIGGER a1`, `ALTER TABLE tags ENABLE ALWAYS TRIGGER a2`)
	e.runProducer(t, e.producerConfig(t))
	args := []string{"consumer", "--brokers", e.kafka.Brokers[0], "--registry", e.kafka.RegistryURL, "--prefix", e.prefix,
		"--name", "pk", "--target", target.DSN, "--mode", "per-key", "--log-format", "json"}

	ctx, stop := context.WithCancel(context.Background())
	var changes atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c := e.pg.Conn(t)
		present := map[int]bool{}
		for i := 0; ctx.Err() == nil; i++ {
			id := rand.IntN(200)
			var sql string
			switch {
			case !present[id]:
				sql = fmt.Sprintf(`INSERT INTO items VALUES (%d, %d, 'n%d')`, id, i, i)
				present[id] = true
			case i%5 == 0:
				sql = fmt.Sprintf(`DELETE FROM items WHERE id = %d`, id)
				delete(present, id)
			default:
				sql = fmt.Sprintf(`UPDATE items SET qty = qty + 1, note = 'u%d' WHERE id = %d`, i, id)
			}
			sql += fmt.Sprintf(`; INSERT INTO tags VALUES ('k%d', %d) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v`, id%37, i)
			if _, err := c.Exec(context.Background(), "BEGIN; "+sql+"; COMMIT"); err != nil {
				t.Errorf("workload: %v", err)
				return
			}
			changes.Add(2)
		}
	}()
	proc := harness.StartTributary(t, nil, args...)
	for i := 0; i < 2; i++ {
		time.Sleep(time.Duration(700+rand.IntN(800)) * time.Millisecond)
		if exited, err := proc.Exited(); exited {
			t.Fatalf("consumer exited (%v):\n%s", err, lastLines(proc.Output(), 10))
		}
		proc.Kill()
		proc = harness.StartTributary(t, nil, args...)
	}
	time.Sleep(time.Second)
	stop()
	wg.Wait()
	proc.Kill()
	e.waitConfirmed(t, "slot", nil)
	final := harness.StartTributary(t, nil, append(args, "--until-caught-up")...)
	select {
	case <-waitExit(final):
	case <-time.After(2 * time.Minute):
		t.Fatalf("per-key --until-caught-up did not finish:\n%s", lastLines(final.Output(), 10))
	}
	if _, err := final.Exited(); err != nil {
		t.Fatalf("per-key --until-caught-up: %v\n%s", err, lastLines(final.Output(), 10))
	}
	for _, tbl := range []string{"items", "tags"} {
		if src, dst := tableDump(t, e.pg, tbl), tableDump(t, target, tbl); fmt.Sprint(src) != fmt.Sprint(dst) {
			t.Fatalf("%s differs: source %d rows, target %d rows", tbl, len(src), len(dst))
		}
	}
	var audited int64
	if err := target.Conn(t).QueryRow(context.Background(), `SELECT count(*) FROM audit`).Scan(&audited); err != nil {
		t.Fatal(err)
	}
	if audited != changes.Load() {
		t.Fatalf("audit saw %d row changes, the source made %d", audited, changes.Load())
	}
	t.Logf("%d changes applied once each in per-key mode across 2 SIGKILLs", audited)
}
