package reseed

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/postgres/pgtarget"
	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog"
)

// donorCheckpoints reads, in the donor snapshot, the donor's checkpoints of
// the streams the target also consumes (see thirdSite).
func (r *run) donorCheckpoints(ctx context.Context, tx pgx.Tx) (map[string]consumer.Checkpoint, error) {
	if r.cfg.NoThird {
		return map[string]consumer.Checkpoint{}, nil
	}
	rows, _, err := pgtarget.ReadCheckpoints(ctx, tx, r.cfg.CheckpointSchema, "")
	if errors.Is(err, consumer.ErrNoCheckpointTable) {
		if len(r.cfg.Rename) > 0 {
			return nil, refuse("--checkpoints: the donor has no %s", pgtarget.CheckpointTable(r.cfg.CheckpointSchema))
		}
		return map[string]consumer.Checkpoint{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("the donor's checkpoints: %w", err)
	}
	out, err := thirdSite(rows, r.cfg)
	if err != nil {
		return nil, err
	}
	for name, cp := range out {
		r.log.Info("third-site checkpoint from the donor", "consumer", name, "streams", len(cp.Next), "commit_lsn", cp.CommitLSN.String())
	}
	return out, nil
}

// thirdSite selects, among the donor's checkpoint rows, the consumers whose
// checkpoints the target takes over, under their names at the target, and
// folds them (consumer.FoldCheckpoints): with cfg.Rename, exactly the donor
// consumers it names; without, every donor consumer that reads neither the
// target's own stream (cfg.SitePrefix: the target does not replay itself)
// nor, oddly, the donor's (cfg.Prefix: that one is cfg.Consumer's, from the
// donor's frames). It refuses a consumer copied as cfg.Consumer and a
// Rename entry the donor has no checkpoint of.
func thirdSite(rows []consumer.CheckpointRow, cfg Config) (map[string]consumer.Checkpoint, error) {
	if cfg.NoThird {
		return map[string]consumer.Checkpoint{}, nil
	}
	skip := map[string]bool{}
	found := map[string]bool{}
	for _, c := range rows {
		found[c.Consumer] = true
		if strings.HasPrefix(c.Stream.Topic, cfg.SitePrefix+".") || strings.HasPrefix(c.Stream.Topic, cfg.Prefix+".") {
			skip[c.Consumer] = true
		}
	}
	var selected []consumer.CheckpointRow
	for _, c := range rows {
		to := c.Consumer
		if len(cfg.Rename) > 0 {
			var ok bool
			if to, ok = cfg.Rename[c.Consumer]; !ok {
				continue
			}
		} else if skip[c.Consumer] {
			continue
		}
		if to == cfg.Consumer {
			return nil, refuse("donor consumer %s would be copied as %s, the consumer of the donor's own stream", c.Consumer, to)
		}
		c.Consumer = to
		selected = append(selected, c)
	}
	for from := range cfg.Rename {
		if !found[from] {
			return nil, refuse("--checkpoints: the donor has no checkpoint of consumer %s", from)
		}
	}
	return consumer.FoldCheckpoints(selected), nil
}

// streamPosition is the checkpoint of the donor's stream just before the
// consistent point cp. It first writes a logical message at the donor, so
// that even an idle donor's producer publishes a frame past cp, then reads
// the position (positionBefore).
func (r *run) streamPosition(ctx context.Context, src *pgx.Conn, tables []pubTable, cp pglogrepl.LSN) (consumer.Checkpoint, error) {
	bc, err := pgx.ConnectConfig(ctx, src.Config().Copy())
	if err != nil {
		return consumer.Checkpoint{}, fmt.Errorf("connect to the donor for the barrier message: %w", err)
	}
	_, err = bc.Exec(ctx, `SELECT pg_logical_emit_message(false, $1, now()::text)`, MessagePrefix)
	bc.Close(ctx)
	if err != nil {
		r.log.Warn("could not write the barrier message at the donor; waiting for its next commit instead "+
			"(grant EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text))", "err", err)
	}
	// Data partitions: every table topic of the publication and the messages topic.
	topics := []string{schemas.MessagesTopic(r.cfg.Prefix)}
	for _, t := range tables {
		topics = append(topics, schemas.TopicName(r.cfg.Prefix, t.schema, t.name))
	}
	return r.positionBefore(ctx, topics, cp)
}

// positionBefore is the checkpoint of a consumer of the donor's stream that
// has applied exactly the donor's commits below cp: the transactions topic
// at its first frame at or past cp, with the commit LSN and time of the last
// frame below it, and each partition of topics at its first record whose
// commit LSN header is at or past cp (no entry for a partition that starts
// there, or a topic that does not exist: a consumer reads those from their
// start). It first waits up to Config.Timeout for a committed frame at or
// past cp: frames are committed in commit-LSN order, so every frame below cp
// is then in Kafka.
func (r *run) positionBefore(ctx context.Context, topics []string, cp pglogrepl.LSN) (consumer.Checkpoint, error) {
	out := consumer.Checkpoint{Next: map[consumer.Stream]int64{}}
	opts := r.cfg.Kafka
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return out, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	txTopic := schemas.TransactionsTopic(r.cfg.Prefix)
	frames := txlog.NewFrames(opts, adm, txlog.NewFrameDecoder(r.cfg.Registry), txTopic)
	wctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	var txNext int64
	var txb txlog.Bounds
	for next := time.Now(); ; {
		txb, err = frames.Bounds(wctx)
		if err == nil {
			txNext, err = frames.FirstAtOrPast(wctx, txb, cp)
		}
		if err == nil && txNext < txb.End {
			break
		}
		if err != nil && wctx.Err() == nil {
			return out, err
		}
		if wctx.Err() != nil {
			if ctx.Err() != nil {
				return out, ctx.Err()
			}
			return out, fmt.Errorf("the donor's producer did not publish past the snapshot (LSN %s) on %s within %s: "+
				"is it running with --prefix %s?", cp, txTopic, r.cfg.Timeout, r.cfg.Prefix)
		}
		if time.Now().After(next) {
			r.log.Info("waiting for the donor's producer to publish past the snapshot", "consistent_point", cp.String(), "topic", txTopic)
			next = time.Now().Add(5 * time.Second)
		}
		time.Sleep(200 * time.Millisecond)
	}
	out.Next[consumer.Stream{Kind: consumer.StreamTransactions, Topic: txTopic}] = txNext
	// The last frame below cp gives the checkpoint's commit LSN and time.
	lctx, lcancel := context.WithTimeout(ctx, readTimeout)
	defer lcancel()
	if _, last, err := frames.Last(lctx, txb, txNext); err != nil {
		return out, err
	} else if last != nil {
		out.CommitLSN, out.CommitTime = last.CommitLSN, last.CommitTime
	}
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return out, fmt.Errorf("partitions of the donor's topics: %w", err)
	}
	// firstAtOrPast is where a reader of a data partition's records at or
	// past cp starts, found by their commit LSN header.
	firstAtOrPast := func(topic string, part int32) (int64, txlog.Bounds, error) {
		ctx, cancel := context.WithTimeout(ctx, readTimeout)
		defer cancel()
		b, err := txlog.PartitionBounds(ctx, adm, topic, part)
		if err != nil {
			return 0, b, err
		}
		n, err := txlog.Seek(ctx, opts, topic, part, b, uint64(cp), txlog.HeaderLSN)
		return n, b, err
	}
	var lerr error
	ends.Each(func(o kadm.ListedOffset) {
		if lerr != nil || errors.Is(o.Err, kerr.UnknownTopicOrPartition) {
			return
		}
		if o.Err != nil {
			lerr = fmt.Errorf("end offset of %s partition %d: %w", o.Topic, o.Partition, o.Err)
			return
		}
		n, b, err := firstAtOrPast(o.Topic, o.Partition)
		if err != nil {
			lerr = err
			return
		}
		if n > b.Start {
			out.Next[consumer.Stream{Kind: consumer.StreamData, Topic: o.Topic, Partition: o.Partition}] = n
		}
	})
	if lerr != nil {
		return out, lerr
	}
	r.log.Info("donor stream position", "topic", txTopic, "next_offset", txNext, "commit_lsn", out.CommitLSN.String(),
		"partitions", len(out.Next)-1)
	return out, nil
}

