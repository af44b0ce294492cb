package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tributary-cdc/tributary/integration/harness"
)

// scrape reads one Prometheus metric (without labels) from addr.
func scrape(t *testing.T, addr, name string) (float64, bool) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+" ") {
			v, err := strconv.ParseFloat(strings.TrimPrefix(line, name+" "), 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return v, true
		}
	}
	return 0, false
}

// scrapeLabeled reads every series of one labeled metric, by label set.
func scrapeLabeled(t *testing.T, addr, name string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		end := strings.Index(line, "} ")
		v, err := strconv.ParseFloat(line[end+2:], 64)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		out[line[len(name)+1:end]] = v
	}
	return out
}

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestProducerMetricsMove: the producer's metrics and health endpoints report
// what happens: events and transactions count up with the workload, the slot
// lag returns to near zero, /readyz is ready only while streaming.
func TestProducerMetricsMove(t *testing.T) {
	e := newEnv(t)
	e.pg.Exec(t, `CREATE TABLE m (id int PRIMARY KEY)`, `CREATE PUBLICATION pub FOR TABLE m`)
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	proc := harness.StartTributary(t, nil, e.producerArgs("--snapshot", "never", "--metrics-addr", addr)...)
	e.waitSlotActive(t, "slot", proc)
	deadline := time.Now().Add(30 * time.Second)
	for httpStatus(t, "http://"+addr+"/readyz") != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatalf("/readyz not ready while streaming:\n%s", lastLines(proc.Output(), 10))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := httpStatus(t, "http://"+addr+"/healthz"); got != http.StatusOK {
		t.Fatalf("/healthz: %d", got)
	}
	for i := 0; i < 50; i++ {
		e.pg.Exec(t, fmt.Sprintf(`INSERT INTO m VALUES (%d), (%d)`, 2*i, 2*i+1))
	}
	e.waitConfirmed(t, "slot", proc)
	deadline = time.Now().Add(30 * time.Second)
	for {
		ev, _ := scrape(t, addr, "tributary_producer_events_total")
		tx, _ := scrape(t, addr, "tributary_producer_transactions_total")
		lag, ok := scrape(t, addr, "tributary_producer_slot_lag_bytes")
		if ev == 100 && tx == 50 && ok && lag < 1<<20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics did not reach 100 events / 50 transactions with a small lag: events %v, transactions %v, lag %v", ev, tx, lag)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if n, ok := scrape(t, addr, "tributary_producer_kafka_commit_seconds_count"); !ok || n < 1 {
		t.Fatalf("kafka commit histogram count %v", n)
	}
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer: %v", err)
	}
	_ = context.Background
}
