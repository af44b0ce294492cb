package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
)

// TestMultisiteUsage checks that the consumer refuses multi-site flags it
// cannot honour before it applies anything, naming the flag to change.
func TestMultisiteUsage(t *testing.T) {
	base := []string{"--brokers", "127.0.0.1:1", "--registry", "http://127.0.0.1:1", "--prefix", "a", "--name", "from_a",
		"--target", "postgres://127.0.0.1:1/db"}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"history sink", []string{"--site", "B", "--remote-site", "A", "--sink", "history"}, "--sink postgres"},
		{"no remote site", []string{"--site", "B", "--mode", "per-key"}, "--remote-site"},
		{"origin with history sink", []string{"--origin-name", "o", "--sink", "history"}, "--sink postgres"},
		{"conflicts without site", []string{"--conflicts", "x.yaml"}, "need --site"},
	} {
		var out bytes.Buffer
		e := env{stdout: &out, stderr: &out, lookup: func(string) (string, bool) { return "", false }}
		err := runConsumer(context.Background(), append(append([]string{}, base...), c.args...), e)
		if !errors.As(err, new(usageError)) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want a usage error naming %s", c.name, err, c.want)
		}
	}
}

// TestSetupMultisiteUsage checks that setup multisite names a missing flag
// before it connects anywhere.
func TestSetupMultisiteUsage(t *testing.T) {
	cfg := t.TempDir() + "/c.yaml"
	if err := os.WriteFile(cfg, []byte("defaults: {method: latest}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--target", "postgres://127.0.0.1:1/db", "--conflicts", cfg}, "site"},
		{[]string{"--target", "postgres://127.0.0.1:1/db", "--site", "B", "--conflicts", cfg}, "--publication"},
		{[]string{"--target", "postgres://127.0.0.1:1/db", "--site", "B", "--conflicts", cfg + ".missing"}, "c.yaml.missing"},
	} {
		var out bytes.Buffer
		e := env{stdout: &out, stderr: &out, lookup: func(string) (string, bool) { return "", false }}
		err := runSetup(context.Background(), append([]string{"multisite"}, c.args...), e)
		if err == nil || !strings.Contains(err.Error()+out.String(), c.want) {
			t.Errorf("%v: got %v (%s), want an error naming %s", c.args, err, out.String(), c.want)
		}
	}
}
