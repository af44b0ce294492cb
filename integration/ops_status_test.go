package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tributary-cdc/tributary/integration/harness"
)

// opsBinary is bin/tributary, or the binary named by TRIBUTARY_OPS_BIN
// (for running these tests against a build made elsewhere).
func opsBinary(t *testing.T) string {
	if b := os.Getenv("TRIBUTARY_OPS_BIN"); b != "" {
		return b
	}
	return harness.Binary(t)
}

// opsRun runs `tributary args...` to completion with extra environment and
// returns its combined output and exit code.
func opsRun(t *testing.T, env []string, stdin string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, opsBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &ee):
		return out.String(), ee.ExitCode()
	}
	t.Fatalf("tributary %v: %v\n%s", args, err, out.String())
	return "", -1
}

// statusJSON is the part of `status --json` the tests read.
type statusJSON struct {
	Source struct {
		CurrentLSN string `json:"current_lsn"`
		Slots      []struct {
			Name          string   `json:"name"`
			Active        bool     `json:"active"`
			ActivePID     *int32   `json:"active_pid"`
			WALStatus     string   `json:"wal_status"`
			Confirmed     string   `json:"confirmed_flush_lsn"`
			LagBytes      *int64   `json:"lag_bytes"`
			RetainedBytes *int64   `json:"retained_bytes"`
			UsedFraction  *float64 `json:"used_fraction"`
		} `json:"slots"`
		Publications []struct {
			Name   string `json:"name"`
			Tables []struct {
				Name   string `json:"name"`
				Usable bool   `json:"usable"`
				Fix    string `json:"fix"`
			} `json:"tables"`
		} `json:"publications"`
	} `json:"source"`
	Consumers []struct {
		Name        string  `json:"name"`
		Prefix      string  `json:"prefix"`
		CommitLSN   string  `json:"commit_lsn"`
		IdleSeconds float64 `json:"idle_seconds"`
		Behind      *struct {
			Transactions int64    `json:"transactions"`
			Frames       int64    `json:"frames"`
			Bytes        int64    `json:"bytes"`
			Seconds      *float64 `json:"seconds"`
		} `json:"behind"`
	} `json:"consumers"`
	Checks []struct {
		Level, Subject, Message string
	} `json:"checks"`
}

func parseStatus(t *testing.T, out string) statusJSON {
	t.Helper()
	var s statusJSON
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return s
}

