package producer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/internal/retry"
	"github.com/tributary-cdc/tributary/schemas"
)

// batchOverhead is the room a record batch needs beside its one largest
// event: the batch header and the record's own framing.
const batchOverhead = 64 << 10

// maxEventLimit is the largest MaxEventBytes: Kafka bounds a record batch
// at 1 GiB.
const maxEventLimit = 1<<30 - batchOverhead

// ErrEventTooLarge is an event larger than Config.MaxEventBytes
// (--max-event-bytes): Kafka refuses a record batch larger than the topic's
// max.message.bytes, and the producer stops before it rather than after.
var ErrEventTooLarge = errors.New("event larger than --max-event-bytes")

// checkEventSize returns ErrEventTooLarge, with its size and the limit, for
// a record whose key, value and headers exceed limit bytes: what the Kafka
// client counts.
func checkEventSize(r *kgo.Record, limit int) error {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	if n <= limit {
		return nil
	}
	return fmt.Errorf("%w: %d bytes for topic %s, limit %d; restart with a larger --max-event-bytes "+
		"(the producer raises max.message.bytes of its topics to match), or make the row smaller",
		ErrEventTooLarge, n, r.Topic, limit)
}

// kafkaWriter writes records inside Kafka transactions and knows each record's
// partition before it is sent, so that a frame can count records per
// partition without waiting for acknowledgements. Partitions are chosen as
// Kafka's default partitioner does (murmur2 of the key), so other producers
// of the same keys agree. Not safe for concurrent use.
type kafkaWriter struct {
	cl            *kgo.Client
	adm           *kadm.Client
	partitions    int32 // for topics this writer creates
	maxBatchBytes int   // max.message.bytes of topics this writer creates
	log           *slog.Logger
	commitTimeout time.Duration // bounds commitOpen; 0 for none
	hasher        kgo.Partitioner
	topics        map[string]topicInfo

	inTxn bool
	errMu sync.Mutex
	err   error // first produce error of the open transaction

	ctx   context.Context // records are produced with it; see watch
	ended atomic.Int64    // records delivered or failed, for watch
}

type topicInfo struct {
	n    int32
	part kgo.TopicPartitioner
}

func newKafkaWriter(cl *kgo.Client, partitions int32, maxBatchBytes int, commitTimeout time.Duration, log *slog.Logger) *kafkaWriter {
	return &kafkaWriter{
		cl: cl, adm: kadm.NewClient(cl), partitions: partitions, maxBatchBytes: maxBatchBytes, commitTimeout: commitTimeout, log: log,
		hasher: kgo.StickyKeyPartitioner(nil),
		topics: map[string]topicInfo{},
	}
}

// ensureTopic creates topic with n partitions (the writer's default when n is
// 0) and the given config key-value pairs unless it exists, and caches its
// partition count.
func (w *kafkaWriter) ensureTopic(ctx context.Context, topic string, n int32, config ...string) (topicInfo, error) {
	if ti, ok := w.topics[topic]; ok {
		return ti, nil
	}
	if n == 0 {
		n = w.partitions
	}
	maxBytes := strconv.Itoa(w.maxBatchBytes)
	configs := map[string]*string{"max.message.bytes": &maxBytes}
	for i := 0; i+1 < len(config); i += 2 {
		configs[config[i]] = &config[i+1]
	}
	resp, err := w.adm.CreateTopic(ctx, n, -1, configs, topic)
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return topicInfo{}, fmt.Errorf("create topic %s: %w", topic, err)
	}
	if resp.Err != nil && !errors.Is(resp.Err, kerr.TopicAlreadyExists) {
		return topicInfo{}, fmt.Errorf("create topic %s: %w", topic, resp.Err)
	}
	if errors.Is(err, kerr.TopicAlreadyExists) || errors.Is(resp.Err, kerr.TopicAlreadyExists) {
		if err := w.allowBatches(ctx, topic); err != nil {
			return topicInfo{}, err
		}
	}
	// A new topic's metadata reaches every broker a moment after creation,
	// and its partitions get leaders a moment later.
	var td kadm.TopicDetail
	start := time.Now()
	for wait := 50 * time.Millisecond; ; wait *= 2 {
		md, err := w.adm.ListTopics(ctx, topic)
		if err != nil {
			return topicInfo{}, fmt.Errorf("describe topic %s: %w", topic, err)
		}
		td = md[topic]
		err = topicReady(td)
		if err == nil {
			break
		}
		if wait > 10*time.Second {
			// err wraps the broker's error, so a retriable one (no
			// leader yet) keeps the session retrying.
			return topicInfo{}, fmt.Errorf("describe topic %s: not ready after %s: %w", topic, time.Since(start).Round(time.Millisecond), err)
		}
		select {
		case <-ctx.Done():
			return topicInfo{}, ctx.Err()
		case <-time.After(wait):
		}
	}
	ti := topicInfo{n: int32(len(td.Partitions)), part: w.hasher.ForTopic(topic)}
	w.topics[topic] = ti
	return ti, nil
}

