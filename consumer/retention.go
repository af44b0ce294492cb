package consumer

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog"
)

// ErrBehindRetention is a consumer whose position is no longer in Kafka:
// retention (or DeleteRecords) removed records it has not applied. The
// consumer stops rather than skip them.
var ErrBehindRetention = errors.New("the consumer is behind the log's retention")

// BehindRetentionError names where the consumer fell behind.
type BehindRetentionError struct {
	Topic      string
	Partition  int32
	Checkpoint int64 // the next offset the consumer would read; -1 for none (a new consumer)
	LogStart   int64
}

func (e *BehindRetentionError) Error() string {
	at := fmt.Sprintf("the consumer's checkpoint (next offset %d)", e.Checkpoint)
	if e.Checkpoint < 0 {
		at = "the consumer has no checkpoint, and the log"
	}
	return fmt.Sprintf("%s partition %d: %s is below the log start offset %d: retention deleted records it has not applied, "+
		"and it stops rather than skip them. To recover, take an online snapshot of the tables "+
		"(tributary snapshot start --source ... --slot ...) and start the consumer with --from-snapshot <ID> "+
		"(see docs/SNAPSHOTS.md)", e.Topic, e.Partition, at, e.LogStart)
}

// Unwrap makes errors.Is(err, ErrBehindRetention) true.
func (e *BehindRetentionError) Unwrap() error { return ErrBehindRetention }

// position checks the checkpoint against the log and decides where the
// session starts. A checkpoint the log still holds is used as it is. A
// consumer with no checkpoint starts at the log's start, unless retention
// deleted some of it. With Config.FromSnapshot, a consumer that has no
// usable checkpoint starts at the frame where that online snapshot was
// requested instead; its old entries are marked unknown (-1), so that each
// partition is positioned by commit LSN when a frame first lists it.
//
// A bootstrap also returns the snapshot, whose tables the first batch
// empties at the target before the snapshot rebuilds them.
func (c *Consumer) position(ctx context.Context, adm *kadm.Client, cp Checkpoint) (Checkpoint, *txlog.FoundSnapshot, error) {
	txs := Stream{Kind: StreamTransactions, Topic: c.txTopic}
	behind, err := c.behindRetention(ctx, adm, cp, true)
	if err != nil {
		return cp, nil, err
	}
	_, started := cp.Next[txs]
	if behind == nil && (started || c.cfg.FromSnapshot == "") {
		return cp, nil, nil
	}
	if c.cfg.FromSnapshot == "" {
		return cp, nil, Permanent(behind)
	}
	if behind != nil {
		c.log.Warn("the checkpoint is behind the log's retention; bootstrapping from an online snapshot",
			"snapshot", c.cfg.FromSnapshot, "behind", behind.Error())
	}
	return c.bootstrap(ctx, adm, cp)
}

// behindRetention returns the first stream of cp whose next offset is below
// its partition's log start, or, for a transactional consumer that has not
// started the transactions topic, that topic when its start was deleted.
func (c *Consumer) behindRetention(ctx context.Context, adm *kadm.Client, cp Checkpoint, transactional bool) (*BehindRetentionError, error) {
	txs := Stream{Kind: StreamTransactions, Topic: c.txTopic}
	topics := map[string]bool{}
	if transactional {
		topics[c.txTopic] = true
	}
	for s := range cp.Next {
		topics[s.Topic] = true
	}
	names := make([]string, 0, len(topics))
	for t := range topics {
		names = append(names, t)
	}
	sort.Strings(names)
	starts, err := adm.ListStartOffsets(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("log start offsets: %w", err)
	}
	check := func(s Stream, next int64) *BehindRetentionError {
		lo, ok := starts.Lookup(s.Topic, s.Partition)
		if !ok || lo.Err != nil || next >= lo.Offset {
			return nil
		}
		return &BehindRetentionError{Topic: s.Topic, Partition: s.Partition, Checkpoint: next, LogStart: lo.Offset}
	}
	if len(topics) == 0 {
		return nil, nil
	}
	if next, ok := cp.Next[txs]; ok && transactional {
		if e := check(txs, next); e != nil {
			return e, nil
		}
	} else if e := check(txs, 0); e != nil && transactional {
		e.Checkpoint = -1
		return e, nil
	}
	streams := make([]Stream, 0, len(cp.Next))
	for s := range cp.Next {
		streams = append(streams, s)
	}
	sort.Slice(streams, func(i, j int) bool {
		return streams[i].Topic < streams[j].Topic || streams[i].Topic == streams[j].Topic && streams[i].Partition < streams[j].Partition
	})
	for _, s := range streams {
		if next := cp.Next[s]; s.Kind != StreamTransactions && next >= 0 {
			if e := check(s, next); e != nil {
				return e, nil
			}
		}
	}
	return nil, nil
}

