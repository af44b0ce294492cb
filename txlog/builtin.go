package txlog

import (
	"fmt"
	"sync"

	"github.com/tributary-cdc/tributary/schemas"
)

// NewBuiltinFrameDecoder returns a decoder for readers without a schema
// registry (status without --registry, the benchmarks, test tools): it
// decodes every record with the frame schemas Tributary has written
// (schemas.FrameSchemaHistory), newest first, taking the first that
// consumes the record exactly, whatever schema ID the record's wire header
// names. Readers that have a registry use NewFrameDecoder.
func NewBuiltinFrameDecoder() *FrameDecoder { return NewFrameDecoder(nil) }

// builtinFrames are the compiled decoders of schemas.FrameSchemaHistory.
var builtinFrames = sync.OnceValues(func() ([]*schemas.DecoderFrame, error) {
	var out []*schemas.DecoderFrame
	for _, raw := range schemas.FrameSchemaHistory() {
		d, err := schemas.DecoderCompileFrame(raw)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
})

// decodeBuiltin decodes a frame body with the first historical frame schema
// that fits it.
func decodeBuiltin(body []byte) (schemas.Frame, error) {
	decs, err := builtinFrames()
	if err != nil {
		return schemas.Frame{}, fmt.Errorf("built-in frame schemas: %w", err)
	}
	var first error
	for _, d := range decs {
		f, err := d.Decode(body)
		if err == nil {
			return f, nil
		}
		if first == nil {
			first = err
		}
	}
	return schemas.Frame{}, fmt.Errorf("%w: no frame schema of this program fits: %w", ErrMalformed, first)
}
