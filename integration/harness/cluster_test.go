package harness

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestFakeClusterKillIsANodeDeath checks the kfake emulation of a node's
// death that Cluster.Kill makes on the embedded lane (the real lane's kill
// is kafka.sh's SIGKILL): with each node killed in turn, no partition is led
// by it and no transactional ID or group is coordinated by it, its address
// refuses clients, and clients that bootstrap from every node still commit
// transactions and read them back, as after a failover.
func TestFakeClusterKillIsANodeDeath(t *testing.T) {
	c := startFakeCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	adm := kadm.NewClient(c.cl)
	if _, err := adm.CreateTopic(ctx, 6, -1, nil, "t"); err != nil {
		t.Fatal(err)
	}
	produced := 0
	commit := func() {
		t.Helper()
		cl := c.Client(t, kgo.TransactionalID("txn"), kgo.DefaultProduceTopic("t"))
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 12; i++ {
			if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte{byte(i)}, Value: []byte("v")}).FirstErr(); err != nil {
				t.Fatalf("produce: %v", err)
			}
		}
		if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatalf("commit: %v", err)
		}
		cl.Close()
		produced += 12
		g := c.Client(t, kgo.ConsumerGroup("g"), kgo.ConsumeTopics("t"), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
		for n := 0; n < 12; {
			fs := g.PollFetches(ctx)
			if err := ctx.Err(); err != nil {
				t.Fatalf("read back %d of 12 records: %v", n, err)
			}
			n += fs.NumRecords()
		}
		if err := g.CommitUncommittedOffsets(ctx); err != nil {
			t.Fatalf("commit group offsets: %v", err)
		}
		g.Close()
	}
	commit()
	for _, node := range c.Nodes {
		c.Kill(t, node)
		md, err := c.metadata(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, td := range md.Topics {
			for _, p := range td.Partitions {
				if p.Leader == node {
					t.Fatalf("after killing node %d it still leads %s[%d]", node, *td.Topic, p.Partition)
				}
			}
		}
		for _, key := range []string{"txn", "g"} {
			if n := c.fake.CoordinatorFor(key); n == node {
				t.Fatalf("after killing node %d it still coordinates %q", node, key)
			}
		}
		if _, err := kadm.NewClient(c.Client(t, kgo.SeedBrokers(c.Brokers[node]), kgo.RetryTimeout(time.Second))).BrokerMetadata(ctx); err == nil {
			t.Fatalf("killed node %d still answers at %s", node, c.Brokers[node])
		}
		commit()
		c.Restart(t, node)
		if _, err := kadm.NewClient(c.Client(t, kgo.SeedBrokers(c.Brokers[node]))).BrokerMetadata(ctx); err != nil {
			t.Fatalf("restarted node %d does not answer: %v", node, err)
		}
		c.WaitReplicated(t, time.Minute)
	}
	t.Logf("%d records in %d transactions through %d node deaths", produced, produced/12, len(c.Nodes))
}
