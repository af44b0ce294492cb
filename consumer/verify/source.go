package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"

	"github.com/linkedin/goavro/v2"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/postgres/pgtarget"
	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/transform"
)

// Transformer is the consumer's transform as verify needs it: the
// consumer.Transformer that rewrites events, and the table each source table
// version becomes. *transform.Pipeline is one.
type Transformer interface {
	consumer.Transformer
	Bind(t *consumer.Table) (*consumer.Table, error)
}

// Transform makes a comparison apply the consumer's transforms to the source
// rows before they are compared with the target.
type Transform struct {
	// Pipeline is the consumer's transform (transform.Compile of its
	// --transforms file).
	Pipeline Transformer
	// Lookup finds the table version the consumer decodes for a source
	// table: transform.RegistryLookup, the latest value schema.
	Lookup transform.Lookup
}

// hashBatch is how many transformed rows are hashed per round trip.
const hashBatch = 2000

// rowSource is the source side of one table's comparison: what the target
// should hold, in the target's terms.
type rowSource interface {
	// Checksum returns the checksum of r as the target should have it,
	// and how many source rows r holds (before any row filter).
	Checksum(ctx context.Context, r Range) (Sum, int64, error)
	// Rows streams the key and row hash of every row of r that the target
	// should hold, in key order.
	Rows(ctx context.Context, r Range, fn func(key []string, hash string) error) error
}

// plainSource compares a source table as it is.
type plainSource struct {
	s *pgSnapshot
	t *TableDef
}

func (p plainSource) Checksum(ctx context.Context, r Range) (Sum, int64, error) {
	s, err := p.s.Checksum(ctx, p.t, r)
	return s, s.Rows, err
}

func (p plainSource) Rows(ctx context.Context, r Range, fn func([]string, string) error) error {
	return p.s.Rows(ctx, p.t, r, fn)
}

// transformedSource reads the source rows, turns them into the events the
// consumer decodes (snapshot reads of the table version in), runs the
// consumer's transform over them, encodes the result as the sink does
// (pgtarget.Values), and has the target's database hash it.
type transformedSource struct {
	s      *pgSnapshot
	src    *TableDef       // the source table; key in index order
	in     *consumer.Table // what the consumer decodes
	decode []func([]byte) (any, error)
	tr     Transformer
	tgt    *TableDef // the target table: the transform's output columns, the target's types
	h      RowHasher
	// checkKeys makes a row whose target key differs from its source key
	// an errKeyRewritten: ranges of source keys are then not ranges of
	// target keys.
	checkKeys bool
}

// errKeyRewritten reports that a transform changes a key column's value.
type errKeyRewritten struct {
	column string
}

func (e *errKeyRewritten) Error() string {
	return fmt.Sprintf("the transform rewrites the value of key column %q", e.column)
}

func newTransformedSource(s *pgSnapshot, src *TableDef, in *consumer.Table, tr Transformer, tgt *TableDef, h RowHasher) (*transformedSource, error) {
	ts := &transformedSource{s: s, src: src, in: in, tr: tr, tgt: tgt, h: h, checkKeys: true}
	for _, c := range in.Columns {
		dec, err := nativeDecoder(c)
		if err != nil {
			return nil, fmt.Errorf("source table %s column %q (%s): %w", src, c.Name, c.SQLType, err)
		}
		ts.decode = append(ts.decode, dec)
	}
	return ts, nil
}

