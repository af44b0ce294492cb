package transform

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/schemas"
)

// Pipeline applies per-table steps to a consumer's events. It implements
// consumer.Transformer; set it as consumer.Config.Transform. Tables without
// steps pass through unchanged (apart from the schema renames of the
// configuration). A Pipeline is safe for concurrent use.
type Pipeline struct {
	tables  map[string]*tableSteps // by source "schema.table"
	schemas map[string]string      // source schema -> target schema

	mu    sync.RWMutex
	bound map[int]*boundOrErr // by source value schema ID
}

type tableSteps struct {
	source string // schema.table
	steps  []labeled
}

type labeled struct {
	label string
	step  Step
}

type boundOrErr struct {
	b   *bound // nil: pass through
	err error
}

var _ consumer.Transformer = (*Pipeline)(nil)

// Option adds Go steps to Compile.
type Option func(*options)

type options struct {
	custom map[string]Step
	tables map[string][]Step
}

// WithStep makes s available to the configuration as `custom: name`.
func WithStep(name string, s Step) Option {
	return func(o *options) { o.custom[name] = s }
}

// WithTable appends steps to the pipeline of the source table ("schema.table"
// or "table" in public), after the steps of the configuration.
func WithTable(table string, steps ...Step) Option {
	return func(o *options) {
		t := qualify(table)
		o.tables[t] = append(o.tables[t], steps...)
	}
}

func qualify(t string) string {
	if strings.Contains(t, ".") {
		return t
	}
	return "public." + t
}

// Transform rewrites ev as its table's pipeline says (consumer.Transformer).
// Rows a filter drops are not applied; an update that moves a row out of a
// filter becomes a delete, one that moves a row in becomes an insert. Errors
// are *Error values; those about the schema wrap ErrSchema and are marked
// with consumer.Halt. On error ev is unchanged.
func (p *Pipeline) Transform(ev *consumer.Event) (bool, error) {
	if ev.Table == nil {
		return true, nil
	}
	be := p.boundFor(ev.Table)
	if be.err != nil {
		return false, consumer.Halt(be.err)
	}
	if be.b == nil {
		return true, nil
	}
	// Work on a copy so that ev is unchanged on error.
	saved := *ev
	keep, err := be.b.apply(ev)
	if err != nil {
		*ev = saved
		return false, err
	}
	return keep, nil
}

func (p *Pipeline) boundFor(t *consumer.Table) *boundOrErr {
	p.mu.RLock()
	be := p.bound[t.SchemaID]
	p.mu.RUnlock()
	if be != nil {
		return be
	}
	b, err := p.bind(t)
	be = &boundOrErr{b: b, err: err}
	p.mu.Lock()
	if old := p.bound[t.SchemaID]; old != nil {
		be = old
	} else {
		p.bound[t.SchemaID] = be
	}
	p.mu.Unlock()
	return be
}

// Bind binds the pipeline of t's source table to t and returns the table the
// sink will see, or t itself when no step applies to it. Errors wrap ErrSchema.
func (p *Pipeline) Bind(t *consumer.Table) (*consumer.Table, error) {
	be := p.boundFor(t)
	if be.err != nil {
		return nil, be.err
	}
	if be.b == nil {
		return t, nil
	}
	return be.b.out, nil
}

func (p *Pipeline) bind(src *consumer.Table) (*bound, error) {
	ts := p.tables[src.String()]
	target, renamed := p.schemas[src.Schema]
	if ts == nil && !renamed {
		return nil, nil
	}
	s, err := newSchema(src)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSchema, newError(src.String(), "", "", err))
	}
	if renamed {
		s.TargetSchema = target
	}
	b := &bound{src: src}
	if ts != nil {
		for _, l := range ts.steps {
			s.reads, s.writes = nil, nil
			fn, err := l.step.Bind(s)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrSchema, newError(src.String(), l.label, "", err))
			}
			b.steps = append(b.steps, boundStep{label: l.label, fn: fn, reads: s.reads, writes: s.writes})
			if fn != nil && len(s.writes) == 0 {
				b.filters = true
			}
		}
	}
	out := &consumer.Table{Schema: s.TargetSchema, Name: s.TargetTable, Topic: src.Topic, SchemaID: src.SchemaID}
	b.allKey = true
	for _, c := range src.Columns {
		if !c.Key {
			b.allKey = false
		}
	}
	for i, c := range s.cols {
		out.Columns = append(out.Columns, consumer.Column{Field: c.Name, Name: c.Name, SQLType: c.Type.SQL, Key: c.Key,
			Type: c.Type.PG, Typmod: c.Type.Typmod, Encode: c.Type.codec.Encode})
		b.proj = append(b.proj, c.slot)
		if c.Key {
			out.Key = append(out.Key, i)
			b.keySlot = append(b.keySlot, c.slot)
		}
	}
	if len(out.Key) == 0 {
		return nil, fmt.Errorf("%w: %w", ErrSchema, newError(src.String(), "", "", errors.New("the output has no replication-key column")))
	}
	b.nslots = len(s.slots)
	b.out = out
	return b, nil
}

// Lookup returns the latest version of a source table's schema, or nil when
// the table has no schema yet.
type Lookup func(ctx context.Context, schema, table string) (*consumer.Table, error)

// RegistryLookup looks tables up in the registry: the latest version of the
// subject <topic>-value of <prefix>.<schema>.<table>.
func RegistryLookup(reg *schemas.Registry, prefix string) Lookup {
	return func(ctx context.Context, schema, table string) (*consumer.Table, error) {
		topic := schemas.TopicName(prefix, schema, table)
		ss, err := reg.Client().SchemaByVersion(ctx, schemas.ValueSubject(topic), -1)
		if err != nil {
			if schemas.IsUnknownSchema(err) {
				return nil, nil
			}
			return nil, fmt.Errorf("registry: latest schema of %s: %w", topic, err)
		}
		return consumer.TableFromValueSchema(ss.Schema.Schema, ss.ID, schema, table, topic)
	}
}

// Check binds every configured table to its latest schema, so that a step
// that does not fit (an unknown column, an expression that does not
// type-check) fails at start-up rather than at the first row. Tables that
// lookup does not know yet are bound when their first event arrives.
func (p *Pipeline) Check(ctx context.Context, lookup Lookup) error {
	var errs []error
	for name := range p.tables {
		schema, table, _ := strings.Cut(name, ".")
		t, err := lookup(ctx, schema, table)
		if err != nil {
			return err
		}
		if t == nil {
			continue
		}
		if _, err := p.Bind(t); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
