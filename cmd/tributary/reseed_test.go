package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
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
