package consumer

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog"
)

// TestDecoderFrameErrorClasses: the decoder's frames go through txlog; a
// malformed frame or an unknown schema ID is permanent, a registry that
// cannot be reached is not.
func TestDecoderFrameErrorClasses(t *testing.T) {
	ctx := context.Background()
	fake := srfake.New()
	reg, err := schemas.NewRegistry([]string{fake.URL()}, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	id, err := reg.Register(ctx, schemas.ValueSubject("p.transactions"), schemas.FrameSchema(), schemas.SchemaChangeFail)
	if err != nil {
		t.Fatal(err)
	}
	d := newDecoder(reg)
	f := schemas.Frame{Xid: 3, CommitLSN: 0x100, EndLSN: 0x110, CommitTime: time.Unix(1700000000, 0).UTC(), Events: 1,
		Partitions: []schemas.PartitionCount{{Topic: "p.public.t", Partition: 0, Count: 1}}}
	rec := func(v []byte) *kgo.Record { return &kgo.Record{Topic: "p.transactions", Offset: 5, Value: v} }
	good := schemas.EncoderAppendFrame(schemas.AppendHeader(nil, id), &f)
	got, err := d.frame(ctx, rec(good))
	if err != nil || got.CommitLSN != f.CommitLSN || got.Xid != f.Xid || len(got.Partitions) != 1 {
		t.Fatalf("frame = %+v, %v", got, err)
	}
	for name, v := range map[string][]byte{
		"not wire format": []byte("garbage"),
		"truncated":       good[:len(good)-2],
		"unknown schema":  schemas.EncoderAppendFrame(schemas.AppendHeader(nil, id+1000), &f),
	} {
		_, err := d.frame(ctx, rec(v))
		if !IsPermanent(err) || !errors.Is(err, txlog.ErrMalformed) {
			t.Errorf("%s: %v, want a permanent error wrapping txlog.ErrMalformed", name, err)
		}
	}
	fake.Close()
	_, err = d.frame(ctx, rec(schemas.EncoderAppendFrame(schemas.AppendHeader(nil, id+1), &f)))
	if err == nil || IsPermanent(err) {
		t.Fatalf("registry unreachable: %v, want a transient error", err)
	}
}
