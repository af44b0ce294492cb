package consumer

import (
	"context"
	"errors"
	"io"
	"iter"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
)

// batchOf is a Batch over events, ending with checkpoint cp.
func batchOf(events []*Event, cp Checkpoint, fail error) *Batch {
	i := 0
	return &Batch{cp: cp, next: func(context.Context) (*Event, error) {
		if i == len(events) {
			if fail != nil {
				return nil, fail
			}
			return nil, io.EOF
		}
		i++
		return events[i-1], nil
	}}
}

type memStore struct {
	saved []Checkpoint
}

func (m *memStore) Load(context.Context) (Checkpoint, error) { return Checkpoint{}, nil }
func (m *memStore) Save(_ context.Context, cp Checkpoint) error {
	m.saved = append(m.saved, cp)
	return nil
}

func TestHandlerSinkHandsOverWholeTransactions(t *testing.T) {
	t1, t2, t3 := &Txn{Xid: 1, CommitLSN: 10}, &Txn{Xid: 2, CommitLSN: 20}, &Txn{Xid: 3, CommitLSN: 30}
	var events []*Event
	for _, e := range []struct {
		txn *Txn
		pos int64
	}{{t1, 0}, {t1, 1}, {t1, 2}, {t2, 0}, {t3, 0}, {t3, 1}} {
		events = append(events, &Event{Txn: e.txn, Position: e.pos})
	}
	store := &memStore{}
	var got []string
	sink := HandlerSink(store, func(_ context.Context, txn *Txn, evs iter.Seq2[*Event, error]) error {
		n := 0
		for ev, err := range evs {
			if err != nil {
				return err
			}
			if ev.Txn != txn || ev.Position != int64(n) {
				t.Errorf("transaction %d: event %+v out of place", txn.Xid, ev)
			}
			n++
		}
		got = append(got, strings.Repeat(string(rune('0'+txn.Xid)), n))
		return nil
	})
	cp := Checkpoint{Next: map[Stream]int64{{Kind: StreamTransactions, Topic: "p.transactions"}: 3}, CommitLSN: 30}
	if err := sink.Apply(context.Background(), batchOf(events, cp, nil)); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "111,2,33" {
		t.Fatalf("handled %v, want 111,2,33", got)
	}
	if len(store.saved) != 1 || store.saved[0].CommitLSN != 30 {
		t.Fatalf("saved %+v", store.saved)
	}

	// A handler that stops early, one that fails, and a batch that fails:
	// Apply fails and saves nothing.
	for name, tc := range map[string]struct {
		h    TxnHandler
		fail error
		want string
	}{
		"stops early": {h: func(_ context.Context, _ *Txn, evs iter.Seq2[*Event, error]) error {
			for range evs {
				break
			}
			return nil
		}, want: "before reading every event"},
		"fails": {h: func(context.Context, *Txn, iter.Seq2[*Event, error]) error { return errors.New("no room") }, want: "no room"},
		"batch fails": {h: func(_ context.Context, _ *Txn, evs iter.Seq2[*Event, error]) error {
			for range evs {
			}
			return nil
		}, fail: errors.New("record undecodable"), want: "record undecodable"},
	} {
		store := &memStore{}
		err := HandlerSink(store, tc.h).Apply(context.Background(), batchOf(events, cp, tc.fail))
		if err == nil || !strings.Contains(err.Error(), tc.want) || len(store.saved) != 0 {
			t.Errorf("%s: err %v, saved %d; want %q and nothing saved", name, err, len(store.saved), tc.want)
		}
	}
}

func TestFileCheckpointsMergeAndSurviveReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "cp.json")
	tx := Stream{Kind: StreamTransactions, Topic: "p.transactions"}
	a0 := Stream{Kind: StreamData, Topic: "p.public.a", Partition: 0}
	a1 := Stream{Kind: StreamData, Topic: "p.public.a", Partition: 1}
	s := FileCheckpoints(path)
	if cp, err := s.Load(ctx); err != nil || len(cp.Next) != 0 || cp.CommitLSN != 0 {
		t.Fatalf("empty store: %+v, %v", cp, err)
	}
	at := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	if err := s.Save(ctx, Checkpoint{Next: map[Stream]int64{tx: 5, a0: 7}, CommitLSN: pglogrepl.LSN(0x16B3748), CommitTime: at}); err != nil {
		t.Fatal(err)
	}
	// Only what changed: a1 is new, tx moves, a0 keeps its offset.
	if err := s.Save(ctx, Checkpoint{Next: map[Stream]int64{tx: 6, a1: 2}, CommitLSN: pglogrepl.LSN(0x16B3800), CommitTime: at.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	cp, err := FileCheckpoints(path).Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Next[tx] != 6 || cp.Next[a0] != 7 || cp.Next[a1] != 2 || len(cp.Next) != 3 ||
		cp.CommitLSN != pglogrepl.LSN(0x16B3800) || !cp.CommitTime.Equal(at.Add(time.Second)) {
		t.Fatalf("reopened: %+v", cp)
	}
}
