package integration

import (
	"fmt"
	"testing"
	"time"

	"github.com/tributary-cdc/tributary/integration/harness"
)

// TestProducerRidesOutSourceRestarts restarts the source PostgreSQL under a
// running producer, in fast and immediate mode: the producer must reconnect
// by itself (a fast shutdown ends the replication stream with CommandComplete,
// which is the server going away, not a bad stream), and Kafka must hold every
// source transaction once.
func TestProducerRidesOutSourceRestarts(t *testing.T) {
	e := newEnv(t)
	e.pg.Exec(t, `CREATE TABLE r (id int PRIMARY KEY)`, `CREATE PUBLICATION pub FOR TABLE r`)
	proc := harness.StartTributary(t, nil, e.producerArgs("--snapshot", "never")...)
	e.waitSlotActive(t, "slot", proc)
	n := 0
	insert := func(k int) {
		for i := 0; i < k; i++ {
			n++
			e.pg.Exec(t, fmt.Sprintf(`INSERT INTO r VALUES (%d)`, n))
		}
	}
	insert(20)
	for i, mode := range []string{"fast", "immediate", "fast", "fast", "immediate", "fast"} {
		e.waitFrameCount(t, n)
		e.pg.Stop(t, mode)
		time.Sleep(300 * time.Millisecond)
		if exited, err := proc.Exited(); exited {
			t.Fatalf("producer exited on its own after source stop #%d (%s): %v\n%s", i+1, mode, err, lastLines(proc.Output(), 10))
		}
		e.pg.Start(t)
		insert(20)
	}
	e.waitFrameCount(t, n)
	if exited, err := proc.Exited(); exited {
		t.Fatalf("producer exited on its own: %v\n%s", err, lastLines(proc.Output(), 10))
	}
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer exit after SIGTERM: %v\n%s", err, lastLines(proc.Output(), 10))
	}
	log := harness.ReadLog(t, e.kafka, e.reg, e.prefix)
	if len(log.Txns) != n {
		t.Fatalf("Kafka holds %d frames, the source committed %d transactions", len(log.Txns), n)
	}
}
