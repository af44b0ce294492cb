package txlog

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// ExistingBounds is PartitionBounds for a partition that should exist: when
// topic has no such partition (or does not exist) it returns an error that
// wraps kerr.UnknownTopicOrPartition, instead of zero bounds. Readers that
// report on a topic (status) use it to tell a missing topic from an empty
// one.
func ExistingBounds(ctx context.Context, adm *kadm.Client, topic string, partition int32) (Bounds, error) {
	b, err := PartitionBounds(ctx, adm, topic, partition)
	if err != nil || b != (Bounds{}) {
		return b, err
	}
	// Zero bounds: an empty partition, or none at all.
	tds, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return b, fmt.Errorf("metadata of %s: %w", topic, err)
	}
	td, ok := tds[topic]
	switch {
	case !ok || errors.Is(td.Err, kerr.UnknownTopicOrPartition):
		return b, fmt.Errorf("%s: %w", topic, kerr.UnknownTopicOrPartition)
	case td.Err != nil:
		return b, fmt.Errorf("metadata of %s: %w", topic, td.Err)
	}
	if _, ok := td.Partitions[partition]; !ok {
		return b, fmt.Errorf("%s partition %d: %w", topic, partition, kerr.UnknownTopicOrPartition)
	}
	return b, nil
}

// ExistingBounds returns the offsets readable in the transactions topic, or
// an error wrapping kerr.UnknownTopicOrPartition when it does not exist.
func (fr *Frames) ExistingBounds(ctx context.Context) (Bounds, error) {
	return ExistingBounds(ctx, fr.adm, fr.topic, 0)
}
