package txlog

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog/txlogtest"
)

// logEnv is an embedded broker and registry with one transactional writer.
type logEnv struct {
	*txlogtest.Log
	t    *testing.T
	opts []kgo.Opt
	adm  *kadm.Client
	reg  *schemas.Registry
	id   int // frame schema ID
}

func newLogEnv(t *testing.T) *logEnv {
	t.Helper()
	l := txlogtest.Start(t)
	return &logEnv{Log: l, t: t, opts: l.Opts, adm: l.Adm, reg: l.Reg}
}

func (e *logEnv) ctx() context.Context { return e.Ctx() }

// txn writes recs in one Kafka transaction, committed or aborted.
func (e *logEnv) txn(commit bool, recs ...*kgo.Record) {
	e.t.Helper()
	e.Txn(commit, recs...)
}

func (e *logEnv) frame(topic string, commit uint64) *kgo.Record {
	e.t.Helper()
	if e.id == 0 {
		id, err := e.reg.Register(e.ctx(), schemas.ValueSubject(topic), schemas.FrameSchema(), schemas.SchemaChangeFail)
		if err != nil {
			e.t.Fatal(err)
		}
		e.id = id
	}
	f := schemas.Frame{Xid: uint32(commit), CommitLSN: pglogrepl.LSN(commit), EndLSN: pglogrepl.LSN(commit + 1), CommitTime: time.Unix(int64(commit), 0)}
	return txlogtest.Frame(topic, e.id, &f)
}

func (e *logEnv) frames(topic string) *Frames {
	return NewFrames(e.opts, e.adm, NewFrameDecoder(e.reg), topic)
}

func (e *logEnv) createTopic(topic string) {
	e.t.Helper()
	e.CreateTopic(topic)
}

