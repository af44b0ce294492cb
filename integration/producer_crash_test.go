package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tributary-cdc/tributary/integration/harness"
	"github.com/tributary-cdc/tributary/schemas"
)

// producerArgs are the command-line flags of a producer subprocess for e.
func (e *env) producerArgs(extra ...string) []string {
	return append([]string{"producer",
		"--source", e.pg.DSN, "--publication", "pub", "--slot", "slot",
		"--brokers", strings.Join(e.kafka.Brokers, ","), "--registry", e.kafka.RegistryURL, "--prefix", e.prefix,
		"--heartbeat-interval", "1s", "--log-format", "json", "--log-level", "info"}, extra...)
}

// TestProducerKillNineExactlyOnce kills the producer with SIGKILL at random
// points of a running workload, restarts it each time, and checks that Kafka
// holds every committed source transaction exactly once, in commit order.
func TestProducerKillNineExactlyOnce(t *testing.T) {
	e := newEnv(t)
	e.pg.Exec(t,
		`CREATE TABLE acct (id int PRIMARY KEY, balance bigint NOT NULL)`,
		`CREATE TABLE ledger (id bigint PRIMARY KEY, acct int NOT NULL, amount bigint NOT NULL)`,
		`INSERT INTO acct SELECT g, 1000 FROM generate_series(1, 50) g`,
		`CREATE PUBLICATION pub FOR TABLE acct, ledger`)
	proc := harness.StartTributary(t, nil, e.producerArgs("--snapshot", "never")...)
	e.waitSlotActive(t, "slot", proc)

	// The workload: each transaction moves money between two accounts and
	// writes a ledger row with a unique id; the ids of committed ones are kept.
	ctx, stopLoad := context.WithCancel(context.Background())
	var committed sync.Map
	var nCommitted atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := e.pg.Conn(t)
			for i := 0; ctx.Err() == nil; i++ {
				id := int64(w)*1_000_000 + int64(i)
				a, b := rand.IntN(50)+1, rand.IntN(50)+1
				if a > b { // lock in id order: no deadlocks between workers
					a, b = b, a
				}
				_, err := c.Exec(context.Background(), fmt.Sprintf(`BEGIN;
					UPDATE acct SET balance = balance - 1 WHERE id = %d;
					UPDATE acct SET balance = balance + 1 WHERE id = %d;
					INSERT INTO ledger VALUES (%d, %d, 1);
					COMMIT`, a, b, id, a))
				if err != nil {
					t.Errorf("workload: %v", err)
					return
				}
				committed.Store(id, true)
				nCommitted.Add(1)
			}
		}(w)
	}

	const kills = 6
	for i := 0; i < kills; i++ {
		time.Sleep(time.Duration(300+rand.IntN(1200)) * time.Millisecond)
		if exited, err := proc.Exited(); exited {
			t.Fatalf("producer exited on its own (%v):\n%s", err, lastLines(proc.Output(), 15))
		}
		proc.Kill()
		t.Logf("kill -9 #%d with %d transactions committed at the source", i+1, nCommitted.Load())
		time.Sleep(time.Duration(rand.IntN(500)) * time.Millisecond)
		proc = harness.StartTributary(t, nil, e.producerArgs("--snapshot", "never")...)
	}
	time.Sleep(time.Second)
	stopLoad()
	wg.Wait()
	total := int(nCommitted.Load())
	e.waitFrameCount(t, total)
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer exit after SIGTERM: %v\n%s", err, proc.Output())
	}
	log := harness.ReadLog(t, e.kafka, e.reg, e.prefix)
	if len(log.Txns) != total {
		t.Fatalf("Kafka holds %d frames, the source committed %d transactions", len(log.Txns), total)
	}
	seen := map[int64]int{}
	for _, tx := range log.Txns {
		if len(tx.Events) != 3 {
			t.Fatalf("transaction %v has %d events, want 3", tx, len(tx.Events))
		}
		for _, ev := range tx.Events {
			if ev.Op == schemas.OpInsert {
				seen[ev.After["id"].(int64)]++
			}
		}
	}
	missing, dup := 0, 0
	committed.Range(func(k, _ any) bool {
		switch seen[k.(int64)] {
		case 0:
			missing++
		case 1:
		default:
			dup++
		}
		return true
	})
	if missing > 0 || dup > 0 || len(seen) != total {
		t.Fatalf("%d committed ledger rows missing from Kafka, %d duplicated, %d distinct in Kafka, %d committed", missing, dup, len(seen), total)
	}
	t.Logf("%d source transactions, %d kill -9s: every one in Kafka exactly once", total, kills)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
