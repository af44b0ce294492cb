package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tributary-cdc/tributary/integration/harness"
)

// TestProducerCommitTimeoutEndsAStuckCommit: a Kafka client that stops
// delivering must not hold the stream, and the slot, for longer than
// --kafka-commit-timeout. A broker restart has left franz-go with a
// partition whose records were neither delivered nor failed (the chaos
// suite's broker restart on Apache Kafka 3.9); here the proxy in front of
// Kafka passes nothing, which holds the client the same way, twice:
//   - while small transactions stream in, so that a group's commit hangs
//     (progress lines must show it in flight);
//   - while one transaction larger than the client's buffer (10,000
//     records) streams in, so that producing blocks before any commit.
//
// Each time the session must end on the timeout with a transient error, the
// producer must not exit, and once Kafka answers again it must hold every
// source transaction exactly once, those written during the outages
// included.
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
	id, txns := 0, 0
	insert := func(n int) { // n single-row transactions
		t.Helper()
		for i := 0; i < n; i++ {
			id++
			txns++
			if _, err := c.Exec(context.Background(), `INSERT INTO ct VALUES ($1, 0)`, id); err != nil {
				t.Fatal(err)
			}
		}
	}
	insertOne := func(rows int) { // one transaction of rows rows
		t.Helper()
		if _, err := c.Exec(context.Background(), `INSERT INTO ct SELECT g, 1 FROM generate_series($1::int, $2::int) g`, id+1, id+rows); err != nil {
			t.Fatal(err)
		}
		id += rows
		txns++
	}
	// outage holds Kafka while write runs, waits for the session to end
	// with want, and returns the output printed during the outage.
	outage := func(write func(), want string) string {
		t.Helper()
		from := len(proc.Output())
		proxy.SetBlackhole(true)
		held := time.Now()
		write()
		mustWaitOutput(t, proc, want, time.Minute)
		out := proc.Output()[from:]
		i := strings.Index(out, want)
		line := out[strings.LastIndexByte(out[:i], '\n')+1:]
		line = line[:strings.IndexByte(line, '\n')+1]
		if !strings.Contains(line, `"msg":"replication session failed; retrying"`) {
			t.Fatalf("%q must end the session with a transient error, not the producer:\n%s", want, lastLines(proc.Output(), 15))
		}
		t.Logf("Kafka held: %q ended the session after %s (timeout %s)", want, time.Since(held).Round(time.Millisecond), timeout)
		proxy.SetBlackhole(false)
		proxy.Reset()
		return out[:i]
	}

	insert(1)
	mustWaitOutput(t, proc, `"msg":"table schema"`, time.Minute)
	before := outage(func() { insert(50) }, "kafka transaction commit timed out")
	if !strings.Contains(before, `"kafka_commit_in_flight_for"`) {
		t.Fatalf("no progress line showed the Kafka commit in flight before it timed out:\n%s", lastLines(before, 15))
	}
	insert(50)
	e.waitFrameCount(t, txns)
	outage(func() { insertOne(30000) }, "kafka client stalled")
	insert(50)

	e.waitFrameCount(t, txns)
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer exit after SIGTERM: %v\n%s", err, lastLines(proc.Output(), 15))
	}
	log := harness.ReadLog(t, e.kafka, e.reg, e.prefix)
	requireEachRowOnce(t, log, id, func() string { return lastLines(proc.Output(), 30) })
	if len(log.Txns) != txns {
		t.Fatalf("Kafka holds %d frames, the source committed %d transactions", len(log.Txns), txns)
	}
	t.Logf("%d transactions (%d rows) in Kafka exactly once", txns, id)
}
