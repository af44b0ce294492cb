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

// scrapeLines calls fn with every sample line (not comments) served at
// addr/metrics.
func scrapeLines(t *testing.T, addr string, fn func(line string)) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if line := sc.Text(); line != "" && line[0] != '#' {
			fn(line)
		}
	}
}

// scrape reads one Prometheus metric (without labels) from addr.
func scrape(t *testing.T, addr, name string) (float64, bool) {
	t.Helper()
	v, found := 0.0, false
	scrapeLines(t, addr, func(line string) {
		if rest, ok := strings.CutPrefix(line, name+" "); ok && !found {
			var err error
			if v, err = strconv.ParseFloat(rest, 64); err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			found = true
		}
	})
	return v, found
}

// scrapeLabeled reads every series of one labeled metric, by label set.
func scrapeLabeled(t *testing.T, addr, name string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	scrapeLines(t, addr, func(line string) {
		if !strings.HasPrefix(line, name+"{") {
			return
		}
		end := strings.Index(line, "} ")
		v, err := strconv.ParseFloat(line[end+2:], 64)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		out[line[len(name)+1:end]] = v
	})
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

// TestProducerSnapshotMetrics snapshots a table that was never analyzed
// (pg_class.reltuples -1) and checks the snapshot metrics (a rows counter,
// chunks, an estimate that is not zero, the active gauge falling to 0), the
// build information and the Kafka client metrics.
func TestProducerSnapshotMetrics(t *testing.T) {
	e := newEnv(t)
	e.pg.Exec(t, `CREATE TABLE s (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = false)`, `CREATE PUBLICATION pub FOR TABLE s`,
		`INSERT INTO s SELECT g, 'v' || g FROM generate_series(1, 3000) g`, `SELECT pg_stat_force_next_flush()`)
	c := e.pg.Conn(t)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var tuples, live int64
		if err := c.QueryRow(context.Background(), `SELECT reltuples::bigint, pg_stat_get_live_tuples('s'::regclass) FROM pg_class WHERE oid = 's'::regclass`).Scan(&tuples, &live); err != nil {
			t.Fatal(err)
		}
		if tuples != -1 {
			t.Fatalf("the table was analyzed (reltuples %d); the test needs one that was not", tuples)
		}
		if live == 3000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the statistics system did not count the 3000 rows: %d", live)
		}
	}
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	proc := harness.StartTributary(t, nil, e.producerArgs("--snapshot-chunk-rows", "500", "--metrics-addr", addr)...)
	const table = `table="public.s"`
	for deadline := time.Now().Add(30 * time.Second); httpStatus(t, "http://"+addr+"/healthz") != http.StatusOK; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no metrics endpoint:\n%s", lastLines(proc.Output(), 10))
		}
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		active, ok := scrapeLabeled(t, addr, "tributary_producer_snapshot_active")[table]
		if ok && active == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the snapshot did not finish (active %v, %v):\n%s", active, ok, lastLines(proc.Output(), 10))
		}
	}
	if rows := scrapeLabeled(t, addr, "tributary_producer_snapshot_rows_total")[table]; rows != 3000 {
		t.Errorf("snapshot rows %v, want 3000", rows)
	}
	if done := scrapeLabeled(t, addr, "tributary_producer_snapshot_progress_rows")[table]; done != 3000 {
		t.Errorf("snapshot progress rows %v, want 3000", done)
	}
	if chunks := scrapeLabeled(t, addr, "tributary_producer_snapshot_chunks_total")[table]; chunks < 6 {
		t.Errorf("snapshot chunks %v, want at least 6 of 500 rows", chunks)
	}
	if est := scrapeLabeled(t, addr, "tributary_producer_snapshot_rows_estimate")[table]; est != 3000 {
		t.Errorf("estimate of a table never analyzed: %v, want 3000", est)
	}
	info := scrapeLabeled(t, addr, "tributary_build_info")
	if len(info) != 1 {
		t.Errorf("build_info: %v", info)
	}
	var produced float64
	for labels, v := range scrapeLabeled(t, addr, "tributary_kafka_produce_records_total") {
		if strings.Contains(labels, `topic="`+e.prefix+`.public.s"`) {
			produced += v
		}
	}
	if produced < 3000 {
		t.Errorf("Kafka client metrics: %v records produced to %s.public.s, want at least 3000", produced, e.prefix)
	}
	e.pg.Exec(t, `INSERT INTO s VALUES (0, 'x')`)
	e.waitConfirmed(t, "slot", proc)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		at, _ := scrape(t, addr, "tributary_producer_confirmed_timestamp_seconds")
		if at > 0 && time.Since(time.Unix(int64(at), 0)) < time.Hour {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("confirmed timestamp %v", at)
		}
	}
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer: %v", err)
	}
}
