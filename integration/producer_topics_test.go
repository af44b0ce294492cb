package integration

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/integration/harness"
	"github.com/tributary-cdc/tributary/schemas"
)

// TestProducerCompressionAndTopicSettings: records are written with the
// --compression codec (none by default, readable by every client), and
// --topic-config reaches the topics the producer creates, cleanup.policy
// the data topics only (frames have no key to compact by).
func TestProducerCompressionAndTopicSettings(t *testing.T) {
	for _, c := range []struct {
		codec string
		attr  uint8 // kgo.RecordAttrs.CompressionType
	}{{"", 0}, {"zstd", 4}} {
		e := newEnv(t)
		e.pg.Exec(t, `CREATE TABLE z (id int PRIMARY KEY, v text)`, `CREATE PUBLICATION pub FOR TABLE z`)
		args := e.producerArgs("--snapshot", "never", "--topic-config", "retention.ms=3600000,cleanup.policy=compact")
		if c.codec != "" {
			args = append(args, "--compression", c.codec)
		}
		proc := harness.StartTributary(t, nil, args...)
		e.waitSlotActive(t, "slot", proc)
		e.pg.Exec(t, `INSERT INTO z SELECT g, repeat('x', 200) FROM generate_series(1, 100) g`)
		e.waitFrameCount(t, 1)
		if err := proc.Stop(t, 30*time.Second); err != nil {
			t.Fatalf("producer stop: %v", err)
		}
		data := schemas.TopicName(e.prefix, "public", "z")
		cl := e.kafka.Client(t, kgo.ConsumeTopics(data), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		fs := cl.PollRecords(ctx, 1)
		cancel()
		if fs.NumRecords() == 0 {
			t.Fatalf("no record in %s: %v", data, fs.Errors())
		}
		if got := fs.Records()[0].Attrs.CompressionType(); got != c.attr {
			t.Fatalf("--compression %q: records have compression type %d, want %d", c.codec, got, c.attr)
		}
		ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
		cfgs, err := kadm.NewClient(e.kafka.Client(t)).DescribeTopicConfigs(ctx, data, schemas.TransactionsTopic(e.prefix), schemas.StateTopic(e.prefix))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		want := map[string][2]string{ // retention.ms, cleanup.policy
			data:                                {"3600000", "compact"},
			schemas.TransactionsTopic(e.prefix): {"3600000", "delete"},
			schemas.StateTopic(e.prefix):        {"", "compact"},
		}
		for _, rc := range cfgs {
			got := map[string]string{}
			for _, kv := range rc.Configs {
				if kv.Value != nil {
					got[kv.Key] = *kv.Value
				}
			}
			w := want[rc.Name]
			if w[0] != "" && got["retention.ms"] != w[0] || got["cleanup.policy"] != w[1] {
				t.Fatalf("topic %s: retention.ms %q cleanup.policy %q, want %q and %q", rc.Name, got["retention.ms"], got["cleanup.policy"], w[0], w[1])
			}
		}
	}
}
