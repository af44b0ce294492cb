package txlog

import (
	"context"
	"fmt"
	"sync"

	"github.com/linkedin/goavro/v2"

	"github.com/tributary-cdc/tributary/schemas"
)

// NewBuiltinFrameDecoder returns a decoder for readers without a schema
// registry (status without --registry, the benchmarks): it decodes every
// record with this program's frame schema (schemas.FrameSchema), whatever
// schema ID the record's wire header names. A frame written with another
// version of the schema may fail to decode (ErrMalformed) or decode wrongly;
// readers that have a registry use NewFrameDecoder.
func NewBuiltinFrameDecoder() *FrameDecoder { return NewFrameDecoder(nil) }

// builtinFrame is the text of schemas.FrameSchema and its codec, made once.
var builtinFrame = sync.OnceValues(func() (builtinSchema, error) {
	raw := schemas.FrameSchema()
	c, err := goavro.NewCodec(raw)
	return builtinSchema{codec: c, raw: raw}, err
})

type builtinSchema struct {
	codec *goavro.Codec
	raw   string
}

// writerSchema returns the codec and text of the schema that wrote a record
// with schema ID id: the registry's, or the built-in frame schema for a
// decoder without a registry.
func (d *FrameDecoder) writerSchema(ctx context.Context, id int) (*goavro.Codec, string, error) {
	if d.reg != nil {
		return d.reg.CodecAndSchema(ctx, id)
	}
	b, err := builtinFrame()
	if err != nil {
		return nil, "", fmt.Errorf("built-in frame schema: %w", err)
	}
	return b.codec, b.raw, nil
}
