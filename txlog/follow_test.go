package txlog

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tributary-cdc/tributary/schemas"
)

// Follow returns frames committed after it started, skips aborted ones, and
// ends on ErrStop or when its context is done.
func TestFollowSeesNewFrames(t *testing.T) {
	e := newLogEnv(t)
	const topic = "f.transactions"
	e.createTopic(topic)
	e.txn(true, e.frame(topic, 1))
	fr := e.frames(topic)
	b, err := fr.Bounds(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan uint64, 10)
	done := make(chan error, 1)
	go func() {
		done <- fr.Follow(e.ctx(), b.End, func(_ int64, f schemas.Frame) error {
			got <- uint64(f.CommitLSN)
			if f.CommitLSN == 4 {
				return ErrStop
			}
			return nil
		})
	}()
	e.txn(true, e.frame(topic, 2))
	e.txn(false, e.frame(topic, 3))
	e.txn(true, e.frame(topic, 4))
	if err := <-done; err != nil {
		t.Fatalf("Follow: %v", err)
	}
	close(got)
	var seen []uint64
	for l := range got {
		seen = append(seen, l)
	}
	if fmt.Sprint(seen) != "[2 4]" {
		t.Fatalf("followed %v, want [2 4]", seen)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := fr.Follow(ctx, 0, func(int64, schemas.Frame) error { return nil }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Follow until the deadline: %v", err)
	}
}
