package consumer

import (
	"testing"
	"time"
)

func TestFoldCheckpoints(t *testing.T) {
	t1, t2 := time.Unix(100, 0), time.Unix(200, 0)
	tx := Stream{Kind: StreamTransactions, Topic: "a.transactions"}
	d0 := Stream{Kind: StreamData, Topic: "a.public.t", Partition: 0}
	d1 := Stream{Kind: StreamData, Topic: "a.public.t", Partition: 1}
	got := FoldCheckpoints([]CheckpointRow{
		{Consumer: "c1", Stream: d0, Next: 7, CommitLSN: 0x20, CommitTime: t1},
		{Consumer: "c1", Stream: d1, Next: 3}, // no commit recorded
		{Consumer: "c1", Stream: tx, Next: 12, CommitLSN: 0x30, CommitTime: t2},
		{Consumer: "c2", Stream: tx, Next: 1, CommitLSN: 0x10, CommitTime: t1},
	})
	if len(got) != 2 {
		t.Fatalf("%d consumers, want 2: %v", len(got), got)
	}
	c1 := got["c1"]
	if c1.Next[d0] != 7 || c1.Next[d1] != 3 || c1.Next[tx] != 12 || len(c1.Next) != 3 {
		t.Errorf("c1 next offsets %v", c1.Next)
	}
	if c1.CommitLSN != 0x30 || !c1.CommitTime.Equal(t2) {
		t.Errorf("c1 commit %s %v, want the highest LSN's (0/30 at %v)", c1.CommitLSN, c1.CommitTime, t2)
	}
	if c2 := got["c2"]; c2.CommitLSN != 0x10 || c2.Next[tx] != 1 {
		t.Errorf("c2 %+v", c2)
	}
	if len(FoldCheckpoints(nil)) != 0 {
		t.Error("no rows fold to checkpoints")
	}
}
