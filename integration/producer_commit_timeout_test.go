package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tributary-cdc/tributary/integration/harness"
)

// TestProducerCommitTimeoutEndsAStuckCommit: a Kafka commit that cannot end
// must not hold the stream, and the slot, for longer than
// --kafka-commit-timeout. A broker restart has left franz-go with a
// partition whose records were neither delivered nor failed (the chaos
// suite's broker restart on Apache Kafka 3.9); here the proxy in front of
// Kafka passes nothing while transactions stream in, which holds a commit
// the same way. Progress lines must show the commit in flight while it hangs.
// The producer must end the session on the timeout, not exit,
// reconnect, and once Kafka answers again hold every source transaction
// exactly once, those written during the outage included.
func TestProducerCommitTimeoutEndsAStuckCommit(t *testing.T) {
	e := newEnv(t)
	brokers, proxy := e.kafkaBehindProxy(t)
	e.pg.Exec(t, `CREATE TABLE ct (id int PRIMARY KEY, v int NOT NULL)`, `CREATE PUBLICATION pub FOR TABLE ct`)
	const timeout = 3 * time.Second
	proc := harness.StartTributary(t, nil, "producer", "--source", e.pg.DSN, "--publication", "pub", "--slot", "slot",
		"--brokers", brokers, "--registry", e.kafka.RegistryURL, "--prefix", e.prefix, "--snapshot", "never",
		"--heartbeat-interval", "1s", "--kafka-commit-timeout", timeout.String(), "--progress-interval", "500ms", "--log-format", "json")
	e.waitSlotActive(t, "slot", proc)

	c := e.pg.Conn(t)
	id := 0
	insert := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			id++
			if _, err := c.Exec(context.Background(), `INSERT INTO ct VALUES ($1, 0)`, id); err != nil {
				t.Fatal(err)
			}
		}
	}
	insert(1)
	mustWaitOutput(t, proc, `"msg":"table schema"`, time.Minute)

	// Kafka passes nothing: the next group's commit cannot end.
	proxy.SetBlackhole(true)
	held := time.Now()
	insert(50)
	const want = "kafka transaction commit timed out"
	mustWaitOutput(t, proc, want, time.Minute)
	took := time.Since(held)
	if exited, err := proc.Exited(); exited {
		t.Fatalf("the producer exited (%v); a commit timeout must end only the session:\n%s", err, lastLines(proc.Output(), 15))
	}
	// Progress lines showed the commit hanging before it timed out.
	out := proc.Output()
	if i := strings.Index(out, want); !strings.Contains(out[:i], `"kafka_commit_in_flight_for"`) {
		t.Fatalf("no progress line showed the Kafka commit in flight before it timed out:\n%s", lastLines(out[:i], 15))
	}
	proxy.SetBlackhole(false)
	proxy.Reset()
	insert(50)

	e.waitFrameCount(t, id)
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer exit after SIGTERM: %v\n%s", err, lastLines(proc.Output(), 15))
	}
	log := harness.ReadLog(t, e.kafka, e.reg, e.prefix)
	seen := map[int32]int{}
	for _, tx := range log.Txns {
		for _, ev := range tx.Events {
			seen[ev.After["id"].(int32)]++
		}
	}
	for i := int32(1); i <= int32(id); i++ {
		if seen[i] != 1 {
			t.Fatalf("row %d is in Kafka %d times, want once\n%s", i, seen[i], lastLines(proc.Output(), 30))
		}
	}
	if len(log.Txns) != id {
		t.Fatalf("Kafka holds %d frames, the source committed %d transactions", len(log.Txns), id)
	}
	t.Logf("the stuck commit ended the session %s after Kafka stopped answering (timeout %s); %d transactions in Kafka exactly once",
		took.Round(time.Millisecond), timeout, id)
}
