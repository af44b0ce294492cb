package consumer

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/jackc/pglogrepl"
)

// TxnHandler receives one whole source transaction: txn describes it and
// events yields its events in apply order (position order, across tables and
// partitions). The handler must read events to the end or return an error;
// events are valid until it returns. Transactions arrive in commit order;
// the producer's heartbeats and transactions without an event for the
// consumer's tables do not reach it.
type TxnHandler func(ctx context.Context, txn *Txn, events iter.Seq2[*Event, error]) error

// CheckpointStore keeps a HandlerSink's position. Save receives the entries
// of a Checkpoint that changed (Batch.Checkpoint) and must merge them into
// what it holds; Load returns the merged whole, or an empty Checkpoint.
type CheckpointStore interface {
	Load(ctx context.Context) (Checkpoint, error)
	Save(ctx context.Context, changed Checkpoint) error
}

// HandlerSink adapts a TxnHandler to a Sink, for an application that
// consumes whole transactions itself instead of replicating into a target
// database. The consumer calls h once per source transaction, in commit
// order, then saves the batch's checkpoint in store. A handler error is
// retried from the checkpoint (first the batch, then its transactions one
// at a time) unless it is marked with Permanent, which stops Run.
//
// Delivery is at least once: after a crash between a handler's effects and
// the next Save, the transactions since the last Save are handed over again
// (Config.GroupMaxTxns bounds how many). An application that records its
// effects and the last Txn.CommitLSN it handled in one transaction of its
// own store gets exactly once by skipping transactions whose CommitLSN is
// not above that record; commit LSNs increase along the log, except that
// initial snapshot chunks (Txn.Initial) come first and share one commit
// LSN, one below the snapshot's consistent point. It is meant for transactional mode (per-key mode has no
// source transactions to hand over).
func HandlerSink(store CheckpointStore, h TxnHandler) Sink {
	return &handlerSink{store: store, h: h}
}

type handlerSink struct {
	store CheckpointStore
	h     TxnHandler
}

func (s *handlerSink) Open(context.Context) error { return nil }

func (s *handlerSink) Close(context.Context) error { return nil }

func (s *handlerSink) Checkpoint(ctx context.Context) (Checkpoint, error) {
	return s.store.Load(ctx)
}

// Apply hands each source transaction of b to the handler, reading events
// one ahead to see where a transaction ends.
func (s *handlerSink) Apply(ctx context.Context, b *Batch) error {
	next, err := b.Next(ctx)
	for err == nil {
		txn := next.Txn
		var herr error
		events := func(yield func(*Event, error) bool) {
			for err == nil && next.Txn == txn {
				ev := next
				next, err = b.Next(ctx)
				if !yield(ev, nil) {
					return
				}
			}
			if err != nil && !errors.Is(err, io.EOF) {
				yield(nil, err)
			}
		}
		// An error names the transaction's first record and its frame.
		first := &EventError{Topic: next.Topic, Partition: next.Partition, Offset: next.Offset,
			CommitLSN: txn.CommitLSN, Xid: txn.Xid, FrameOffset: txn.Offset}
		if herr = s.h(ctx, txn, events); herr != nil {
			first.Err = fmt.Errorf("transaction handler: %w", herr)
			return first
		}
		if err == nil && next.Txn == txn {
			first.Err = errors.New("the transaction handler returned before reading every event")
			return first
		}
	}
	if !errors.Is(err, io.EOF) {
		return err
	}
	if err := s.store.Save(ctx, b.Checkpoint()); err != nil {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	return nil
}

// FileCheckpoints is a CheckpointStore in a JSON file, replaced atomically
// (written to a temporary file, synced, renamed over it, and the directory
// synced) on every Save.
func FileCheckpoints(path string) CheckpointStore { return &fileCheckpoints{path: path} }

type fileCheckpoints struct {
	path string
	cp   *Checkpoint // what the file holds, once loaded
}

// checkpointFile is the file's JSON form.
type checkpointFile struct {
	CommitLSN  string           `json:"commit_lsn,omitempty"`
	CommitTime time.Time        `json:"commit_time,omitzero"`
	Streams    []checkpointNext `json:"streams"`
}

type checkpointNext struct {
	Kind      StreamKind `json:"kind"`
	Topic     string     `json:"topic"`
	Partition int32      `json:"partition"`
	Next      int64      `json:"next"`
}

func (f *fileCheckpoints) Load(context.Context) (Checkpoint, error) {
	cp := Checkpoint{Next: map[Stream]int64{}}
	b, err := os.ReadFile(f.path)
	if errors.Is(err, os.ErrNotExist) {
		f.cp = &cp
		return cp, nil
	}
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint file: %w", err)
	}
	var cf checkpointFile
	if err := json.Unmarshal(b, &cf); err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint file %s: %w", f.path, err)
	}
	if cf.CommitLSN != "" {
		if cp.CommitLSN, err = pglogrepl.ParseLSN(cf.CommitLSN); err != nil {
			return Checkpoint{}, fmt.Errorf("checkpoint file %s: commit_lsn: %w", f.path, err)
		}
	}
	cp.CommitTime = cf.CommitTime
	for _, s := range cf.Streams {
		cp.Next[Stream{Kind: s.Kind, Topic: s.Topic, Partition: s.Partition}] = s.Next
	}
	f.cp = &cp
	return cloneCheckpoint(cp), nil
}

func (f *fileCheckpoints) Save(ctx context.Context, changed Checkpoint) error {
	if f.cp == nil {
		if _, err := f.Load(ctx); err != nil {
			return err
		}
	}
	merged := cloneCheckpoint(*f.cp)
	for s, n := range changed.Next {
		merged.Next[s] = n
	}
	if changed.CommitLSN != 0 {
		merged.CommitLSN, merged.CommitTime = changed.CommitLSN, changed.CommitTime
	}
	cf := checkpointFile{CommitTime: merged.CommitTime, Streams: []checkpointNext{}}
	if merged.CommitLSN != 0 {
		cf.CommitLSN = merged.CommitLSN.String()
	}
	for s, n := range merged.Next {
		cf.Streams = append(cf.Streams, checkpointNext{Kind: s.Kind, Topic: s.Topic, Partition: s.Partition, Next: n})
	}
	slices.SortFunc(cf.Streams, func(a, b checkpointNext) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
	b, err := json.MarshalIndent(cf, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(f.path, append(b, '\n')); err != nil {
		return fmt.Errorf("checkpoint file: %w", err)
	}
	f.cp = &merged
	return nil
}

func cloneCheckpoint(cp Checkpoint) Checkpoint {
	out := Checkpoint{Next: make(map[Stream]int64, len(cp.Next)), CommitLSN: cp.CommitLSN, CommitTime: cp.CommitTime}
	for s, n := range cp.Next {
		out.Next[s] = n
	}
	return out
}

// writeFileAtomic replaces path with data: a reader (or a crash) sees the
// old content or the new, never a mix.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename this removes nothing
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