// readTimeout bounds each read of the donor's topics after the wait for its
// producer: the last frame below the snapshot, and the search of each data
// partition.
const readTimeout = 2 * time.Minute

// waitOwnStream waits until every donor consumer of the target's own stream
// has applied every frame committed in Kafka when it starts: the target's
// changes that reached Kafka but not the donor would otherwise be missing
// from the copy, and no consumer of the target replays its own stream.
func (r *run) waitOwnStream(ctx context.Context, dcfg *pgx.ConnConfig) error {
	topic := schemas.TransactionsTopic(r.cfg.SitePrefix)
	cl, err := kgo.NewClient(r.cfg.Kafka...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	frames := txlog.NewFrames(r.cfg.Kafka, kadm.NewClient(cl), txlog.NewFrameDecoder(r.cfg.Registry), topic)
	b, err := frames.Bounds(ctx)
	if err != nil {
		return err
	}
	end := b.End
	if end == 0 {
		r.log.Info("the target's own stream is empty; nothing to wait for", "topic", topic)
		return nil
	}
	c, err := pgx.ConnectConfig(ctx, dcfg)
	if err != nil {
		return fmt.Errorf("connect to the donor: %w", err)
	}
	defer c.Close(context.WithoutCancel(ctx))
	wctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	for logAt := time.Now(); ; {
		behind, err := r.ownStreamBehind(wctx, c, frames, end)
		if err == nil && len(behind) == 0 {
			r.log.Info("the donor has applied the target's own stream", "topic", topic, "end_offset", end)
			return nil
		}
		if err != nil && wctx.Err() == nil {
			return err
		}
		if wctx.Err() != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("the donor's consumers of the target's own stream %s did not apply it up to offset %d "+
				"within %s (%s): start them, or give --wait-own-stream=false to copy without the target's changes "+
				"they have not applied", topic, end, r.cfg.Timeout, strings.Join(behind, ", "))
		}
		if time.Now().After(logAt) {
			r.log.Info("waiting for the donor's consumers of the target's own stream", "topic", topic,
				"end_offset", end, "behind", strings.Join(behind, ", "))
			logAt = time.Now().Add(5 * time.Second)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ownStreamBehind lists the donor consumers of the target's transactions
// topic (read by frames) that have a committed frame below end still to
// apply, as "name at offset"; a donor with no checkpoint of the topic is
// behind too: the target's changes would be in no copy. A consumer whose next
// offset retention deleted is an error wrapping txlog.ErrBelowLogStart: the
// target's changes there may never reach the donor.
func (r *run) ownStreamBehind(ctx context.Context, c *pgx.Conn, frames *txlog.Frames, end int64) ([]string, error) {
	rows, _, err := pgtarget.ReadCheckpoints(ctx, c, r.cfg.CheckpointSchema, "")
	if err != nil && !errors.Is(err, consumer.ErrNoCheckpointTable) {
		return nil, fmt.Errorf("the donor's checkpoints: %w", err)
	}
	readers := streamReaders(rows, frames.Topic())
	if len(readers) == 0 {
		return []string{"no donor consumer has a checkpoint of it yet"}, nil
	}
	var behind []string
	for _, row := range readers {
		found := false
		err := frames.Scan(ctx, row.Next, end, func(int64, schemas.Frame) error {
			found = true
			return txlog.ErrStop
		})
		if errors.Is(err, txlog.ErrBelowLogStart) {
			return nil, fmt.Errorf("donor consumer %s of the target's own stream has not read records that were deleted: %w; "+
				"the target's changes among them may be missing at the donor: give --wait-own-stream=false to copy without them", row.Consumer, err)
		}
		if err != nil {
			return nil, err
		}
		if found {
			behind = append(behind, fmt.Sprintf("%s at offset %d", row.Consumer, row.Next))
		}
	}
	return behind, nil
}

// streamReaders are the rows of consumers that read the transactions topic
// txTopic in transactional mode: one per consumer.
func streamReaders(rows []consumer.CheckpointRow, txTopic string) []consumer.CheckpointRow {
	var out []consumer.CheckpointRow
	for _, r := range rows {
		if r.Stream == (consumer.Stream{Kind: consumer.StreamTransactions, Topic: txTopic}) {
			out = append(out, r)
		}
	}
	return out
}