// allowBatches raises max.message.bytes of an existing topic to the
// writer's batch size when it is lower: a topic created by a producer with
// a smaller --max-event-bytes (or by hand) would refuse the larger events
// with MESSAGE_TOO_LARGE, naming no table or key. It never lowers the
// setting. A topic whose configuration cannot be read is left as it is,
// with a warning.
func (w *kafkaWriter) allowBatches(ctx context.Context, topic string) error {
	rcs, err := w.adm.DescribeTopicConfigs(ctx, topic)
	var have int64 = -1
	if err == nil {
		var rc kadm.ResourceConfig
		if rc, err = rcs.On(topic, nil); err == nil && rc.Err != nil {
			err = rc.Err
		}
		for _, c := range rc.Configs {
			if c.Key == "max.message.bytes" && c.Value != nil {
				have, _ = strconv.ParseInt(*c.Value, 10, 64)
			}
		}
	}
	if err != nil || have < 0 {
		w.log.Warn("topic configuration not read: its max.message.bytes is not checked against --max-event-bytes",
			"topic", topic, "need_max_message_bytes", w.maxBatchBytes, "error", err)
		return nil
	}
	if have >= int64(w.maxBatchBytes) {
		return nil
	}
	want := strconv.Itoa(w.maxBatchBytes)
	resps, err := w.adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "max.message.bytes", Value: &want}}, topic)
	if err == nil {
		for _, r := range resps {
			if r.Err != nil {
				err = fmt.Errorf("%w %s", r.Err, r.ErrMessage)
			}
		}
	}
	if err != nil {
		return retry.Terminal(fmt.Errorf("topic %s allows record batches of %d bytes, --max-event-bytes needs %d: "+
			"raise its max.message.bytes (the producer could not: %w)", topic, have, w.maxBatchBytes, err))
	}
	w.log.Info("topic max.message.bytes raised for --max-event-bytes", "topic", topic, "from", have, "to", w.maxBatchBytes)
	return nil
}

// topicReady returns nil when td has partitions and each has a leader, and
// otherwise the first error, naming the partition.
func topicReady(td kadm.TopicDetail) error {
	if td.Err != nil {
		return td.Err
	}
	if len(td.Partitions) == 0 {
		return kerr.UnknownTopicOrPartition
	}
	for _, p := range td.Partitions.Sorted() {
		switch {
		case p.Err != nil:
			return fmt.Errorf("partition %d: %w", p.Partition, p.Err)
		case p.Leader < 0:
			return fmt.Errorf("partition %d: %w", p.Partition, kerr.LeaderNotAvailable)
		}
	}
	return nil
}

// partitionFor returns the partition of a keyed record of topic.
func (w *kafkaWriter) partitionFor(ti topicInfo, r *kgo.Record) int32 {
	return int32(ti.part.Partition(r, int(ti.n)))
}

