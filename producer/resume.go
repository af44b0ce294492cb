package producer

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/schemas"
)

// lastFrame reads the last committed frame of the transactions topic, or nil
// when the topic is empty. It reads with read_committed, so frames of aborted
// Kafka transactions are never taken for written ones. Call it after the
// session's transactional producer has initialized its ID, which fences the
// previous session and completes its open transaction.
func lastFrame(ctx context.Context, opts []kgo.Opt, reg *schemas.Registry, topic string) (*schemas.Frame, error) {
	adm, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	defer adm.Close()
	end, err := endOffset(ctx, adm, topic)
	if err != nil {
		return nil, err
	}
	if end <= 0 {
		return nil, nil
	}
	// Every Kafka transaction ends with one marker and holds at least one
	// frame, so walking back doubles the window until a frame is in it.
	for back := int64(16); ; back *= 2 {
		start := end - back
		if start < 0 {
			start = 0
		}
		f, err := readLastFrameFrom(ctx, opts, reg, topic, start, end)
		if err != nil || f != nil || start == 0 {
			return f, err
		}
	}
}

func readLastFrameFrom(ctx context.Context, opts []kgo.Opt, reg *schemas.Registry, topic string, start, end int64) (*schemas.Frame, error) {
	var last *schemas.Frame
	err := scanFrames(ctx, opts, reg, topic, start, end, func(f schemas.Frame) bool {
		last = &f
		return true
	})
	return last, err
}

// scanFrames decodes the committed frames of topic from offset start up to
// end, calling fn for each in order until it returns false.
func scanFrames(ctx context.Context, opts []kgo.Opt, reg *schemas.Registry, topic string, start, end int64, fn func(schemas.Frame) bool) error {
	if end <= start {
		return nil
	}
	cl, err := kgo.NewClient(append(opts,
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Markers are returned too, so that reaching the log's last offset
		// (always a committed record or a marker) ends the read exactly.
		kgo.KeepControlRecords(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().At(start)}}),
	)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("reading %s from offset %d: %w", topic, start, err)
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) { ferr = fmt.Errorf("fetch %s[%d]: %w", t, p, err) })
		if ferr != nil {
			return ferr
		}
		for it := fs.RecordIter(); !it.Done(); {
			r := it.Next()
			if !r.Attrs.IsControl() {
				f, err := decodeFrame(ctx, reg, r)
				if err != nil {
					return err
				}
				if !fn(f) {
					return nil
				}
			}
			if r.Offset >= end-1 {
				return nil
			}
		}
	}
}

// endOffset is the end of the single partition of topic: the offset after
// its last record or marker.
func endOffset(ctx context.Context, cl *kgo.Client, topic string) (int64, error) {
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("end offset of %s: %w", topic, err)
	}
	end, ok := ends.Lookup(topic, 0)
	if !ok || end.Err != nil {
		return 0, fmt.Errorf("end offset of %s: %v", topic, end.Err)
	}
	return end.Offset, nil
}

// decodeFrame decodes one record of the transactions topic.
func decodeFrame(ctx context.Context, reg *schemas.Registry, r *kgo.Record) (schemas.Frame, error) {
	id, body, err := schemas.SplitWire(r.Value)
	if err != nil {
		return schemas.Frame{}, fmt.Errorf("%s[%d]@%d: %w", r.Topic, r.Partition, r.Offset, err)
	}
	codec, err := reg.Codec(ctx, id)
	if err != nil {
		return schemas.Frame{}, fmt.Errorf("%s[%d]@%d: %w", r.Topic, r.Partition, r.Offset, err)
	}
	native, _, err := codec.NativeFromBinary(body)
	if err != nil {
		return schemas.Frame{}, fmt.Errorf("%s[%d]@%d: decode frame: %w", r.Topic, r.Partition, r.Offset, err)
	}
	f, err := schemas.FrameFromNative(native)
	if err != nil {
		return schemas.Frame{}, fmt.Errorf("%s[%d]@%d: %w", r.Topic, r.Partition, r.Offset, err)
	}
	return f, nil
}
