package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tributary-cdc/tributary/consumer"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/*.golden")

func ptr[T any](v T) *T { return &v }

// fixedReport is a status with one healthy slot, one slot past the fail
// threshold, one lost slot, a keyless table and two consumers.
func fixedReport() *statusReport {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	gb := int64(1 << 30)
	r := &statusReport{
		CheckedAt: at, WarnFraction: 0.5, FailFraction: 0.8, Checks: []check{},
		WarnStall: 120, FailStall: 600, WarnLag: 300,
		Source: &sourceStatus{
			DSN: redactDSN("postgres://capture:s3cret@db.example:5432/app?sslmode=verify-full"), Version: "15.18",
			Database: "app", CurrentLSN: "0/9A000000", MaxSlotWALKeepSize: gb, WALDirBytes: ptr(int64(1200 << 20)),
			Slots: []slotStatus{
				{Name: "app_slot", Type: "logical", Plugin: "pgoutput", Database: "app", Active: true, ActivePID: ptr(int32(4242)),
					Client: "tributary 10.0.0.7", WALStatus: "reserved", SafeWALSize: ptr(gb - 64<<20),
					RestartLSN: "0/96000000", ConfirmedFlushLSN: "0/99FFF000", LagBytes: ptr(int64(4096)), LagSeconds: ptr(0.4),
					RetainedBytes: ptr(int64(64 << 20))},
				{Name: "old_slot", Type: "logical", Plugin: "pgoutput", Database: "app", WALStatus: "extended",
					SafeWALSize: ptr(int64(100 << 20)), RestartLSN: "0/5E000000", ConfirmedFlushLSN: "0/5E000100",
					LagBytes: ptr(int64(960<<20 - 256)), RetainedBytes: ptr(int64(960 << 20))},
				{Name: "gone", Type: "logical", Plugin: "pgoutput", Database: "app", WALStatus: "lost",
					ConfirmedFlushLSN: "0/10000000"},
			},
			Publications: []publicationStatus{
				{Name: "app_pub", Exists: true, Actions: []string{"insert", "update", "delete", "truncate"}, Tables: []tableStatus{
					{Schema: "public", Name: "orders", Identity: "primary key", Usable: true},
					{Schema: "public", Name: `a"b; drop table x`, Identity: "full", Usable: true},
					{Schema: "public", Name: "log", Identity: "default without primary key",
						Fix: `ALTER TABLE "public"."log" ADD PRIMARY KEY (...), or REPLICA IDENTITY USING INDEX <unique index>, or REPLICA IDENTITY FULL`},
				}},
				{Name: "missing_pub"},
			},
		},
		Targets: []targetStatus{{DSN: redactDSN("host=replica user=apply password='p w' dbname=app")},
			{DSN: redactDSN("postgres://apply@replica2/app"), Error: "cannot connect: dial tcp 10.0.0.9:5432: connect: connection refused"}},
		Consumers: []consumerStatus{
			{Name: "replica1", Target: "host=replica user=apply dbname=app", Prefix: "app", Mode: "transactional",
				CommitLSN: "0/99FFE000", CommitTime: ptr(at.Add(-3 * time.Second)), AppliedAt: at.Add(-2 * time.Second),
				NextFrameOffset: ptr(int64(1200)), Behind: &consumerLag{Transactions: 0, Seconds: ptr(0.0)}},
			{Name: "warehouse", Target: "host=replica user=apply dbname=app", Prefix: "app", Mode: "transactional",
				CommitLSN: "0/90000000", CommitTime: ptr(at.Add(-95 * time.Second)), AppliedAt: at.Add(-90 * time.Second),
				IdleSeconds: 90, NextFrameOffset: ptr(int64(1000)), Behind: &consumerLag{Transactions: 187, Frames: 190, Bytes: 167763968, Seconds: ptr(92.0)}},
			// Exited 15 minutes ago, one transaction short of a source idle
			// since (heartbeats off): its lag is small, its checkpoint stopped.
			{Name: "exited", Target: "host=replica user=apply dbname=app", Prefix: "app", Mode: "transactional",
				CommitLSN: "0/99FFD000", CommitTime: ptr(at.Add(-903 * time.Second)), AppliedAt: at.Add(-900 * time.Second),
				IdleSeconds: 900, NextFrameOffset: ptr(int64(1199)), Behind: &consumerLag{Transactions: 1, Frames: 1, Bytes: 4096, Seconds: ptr(0.05)}},
			// Catching up with a backlog: applying, but far behind.
			{Name: "catching-up", Target: "host=replica user=apply dbname=app", Prefix: "app", Mode: "transactional",
				CommitLSN: "0/50000000", CommitTime: ptr(at.Add(-2 * time.Hour)), AppliedAt: at.Add(-time.Second),
				IdleSeconds: 1, NextFrameOffset: ptr(int64(10)), Behind: &consumerLag{Transactions: 1190, Frames: 1190, Bytes: 1 << 30, Seconds: ptr(7200.0)}},
		},
		Kafka: []transactionsLog{{Topic: "app.transactions", EndOffset: 1200, LastCommitLSN: "0/99FFE000",
			LastCommitTime: ptr(at.Add(-3 * time.Second))}},
	}
	for i := range r.Source.Slots {
		s := &r.Source.Slots[i]
		if s.RetainedBytes != nil {
			s.LimitBytes, s.UsedFraction = gb, ptr(float64(*s.RetainedBytes)/float64(gb))
		}
	}
	evaluate(r)
	return r
}

