package txlog

import (
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
)

// ExistingBounds tells a missing topic or partition from an empty one.
func TestExistingBounds(t *testing.T) {
	e := newLogEnv(t)
	const topic = "x.transactions"
	e.createTopic(topic)
	if b, err := ExistingBounds(e.ctx(), e.adm, topic, 0); err != nil || !b.Empty() {
		t.Fatalf("empty topic: %+v, %v", b, err)
	}
	e.txn(true, e.frame(topic, 1))
	want, err := PartitionBounds(e.ctx(), e.adm, topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := e.frames(topic).ExistingBounds(e.ctx()); err != nil || b != want || b.Empty() {
		t.Fatalf("topic with a frame: %+v, %v; want %+v", b, err, want)
	}
	for _, c := range []struct {
		topic string
		part  int32
	}{{"no.such.transactions", 0}, {topic, 1}} {
		if _, err := ExistingBounds(e.ctx(), e.adm, c.topic, c.part); !errors.Is(err, kerr.UnknownTopicOrPartition) {
			t.Errorf("%s partition %d: %v, want UnknownTopicOrPartition", c.topic, c.part, err)
		}
	}
	if b, err := PartitionBounds(e.ctx(), e.adm, "no.such.transactions", 0); err != nil || b != (Bounds{}) {
		t.Fatalf("PartitionBounds of a missing topic = %+v, %v; want zero bounds", b, err)
	}
}
