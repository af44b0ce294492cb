package txlog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ErrBelowLogStart is a read that would start below a partition's log start
// offset: the records it asks for were deleted (by retention, or by
// DeleteRecords) and reading on would skip them.
var ErrBelowLogStart = errors.New("offset is below the partition's log start: the records were deleted")

// ErrStop ends a read early when a callback returns it; the read returns nil.
var ErrStop = errors.New("stop reading")

// BelowLogStartError is ErrBelowLogStart with the partition and offsets.
type BelowLogStartError struct {
	Topic     string
	Partition int32
	Offset    int64 // the offset asked for
	LogStart  int64 // the partition's first offset
}

func (e *BelowLogStartError) Error() string {
	return fmt.Sprintf("%s partition %d: offset %d is below the log start offset %d: records %d to %d were deleted",
		e.Topic, e.Partition, e.Offset, e.LogStart, e.Offset, e.LogStart-1)
}

// Unwrap makes errors.Is(err, ErrBelowLogStart) true.
func (e *BelowLogStartError) Unwrap() error { return ErrBelowLogStart }

// Bounds are a partition's offsets: records at offsets [Start, End) can be
// read by read_committed readers.
type Bounds struct {
	Start int64 // log start offset: the first offset not deleted
	End   int64 // last stable offset: the end of what read_committed readers see
}

// Empty reports whether the partition holds nothing readable.
func (b Bounds) Empty() bool { return b.End <= b.Start }

// PartitionBounds returns the bounds of topic's partition. A topic that does
// not exist has zero bounds and no error.
func PartitionBounds(ctx context.Context, adm *kadm.Client, topic string, partition int32) (Bounds, error) {
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return Bounds{}, fmt.Errorf("log start of %s: %w", topic, err)
	}
	s, ok := starts.Lookup(topic, partition)
	if !ok || errors.Is(s.Err, kerr.UnknownTopicOrPartition) {
		return Bounds{}, nil
	}
	if s.Err != nil {
		return Bounds{}, fmt.Errorf("log start of %s partition %d: %w", topic, partition, s.Err)
	}
	ends, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		return Bounds{}, fmt.Errorf("end of %s: %w", topic, err)
	}
	e, ok := ends.Lookup(topic, partition)
	if !ok {
		return Bounds{}, fmt.Errorf("end of %s partition %d: not in the answer", topic, partition)
	}
	if e.Err != nil {
		return Bounds{}, fmt.Errorf("end of %s partition %d: %w", topic, partition, e.Err)
	}
	return Bounds{Start: s.Offset, End: e.Offset}, nil
}

// ReadRange calls fn, in offset order, for each committed record (control
// records excluded) of topic's partition at offsets [from, to), where to is
// at most the partition's last stable offset. fn may return ErrStop to end
// the read early (ReadRange then returns nil); any other error ends it with
// that error. A from below the log start returns a *BelowLogStartError.
// opts must reach the brokers; the read uses its own client.
func ReadRange(ctx context.Context, opts []kgo.Opt, topic string, partition int32, from, to int64, fn func(*kgo.Record) error) error {
	if to <= from {
		return nil
	}
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, opts...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Markers are returned too, so that reaching the range's last
		// offset (a committed record or a transaction marker) ends the
		// read exactly.
		kgo.KeepControlRecords(),
		kgo.ConsumeResetOffset(kgo.NoResetOffset()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().At(from)}}),
	)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("reading %s partition %d from offset %d: %w", topic, partition, from, err)
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if ferr != nil {
				return
			}
			if errors.Is(err, kerr.OffsetOutOfRange) {
				ferr = belowLogStart(ctx, cl, topic, partition, from, err)
				return
			}
			ferr = fmt.Errorf("fetch %s partition %d: %w", t, p, err)
		})
		if ferr != nil {
			return ferr
		}
		for it := fs.RecordIter(); !it.Done(); {
			r := it.Next()
			if !r.Attrs.IsControl() && r.Offset < to {
				if err := fn(r); err != nil {
					if errors.Is(err, ErrStop) {
						return nil
					}
					return err
				}
			}
			if r.Offset >= to-1 {
				return nil
			}
		}
	}
}

