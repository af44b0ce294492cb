package producer

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
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
		if !IsTransient(wrapped) {
			t.Fatalf("%s: %v is not transient", c.name, wrapped)
		}
		if c.name == "no leader" && (!strings.Contains(err.Error(), "partition 1") || !errors.Is(err, kerr.LeaderNotAvailable)) {
			t.Fatalf("no leader: %v should name partition 1 and wrap LEADER_NOT_AVAILABLE", err)
		}
	}
}
