package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/schemas"
)

// Consumer replays one prefix's events into one sink. Create it with New and
// start it with Run.
type Consumer struct {
	cfg      Config
	log      *slog.Logger
	filter   map[string]bool // selected data topics; nil selects all
	txTopic  string
	msgTopic string
	dlqTopic string
	group    string
}

// New validates cfg and returns a consumer. It does not connect to anything.
func New(cfg Config) (*Consumer, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("consumer config: %w", err)
	}
	return &Consumer{
		cfg:      cfg,
		log:      cfg.Logger.With("consumer", cfg.Name, "prefix", cfg.Prefix),
		filter:   cfg.tableTopics(),
		txTopic:  schemas.TransactionsTopic(cfg.Prefix),
		msgTopic: schemas.MessagesTopic(cfg.Prefix),
		dlqTopic: schemas.DeadLetterTopic(cfg.Prefix, cfg.Name),
		group:    "tributary-" + cfg.Name,
	}, nil
}

// Run opens the sink and applies events until ctx ends (it then returns nil
// once the transaction in flight is rolled back or committed), until it is
// caught up under Config.UntilCaughtUp (nil), or until a permanent error or
// a transient one outlasting Config.RetryMaxElapsed (that error). Run closes
// the sink before it returns. It must not be called concurrently.
func (c *Consumer) Run(ctx context.Context) error {
	bo := c.backoff()
	for {
		err := c.cfg.Sink.Open(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		if IsPermanent(err) {
			return fmt.Errorf("open sink: %w", err)
		}
		d := bo.NextBackOff()
		if d == backoff.Stop {
			return fmt.Errorf("open sink: gave up after %v: %w", c.cfg.RetryMaxElapsed, err)
		}
		c.log.Warn("cannot open sink; retrying", "err", err, "in", d)
		if !sleep(ctx, d) {
			return nil
		}
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := c.cfg.Sink.Close(cctx); err != nil {
			c.log.Warn("close sink", "err", err)
		}
	}()
	if c.cfg.Interval <= 0 {
		return c.runUntil(ctx, c.cfg.UntilCaughtUp)
	}
	for {
		start := time.Now()
		if err := c.runUntil(ctx, true); err != nil || ctx.Err() != nil {
			return err
		}
		c.log.Info("caught up; sleeping until the next run", "took", time.Since(start), "interval", c.cfg.Interval)
		if !sleep(ctx, c.cfg.Interval) {
			return nil
		}
	}
}

func (c *Consumer) backoff() *backoff.ExponentialBackOff {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 200 * time.Millisecond
	bo.MaxInterval = 15 * time.Second
	// Deliberate: v4's default gives up after 15 minutes; ours is configured.
	bo.MaxElapsedTime = c.cfg.RetryMaxElapsed
	bo.Reset()
	return bo
}

// runState is what survives from one session to the next within a run.
type runState struct {
	untilCaughtUp bool
	progressed    bool // a batch was applied during the last session
	// Dead-letter policy: apply one source transaction per target
	// transaction through frame offset isolateThrough, and dead-letter the
	// frame at deadLetter (with reason) when the session starts there.
	isolateThrough int64
	deadLetter     int64
	reason         error
	lastGroupTxns  int
	lastGroupFirst int64
	// cutBefore ends a group before the frame at this offset
	// (CutBatchError); -1 for none.
	cutBefore int64
}

// runUntil runs sessions, retrying transient errors, until ctx ends, the
// consumer is caught up (when untilCaughtUp) or a permanent error stops it.
func (c *Consumer) runUntil(ctx context.Context, untilCaughtUp bool) error {
	bo := c.backoff()
	st := &runState{untilCaughtUp: untilCaughtUp, isolateThrough: -1, deadLetter: -1, cutBefore: -1}
	for {
		st.progressed = false
		var err error
		if c.cfg.Mode == ModePerKey {
			err = c.perKeySession(ctx, st)
		} else {
			err = c.txSession(ctx, st)
		}
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		if st.progressed {
			bo.Reset()
		}
		var cut *CutBatchError
		if errors.As(err, &cut) && c.cfg.Mode != ModePerKey && cut.FrameOffset != st.cutBefore {
			c.log.Info("ending the batch before a source transaction the sink applies in a transaction of its own",
				"frame_offset", cut.FrameOffset, "reason", cut.Reason)
			st.cutBefore = cut.FrameOffset
			continue
		}
		if IsPermanent(err) {
			off := failedFrame(err)
			if off < 0 || c.cfg.Mode == ModePerKey {
				return err
			}
			if st.isolateThrough < off && (st.lastGroupTxns > 1 || st.lastGroupFirst != off) {
				// Apply the group's earlier transactions, one per target
				// transaction, so that the stop (or the dead letter) is
				// exactly at the failing one.
				c.log.Warn("a group failed; applying its transactions one at a time to find the failing one",
					"through_frame_offset", off, "reason", err)
				st.isolateThrough = off
				continue
			}
			if c.cfg.OnError != OnErrorDeadLetter || isStructural(err) {
				return err
			}
			c.log.Warn("dead-lettering a source transaction", "frame_offset", off, "reason", err)
			st.deadLetter, st.reason = off, err
			continue
		}
		d := bo.NextBackOff()
		if d == backoff.Stop {
			return fmt.Errorf("gave up retrying after %v: %w", c.cfg.RetryMaxElapsed, err)
		}
		c.cfg.Observer.Retrying(err)
		c.log.Warn("transient error; resuming from the checkpoint", "err", err, "in", d)
		if !sleep(ctx, d) {
			return nil
		}
	}
}

// failedFrame is the transactions-topic offset of the frame err is about, or -1.
func failedFrame(err error) int64 {
	var ee *EventError
	if errors.As(err, &ee) {
		return ee.FrameOffset
	}
	var fe *FrameError
	if errors.As(err, &fe) {
		return fe.Offset
	}
	return -1
}

// fetchMaxWait is how long a fetch waits for records before the broker
// answers it empty.
const fetchMaxWait = 100 * time.Millisecond

// fetchMaxPartitionBytes and fetchMaxBytes bound what one fetch answers per
// partition and in all (the broker still answers a first record batch larger
// than that).
const (
	fetchMaxPartitionBytes = 256 << 10
	fetchMaxBytes          = 8 << 20
)

// newClient returns a direct, read_committed client that keeps control
// records, so that positions after transaction markers are known.
func (c *Consumer) newClient(parts map[string]map[int32]kgo.Offset, extra ...kgo.Opt) (*kgo.Client, error) {
	opts := append(append([]kgo.Opt{}, c.cfg.Kafka...), extra...)
	if parts == nil {
		parts = map[string]map[int32]kgo.Offset{}
	}
	opts = append(opts,
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.ConsumePartitions(parts),
		// Never reset past records retention deleted: the fetch fails
		// instead, and the session stops with ErrBehindRetention.
		kgo.ConsumeResetOffset(kgo.NoResetOffset()),
		// After a leader moves, find the new one within a fraction of a
		// second, as the producer does (franz-go's default waits 5 s).
		kgo.MetadataMinAge(250*time.Millisecond),
		// A fetch answers up to these many bytes, and a partition is paused
		// only after the fetch that filled its read-ahead: what one fetch
		// brings is read beyond the read-ahead bounds, and franz-go keeps a
		// fetch buffered while the last is processed. At 4 MiB and 32 MiB
		// they held most of a consumer's memory on a backlog of small rows;
		// at 1 MiB per partition, a consumer of 48 partitions still held
		// one fetch of each beyond the bound of all partitions together
		// (bench/ANALYSIS.md).
		kgo.FetchMaxPartitionBytes(fetchMaxPartitionBytes),
		kgo.FetchMaxBytes(fetchMaxBytes),
		// A partition added or resumed while a fetch waits for records is
		// fetched only once that fetch ends, and a frame's partitions are
		// added when the frame is first read: a long wait delays the start
		// of every partition, and a resumed one, by up to this much. A
		// record that arrives ends the wait at once, so the bound matters
		// only for partitions with nothing new; an idle consumer sends
		// about ten fetches a second.
		kgo.FetchMaxWait(fetchMaxWait),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, Permanent(fmt.Errorf("kafka client: %w", err))
	}
	return cl, nil
}

// commitGroupOffsets records positions in the Kafka group "tributary-<name>"
// so that Kafka tools show lag. It is best effort and never used to resume.
func (c *Consumer) commitGroupOffsets(ctx context.Context, adm *kadm.Client, next map[Stream]int64) {
	var os kadm.Offsets
	for s, o := range next {
		if s.Kind == StreamTransactions {
			continue
		}
		os.AddOffset(s.Topic, s.Partition, o, -1)
	}
	if len(os) == 0 {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := adm.CommitOffsets(cctx, c.group, os)
	if err == nil {
		err = resp.Error()
	}
	if err != nil && ctx.Err() == nil {
		c.log.Warn("cannot commit Kafka group offsets (lag display only; the checkpoint is in the sink)",
			"group", c.group, "err", err)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (cp *Checkpoint) merge(o Checkpoint) {
	if cp.Next == nil {
		cp.Next = map[Stream]int64{}
	}
	for s, n := range o.Next {
		cp.Next[s] = n
	}
	if o.CommitLSN != 0 {
		cp.CommitLSN, cp.CommitTime = o.CommitLSN, o.CommitTime
	}
}
