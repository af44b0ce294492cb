package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"
)

// TestReseedUsage checks that reseed refuses bad command lines before it
// touches any database or broker, naming the flag.
func TestReseedUsage(t *testing.T) {
	base := []string{"--donor", "postgres://a/db", "--target", "postgres://b/db", "--publication", "pub",
		"--brokers", "127.0.0.1:1", "--registry", "http://127.0.0.1:1", "--prefix", "a", "--consumer", "from_a"}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"no site prefix", base, "site-prefix"},
		{"no origin", append(base, "--site-prefix", "b"), "--donor-site"},
		{"own stream", append(base, "--site-prefix", "a", "--donor-site", "A"), "--site-prefix"},
		{"bad checkpoints", append(base, "--site-prefix", "b", "--donor-site", "A", "--checkpoints", "x="), "--checkpoints"},
		{"bad broker", append(base, "--site-prefix", "b", "--donor-site", "A", "--brokers", "nohost"), "--brokers"},
	} {
		var out, errb bytes.Buffer
		e := env{stdout: &out, stderr: &errb, lookup: func(string) (string, bool) { return "", false }}
		err := runReseed(context.Background(), c.args, e)
		if !errors.As(err, new(usageError)) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want a usage error naming %s", c.name, err, c.want)
		}
	}
	var out bytes.Buffer
	e := env{stdout: &out, stderr: &out, lookup: func(string) (string, bool) { return "", false }}
	if code := realMain([]string{"reseed", "--help"}, e); code != 0 || !strings.Contains(out.String(), "Examples") &&
		!strings.Contains(out.String(), "tributary reseed --donor") {
		t.Fatalf("reseed --help: exit %d\n%s", code, out.String())
	}
}

// TestBisect checks the search for a stream's position: partitions whose
// commit LSNs repeat (several records of one transaction), with gaps
// (transaction markers, aborted records), the cut at either end, and a
// cut between records.
func TestBisect(t *testing.T) {
	// Offsets 0..12: records with these LSNs; 0 marks an offset without a
	// record (a marker or an aborted record).
	log := []pglogrepl.LSN{10, 10, 0, 20, 0, 30, 30, 30, 0, 40, 0, 0, 50}
	probe := func(from int64) (int64, pglogrepl.LSN, bool, error) {
		for o := from; o < int64(len(log)); o++ {
			if log[o] != 0 {
				return o, log[o], true, nil
			}
		}
		return 0, 0, false, nil
	}
	for _, c := range []struct {
		cp   pglogrepl.LSN
		want int64
	}{
		{5, 0}, {10, 0}, {11, 2}, {20, 2}, {25, 4}, {30, 4}, {31, 8}, {40, 8}, {45, 10}, {50, 10}, {51, 13},
	} {
		got, err := bisect(0, int64(len(log)), c.cp, probe)
		if err != nil || got != c.want {
			t.Errorf("cp %d: got %d (%v), want %d", c.cp, got, err, c.want)
		}
		// Brute force: every record below the result is below cp, every one at or after is not.
		for o, l := range log {
			if l != 0 && (int64(o) < got) != (l < c.cp) {
				t.Errorf("cp %d: result %d, record at %d has LSN %d", c.cp, got, o, l)
			}
		}
	}
	if got, _ := bisect(0, 3, 100, func(int64) (int64, pglogrepl.LSN, bool, error) { return 0, 0, false, nil }); got != 0 {
		t.Errorf("a partition of markers only: got %d, want 0", got)
	}
}
