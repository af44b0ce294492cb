package integration

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tributary-cdc/tributary/integration/harness"
	"github.com/tributary-cdc/tributary/schemas"
)

// TestConsumerWideRowsBoundedMemory replays 1,500 single-row transactions of
// 200-KB rows (about 300 MB) through `bin/tributary consumer` as a
// subprocess and checks that its peak resident memory stays under 300 MB
// (G6: memory grows with neither transaction size nor row size). Bounds in
// records or events only (a read-ahead of 4096 records per partition, a
// sink flushing every 2,000 events) held most of the backlog: 650 MB.
func TestConsumerWideRowsBoundedMemory(t *testing.T) {
	const (
		rows  = 1500
		width = 200 << 10
		limit = 300 << 20
	)
	harness.Binary(t)
	e := newConsumerEnv(t)
	e.target.Exec(t, `CREATE TABLE wide (id int PRIMARY KEY, balance bigint NOT NULL, note text)`)
	e.prod.addTable(accountTable("wide"), 1)
	pad := strings.Repeat("x", width)
	for i := range rows {
		e.prod.commit([]change{{table: "wide", op: schemas.OpInsert, after: acct(i, int64(i), pad)}})
	}
	peak := catchUpPeakRSS(t, "200MiB", "--brokers", e.k.Brokers[0], "--registry", e.k.RegistryURL, "--prefix", e.prefix,
		"--name", "wide", "--target", e.target.DSN)
	c := e.target.Conn(t)
	if got := e.queryInt(c, "SELECT count(*) FROM wide WHERE length(note) = $1", width); got != rows {
		t.Fatalf("%d rows of %d bytes at the target, want %d", got, width, rows)
	}
	t.Logf("%d rows of %d KB: consumer VmHWM %.1f MB", rows, width>>10, float64(peak)/(1<<20))
	if peak >= limit {
		t.Errorf("consumer peak RSS (VmHWM) %.1f MB, want < %d MB (G6: memory independent of row size)", float64(peak)/(1<<20), limit>>20)
	}
}

// TestConsumerSmallTransactionsBoundedMemory replays a backlog of 40,000
// source transactions of one small row in each of four tables, with twelve
// partitions each (48 in all), through `bin/tributary consumer` and checks
// its peak resident memory under a soft Go limit: memory must grow with
// neither the backlog nor the number of partitions.
//   - franz-go decodes a fetch's records as slices of the fetch's response,
//     which holds every partition's records of that fetch: a record waiting
//     in a partition's read-ahead kept the whole response. On the
//     benchmark's pgbench backlog that was 116 MB of a 132 MB live heap and
//     a peak RSS of 295-365 MB; on twelve partitions here, 140-142 MB.
//   - The read-ahead was bounded per partition only, and a fetch brought
//     up to 1 MiB of each partition beyond it: on these 48 partitions the
//     consumer buffered nearly the whole backlog, 139-143 MB (on the
//     embedded broker and on Apache Kafka). With the bound of all
//     partitions together and fetches of 256 KiB a partition, 91-96 MB.
func TestConsumerSmallTransactionsBoundedMemory(t *testing.T) {
	const (
		tables     = 4
		partitions = 12
		txns       = 40000
		limit      = 125 << 20
	)
	harness.Binary(t)
	e := newEnv(t)
	target := harness.StartPostgres(t)
	var names, inserts []string
	for i := range tables {
		name := "small" + strconv.Itoa(i)
		names = append(names, name)
		for _, pg := range []*harness.Postgres{e.pg, target} {
			pg.Exec(t, `CREATE TABLE `+name+` (id int PRIMARY KEY, v bigint NOT NULL, note text)`)
		}
		inserts = append(inserts, `INSERT INTO `+name+` VALUES (i, i, md5(i::text) || md5((-i)::text));`)
	}
	e.pg.Exec(t, `CREATE PUBLICATION pub FOR TABLE `+strings.Join(names, ", "),
		`CREATE PROCEDURE fill(n int) LANGUAGE plpgsql AS $$ BEGIN FOR i IN 1..n LOOP `+strings.Join(inserts, " ")+` COMMIT; END LOOP; END $$`)
	cfg := e.producerConfig(t)
	cfg.Partitions = partitions
	stop := e.runProducer(t, cfg)
	e.pg.Exec(t, `CALL fill(`+strconv.Itoa(txns)+`)`)
	e.waitConfirmed(t, "slot", nil)
	stop()
	peak := catchUpPeakRSS(t, "60MiB", "--brokers", e.kafka.Brokers[0], "--registry", e.kafka.RegistryURL, "--prefix", e.prefix,
		"--name", "small", "--target", target.DSN)
	for _, name := range names {
		if src, dst := tableDump(t, e.pg, name), tableDump(t, target, name); fmt.Sprint(src) != fmt.Sprint(dst) {
			t.Fatalf("%s differs: source %d rows, target %d rows", name, len(src), len(dst))
		}
	}
	t.Logf("%d transactions of %d rows over %d partitions: consumer VmHWM %.1f MB", txns, tables, tables*partitions, float64(peak)/(1<<20))
	if peak >= limit {
		t.Errorf("consumer peak RSS (VmHWM) %.1f MB, want < %d MB (G6: read-ahead bounded over all %d partitions, records not holding their fetches)",
			float64(peak)/(1<<20), limit>>20, tables*partitions)
	}
}

// catchUpPeakRSS runs `bin/tributary consumer --until-caught-up` with args
// under the soft Go memory limit memLimit (GOMEMLIMIT), and returns its peak
// resident memory (VmHWM) in bytes. Under a soft limit the RSS follows the
// memory the consumer holds, not how far the garbage collector lags behind
// on a loaded machine (346.8 MB once without it, beside the chaos suite): the
// runtime keeps under the limit whatever it can free, so only memory that is
// held can take the process past a test's limit.
func catchUpPeakRSS(t *testing.T, memLimit string, args ...string) int64 {
	t.Helper()
	proc := harness.StartTributary(t, []string{"GOMEMLIMIT=" + memLimit},
		append(append([]string{"consumer"}, args...), "--until-caught-up", "--log-format", "json")...)
	rss := watchPeakRSS(proc.Cmd.Process.Pid, 50*time.Millisecond)
	exited, err := proc.Wait(5 * time.Minute)
	if !exited {
		t.Fatalf("consumer did not catch up in 5 minutes:\n%s", proc.Output())
	}
	if err != nil {
		t.Fatalf("consumer --until-caught-up: %v\n%s", err, proc.Output())
	}
	peak := rss.Stop()
	if peak == 0 {
		t.Fatal("no VmHWM sample of the consumer was taken")
	}
	return peak
}