func TestStatusGolden(t *testing.T) {
	var b bytes.Buffer
	renderStatus(&b, fixedReport())
	golden := filepath.Join("testdata", "status.golden")
	if *updateGolden {
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run TestStatusGolden -update to create it)", err)
	}
	if got := b.String(); got != string(want) {
		t.Fatalf("status output differs from %s (rerun with -update if intended):\n--- got\n%s--- want\n%s", golden, got, want)
	}
	if strings.Contains(b.String(), "s3cret") || strings.Contains(b.String(), "p w") {
		t.Fatalf("a password was printed:\n%s", b.String())
	}
}

func TestStatusChecks(t *testing.T) {
	r := fixedReport()
	var got []string
	for _, c := range r.Checks {
		got = append(got, c.Level+" "+c.Subject)
	}
	want := []string{
		"ERROR slot old_slot", // retains 94% of the limit
		"WARN slot old_slot",  // and is inactive
		"ERROR slot gone",
		"ERROR table public.log",
		"ERROR publication missing_pub",
		"ERROR target postgres://apply@replica2/app",
		"ERROR consumer exited",     // its checkpoint stopped 15 minutes ago
		"WARN consumer catching-up", // 2 hours behind, applying
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("checks:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if r.errorCount() != 6 {
		t.Fatalf("errorCount %d, want 6", r.errorCount())
	}
	// JSON carries the same facts and no password either.
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(js), "s3cret") || !strings.Contains(string(js), `"used_fraction":0.9375`) {
		t.Fatalf("json: %s", js)
	}
}

func TestStatusThresholds(t *testing.T) {
	for _, tc := range []struct {
		used float64
		want string
	}{{0.49, ""}, {0.5, "WARN"}, {0.79, "WARN"}, {0.8, "ERROR"}, {1.2, "ERROR"}} {
		r := &statusReport{WarnFraction: 0.5, FailFraction: 0.8}
		r.checkFraction("slot s", tc.used, "retains x", "max_slot_wal_keep_size", 1<<30)
		got := ""
		if len(r.Checks) > 0 {
			got = r.Checks[0].Level
		}
		if got != tc.want {
			t.Errorf("used %.2f: level %q, want %q", tc.used, got, tc.want)
		}
	}
	// Unlimited keep size without --wal-budget warns; with it, pg_wal is measured.
	r := &statusReport{WarnFraction: 0.5, FailFraction: 0.8, Source: &sourceStatus{MaxSlotWALKeepSize: -1,
		Slots: []slotStatus{{Name: "s", Active: true, WALStatus: "reserved"}}}}
	evaluate(r)
	if len(r.Checks) != 1 || !strings.Contains(r.Checks[0].Message, "unlimited") {
		t.Fatalf("checks %+v", r.Checks)
	}
	r = &statusReport{WarnFraction: 0.5, FailFraction: 0.8, Source: &sourceStatus{MaxSlotWALKeepSize: -1,
		WALBudget: 100 << 20, WALDirBytes: ptr(int64(90 << 20))}}
	evaluate(r)
	if len(r.Checks) != 1 || r.Checks[0].Level != levelError || r.Checks[0].Subject != "pg_wal" {
		t.Fatalf("checks %+v", r.Checks)
	}
}