// begin opens a Kafka transaction unless one is open.
func (w *kafkaWriter) begin() error {
	if w.inTxn {
		return nil
	}
	if err := w.cl.BeginTransaction(); err != nil {
		return fmt.Errorf("begin kafka transaction: %w", err)
	}
	w.inTxn = true
	w.err = nil
	return nil
}

// produce sends r, whose Partition is already set, in the open transaction.
// It blocks when the client's buffer is full, until there is room or the
// writer's context ends (see watch).
func (w *kafkaWriter) produce(r *kgo.Record) {
	w.cl.Produce(w.ctx, r, func(r *kgo.Record, err error) {
		w.ended.Add(1)
		if err != nil {
			if serr := w.stalled(); serr != nil {
				err = fmt.Errorf("%w: %w", serr, err)
			}
			w.errMu.Lock()
			if w.err == nil {
				w.err = fmt.Errorf("produce to %s[%d]%s: %w", r.Topic, r.Partition, recordOrigin(r), err)
			}
			w.errMu.Unlock()
		}
	})
}

// recordOrigin names the source change a record carries, from its order
// headers (newRecord): " (xid X, commit LSN Y, change N)", or "" for a
// record without them (a frame, a state record).
func recordOrigin(r *kgo.Record) string {
	var xid, commit, pos string
	for _, h := range r.Headers {
		switch h.Key {
		case schemas.HeaderXID:
			xid = string(h.Value)
		case schemas.HeaderCommitLSN:
			if n, err := strconv.ParseUint(string(h.Value), 10, 64); err == nil {
				commit = pglogrepl.LSN(n).String()
			}
		case schemas.HeaderPosition:
			pos = string(h.Value)
		}
	}
	if commit == "" {
		return ""
	}
	return fmt.Sprintf(" (source transaction xid %s, commit LSN %s, change %s)", xid, commit, pos)
}

// ErrKafkaStalled is a Kafka client that delivered and failed nothing for
// the commit timeout while it held records. It is retryable whatever Kafka
// error it wraps (retry.Retryable): the session ends, and the next one
// starts with a new client.
var ErrKafkaStalled = retry.Retryable(errors.New("kafka client stalled"))

// watch makes ctx the parent of the context records are produced with, and
// cancels that context with ErrKafkaStalled when the client holds records
// and none has been delivered or failed for the commit timeout. commitOpen
// bounds a commit; this bounds a Produce that blocks on a full buffer (a
// source transaction larger than the buffer, a snapshot) behind a client
// that stopped delivering. It returns a function that ends the watch.
func (w *kafkaWriter) watch(ctx context.Context) (stop func()) {
	if w.commitTimeout <= 0 {
		w.ctx = ctx
		return func() {}
	}
	wctx, cancel := context.WithCancelCause(ctx)
	w.ctx = wctx
	quit := make(chan struct{})
	go func() {
		tick := time.NewTicker(min(time.Second, w.commitTimeout/4))
		defer tick.Stop()
		last, since := w.ended.Load(), time.Now()
		for {
			select {
			case <-quit:
				return
			case <-wctx.Done():
				return
			case now := <-tick.C:
				if n := w.ended.Load(); n != last || w.cl.BufferedProduceRecords() == 0 {
					last, since = n, now
					continue
				}
				if now.Sub(since) >= w.commitTimeout {
					cancel(fmt.Errorf("%w: %d records buffered, none delivered or failed for %s (--kafka-commit-timeout %s)",
						ErrKafkaStalled, w.cl.BufferedProduceRecords(), now.Sub(since).Round(time.Second), w.commitTimeout))
					return
				}
			}
		}
	}()
	return func() {
		close(quit)
		cancel(nil)
	}
}

// stalled returns the watch's ErrKafkaStalled once it has fired, else nil.
func (w *kafkaWriter) stalled() error {
	if w.ctx == nil || w.ctx.Err() == nil {
		return nil
	}
	if err := context.Cause(w.ctx); errors.Is(err, ErrKafkaStalled) {
		return err
	}
	return nil
}

