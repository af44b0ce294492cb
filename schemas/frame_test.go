package schemas

import (
	"reflect"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"
)

func TestFrameRoundTrip(t *testing.T) {
	codec, err := goavro.NewCodec(FrameSchema())
	if err != nil {
		t.Fatal(err)
	}
	ts := time.UnixMicro(1_700_000_000_123_456).UTC()
	for _, f := range []Frame{
		{Xid: 7, CommitLSN: 100, EndLSN: 120, CommitTime: ts, Events: 3,
			Partitions: []PartitionCount{{"p.public.a", 0, 1}, {"p.public.b", 2, 2}}},
		{CommitLSN: 90, EndLSN: 90, CommitTime: ts, Origin: "site_b", Events: 0},
		{CommitLSN: 90, EndLSN: 90, CommitTime: ts, Events: 1, Partitions: []PartitionCount{{"p.public.a", 1, 1}},
			Snapshot: &SnapshotChunk{Slot: "s", Schema: "public", Table: "a", Chunk: 4, Last: true, LastKey: []string{"42", `a"b,c`}}},
		{CommitLSN: 90, EndLSN: 90, CommitTime: ts, Snapshot: &SnapshotChunk{Slot: "s", Schema: "public", Table: "a"}},
	} {
		bin, err := codec.BinaryFromNative(nil, f.Native())
		if err != nil {
			t.Fatalf("%+v: %v", f, err)
		}
		native, _, err := codec.NativeFromBinary(bin)
		if err != nil {
			t.Fatal(err)
		}
		got, err := FrameFromNative(native)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, f) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, f)
		}
	}
}
