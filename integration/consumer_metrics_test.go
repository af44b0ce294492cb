package integration

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/tributary-cdc/tributary/integration/harness"
)

// TestConsumerMetricsMove: the consumer's metrics follow a workload (rows per
// table, transactions, apply latency, lag back to zero) and /readyz is ready
// while it applies.
func TestConsumerMetricsMove(t *testing.T) {
	e := newEnv(t)
	target := harness.StartPostgres(t)
	for _, pg := range []*harness.Postgres{e.pg, target} {
		pg.Exec(t, `CREATE TABLE a (id int PRIMARY KEY)`, `CREATE TABLE b (id int PRIMARY KEY)`)
	}
	e.pg.Exec(t, `CREATE PUBLICATION pub FOR TABLE a, b`)
	e.runProducer(t, e.producerConfig(t))
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	proc := harness.StartTributary(t, nil, "consumer", "--brokers", e.kafka.Brokers[0], "--registry", e.kafka.RegistryURL,
		"--prefix", e.prefix, "--name", "m", "--target", target.DSN, "--metrics-addr", addr, "--log-format", "json")
	for i := 0; i < 30; i++ {
		e.pg.Exec(t, fmt.Sprintf(`BEGIN; INSERT INTO a VALUES (%d); INSERT INTO b VALUES (%d), (%d); COMMIT`, i, 2*i, 2*i+1))
	}
	deadline := time.Now().Add(time.Minute)
	for {
		txns, _ := scrape(t, addr, "tributary_consumer_transactions_total")
		behind, _ := scrape(t, addr, "tributary_consumer_lag_offsets")
		if txns == 30 && behind == 0 {
			break
		}
		if exited, err := proc.Exited(); exited {
			t.Fatalf("consumer exited (%v):\n%s", err, lastLines(proc.Output(), 10))
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer metrics: %v transactions applied, %v offsets behind; want 30 and 0", txns, behind)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if got := httpStatus(t, "http://"+addr+"/readyz"); got != http.StatusOK {
		t.Fatalf("/readyz while applying: %d", got)
	}
	// Caught up on an idle source, nothing is read ahead and nothing paused
	// (the bounds themselves are tested in the consumer package).
	for _, name := range []string{"tributary_consumer_read_ahead_records", "tributary_consumer_read_ahead_bytes", "tributary_consumer_paused_partitions"} {
		for deadline := time.Now().Add(30 * time.Second); ; {
			v, found := scrape(t, addr, name)
			if !found {
				t.Fatalf("%s is not served", name)
			}
			if v == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s is %v caught up on an idle source, want 0", name, v)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	rows := scrapeLabeled(t, addr, "tributary_consumer_rows_total")
	if rows[`table="public.a"`] != 30 || rows[`table="public.b"`] != 60 {
		t.Fatalf("rows per table: %v, want a=30 b=60", rows)
	}
	if n, _ := scrape(t, addr, "tributary_consumer_apply_seconds_count"); n < 1 {
		t.Fatalf("apply latency histogram is empty")
	}
	// The source is idle now: the producer's heartbeats (every second here)
	// still reach the consumer, so its applied commit time keeps moving
	// and its freshness is measurable.
	idle, _ := scrape(t, addr, "tributary_consumer_applied_commit_timestamp_seconds")
	for deadline := time.Now().Add(time.Minute); ; {
		if now, _ := scrape(t, addr, "tributary_consumer_applied_commit_timestamp_seconds"); now >= idle+2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("on an idle source the applied commit time stays at %v: heartbeats do not reach the consumer", idle)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if txns, _ := scrape(t, addr, "tributary_consumer_transactions_total"); txns != 30 {
		t.Fatalf("%v source transactions applied after the heartbeats, want 30: heartbeats are no source transactions", txns)
	}
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("consumer exit after SIGTERM: %v\n%s", err, lastLines(proc.Output(), 10))
	}
}
