package txlog

import (
	"context"
	"math"

	"github.com/tributary-cdc/tributary/schemas"
)

// Follow calls fn for each committed frame at offset from and after, in
// order, as the producer commits them: it does not stop at the end of the
// topic but waits for more. It returns when ctx is done, with an error that
// wraps ctx.Err(); when fn returns ErrStop, with nil; or with any other error
// of fn or of the read (a from below the log start is a
// *BelowLogStartError). The options given to NewFrames apply, so a caller
// that wants frames soon after their commit can pass kgo.FetchMaxWait.
func (fr *Frames) Follow(ctx context.Context, from int64, fn func(off int64, f schemas.Frame) error) error {
	// A range that never ends: ReadRange reads on until ctx is done.
	return fr.Scan(ctx, from, math.MaxInt64, fn)
}
