package txlog

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/schemas"
)

// The built-in decoder reads frames without a registry, whatever schema ID
// they carry; what is not a frame is ErrMalformed.
func TestBuiltinFrameDecoder(t *testing.T) {
	ctx := context.Background()
	f := schemas.Frame{Xid: 7, CommitLSN: 0x1234, EndLSN: 0x1240, CommitTime: time.Unix(1700000000, 0).UTC(), Events: 2,
		Partitions: []schemas.PartitionCount{{Topic: "p.public.t", Partition: 1, Count: 2}}}
	d := NewBuiltinFrameDecoder()
	for _, id := range []int{1, 999} {
		r := &kgo.Record{Topic: "p.transactions", Offset: 3, Value: schemas.EncoderAppendFrame(schemas.AppendHeader(nil, id), &f)}
		got, err := d.Decode(ctx, r)
		if err != nil {
			t.Fatalf("schema id %d: %v", id, err)
		}
		if fmt.Sprint(got) != fmt.Sprint(f) {
			t.Fatalf("schema id %d: decoded %+v, want %+v", id, got, f)
		}
	}
	good := schemas.EncoderAppendFrame(schemas.AppendHeader(nil, 1), &f)
	for name, v := range map[string][]byte{
		"not wire format": []byte("garbage"),
		"truncated":       good[:len(good)-2],
		"trailing":        append(append([]byte{}, good...), 0),
	} {
		_, err := d.Decode(ctx, &kgo.Record{Topic: "p.transactions", Offset: 9, Value: v})
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

// Frames written before snapshot chunks carried an ID (an older producer on
// the same prefix) decode with the built-in decoder too.
func TestBuiltinFrameDecoderReadsOlderFrames(t *testing.T) {
	old, err := goavro.NewCodec(schemas.FrameSchemaHistory()[1])
	if err != nil {
		t.Fatal(err)
	}
	for _, snap := range []any{nil, goavro.Union("tributary.SnapshotChunk", map[string]any{"slot": "s", "schema": "public",
		"table": "t", "chunk": int64(3), "last": true, "last_key": goavro.Union("array", []any{"42"})})} {
		body, err := old.BinaryFromNative(nil, map[string]any{"xid": int64(9), "commit_lsn": int64(100), "end_lsn": int64(108),
			"commit_ts": time.Unix(1700000000, 0), "origin": nil, "snapshot": snap, "event_count": int64(0), "partitions": []any{}})
		if err != nil {
			t.Fatal(err)
		}
		got, err := NewBuiltinFrameDecoder().Decode(context.Background(), &kgo.Record{Value: append(schemas.AppendHeader(nil, 1), body...), Topic: "p.transactions"})
		if err != nil {
			t.Fatalf("older frame (snapshot %v): %v", snap != nil, err)
		}
		if got.CommitLSN != 100 || snap != nil && (got.Snapshot == nil || got.Snapshot.ID != "initial" || got.Snapshot.Chunk != 3) {
			t.Fatalf("older frame decoded as %+v (snapshot %+v)", got, got.Snapshot)
		}
	}
}