// bootstrap starts the consumer at the request frame of the online snapshot
// Config.FromSnapshot.
func (c *Consumer) bootstrap(ctx context.Context, adm *kadm.Client, old Checkpoint) (Checkpoint, *txlog.FoundSnapshot, error) {
	id := c.cfg.FromSnapshot
	stateTopic := schemas.StateTopic(c.cfg.Prefix)
	found, err := txlog.FindSnapshot(ctx, c.cfg.Kafka, adm, stateTopic, id)
	if err != nil {
		return old, nil, fmt.Errorf("find online snapshot %s: %w", id, err)
	}
	if found == nil {
		return old, nil, Permanent(fmt.Errorf("--from-snapshot %s: no such online snapshot in %s; request one with tributary snapshot start", id, stateTopic))
	}
	var missing []string
	for _, t := range c.cfg.Tables {
		if _, ok := found.Tables[txlog.QualifyTable(t)]; !ok {
			missing = append(missing, txlog.QualifyTable(t))
		}
	}
	if len(missing) > 0 {
		return old, nil, Permanent(fmt.Errorf("--from-snapshot %s: the snapshot does not read %s, which this consumer applies; "+
			"request a snapshot of them", found.ID, strings.Join(missing, ", ")))
	}
	frames := txlog.NewFrames(c.cfg.Kafka, adm, txlog.NewFrameDecoder(c.cfg.Registry), c.txTopic)
	b, err := frames.Bounds(ctx)
	if err != nil {
		return old, nil, err
	}
	off, err := frames.FirstAtOrPast(ctx, b, found.RequestLSN)
	if err != nil {
		return old, nil, err
	}
	var first *schemas.Frame
	if err := frames.Scan(ctx, off, b.End, func(_ int64, f schemas.Frame) error {
		first = &f
		return txlog.ErrStop
	}); err != nil {
		return old, nil, err
	}
	if first == nil || first.Request == nil || first.Request.ID != found.ID {
		return old, nil, Permanent(fmt.Errorf("--from-snapshot %s: its request frame (commit LSN %s) is not in %s: retention deleted it too; "+
			"request a new snapshot", found.ID, found.RequestLSN, c.txTopic))
	}
	tables := make([]string, 0, len(found.Tables))
	for t := range found.Tables {
		tables = append(tables, t)
	}
	sort.Strings(tables)
	c.log.Info("bootstrapping from an online snapshot", "snapshot", found.ID, "slot", found.Slot, "frame_offset", off,
		"commit_lsn", found.RequestLSN, "tables", strings.Join(tables, ","))
	cp := Checkpoint{Next: map[Stream]int64{{Kind: StreamTransactions, Topic: c.txTopic}: off}}
	for s := range old.Next {
		if s.Kind != StreamTransactions {
			cp.Next[s] = -1 // unknown: positioned by commit LSN when first listed
		}
	}
	return cp, found, nil
}

// bootTruncates are the events that empty the snapshot's tables at the
// target before a bootstrap rebuilds them, in the first batch: truncates of
// the tables this consumer applies whose topics have a schema.
func (r *reader) bootTruncates(ctx context.Context, found *txlog.FoundSnapshot) ([]*Event, error) {
	names := make([]string, 0, len(found.Tables))
	for n := range found.Tables {
		names = append(names, n)
	}
	sort.Strings(names)
	txn := &Txn{CommitLSN: found.RequestLSN, CommitTime: found.Requested, Offset: -1}
	var out []*Event
	for _, n := range names {
		schema, table, _ := strings.Cut(n, ".")
		topic := schemas.TopicName(r.c.cfg.Prefix, schema, table)
		if r.c.filter != nil && !r.c.filter[topic] {
			continue
		}
		t, err := r.dec.latestTable(ctx, topic, schema, table)
		if err != nil {
			return nil, err
		}
		if t != nil {
			out = append(out, &Event{Txn: txn, Topic: topic, Offset: -1, Op: schemas.OpTruncate, Table: t})
		}
	}
	return out, nil
}