func TestRedactDSN(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://u:pw@h:5432/db?sslmode=require":               "postgres://u@h:5432/db?sslmode=require",
		"postgresql://u@h/db?password=pw&sslmode=disable":         "postgresql://u@h/db?sslmode=disable",
		"postgres://u:p%40ss@h/db?sslpassword=k":                  "postgres://u@h/db",
		"host=h user=u password=pw dbname=db":                     "host=h user=u dbname=db",
		"host=h password = 'a b\\' c' dbname=db":                  "host=h dbname=db",
		"host=h PASSWORD=pw":                                      "host=h",
		"postgres://h/db":                                         "postgres://h/db",
		"postgres://u:pw@[::1]:5432/db?application_name=x&sslm=1": "postgres://u@[::1]:5432/db?application_name=x&sslm=1",
	} {
		if got := redactDSN(in); got != want {
			t.Errorf("redactDSN(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSizes(t *testing.T) {
	for in, want := range map[string]int64{"20GB": 20 << 30, "512 MB": 512 << 20, "1048576": 1 << 20, "1.5kB": 1536} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := parseSize("12XB"); err == nil {
		t.Error("parseSize(12XB): no error")
	}
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 kB", 64 << 20: "64 MB", 1 << 30: "1.0 GB"} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
	for s, want := range map[float64]string{0: "0s", 0.42: "0.4s", 42: "42s", 192: "3m12s", 120: "2m", 18180: "5h3m", 187200: "2d4h"} {
		if got := formatDuration(s); got != want {
			t.Errorf("formatDuration(%g) = %q, want %q", s, got, want)
		}
	}
}

func TestStatusUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"--source", "postgres://h/db", "--warn-fraction", "0.9", "--fail-fraction", "0.5"},
		{"--source", "postgres://h/db", "--wal-budget", "lots"},
	} {
		var out, errb bytes.Buffer
		err := runStatus(context.Background(), args, env{stdout: &out, stderr: &errb, lookup: func(string) (string, bool) { return "", false }})
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("status %v: %v, want a usage error", args, err)
		}
	}
}

// TestConsumerStatuses checks the summary of checkpoint rows that status
// shows per consumer: the highest commit LSN and latest times over every
// row, the next frame offset, the prefix and the mode.
func TestConsumerStatuses(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(ago time.Duration) time.Time { return now.Add(-ago) }
	rows := []consumer.CheckpointRow{
		{Consumer: "pk", Stream: consumer.Stream{Kind: consumer.StreamPerKey, Topic: "b.public.t", Partition: 1}, Next: 4,
			CommitLSN: 0x200, CommitTime: at(time.Hour), AppliedAt: at(30 * time.Second)},
		{Consumer: "pk", Stream: consumer.Stream{Kind: consumer.StreamPerKey, Topic: "b.public.t", Partition: 0}, Next: 9,
			CommitLSN: 0x100, CommitTime: at(2 * time.Hour), AppliedAt: at(10 * time.Second)},
		{Consumer: "tx", Stream: consumer.Stream{Kind: consumer.StreamData, Topic: "a.public.t"}, Next: 5,
			CommitLSN: 0x300, CommitTime: at(time.Minute), AppliedAt: at(time.Minute)},
		{Consumer: "tx", Stream: consumer.Stream{Kind: consumer.StreamTransactions, Topic: "a.transactions"}, Next: 17,
			CommitLSN: 0x300, CommitTime: at(time.Minute), AppliedAt: at(time.Minute)},
	}
	got := consumerStatuses(rows, now, "target")
	if len(got) != 2 {
		t.Fatalf("%d consumers, want 2: %+v", len(got), got)
	}
	pk, tx := got[0], got[1]
	if pk.Name != "pk" || pk.Mode != "per-key" || pk.Prefix != "b" || pk.CommitLSN != "0/200" || pk.NextFrameOffset != nil ||
		!pk.CommitTime.Equal(at(time.Hour)) || !pk.AppliedAt.Equal(at(10*time.Second)) || pk.IdleSeconds != 10 {
		t.Errorf("per-key consumer: %+v", pk)
	}
	if tx.Name != "tx" || tx.Mode != "transactional" || tx.Prefix != "a" || tx.CommitLSN != "0/300" ||
		tx.NextFrameOffset == nil || *tx.NextFrameOffset != 17 || tx.IdleSeconds != 60 || tx.Target != "target" {
		t.Errorf("transactional consumer: %+v", tx)
	}
}
