package producer

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/internal/retry"
	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog"
)

// The producer's durable state lives on <prefix>.state (package txlog): its
// position (the last frame in Kafka, the dedupe point of a restart) and each
// table's capture and snapshot progress. Changes are written in the same
// Kafka transaction as the frames they describe, so a read_committed
// restart sees a state that agrees with the frames, whatever retention has
// deleted from the transactions topic.

// producerState is a session's copy of the durable state and the changes
// not yet written to Kafka. It is used by the session's goroutine.
type producerState struct {
	topic string
	st    *txlog.State
	dirty map[string]bool // tables changed since the last flush
	// last is the last frame written into Kafka transactions not yet
	// committed; posDirty says it moved since the last flush.
	last     txlog.Position
	posDirty bool
	// source is the WAL history the session reads (checkSource).
	source sourceHistory
}

func newProducerState(topic string, st *txlog.State) *producerState {
	return &producerState{topic: topic, st: st, dirty: map[string]bool{}, last: st.Position}
}

// table returns the state of "schema.table", or nil.
func (p *producerState) table(name string) *txlog.TableState { return p.st.Tables[name] }

// set records a table's new state, to be written with the next commit.
func (p *producerState) set(t *txlog.TableState) {
	p.st.Tables[t.Name()] = t
	p.dirty[t.Name()] = true
}

// changed marks a table whose state was modified in place.
func (p *producerState) changed(t *txlog.TableState) { p.dirty[t.Name()] = true }

// noteFrame records that the frame f was written into the open group.
func (p *producerState) noteFrame(f *schemas.Frame) {
	p.last = txlog.Position{CommitLSN: f.CommitLSN, EndLSN: f.EndLSN, Xid: f.Xid, CommitTime: f.CommitTime, Source: p.source.at(f.EndLSN)}
	p.posDirty = true
}

// pending reports whether state changes wait to be written.
func (p *producerState) pending() bool { return p.posDirty || len(p.dirty) > 0 }

// records returns the state records to write into the Kafka transaction
// about to commit, and forgets them: if that commit fails, the session ends
// and the next one reads the state again.
func (p *producerState) records(slot string) []*kgo.Record {
	var out []*kgo.Record
	names := make([]string, 0, len(p.dirty))
	for n := range p.dirty {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		out = append(out, txlog.TableRecord(p.topic, slot, p.st.Tables[n]))
	}
	clear(p.dirty)
	if p.posDirty {
		p.st.Position = p.last
		out = append(out, txlog.PositionRecord(p.topic, slot, p.last))
		p.posDirty = false
	}
	return out
}

// activeSnapshots returns the tables whose snapshot still has chunks to
// write, by name.
func (p *producerState) activeSnapshots() []*txlog.TableState {
	var out []*txlog.TableState
	for _, t := range p.st.SortedTables() {
		if t.Status == txlog.TableCaptured && t.Snapshot != nil && t.Snapshot.Status.Active() {
			out = append(out, t)
		}
	}
	return out
}

// loadState reads the slot's state from the state topic. A prefix written
// by a producer from before the state topic has none: the state is then
// built once from the transactions topic, and the next commit writes it.
func (s *session) loadState(ctx context.Context) error {
	cfg := s.cfg
	cl, err := kgo.NewClient(cfg.KafkaOpts...)
	if err != nil {
		return retry.Terminal(fmt.Errorf("kafka client: %w", err))
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	topic := schemas.StateTopic(cfg.Prefix)
	st, err := txlog.ReadState(ctx, cfg.KafkaOpts, adm, topic, cfg.Slot)
	if err != nil {
		return fmt.Errorf("read the producer state from %s: %w", topic, err)
	}
	s.logTopics = nil
	if st.Empty() {
		frames := txlog.NewFrames(cfg.KafkaOpts, adm, txlog.NewFrameDecoder(cfg.Registry), s.txTopic)
		built, topics, err := buildStateFromLog(ctx, frames, cfg.Slot)
		if err != nil {
			return fmt.Errorf("build the producer state from %s: %w", s.txTopic, err)
		}
		if topics != nil {
			st, s.logTopics = built, topics
			s.log.Warn("no producer state on the state topic: built it once from the transactions topic (a prefix from before the state topic)",
				"state_topic", topic, "transactions_topic", s.txTopic, "commit_lsn", st.Position.CommitLSN, "tables", len(st.Tables))
		}
	}
	s.state = newProducerState(topic, st)
	if st.Position.CommitLSN != 0 {
		s.resumeAfter = st.Position.CommitLSN
		if st.Position.EndLSN == st.Position.CommitLSN {
			// An initial snapshot chunk of an earlier producer, which
			// framed it at the consistent point itself: a transaction may
			// commit there (see framedBelow), and the snapshot does not
			// hold it.
			s.resumeAfter--
		}
		s.pos.resume(st.Position.EndLSN)
		s.log.Info("resuming after the last frame in Kafka", "commit_lsn", st.Position.CommitLSN, "xid", st.Position.Xid)
	}
	return nil
}

// buildStateFromLog reads a transactions topic written before the state
// topic existed: the last stream frame is the position, and the snapshot
// chunks of slot give each table's snapshot progress. It also returns the
// data topics that stream frames list, so that tables with stream records
// but no snapshot chunk are known as captured; that set is nil when the
// topic holds no frame of the slot.
func buildStateFromLog(ctx context.Context, frames *txlog.Frames, slot string) (*txlog.State, map[string]bool, error) {
	st := txlog.NewState(slot)
	b, err := frames.Bounds(ctx)
	if err != nil || b.Empty() {
		return st, nil, err
	}
	var streamed map[string]bool
	err = frames.Scan(ctx, b.Start, b.End, func(_ int64, f schemas.Frame) error {
		if c := f.Snapshot; c != nil {
			if c.Slot != slot {
				return nil
			}
			if streamed == nil {
				streamed = map[string]bool{}
			}
			name := c.Schema + "." + c.Table
			t := st.Tables[name]
			if t == nil {
				// A chunk's frame ends at the consistent point.
				t = &txlog.TableState{Schema: c.Schema, Table: c.Table, Status: txlog.TableCaptured, CapturedFrom: f.EndLSN,
					Snapshot: &txlog.Snapshot{ID: initialSnapshotID, Kind: txlog.SnapshotInitial, Status: txlog.SnapshotRunning,
						ConsistentPoint: f.EndLSN, Ranges: []txlog.KeyRange{{}}, Requested: f.CommitTime.UTC()}}
				st.Tables[name] = t
			}
			sn := t.Snapshot
			sn.Chunks++
			sn.Rows += f.Events
			if c.LastKey != nil {
				sn.Ranges[0].After = c.LastKey
			}
			if c.Last {
				sn.Ranges[0].Done = true
				sn.Status = txlog.SnapshotDone
				sn.Finished = f.CommitTime.UTC()
			}
			return nil
		}
		if streamed == nil {
			streamed = map[string]bool{}
		}
		st.Position = txlog.Position{CommitLSN: f.CommitLSN, EndLSN: f.EndLSN, Xid: f.Xid, CommitTime: f.CommitTime.UTC()}
		for _, p := range f.Partitions {
			streamed[p.Topic] = true
		}
		return nil
	})
	return st, streamed, err
}

// now is the state's clock, in UTC as the JSON documents show it.
func now() time.Time { return time.Now().UTC() }