// belowLogStart explains an OffsetOutOfRange from a read at from.
func belowLogStart(ctx context.Context, cl *kgo.Client, topic string, partition int32, from int64, err error) error {
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	b, berr := PartitionBounds(lctx, kadm.NewClient(cl), topic, partition)
	if berr == nil && from < b.Start {
		return &BelowLogStartError{Topic: topic, Partition: partition, Offset: from, LogStart: b.Start}
	}
	return fmt.Errorf("fetch %s partition %d from offset %d: %w", topic, partition, from, err)
}

// firstAt returns the first committed record at an offset in [at, to), or
// nil when there is none.
func firstAt(ctx context.Context, opts []kgo.Opt, topic string, partition int32, at, to int64) (*kgo.Record, error) {
	var first *kgo.Record
	err := ReadRange(ctx, opts, topic, partition, at, to, func(r *kgo.Record) error {
		first = r
		return ErrStop
	})
	return first, err
}

// SeekFunc reports the key a record is ordered by (a commit LSN), and false
// for a record that carries none.
type SeekFunc func(*kgo.Record) (uint64, bool)

// Seek returns the offset of the first committed record in [b.Start, b.End)
// whose key (by keyOf) is at least want, or b.End when there is none. The
// records' keys must not decrease with the offset, as commit LSNs do in
// Tributary's topics. It reads O(log n) records. A record without a key is
// an error.
func Seek(ctx context.Context, opts []kgo.Opt, topic string, partition int32, b Bounds, want uint64, keyOf SeekFunc) (int64, error) {
	lo, hi := b.Start, b.End // the answer lies in [lo, hi]
	for lo < hi {
		mid := lo + (hi-lo)/2
		r, err := firstAt(ctx, opts, topic, partition, mid, b.End)
		if err != nil {
			return 0, err
		}
		if r == nil {
			// Nothing committed at or after mid (markers and aborted
			// records only): the answer is below mid, or the end.
			hi = mid
			continue
		}
		k, ok := keyOf(r)
		if !ok {
			return 0, fmt.Errorf("%s partition %d offset %d: record has no ordering key", topic, partition, r.Offset)
		}
		if k >= want {
			hi = mid
			if r.Offset < hi {
				hi = r.Offset
			}
		} else {
			lo = r.Offset + 1
		}
	}
	// lo may point at a marker or an aborted record: move it to the next
	// committed record, or the end.
	r, err := firstAt(ctx, opts, topic, partition, lo, b.End)
	if err != nil || r == nil {
		return b.End, err
	}
	return r.Offset, nil
}

// PositionFor returns an offset of topic's partition from which a reader
// finds every committed record whose key (by keyOf) is at least want, and
// few records below it: a record written at time at or later has such a
// key, and records are in key order. It asks the broker for the first offset
// a little before at (one round trip), then checks that the record there is
// below want, looking further back when it is not; the reader skips the
// records below want at its head. It returns b.Start when the partition
// holds nothing older.
func PositionFor(ctx context.Context, opts []kgo.Opt, adm *kadm.Client, topic string, partition int32, b Bounds, want uint64, at time.Time, keyOf SeekFunc) (int64, error) {
	if b.Empty() {
		return b.Start, nil
	}
	for _, back := range []time.Duration{time.Minute, time.Hour, 24 * time.Hour} {
		listed, err := adm.ListOffsetsAfterMilli(ctx, at.Add(-back).UnixMilli(), topic)
		if err != nil {
			return 0, fmt.Errorf("offsets of %s by time: %w", topic, err)
		}
		lo, ok := listed.Lookup(topic, partition)
		if !ok {
			return 0, fmt.Errorf("offset of %s partition %d by time: not in the answer", topic, partition)
		}
		if lo.Err != nil {
			return 0, fmt.Errorf("offset of %s partition %d by time: %w", topic, partition, lo.Err)
		}
		off := max(lo.Offset, b.Start)
		if off <= b.Start {
			return b.Start, nil
		}
		r, err := firstAt(ctx, opts, topic, partition, off, b.End)
		if err != nil {
			return 0, err
		}
		if r == nil {
			continue // only markers after off: look further back
		}
		if k, ok := keyOf(r); ok && k < want {
			return off, nil
		}
	}
	return b.Start, nil
}

// ReadFirst returns the first committed record of the partition within b,
// or nil when there is none.
func ReadFirst(ctx context.Context, opts []kgo.Opt, topic string, partition int32, b Bounds) (*kgo.Record, error) {
	return firstAt(ctx, opts, topic, partition, b.Start, b.End)
}
