package txlog

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pglogrepl"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/schemas"
)

// ErrMalformed marks a record of the log that cannot be decoded: bad wire
// format, an unknown schema ID, or bytes that do not match their schema.
// Retrying cannot fix it. Errors that reaching the registry returns are not
// marked.
var ErrMalformed = errors.New("malformed record")

// FrameDecoder decodes records of the transactions topic. Compiled decoders
// are cached by schema ID. It is safe for concurrent use.
type FrameDecoder struct {
	reg *schemas.Registry
	mu  sync.Mutex
	dec map[int]*schemas.DecoderFrame // nil value: decode through goavro
}

// NewFrameDecoder returns a decoder that fetches writer schemas from reg.
func NewFrameDecoder(reg *schemas.Registry) *FrameDecoder {
	return &FrameDecoder{reg: reg, dec: map[int]*schemas.DecoderFrame{}}
}

// Decode decodes one record of the transactions topic. Its errors name the
// record's topic, partition and offset; those about the record itself wrap
// ErrMalformed.
func (d *FrameDecoder) Decode(ctx context.Context, r *kgo.Record) (schemas.Frame, error) {
	f, err := d.decode(ctx, r.Value)
	if err != nil {
		return f, fmt.Errorf("%s partition %d offset %d: %w", r.Topic, r.Partition, r.Offset, err)
	}
	return f, nil
}

func (d *FrameDecoder) decode(ctx context.Context, value []byte) (schemas.Frame, error) {
	id, body, err := schemas.SplitWire(value)
	if err != nil {
		return schemas.Frame{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if d.reg == nil {
		return decodeBuiltin(body)
	}
	codec, raw, err := d.reg.CodecAndSchema(ctx, id)
	if err != nil {
		if schemas.IsUnknownSchema(err) {
			return schemas.Frame{}, fmt.Errorf("%w: unknown schema id %d: %w", ErrMalformed, id, err)
		}
		return schemas.Frame{}, err
	}
	d.mu.Lock()
	fd, ok := d.dec[id]
	d.mu.Unlock()
	if !ok {
		fd, err = schemas.DecoderCompileFrame(raw)
		if err != nil && !errors.Is(err, schemas.ErrDecoderUnsupported) {
			return schemas.Frame{}, fmt.Errorf("%w: schema id %d: %w", ErrMalformed, id, err)
		}
		d.mu.Lock()
		d.dec[id] = fd
		d.mu.Unlock()
	}
	if fd != nil {
		f, err := fd.Decode(body)
		if err != nil {
			return f, fmt.Errorf("%w: schema id %d: cannot decode frame: %w", ErrMalformed, id, err)
		}
		return f, nil
	}
	v, rest, err := codec.NativeFromBinary(body)
	if err == nil && len(rest) != 0 {
		err = fmt.Errorf("%d bytes left after the Avro record", len(rest))
	}
	if err != nil {
		return schemas.Frame{}, fmt.Errorf("%w: schema id %d: cannot decode Avro: %w", ErrMalformed, id, err)
	}
	f, err := schemas.FrameFromNative(v)
	if err != nil {
		return f, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return f, nil
}

// Frames reads the commit frames of one prefix's transactions topic.
type Frames struct {
	opts  []kgo.Opt
	adm   *kadm.Client
	dec   *FrameDecoder
	topic string
}

// NewFrames returns a reader of topic (schemas.TransactionsTopic). opts
// reach the brokers; adm is an admin client on the same cluster, which the
// caller owns.
func NewFrames(opts []kgo.Opt, adm *kadm.Client, dec *FrameDecoder, topic string) *Frames {
	return &Frames{opts: opts, adm: adm, dec: dec, topic: topic}
}

// Topic is the transactions topic read.
func (fr *Frames) Topic() string { return fr.topic }

// Bounds returns the offsets readable in the transactions topic.
func (fr *Frames) Bounds(ctx context.Context) (Bounds, error) {
	return PartitionBounds(ctx, fr.adm, fr.topic, 0)
}

// Scan calls fn for each committed frame at offsets [from, to), in order.
// fn may return ErrStop to end the scan early.
func (fr *Frames) Scan(ctx context.Context, from, to int64, fn func(off int64, f schemas.Frame) error) error {
	return ReadRange(ctx, fr.opts, fr.topic, 0, from, to, func(r *kgo.Record) error {
		f, err := fr.dec.Decode(ctx, r)
		if err != nil {
			return err
		}
		return fn(r.Offset, f)
	})
}

// Last returns the last committed frame below offset end and its offset, or
// a nil frame when there is none in [b.Start, end). It reads backwards in
// growing windows, so its cost does not depend on the topic's length.
func (fr *Frames) Last(ctx context.Context, b Bounds, end int64) (int64, *schemas.Frame, error) {
	if end > b.End {
		end = b.End
	}
	// Every Kafka transaction ends with one marker and holds at least one
	// frame, so walking back doubling the window finds one.
	for back := int64(16); ; back *= 2 {
		start := max(end-back, b.Start)
		off, f, err := fr.lastIn(ctx, start, end)
		if err != nil || f != nil || start == b.Start {
			return off, f, err
		}
	}
}

func (fr *Frames) lastIn(ctx context.Context, start, end int64) (int64, *schemas.Frame, error) {
	var last *schemas.Frame
	var at int64 = -1
	err := fr.Scan(ctx, start, end, func(off int64, f schemas.Frame) error {
		last, at = &f, off
		return nil
	})
	return at, last, err
}

// FirstAtOrPast returns the offset of the first committed frame whose commit
// LSN is at least lsn, or b.End when there is none.
func (fr *Frames) FirstAtOrPast(ctx context.Context, b Bounds, lsn pglogrepl.LSN) (int64, error) {
	var derr error
	off, err := Seek(ctx, fr.opts, fr.topic, 0, b, uint64(lsn), func(r *kgo.Record) (uint64, bool) {
		f, err := fr.dec.Decode(ctx, r)
		if err != nil {
			derr = err
			return 0, true
		}
		return uint64(f.CommitLSN), true
	})
	if derr != nil {
		return 0, derr
	}
	return off, err
}

// HeaderLSN is a SeekFunc for data records: their tributary.commit_lsn
// header.
func HeaderLSN(r *kgo.Record) (uint64, bool) {
	for _, h := range r.Headers {
		if h.Key == schemas.HeaderCommitLSN {
			var v uint64
			if len(h.Value) == 0 {
				return 0, false
			}
			for _, c := range h.Value {
				if c < '0' || c > '9' {
					return 0, false
				}
				v = v*10 + uint64(c-'0')
			}
			return v, true
		}
	}
	return 0, false
}