// TestOpsStatusShowsLag runs the real producer and consumer, stops the
// consumer while the source keeps committing, and checks that `status`
// reports exactly how many transactions the consumer is behind Kafka; then
// stops the producer and checks the slot's lag in bytes and the WAL-limit
// checks; then drops the slot with `slot drop`.
func TestOpsStatusShowsLag(t *testing.T) {
	e := newEnv(t)
	target := harness.StartPostgres(t)
	for _, pg := range []*harness.Postgres{e.pg, target} {
		pg.Exec(t, `CREATE TABLE acct (id int PRIMARY KEY, balance bigint NOT NULL)`)
	}
	e.pg.Exec(t, `CREATE PUBLICATION pub FOR TABLE acct`,
		`CREATE TABLE nokey (v int)`, `CREATE PUBLICATION pub_nokey FOR TABLE nokey`)
	producer := harness.StartTributary(t, nil, e.producerArgs("--snapshot", "never")...)
	e.waitSlotActive(t, "slot", producer)
	kafkaArgs := []string{"--brokers", e.kafka.Brokers[0], "--registry", e.kafka.RegistryURL, "--prefix", e.prefix}
	consumer := harness.StartTributary(t, nil, append([]string{"consumer", "--name", "replica", "--target", target.DSN,
		"--log-format", "json"}, kafkaArgs...)...)

	src := e.pg.Conn(t)
	commit := func(from, n int) {
		for i := from; i < from+n; i++ {
			if _, err := src.Exec(context.Background(), `INSERT INTO acct VALUES ($1, $2)`, i, i); err != nil {
				t.Fatal(err)
			}
		}
	}
	commit(1, 10)
	tgt := target.Conn(t)
	deadline := time.Now().Add(time.Minute)
	for n := 0; n < 10; {
		if time.Now().After(deadline) {
			t.Fatalf("consumer applied %d of 10 rows:\n%s", n, lastLines(consumer.Output(), 15))
		}
		time.Sleep(100 * time.Millisecond)
		_ = tgt.QueryRow(context.Background(), `SELECT count(*) FROM acct`).Scan(&n)
	}
	if err := consumer.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("consumer stop: %v\n%s", err, lastLines(consumer.Output(), 15))
	}
	e.waitFrameCount(t, 10)
	commit(11, 25)
	e.waitFrameCount(t, 35)

	statusArgs := append([]string{"status", "--source", e.pg.DSN, "--target", target.DSN, "--publication", "pub"}, kafkaArgs...)
	out, code := opsRun(t, nil, "", append(statusArgs, "--json")...)
	st := parseStatus(t, out)
	if code != 0 {
		t.Fatalf("status exit %d with the producer running and a keyed publication:\n%s", code, out)
	}
	if len(st.Consumers) != 1 || st.Consumers[0].Name != "replica" || st.Consumers[0].Behind == nil {
		t.Fatalf("consumers: %+v\n%s", st.Consumers, out)
	}
	if b := st.Consumers[0].Behind; b.Transactions != 25 || b.Bytes <= 0 || b.Seconds == nil || *b.Seconds <= 0 {
		t.Fatalf("consumer lag %+v, want 25 transactions and a positive byte and time lag\n%s", *b, out)
	}
	if len(st.Source.Slots) != 1 || !st.Source.Slots[0].Active || st.Source.Slots[0].ActivePID == nil {
		t.Fatalf("slots %+v", st.Source.Slots)
	}
	human, _ := opsRun(t, nil, "", statusArgs...)
	if !strings.Contains(human, " 25 txns") || !strings.Contains(human, "replica") {
		t.Fatalf("human status lacks the lag:\n%s", human)
	}
	t.Logf("status with the consumer stopped:\n%s", human)

	// A stopped consumer whose log moves on is an ERROR once its checkpoint
	// has been still for --fail-consumer-stall, however small its lag: the
	// producer's heartbeats (every second here) move the log on their own.
	stall := append(append([]string{}, statusArgs...), "--json", "--fail-consumer-stall", "2s")
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(250 * time.Millisecond) {
		out, code = opsRun(t, nil, "", stall...)
		st = parseStatus(t, out)
		if st.Consumers[0].IdleSeconds >= 2 {
			break
		}
		if code != 0 || time.Now().After(deadline) {
			t.Fatalf("status exit %d with the consumer idle %.1fs (under --fail-consumer-stall 2s):\n%s", code, st.Consumers[0].IdleSeconds, out)
		}
	}
	var stalled bool
	for _, c := range st.Checks {
		stalled = stalled || c.Level == "ERROR" && c.Subject == "consumer replica" && strings.Contains(c.Message, "is it running?")
	}
	if code != 1 || !stalled || st.Consumers[0].Behind.Frames < 25 {
		t.Fatalf("stalled consumer: exit %d, want 1 with an ERROR for consumer replica:\n%s", code, out)
	}

	// The keyless table is an error, with its fix.
	out, code = opsRun(t, nil, "", "status", "--source", e.pg.DSN, "--publication", "pub_nokey", "--json")
	st = parseStatus(t, out)
	if code != 1 || len(st.Source.Publications) != 1 || st.Source.Publications[0].Tables[0].Usable ||
		!strings.Contains(st.Source.Publications[0].Tables[0].Fix, `ALTER TABLE "public"."nokey"`) {
		t.Fatalf("keyless table: exit %d\n%s", code, out)
	}

	// A running producer's slot cannot be dropped; the error names the pid.
	out, code = opsRun(t, nil, "", "slot", "drop", "--source", e.pg.DSN, "--slot", "slot", "--yes")
	if code != 1 || !strings.Contains(out, "is active (held by pid ") || strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Fatalf("drop of an active slot: exit %d, want 1 and one line naming the pid:\n%s", code, out)
	}

	// Stop the producer: the slot goes inactive and its lag grows with the WAL written since.
	if err := producer.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer stop: %v\n%s", err, lastLines(producer.Output(), 15))
	}
	var before string
	src.QueryRow(context.Background(), `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'slot'`).Scan(&before)
	src.Exec(context.Background(), `INSERT INTO acct SELECT g, g FROM generate_series(1000, 5999) g`)
	var want int64
	src.QueryRow(context.Background(), `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
		FROM pg_replication_slots WHERE slot_name = 'slot'`).Scan(&want)
	out, code = opsRun(t, nil, "", "status", "--source", e.pg.DSN, "--publication", "pub", "--json")
	st = parseStatus(t, out)
	sl := st.Source.Slots[0]
	if code != 0 || sl.Active || sl.LagBytes == nil || *sl.LagBytes < want || *sl.LagBytes > want+64<<10 || want < 100<<10 {
		t.Fatalf("stopped producer: exit %d, slot %+v, want inactive with lag about %d bytes\n%s", code, sl, want, out)
	}
	if sl.Confirmed != before {
		t.Fatalf("confirmed_flush_lsn %s, want %s", sl.Confirmed, before)
	}
	var inactiveWarned, unlimitedWarned bool
	for _, c := range st.Checks {
		inactiveWarned = inactiveWarned || c.Level == "WARN" && strings.Contains(c.Message, "is inactive")
		unlimitedWarned = unlimitedWarned || c.Level == "WARN" && strings.Contains(c.Message, "unlimited")
	}
	if !inactiveWarned || !unlimitedWarned {
		t.Fatalf("want WARNs for the inactive slot and the unlimited keep size: %+v", st.Checks)
	}

	// Against a WAL budget the retained WAL passes the fail fraction: exit 1.
	out, code = opsRun(t, nil, "", "status", "--source", e.pg.DSN, "--publication", "pub", "--wal-budget", "256kB")
	if code != 1 || !strings.Contains(out, "ERROR slot slot retains") || !strings.Contains(out, "of --wal-budget 256 kB (--fail-fraction 0.8)") {
		t.Fatalf("wal budget: exit %d, want 1 with an ERROR line:\n%s", code, out)
	}
	// With max_slot_wal_keep_size set, the slot is measured against it.
	e.pg.Exec(t, `ALTER SYSTEM SET max_slot_wal_keep_size = '1GB'`, `SELECT pg_reload_conf()`)
	time.Sleep(200 * time.Millisecond)
	out, _ = opsRun(t, nil, "", "status", "--source", e.pg.DSN, "--publication", "pub", "--json")
	st = parseStatus(t, out)
	if f := st.Source.Slots[0].UsedFraction; f == nil || *f <= 0 || *f > 0.1 || st.Source.Slots[0].WALStatus != "reserved" {
		t.Fatalf("with max_slot_wal_keep_size 1GB: %+v\n%s", st.Source.Slots[0], out)
	}

	// slot drop: refuses without a terminal or --yes, then drops with --yes.
	out, code = opsRun(t, nil, "y\n", "slot", "drop", "--source", e.pg.DSN, "--slot", "slot")
	if code != 2 || !strings.Contains(out, "pass --yes") {
		t.Fatalf("drop without a terminal: exit %d\n%s", code, out)
	}
	out, code = opsRun(t, nil, "", "slot", "drop", "--source", e.pg.DSN, "--slot", "slot", "--yes")
	if code != 0 || !strings.Contains(out, "dropped replication slot slot (logical/pgoutput, database postgres, confirmed "+before) {
		t.Fatalf("drop: exit %d\n%s", code, out)
	}
	out, code = opsRun(t, nil, "", "slot", "list", "--source", e.pg.DSN)
	if code != 0 || !strings.Contains(out, "no replication slots") {
		t.Fatalf("list after drop: exit %d\n%s", code, out)
	}
	out, code = opsRun(t, nil, "", "slot", "drop", "--source", e.pg.DSN, "--slot", "slot", "--yes")
	if code != 1 || !strings.Contains(out, `replication slot "slot" does not exist`) {
		t.Fatalf("drop of a missing slot: exit %d\n%s", code, out)
	}
}
