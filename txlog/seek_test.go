package txlog

import (
	"strconv"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/schemas"
)

// dataRecord is a data record of a transaction that committed at lsn.
func dataRecord(topic string, lsn uint64) *kgo.Record {
	return &kgo.Record{Topic: topic, Partition: 0, Value: []byte("row"),
		Headers: []kgo.RecordHeader{{Key: schemas.HeaderCommitLSN, Value: []byte(strconv.FormatUint(lsn, 10))}}}
}

// Seek by the commit LSN header over a data partition whose LSNs repeat
// (several records of one transaction), with offsets that hold no committed
// record (markers, an aborted transaction): it returns the first committed
// record at or past the LSN, or the end, so that every committed record
// before it is below the LSN and every one from it is not.
func TestSeekByHeaderLSN(t *testing.T) {
	e := newLogEnv(t)
	const topic = "s.public.t"
	e.createTopic(topic)
	for _, tx := range []struct {
		commit bool
		lsns   []uint64
	}{{true, []uint64{10, 10}}, {true, []uint64{20}}, {true, []uint64{30, 30, 30}}, {false, []uint64{35}},
		{true, []uint64{40}}, {true, []uint64{50}}} {
		var recs []*kgo.Record
		for _, l := range tx.lsns {
			recs = append(recs, dataRecord(topic, l))
		}
		e.txn(tx.commit, recs...)
	}
	b, err := PartitionBounds(e.ctx(), e.adm, topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	type rec struct {
		off int64
		lsn uint64
	}
	var committed []rec
	if err := ReadRange(e.ctx(), e.opts, topic, 0, b.Start, b.End, func(r *kgo.Record) error {
		l, _ := HeaderLSN(r)
		committed = append(committed, rec{r.Offset, l})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(committed) != 8 {
		t.Fatalf("committed records %v, want the 8 of the committed transactions", committed)
	}
	for _, want := range []uint64{0, 10, 11, 20, 25, 30, 31, 35, 40, 45, 50, 51} {
		got, err := Seek(e.ctx(), e.opts, topic, 0, b, want, HeaderLSN)
		if err != nil {
			t.Fatalf("Seek(%d): %v", want, err)
		}
		atRecord := got == b.End
		for _, r := range committed {
			atRecord = atRecord || r.off == got
			if (r.off < got) != (r.lsn < want) {
				t.Errorf("Seek(%d) = %d, but the record at %d has LSN %d", want, got, r.off, r.lsn)
			}
		}
		if !atRecord {
			t.Errorf("Seek(%d) = %d: neither a committed record nor the end %d", want, got, b.End)
		}
	}

	// Only an aborted transaction: nothing to find, the end.
	const aborted = "s.public.aborted"
	e.createTopic(aborted)
	e.txn(false, dataRecord(aborted, 5), dataRecord(aborted, 6))
	ab, err := PartitionBounds(e.ctx(), e.adm, aborted, 0)
	if err != nil || ab.End == 0 {
		t.Fatalf("bounds %+v, %v", ab, err)
	}
	if got, err := Seek(e.ctx(), e.opts, aborted, 0, ab, 1, HeaderLSN); err != nil || got != ab.End {
		t.Fatalf("Seek over aborted records only = %d, %v; want the end %d", got, err, ab.End)
	}

	// A record without the header cannot be ordered.
	const bare = "s.public.bare"
	e.createTopic(bare)
	e.txn(true, &kgo.Record{Topic: bare, Partition: 0, Value: []byte("row")})
	bb, err := PartitionBounds(e.ctx(), e.adm, bare, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Seek(e.ctx(), e.opts, bare, 0, bb, 1, HeaderLSN); err == nil {
		t.Fatal("Seek over a record without a commit LSN header did not fail")
	}
}
