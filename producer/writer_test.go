package producer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tributary-cdc/tributary/internal/retry"
)

// A topic whose partitions have no leader yet (a new topic, a broker
// failover) must keep the session retrying, never end the producer.
func TestTopicReadyKeepsLeaderlessPartitionsTransient(t *testing.T) {
	led := kadm.PartitionDetail{Partition: 0, Leader: 1}
	cases := []struct {
		name  string
		td    kadm.TopicDetail
		ready bool
	}{
		{"led", kadm.TopicDetail{Partitions: kadm.PartitionDetails{0: led}}, true},
		{"no partitions yet", kadm.TopicDetail{}, false},
		{"unknown topic", kadm.TopicDetail{Err: kerr.UnknownTopicOrPartition}, false},
		{"no leader", kadm.TopicDetail{Partitions: kadm.PartitionDetails{0: led, 1: {Partition: 1, Leader: -1}}}, false},
		{"partition error", kadm.TopicDetail{Partitions: kadm.PartitionDetails{0: {Partition: 0, Leader: 1, Err: kerr.LeaderNotAvailable}}}, false},
	}
	for _, c := range cases {
		err := topicReady(c.td)
		if (err == nil) != c.ready {
			t.Fatalf("%s: topicReady = %v, want ready %v", c.name, err, c.ready)
		}
		if err == nil {
			continue
		}
		wrapped := fmt.Errorf("describe topic t: not ready after 12.75s: %w", err)
		if retry.IsTerminal(wrapped) {
			t.Fatalf("%s: %v is not transient", c.name, wrapped)
		}
		if c.name == "no leader" && (!strings.Contains(err.Error(), "partition 1") || !errors.Is(err, kerr.LeaderNotAvailable)) {
			t.Fatalf("no leader: %v should name partition 1 and wrap LEADER_NOT_AVAILABLE", err)
		}
	}
}

// A commit that timed out, or a client that stalled, ends the session and
// never the producer, whatever Kafka error the client returned with it:
// EndTransaction can give up with the non-retriable OperationNotAttempted
// when the deadline passes while it reloads the producer ID. So do errors
// that say the client's producer state is broken.
func TestCommitTimeoutAndStallAreTransient(t *testing.T) {
	w := &kafkaWriter{commitTimeout: time.Millisecond}
	timedOut := func(err error) error {
		return w.bounded(context.Background(), func(ctx context.Context) error { <-ctx.Done(); return err })
	}
	for _, err := range []error{
		timedOut(kerr.OperationNotAttempted),
		timedOut(context.DeadlineExceeded),
		fmt.Errorf("produce to t[0]: %w", fmt.Errorf("%w: %w", ErrKafkaStalled, context.Canceled)),
	} {
		if retry.IsTerminal(fmt.Errorf("commit kafka transaction: %w", err)) {
			t.Fatalf("%v is not transient", err)
		}
	}
	// A broken producer state is retried with a new client; a fenced one
	// (another owner of the transactional ID) ends the producer.
	for _, err := range []error{kerr.OutOfOrderSequenceNumber, kerr.UnknownProducerID, kerr.InvalidProducerIDMapping, kerr.OperationNotAttempted} {
		if retry.IsTerminal(fmt.Errorf("produce to t[0]: %w", err)) {
			t.Fatalf("%v is not transient", err)
		}
	}
	for _, err := range []error{kerr.ProducerFenced, kerr.InvalidProducerEpoch, kerr.TransactionalIDAuthorizationFailed} {
		if !retry.IsTerminal(fmt.Errorf("commit kafka transaction: %w", err)) {
			t.Fatalf("%v is transient", err)
		}
	}
}

// An EndTxn the broker does not answer ends the commit with the transient
// ErrCommitTimeout once the bound passes; it must not hang the stream. The
// flush before it succeeds, so this is EndTxn's own budget.
func TestCommitTimeoutBoundsEndTxn(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	release := make(chan struct{})
	defer close(release)
	var held atomic.Int32
	c.ControlKey(int16(kmsg.EndTxn), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		held.Add(1)
		c.SleepControl(func() { <-release })
		return nil, nil, false
	})
	w := beginTxn(t, c, 500*time.Millisecond)
	w.produce(&kgo.Record{Topic: "t", Partition: 0, Value: []byte("v")})
	err = w.commit(context.Background())
	if !errors.Is(err, ErrCommitTimeout) || !strings.Contains(err.Error(), "commit kafka transaction") {
		t.Fatalf("commit with an unanswered EndTxn returned %v, want ErrCommitTimeout from EndTxn", err)
	}
	if retry.IsTerminal(err) {
		t.Fatalf("%v is not transient", err)
	}
	if held.Load() == 0 {
		t.Fatal("the broker never received EndTxn")
	}
}

// A record the broker refuses fails the commit with an error that names
// the source change it carried (transaction, commit LSN, position), not
// only the topic and partition.
func TestProduceErrorNamesTheChange(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kr.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, kerr.MessageTooLarge.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	w := beginTxn(t, c, 10*time.Second)
	r := newRecord(&txState{xid: 742, commitLSN: 0x16B3A28}, 3, "t", []byte("k"), []byte("v"))
	w.produce(r)
	err = w.commit(context.Background())
	if !errors.Is(err, kerr.MessageTooLarge) {
		t.Fatalf("commit returned %v, want MESSAGE_TOO_LARGE", err)
	}
	for _, want := range []string{"t[0]", "xid 742", "commit LSN 0/16B3A28", "change 3"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error %q does not say %q", err, want)
		}
	}
}

// beginTxn is a writer with a transactional client of c, watched, with a
// Kafka transaction open; it is closed when the test ends.
func beginTxn(t *testing.T, c *kfake.Cluster, commitTimeout time.Duration) *kafkaWriter {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.TransactionalID("tributary-test"),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	w := newKafkaWriter(cl, 1, 8<<20+batchOverhead, commitTimeout, slog.Default())
	t.Cleanup(w.watch(context.Background()))
	if err := w.begin(); err != nil {
		t.Fatal(err)
	}
	return w
}