// commit flushes and commits the open transaction. On any error the
// transaction is aborted and the error returned; nothing of it is visible to
// read_committed readers. The caller must then close the client: after a
// commit that timed out, the client's state is unknown.
func (w *kafkaWriter) commit(ctx context.Context) error {
	if !w.inTxn {
		return nil
	}
	w.inTxn = false
	return w.commitOpen(ctx)
}

// ErrCommitTimeout is a Kafka commit that did not end within the commit
// timeout. It is retryable whatever Kafka error it wraps (retry.Retryable):
// the session ends, and the next one starts with a new client whose
// InitProducerID aborts the transaction left open.
var ErrCommitTimeout = retry.Retryable(errors.New("kafka transaction commit timed out"))

// commitOpen is commit for a caller that has already marked the transaction
// closed (inTxn false). It touches only the client and the produce error, so
// it may run in another goroutine while the caller does not use w.
//
// The flush and EndTxn are each bounded by commitTimeout. franz-go retries a
// record until it is delivered, and a broker restart can leave a partition's
// records neither delivered nor failed (seen with Apache Kafka 3.9: a batch answered
// OUT_OF_ORDER_SEQUENCE_NUMBER after its predecessor was rewound, and never
// resent), so an unbounded Flush could hold the stream, and the slot, forever.
func (w *kafkaWriter) commitOpen(ctx context.Context) error {
	if err := w.bounded(ctx, w.cl.Flush); err != nil {
		if !errors.Is(err, ErrCommitTimeout) {
			// A client that timed out would only time out again: the
			// next session's InitProducerID aborts instead.
			w.abortOpen()
		}
		return fmt.Errorf("flush kafka transaction: %w", err)
	}
	w.errMu.Lock()
	perr := w.err
	w.errMu.Unlock()
	if perr != nil {
		w.abortOpen()
		return perr
	}
	// EndTxn gets a budget of its own: a slow flush must not leave it so
	// little that a commit the broker would make is cancelled half way.
	if err := w.bounded(ctx, func(ctx context.Context) error { return w.cl.EndTransaction(ctx, kgo.TryCommit) }); err != nil {
		return fmt.Errorf("commit kafka transaction: %w", err)
	}
	return nil
}

// bounded runs one step of a commit within its own commitTimeout, and names
// the timeout in the step's error when it is what ended the step.
func (w *kafkaWriter) bounded(parent context.Context, step func(context.Context) error) error {
	ctx, start := parent, time.Now()
	if w.commitTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(parent, w.commitTimeout, ErrCommitTimeout)
		defer cancel()
	}
	err := step(ctx)
	if err != nil && errors.Is(context.Cause(ctx), ErrCommitTimeout) {
		return fmt.Errorf("%w: not done after %s (--kafka-commit-timeout %s): %w",
			ErrCommitTimeout, time.Since(start).Round(time.Millisecond), w.commitTimeout, err)
	}
	return err
}

// abort aborts the open transaction, best effort: the session is ending, and
// a transaction left open is aborted by the broker when the next session
// initializes the same transactional ID.
func (w *kafkaWriter) abort() {
	w.abortOpen()
	w.inTxn = false
}

// abortTimeout bounds abortOpen: aborting waits for the responses of records
// in flight, which a stuck client never gets.
const abortTimeout = 10 * time.Second

func (w *kafkaWriter) abortOpen() {
	if w.stalled() != nil {
		return // it would wait for records the client does not deliver
	}
	ctx, cancel := context.WithTimeout(context.Background(), abortTimeout)
	defer cancel()
	// Best effort, so errors are not returned: the session ends and closes
	// the client, and the next session's InitProducerID aborts the
	// transaction if this could not.
	_ = w.cl.AbortBufferedRecords(ctx)
	_ = w.cl.EndTransaction(ctx, kgo.TryAbort)
}