// Frames of aborted transactions are never returned, and the last frame is
// found behind a tail of aborted transactions longer than the first window.
func TestFramesSkipAbortedAndFindLast(t *testing.T) {
	e := newLogEnv(t)
	const topic = "p.transactions"
	e.createTopic(topic)
	for lsn := uint64(1); lsn <= 40; lsn++ {
		e.txn(lsn%3 != 0, e.frame(topic, lsn)) // every third aborted
	}
	e.txn(true, e.frame(topic, 41), e.frame(topic, 42))
	for i := 0; i < 30; i++ {
		e.txn(false, e.frame(topic, uint64(100+i)))
	}
	fr := e.frames(topic)
	b, err := fr.Bounds(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	if err := fr.Scan(e.ctx(), b.Start, b.End, func(_ int64, f schemas.Frame) error {
		got = append(got, uint64(f.CommitLSN))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var want []uint64
	for lsn := uint64(1); lsn <= 42; lsn++ {
		if lsn > 40 || lsn%3 != 0 {
			want = append(want, lsn)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("scan = %v, want %v", got, want)
	}
	_, last, err := fr.Last(e.ctx(), b, b.End)
	if err != nil || last == nil || last.CommitLSN != 42 {
		t.Fatalf("Last = %v, %v; want commit 42", last, err)
	}
	for _, lsn := range []uint64{0, 1, 3, 4, 40, 42} {
		off, err := fr.FirstAtOrPast(e.ctx(), b, pglogrepl.LSN(lsn))
		if err != nil {
			t.Fatal(err)
		}
		wantLSN := lsn
		if lsn%3 == 0 && lsn <= 40 {
			wantLSN = lsn + 1 // aborted: the next committed one
		}
		if wantLSN == 0 {
			wantLSN = 1
		}
		var at uint64
		if err := fr.Scan(e.ctx(), off, b.End, func(_ int64, f schemas.Frame) error {
			at = uint64(f.CommitLSN)
			return ErrStop
		}); err != nil {
			t.Fatal(err)
		}
		if at != wantLSN {
			t.Fatalf("FirstAtOrPast(%d) = offset %d holding commit %d, want commit %d", lsn, off, at, wantLSN)
		}
	}
	off, err := fr.FirstAtOrPast(e.ctx(), b, 43)
	if err != nil || off != b.End {
		t.Fatalf("FirstAtOrPast(43) = %d, %v; want the end %d", off, err, b.End)
	}
}

// A read from below the log start fails, naming the offsets, instead of
// skipping what retention deleted.
func TestReadBelowLogStartFails(t *testing.T) {
	e := newLogEnv(t)
	const topic = "q.transactions"
	e.createTopic(topic)
	for lsn := uint64(1); lsn <= 10; lsn++ {
		e.txn(true, e.frame(topic, lsn))
	}
	fr := e.frames(topic)
	b, err := fr.Bounds(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	del := kadm.Offsets{}
	del.AddOffset(topic, 0, b.End/2, -1)
	if _, err := e.adm.DeleteRecords(e.ctx(), del); err != nil {
		t.Fatal(err)
	}
	err = fr.Scan(e.ctx(), 0, b.End, func(int64, schemas.Frame) error { return nil })
	var below *BelowLogStartError
	if !errors.Is(err, ErrBelowLogStart) || !errors.As(err, &below) || below.LogStart != b.End/2 || below.Offset != 0 {
		t.Fatalf("scan from 0 after deleting below %d: %v", b.End/2, err)
	}
	nb, err := fr.Bounds(e.ctx())
	if err != nil || nb.Start != b.End/2 {
		t.Fatalf("bounds after delete = %+v, %v", nb, err)
	}
	if _, last, err := fr.Last(e.ctx(), nb, nb.End); err != nil || last == nil || last.CommitLSN != 10 {
		t.Fatalf("Last after delete = %v, %v", last, err)
	}
	// Everything deleted: nothing to find, and no wait.
	del = kadm.Offsets{}
	del.AddOffset(topic, 0, nb.End, -1)
	if _, err := e.adm.DeleteRecords(e.ctx(), del); err != nil {
		t.Fatal(err)
	}
	nb, err = fr.Bounds(e.ctx())
	if err != nil || !nb.Empty() {
		t.Fatalf("bounds after deleting everything = %+v, %v", nb, err)
	}
	if _, last, err := fr.Last(e.ctx(), nb, nb.End); err != nil || last != nil {
		t.Fatalf("Last of an emptied topic = %v, %v", last, err)
	}
}

// The state is the last committed value of each key of the slot: aborted
// records, other slots and deleted tables do not count.
func TestReadStateLastValueWins(t *testing.T) {
	e := newLogEnv(t)
	const topic = "r.state"
	e.createTopic(topic)
	tbl := func(name string, rows int64) *TableState {
		return &TableState{Schema: "public", Table: name, Status: TableCaptured,
			Snapshot: &Snapshot{ID: "initial", Kind: SnapshotInitial, Status: SnapshotRunning, Rows: rows}}
	}
	e.txn(true, PositionRecord(topic, "s1", Position{CommitLSN: 10, EndLSN: 11}), TableRecord(topic, "s1", tbl("a", 1)),
		TableRecord(topic, "s1", tbl("b", 1)), TableRecord(topic, "s2", tbl("a", 99)))
	e.txn(true, PositionRecord(topic, "s1", Position{CommitLSN: 20, EndLSN: 21}), TableRecord(topic, "s1", tbl("a", 2)))
	e.txn(false, PositionRecord(topic, "s1", Position{CommitLSN: 30, EndLSN: 31}), TableRecord(topic, "s1", tbl("a", 3)))
	e.txn(true, TableTombstone(topic, "s1", "public", "b"))
	st, err := ReadState(e.ctx(), e.opts, e.adm, topic, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if st.Position.CommitLSN != 20 || st.Position.EndLSN != 21 {
		t.Fatalf("position = %+v, want commit 20", st.Position)
	}
	if len(st.Tables) != 1 || st.Tables["public.a"] == nil || st.Tables["public.a"].Snapshot.Rows != 2 {
		t.Fatalf("tables = %+v, want only public.a with 2 rows", st.Tables)
	}
	missing, err := ReadState(e.ctx(), e.opts, e.adm, "no.such.state", "s1")
	if err != nil || !missing.Empty() {
		t.Fatalf("state of a missing topic = %+v, %v", missing, err)
	}
}

func TestHeaderLSN(t *testing.T) {
	r := &kgo.Record{Headers: []kgo.RecordHeader{{Key: "x", Value: []byte("1")}, {Key: schemas.HeaderCommitLSN, Value: []byte(strconv.Itoa(12345))}}}
	if v, ok := HeaderLSN(r); !ok || v != 12345 {
		t.Fatalf("HeaderLSN = %d, %v", v, ok)
	}
	for _, bad := range []string{"", "12a", "-1"} {
		r.Headers[1].Value = []byte(bad)
		if _, ok := HeaderLSN(r); ok {
			t.Fatalf("HeaderLSN(%q) accepted", bad)
		}
	}
}