// nativeDecoder turns a source column's text into the value the consumer
// decodes for it: the producer's conversion to the column's Avro form
// (schemas.Codec.Decode), then through Avro binary and back, as goavro
// hands it to the consumer (time.Time for timestamps, *big.Rat for
// decimals, ...), and a text-branch value as the consumer turns it back
// (schemas.Codec.ReaderValue).
func nativeDecoder(c consumer.Column) (func([]byte) (any, error), error) {
	codec, err := schemas.MapType(c.Type, c.Typmod, schemas.UnsupportedFail)
	if err != nil {
		return nil, err
	}
	js, err := json.Marshal(schemas.AvroNamedTypesOnce(codec.Field()))
	if err != nil {
		return nil, err
	}
	ac, err := goavro.NewCodec(string(js))
	if err != nil {
		return nil, fmt.Errorf("avro codec: %w", err)
	}
	return func(text []byte) (any, error) {
		v, err := codec.Decode(text)
		if err != nil {
			return nil, err
		}
		bin, err := ac.BinaryFromNative(nil, goavro.Union(codec.Branch(v), v))
		if err != nil {
			return nil, fmt.Errorf("encode %q as Avro: %w", text, err)
		}
		v, _, err = ac.NativeFromBinary(bin)
		if err != nil {
			return nil, fmt.Errorf("decode %q from Avro: %w", text, err)
		}
		return codec.ReaderValue(schemas.UnwrapUnion(v)), nil
	}, nil
}

func (t *transformedSource) Checksum(ctx context.Context, r Range) (Sum, int64, error) {
	var acc hashSum
	scanned, err := t.scan(ctx, r, func(_ []string, hash int64) error {
		acc.add(hash)
		return nil
	})
	if err != nil {
		return Sum{}, 0, err
	}
	return acc.sum(), scanned, nil
}

// hashSum adds up row hashes as the SQL checksum does: the row count and
// the exact sum of the signed 64-bit hashes.
type hashSum struct {
	n    int64
	s, h big.Int
}

func (a *hashSum) add(h int64) {
	a.n++
	a.s.Add(&a.s, a.h.SetInt64(h))
}

func (a *hashSum) sum() Sum { return Sum{Rows: a.n, Hash: a.s.String()} }

func (t *transformedSource) Rows(ctx context.Context, r Range, fn func([]string, string) error) error {
	_, err := t.scan(ctx, r, func(key []string, hash int64) error {
		return fn(key, strconv.FormatInt(hash, 10))
	})
	return err
}

