package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/tributary-cdc/tributary/integration/harness"
)

// TestBrokerLaneIsWhatItClaims proves which broker this run talks to: the
// in-process kfake cluster on the fast lane, a real Apache Kafka on the
// TRIBUTARY_TEST_BROKERS lane (by the API versions it reports).
func TestBrokerLaneIsWhatItClaims(t *testing.T) {
	k := harness.StartKafka(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adm := k.Admin(t)
	md, err := adm.BrokerMetadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	vers, err := adm.ApiVersions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var guesses []string
	vers.Each(func(v kadm.BrokerApiVersions) { guesses = append(guesses, v.VersionGuess()) })
	if k.Real {
		if md.Cluster == "tributary-dev" || k.Embedded != nil {
			t.Fatalf("real-Kafka lane is talking to the embedded broker (cluster %q)", md.Cluster)
		}
		for _, g := range guesses {
			if !strings.HasPrefix(g, "v3.9") && !strings.HasPrefix(g, "v4.") && !strings.HasPrefix(g, "at least v4") {
				t.Fatalf("real-Kafka lane: broker reports API versions of %q, want Apache Kafka 3.9 or 4.x", g)
			}
		}
		t.Logf("real Apache Kafka: cluster %s, API versions of %v", md.Cluster, guesses)
		return
	}
	if k.Embedded == nil || md.Cluster != "tributary-dev" || k.Brokers[0] != k.Embedded.KafkaAddr {
		t.Fatalf("kfake lane: cluster %q at %v is not the in-process embedded broker", md.Cluster, k.Brokers)
	}
	t.Logf("in-process kfake: cluster %s, API versions of %v", md.Cluster, guesses)
}

// TestDevStackSurvivesRestart runs `tributary dev`, writes records and
// registers a schema, restarts it on the same data directory, and reads both
// back with the same schema ID.
func TestDevStackSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	kport, rport := harness.FreePort(t), harness.FreePort(t)
	args := []string{"dev", "--data-dir", dir,
		"--kafka-addr", fmt.Sprintf("127.0.0.1:%d", kport), "--registry-addr", fmt.Sprintf("127.0.0.1:%d", rport)}
	brokers := fmt.Sprintf("127.0.0.1:%d", kport)
	regURL := fmt.Sprintf("http://127.0.0.1:%d", rport)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	dev := harness.StartTributary(t, nil, args...)
	waitReady(t, dev)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.DefaultProduceTopic("survivor"), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte{byte(i)}, Value: []byte(fmt.Sprintf("v%d", i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	cl.Close()
	rc, err := sr.NewClient(sr.URLs(regURL))
	if err != nil {
		t.Fatal(err)
	}
	// Two subjects, so that the restored IDs are not simply 1.
	if _, err := rc.CreateSchema(ctx, "other-value", sr.Schema{Schema: `"string"`}); err != nil {
		t.Fatal(err)
	}
	schema := `{"type":"record","name":"R","fields":[{"name":"a","type":"long"}]}`
	ss, err := rc.CreateSchema(ctx, "survivor-value", sr.Schema{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("dev exit: %v\n%s", err, dev.Output())
	}

	dev = harness.StartTributary(t, nil, args...)
	waitReady(t, dev)
	got, err := rc.SchemaByID(ctx, ss.ID)
	if err != nil {
		t.Fatalf("schema id %d after restart: %v", ss.ID, err)
	}
	if got.Schema != schema {
		t.Fatalf("schema id %d after restart is %s, want %s", ss.ID, got.Schema, schema)
	}
	// A new registration must not reuse a restored ID.
	ss2, err := rc.CreateSchema(ctx, "third-value", sr.Schema{Schema: `"bytes"`})
	if err != nil {
		t.Fatal(err)
	}
	if ss2.ID <= ss.ID {
		t.Fatalf("new schema got id %d, not above restored id %d", ss2.ID, ss.ID)
	}
	cl, err = kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics("survivor"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var n int
	for n < 10 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of 10 records after restart", n)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if string(r.Value) != fmt.Sprintf("v%d", r.Key[0]) {
				t.Fatalf("record %d: %q", r.Key[0], r.Value)
			}
			n++
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "registry.json")); err != nil {
		t.Fatal(err)
	}
}

func waitReady(t *testing.T, p *harness.Proc) {
	t.Helper()
	mustWaitOutput(t, p, "ready", 30*time.Second)
}

// TestCLIBadInputOneLineErrors checks that mistakes give one line naming the
// problem and a non-zero exit, never a stack trace.
func TestCLIBadInputOneLineErrors(t *testing.T) {
	bin := harness.Binary(t)
	dead := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	base := []string{"producer", "--registry", "http://" + dead, "--prefix", "p"}
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown flag", append(base, "--brokers", dead, "--source", "postgres://u@127.0.0.1/db", "--no-such-flag"), 2, "unknown flag --no-such-flag"},
		{"unreachable broker", append(base, "--brokers", dead, "--source", "postgres://u@127.0.0.1/db"), 1, "cannot reach Kafka at " + dead},
		{"malformed DSN", append(base, "--brokers", dead, "--source", "postgres://u@[bad/db"), 2, "--source"},
		{"missing required", []string{"producer", "--brokers", dead}, 2, "missing required setting --registry"},
		{"unknown command", []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"password on the command line", append(base, "--brokers", dead, "--source", "postgres://u@127.0.0.1/db", "--kafka-sasl-password", "hunter2"), 2, "TRIBUTARY_KAFKA_SASL_PASSWORD"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(bin, c.args...)
			out, err := cmd.CombinedOutput()
			code := cmd.ProcessState.ExitCode()
			text := strings.TrimSpace(string(out))
			if err == nil || code != c.code {
				t.Fatalf("exit %d (%v), want %d; output:\n%s", code, err, c.code, text)
			}
			if !strings.Contains(text, c.want) {
				t.Fatalf("output does not name the problem (%q):\n%s", c.want, text)
			}
			if strings.Contains(text, "goroutine ") || strings.Contains(text, "panic") || strings.Contains(text, "hunter2") {
				t.Fatalf("output has a stack trace or a secret:\n%s", text)
			}
			if c.name != "missing required" && strings.Count(text, "\n") > 0 {
				t.Fatalf("want one line, got:\n%s", text)
			}
		})
	}
}
