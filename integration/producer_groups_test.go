package integration

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tributary-cdc/tributary/integration/harness"
)

// TestProducerGroupHoldsItsWindow: a group's Kafka transaction holds every
// source transaction that committed before its --group-max-delay ran out,
// though the stream reads a group's window at once rather than message by
// message (producer/coalesce.go). The first transaction opens a group of 5
// s; nine more commit while it is open, after the producer has read the
// first; all ten must reach Kafka in one commit. A stream that waited on
// the socket's low-water mark and committed at the deadline without first
// reading what had arrived would commit the first alone and the nine in a
// second group.
func TestProducerGroupHoldsItsWindow(t *testing.T) { groupHoldsItsWindow(t, false) }

// TestProducerGroupHoldsItsWindowTLS is TestProducerGroupHoldsItsWindow with
// the source over TLS: the TLS layer holds records that neither pgconn's
// buffer nor the kernel's count shows, and a drain that did not read them
// would commit in two groups too. Its subject is the PostgreSQL connection,
// so it runs on the embedded broker only (Makefile, KAFKA_LANE_SKIP).
func TestProducerGroupHoldsItsWindowTLS(t *testing.T) { groupHoldsItsWindow(t, true) }

func groupHoldsItsWindow(t *testing.T, overTLS bool) {
	e := newEnv(t)
	e.pg.Exec(t, `CREATE TABLE g (id int PRIMARY KEY)`, `CREATE PUBLICATION pub FOR TABLE g`)
	source := e.pg.DSN
	if overTLS {
		configureTLS(t, e.pg, newTestPKI(t, "postgres"))
		e.pg.Stop(t, "fast")
		e.pg.Start(t)
		source = strings.Replace(source, "sslmode=disable", "sslmode=require", 1)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	proc := harness.StartTributary(t, nil, e.producerArgs("--source", source, "--snapshot", "never", "--metrics-addr", addr,
		"--group-max-delay", "5s", "--heartbeat-interval", "-1s")...)
	e.waitSlotActive(t, "slot", proc)
	var ssl bool
	if err := e.pg.Conn(t).QueryRow(context.Background(), `SELECT coalesce(bool_or(s.ssl), false) FROM pg_stat_replication r
		JOIN pg_stat_ssl s ON s.pid = r.pid`).Scan(&ssl); err != nil || ssl != overTLS {
		t.Fatalf("replication connection over TLS: %v (%v), want %v", ssl, err, overTLS)
	}
	for deadline := time.Now().Add(30 * time.Second); httpStatus(t, "http://"+addr+"/readyz") != http.StatusOK; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("/readyz not ready while streaming:\n%s", lastLines(proc.Output(), 10))
		}
	}
	// waitTxns waits until the producer has committed n source transactions
	// to Kafka and returns its count of Kafka commits.
	waitTxns := func(n float64) float64 {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if got, _ := scrape(t, addr, "tributary_producer_transactions_total"); got == n {
				commits, ok := scrape(t, addr, "tributary_producer_kafka_commit_seconds_count")
				if !ok {
					t.Fatal("no tributary_producer_kafka_commit_seconds_count")
				}
				return commits
			} else if got > n {
				t.Fatalf("%v source transactions committed to Kafka, want %v", got, n)
			}
			if time.Now().After(deadline) {
				t.Fatalf("the producer did not commit %v source transactions:\n%s", n, lastLines(proc.Output(), 10))
			}
		}
	}
	e.pg.Exec(t, `INSERT INTO g VALUES (0)`)
	before := waitTxns(1)

	e.pg.Exec(t, `INSERT INTO g VALUES (1)`)
	// Let the producer read the first transaction and open its group. Were
	// it slower, all ten would arrive together and still make one group.
	time.Sleep(500 * time.Millisecond)
	for i := 2; i <= 10; i++ {
		e.pg.Exec(t, fmt.Sprintf(`INSERT INTO g VALUES (%d)`, i))
	}
	if after := waitTxns(11); after != before+1 {
		t.Errorf("ten source transactions that committed inside one 5-s group reached Kafka in %v commits, want 1", after-before)
	}
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer: %v", err)
	}
}