// scan streams the transformed rows of r to fn and returns how many source
// rows r holds.
func (t *transformedSource) scan(ctx context.Context, r Range, fn func([]string, int64) error) (int64, error) {
	cols := make([]string, len(t.in.Columns))
	for i, c := range t.in.Columns {
		cols[i] = "t." + schemas.QuoteIdent(c.Name) + "::text"
	}
	w, args := where(t.src, r, 1)
	q := "SELECT " + keyText(t.src) + ", " + strings.Join(cols, ", ") + " FROM " + t.s.from(t.src) +
		" WHERE " + w + " ORDER BY " + keyList(t.src)
	rows, err := t.s.tx.Query(ctx, q, args...)
	if err != nil {
		return 0, fmt.Errorf("source: rows of %s: %w", t.src, err)
	}
	defer rows.Close()
	nk := len(t.src.Key)
	all := make([]int, len(t.tgt.Columns))
	for i := range all {
		all[i] = i
	}
	var batch [][]any
	var keys [][]string
	flush := func() error {
		i := 0
		err := t.h.Hash(ctx, t.tgt, batch, func(key []string, hash int64) error {
			if t.checkKeys && !slices.Equal(key, keys[i]) {
				for j := range key {
					if key[j] != keys[i][j] {
						return &errKeyRewritten{column: t.tgt.Key[j].Name}
					}
				}
			}
			i++
			return fn(key, hash)
		})
		batch, keys = batch[:0], keys[:0]
		return err
	}
	var scanned int64
	for rows.Next() {
		scanned++
		vals := make([]*string, nk+len(cols))
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return 0, fmt.Errorf("source: rows of %s: %w", t.src, err)
		}
		key := make([]string, nk)
		for i := range key {
			key[i] = *vals[i]
		}
		after := make([]any, len(cols))
		for i, v := range vals[nk:] {
			if v == nil {
				continue
			}
			if after[i], err = t.decode[i]([]byte(*v)); err != nil {
				return 0, fmt.Errorf("source table %s key %s column %q: %w", t.src, describeKey(t.src, key), t.in.Columns[i].Name, err)
			}
		}
		ev := &consumer.Event{Op: schemas.OpRead, Table: t.in, After: after, Txn: &consumer.Txn{Snapshot: true}}
		keep, err := t.tr.Transform(ev)
		if err != nil {
			return 0, fmt.Errorf("transform the source row %s of %s as the consumer does: %w", describeKey(t.src, key), t.src, err)
		}
		if !keep || ev.After == nil {
			continue
		}
		if len(ev.Table.Columns) != len(t.tgt.Columns) {
			return 0, fmt.Errorf("transform of %s: the row has %d columns, the bound table %d", t.src, len(ev.Table.Columns), len(t.tgt.Columns))
		}
		out, err := pgtarget.Values(ev, ev.After, all)
		if err != nil {
			return 0, err
		}
		batch = append(batch, out)
		keys = append(keys, key)
		if len(batch) >= hashBatch {
			if err := flush(); err != nil {
				return 0, err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("source: rows of %s: %w", t.src, err)
	}
	if len(batch) > 0 {
		if err := flush(); err != nil {
			return 0, err
		}
	}
	return scanned, nil
}

// describeKey renders key values as col=value pairs.
func describeKey(t *TableDef, key []string) string {
	parts := make([]string, len(key))
	for i, v := range key {
		parts[i] = t.Key[i].Name + "=" + v
	}
	return strings.Join(parts, ", ")
}

// transformedTable binds the consumer's transform to source table src and
// returns the table the target should hold (its want, for Snapshot.Table)
// and the table version the consumer decodes. It returns nil, nil, nil when
// no step applies to the table. A problem that makes the table
// incomparable is a *SchemaError.
func transformedTable(ctx context.Context, tr *Transform, src *TableDef) (*TableDef, *consumer.Table, error) {
	in, err := tr.Lookup(ctx, src.Schema, src.Name)
	if err != nil {
		return nil, nil, err
	}
	if in == nil {
		return nil, nil, &SchemaError{Table: src.String(), Reason: "the registry has no schema for it yet, so the consumer's transform cannot be bound (has the producer published it?)"}
	}
	out, err := tr.Pipeline.Bind(in)
	if err != nil {
		return nil, nil, &InputError{fmt.Errorf("the consumer's transform does not fit source table %s: %w", src, err)}
	}
	if out == in {
		return nil, nil, nil
	}
	have := map[string]bool{}
	for _, c := range src.Columns {
		have[c.Name] = true
	}
	for _, c := range in.Columns {
		if !have[c.Name] {
			return nil, nil, &SchemaError{Table: src.String(), Reason: fmt.Sprintf("the source lacks column %q of the registry's latest schema", c.Name)}
		}
	}
	// Types are the consumer's column types (what --create-tables
	// declares); a target that hashes through PostgreSQL casts to them.
	want := &TableDef{Schema: out.Schema, Name: out.Name}
	for _, c := range out.Columns {
		want.Columns = append(want.Columns, Column{Name: c.Name, Type: c.SQLType})
	}
	if len(out.Key) != len(in.Key) || len(in.Key) != len(src.Key) {
		return nil, nil, &SchemaError{Table: src.String(), Reason: "the transform's output key does not match the source's replication key"}
	}
	// Steps keep key columns in place (they may rename them), so the p-th
	// key column of the output is the p-th key column of the input.
	for _, k := range src.Key {
		p := slices.IndexFunc(in.Key, func(i int) bool { return in.Columns[i].Name == k.Name })
		if p < 0 {
			return nil, nil, &SchemaError{Table: src.String(), Reason: fmt.Sprintf("key column %q is not a key column of the registry's latest schema", k.Name)}
		}
		kc := out.Columns[out.Key[p]]
		want.Key = append(want.Key, Column{Name: kc.Name, Type: kc.SQLType, Collation: k.Collation})
	}
	return want, in, nil
}
