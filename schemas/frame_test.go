package schemas

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
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
			Snapshot: &SnapshotChunk{Slot: "s", Schema: "public", Table: "a", Chunk: 4, Last: true, LastKey: []string{"42", `a"b,c`}, ID: "initial"}},
		{CommitLSN: 90, EndLSN: 90, CommitTime: ts, Snapshot: &SnapshotChunk{Slot: "s", Schema: "public", Table: "a", ID: "join-0/5A"}},
		{CommitLSN: 91, EndLSN: 92, CommitTime: ts, Request: &SnapshotRequest{Slot: "s", ID: "r1", Tables: []string{"public.a", "x.y"}}},
		{CommitLSN: 91, EndLSN: 92, CommitTime: ts, Request: &SnapshotRequest{Slot: "s", ID: "r2", Tables: []string{}}},
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

// Frames written before the snapshot ID and the snapshot request existed
// decode with their defaults, and the new frame schema is a fully compatible
// successor of the old one (so a producer upgrades its prefix in place).
func TestFrameSchemaEvolution(t *testing.T) {
	hist := FrameSchemaHistory()
	if len(hist) != 2 || hist[0] != FrameSchema() {
		t.Fatalf("frame schema history: %d schemas", len(hist))
	}
	old := hist[1]
	if strings.Contains(old, "snapshot_request") || strings.Contains(old, `"id"`) {
		t.Fatalf("could not derive the old frame schema: %s", old)
	}
	if err := CheckFullCompatible(old, FrameSchema()); err != nil {
		t.Fatalf("new frame schema not compatible with the old: %v", err)
	}
	oc, err := goavro.NewCodec(old)
	if err != nil {
		t.Fatalf("old schema: %v\n%s", err, old)
	}
	bin, err := oc.BinaryFromNative(nil, map[string]any{"xid": int64(1), "commit_lsn": int64(2), "end_lsn": int64(3),
		"commit_ts": time.UnixMicro(0), "origin": nil, "event_count": int64(0), "partitions": []any{},
		"snapshot": goavro.Union("tributary.SnapshotChunk", map[string]any{"slot": "s", "schema": "public", "table": "t",
			"chunk": int64(0), "last": true, "last_key": nil})})
	if err != nil {
		t.Fatal(err)
	}
	fd, err := DecoderCompileFrame(old)
	if err != nil {
		t.Fatal(err)
	}
	f, err := fd.Decode(bin)
	if err != nil {
		t.Fatal(err)
	}
	if f.Snapshot == nil || f.Snapshot.ID != "initial" || f.Request != nil {
		t.Fatalf("old frame decoded as %+v (snapshot %+v)", f, f.Snapshot)
	}
}

// TxID is formatted without fmt; it must stay the text that fmt and
// pglogrepl.LSN.String give, which readers of tx.id already hold.
func TestTxIDMatchesLSNString(t *testing.T) {
	cases := [][2]uint64{{0, 0}, {1, 1}, {0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF}, {42, 0x1_0000_0000}, {7, 0xABCDEF0}, {10, 0x16_B374D848}}
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		cases = append(cases, [2]uint64{uint64(r.Uint32()), r.Uint64() >> r.IntN(64)})
	}
	for _, c := range cases {
		xid, lsn := uint32(c[0]), pglogrepl.LSN(c[1])
		want := fmt.Sprintf("%d:%s", xid, lsn)
		if got := TxID(xid, lsn); got != want {
			t.Fatalf("TxID(%d, %d) = %q, want %q", xid, uint64(lsn), got, want)
		}
		if got := string(AppendTxID([]byte("x"), xid, lsn)); got != "x"+want {
			t.Fatalf("AppendTxID(\"x\", %d, %d) = %q, want %q", xid, uint64(lsn), got, "x"+want)
		}
	}
}
