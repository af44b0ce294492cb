package schemas

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"strings"
	"time"
)

// DecoderSchema is an Avro binary decoder compiled once from one writer
// schema. Its Native returns exactly the values goavro's NativeFromBinary
// returns for the same schema and bytes (records as map[string]any, non-null
// union values as a one-entry map keyed by goavro's branch name, logical
// types as time.Time, time.Duration and *big.Rat), so that anything written
// against goavro's forms keeps working; DecodeEnvelope and DecodeFrame read
// the two records the consumer reads on its hot path without building maps.
//
// A DecoderSchema is immutable and safe for concurrent use. Decoded []byte
// values alias the input, as goavro's do.
type DecoderSchema struct {
	root *decNode
}

type decKind uint8

const (
	decNull decKind = iota
	decBool
	decInt
	decLong
	decFloat
	decDouble
	decBytes
	decString
	decRecord
	decEnum
	decFixed
	decArray
	decMap
	decUnion
	decDate        // int.date: time.Time at UTC midnight
	decTimeMillis  // int.time-millis: time.Duration
	decTimeMicros  // long.time-micros: time.Duration
	decTsMillis    // long.timestamp-millis: time.Time UTC
	decTsMicros    // long.timestamp-micros: time.Time UTC
	decDecimal     // bytes.decimal: *big.Rat
	decFixedDecima // fixed.decimal: *big.Rat
)

// decNode is one compiled schema node. Named types are shared nodes, so a
// recursive schema is a cyclic graph.
type decNode struct {
	kind     decKind
	name     string // goavro's union branch name of this type
	fields   []decField
	elem     *decNode   // array items, map values
	branches []*decNode // union members
	symbols  []string   // enum
	size     int        // fixed
	scale    int        // decimal
}

type decField struct {
	name string
	node *decNode
}

// ErrDecoderUnsupported is wrapped by DecoderCompile's error for a schema
// construct the compiled decoder does not implement; callers then decode
// with goavro.
var ErrDecoderUnsupported = errors.New("schema not supported by the compiled decoder")

// DecoderCompile compiles the Avro JSON schema text of a writer schema.
func DecoderCompile(schema string) (*DecoderSchema, error) {
	var s any
	if err := json.Unmarshal([]byte(schema), &s); err != nil {
		return nil, fmt.Errorf("schema is not JSON: %w", err)
	}
	c := &decCompiler{named: map[string]*decNode{}}
	root, err := c.node(s, "")
	if err != nil {
		return nil, err
	}
	return &DecoderSchema{root: root}, nil
}

type decCompiler struct {
	named map[string]*decNode
}

var decPrimitives = map[string]decKind{
	"null": decNull, "boolean": decBool, "int": decInt, "long": decLong, "float": decFloat,
	"double": decDouble, "bytes": decBytes, "string": decString,
}

func (c *decCompiler) node(s any, ns string) (*decNode, error) {
	switch v := s.(type) {
	case string:
		if k, ok := decPrimitives[v]; ok {
			return &decNode{kind: k, name: v}, nil
		}
		if n, ok := c.named[v]; ok {
			return n, nil
		}
		if !strings.Contains(v, ".") && ns != "" {
			if n, ok := c.named[ns+"."+v]; ok {
				return n, nil
			}
		}
		return nil, fmt.Errorf("unknown type name %q", v)
	case []any:
		if len(v) == 0 {
			return nil, errors.New("empty union")
		}
		u := &decNode{kind: decUnion}
		for _, b := range v {
			n, err := c.node(b, ns)
			if err != nil {
				return nil, err
			}
			u.branches = append(u.branches, n)
		}
		return u, nil
	case map[string]any:
		return c.complex(v, ns)
	}
	return nil, fmt.Errorf("schema node is %T", s)
}

func (c *decCompiler) complex(m map[string]any, ns string) (*decNode, error) {
	typ, ok := m["type"].(string)
	if !ok {
		// {"type": {...}} or {"type": [...]}: the inner schema.
		return c.node(m["type"], ns)
	}
	lt, _ := m["logicalType"].(string)
	switch typ + "." + lt {
	case "int.date":
		return &decNode{kind: decDate, name: "int.date"}, nil
	case "int.time-millis":
		return &decNode{kind: decTimeMillis, name: "int.time-millis"}, nil
	case "long.time-micros":
		return &decNode{kind: decTimeMicros, name: "long.time-micros"}, nil
	case "long.timestamp-millis":
		return &decNode{kind: decTsMillis, name: "long.timestamp-millis"}, nil
	case "long.timestamp-micros":
		return &decNode{kind: decTsMicros, name: "long.timestamp-micros"}, nil
	case "bytes.decimal":
		scale, _ := m["scale"].(float64)
		return &decNode{kind: decDecimal, name: "bytes.decimal", scale: int(scale)}, nil
	case "fixed.decimal", "string.validated-string":
		return nil, fmt.Errorf("%w: %s with logicalType %s", ErrDecoderUnsupported, typ, lt)
	}
	switch typ {
	case "record", "error", "enum", "fixed":
		name, _ := m["name"].(string)
		if name == "" {
			return nil, fmt.Errorf("%s without a name", typ)
		}
		full := name
		if !strings.Contains(name, ".") {
			if s, ok := m["namespace"].(string); ok {
				ns = s
			}
			if ns != "" {
				full = ns + "." + name
			}
		} else {
			ns = name[:strings.LastIndexByte(name, '.')]
		}
		n := &decNode{name: full}
		c.named[full] = n
		switch typ {
		case "enum":
			n.kind = decEnum
			syms, _ := m["symbols"].([]any)
			for _, s := range syms {
				str, _ := s.(string)
				n.symbols = append(n.symbols, str)
			}
		case "fixed":
			n.kind = decFixed
			size, _ := m["size"].(float64)
			n.size = int(size)
		default:
			n.kind = decRecord
			fields, _ := m["fields"].([]any)
			for _, f := range fields {
				fm, ok := f.(map[string]any)
				if !ok {
					return nil, fmt.Errorf("record %s: field is %T", full, f)
				}
				fname, _ := fm["name"].(string)
				fn, err := c.node(fm["type"], ns)
				if err != nil {
					return nil, fmt.Errorf("record %s field %q: %w", full, fname, err)
				}
				n.fields = append(n.fields, decField{name: fname, node: fn})
			}
		}
		return n, nil
	case "array", "map":
		key := "items"
		if typ == "map" {
			key = "values"
		}
		e, err := c.node(m[key], ns)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", typ, key, err)
		}
		k := decArray
		if typ == "map" {
			k = decMap
		}
		return &decNode{kind: k, name: typ, elem: e}, nil
	}
	// A primitive spelled as {"type": "long"}, or a logical type goavro
	// does not implement (uuid, local-timestamp-micros): the plain type.
	return c.node(typ, ns)
}

// Native decodes one value of the schema from b, returning it in goavro's
// native form and the bytes after it.
func (d *DecoderSchema) Native(b []byte) (any, []byte, error) {
	return d.root.native(b)
}

var decEpochDate = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)

// decLong reads a zig-zag varint exactly as goavro does.
func decReadLong(b []byte) (int64, []byte, error) {
	var value uint64
	var shift uint
	for i := 0; i < len(b); i++ {
		c := b[i]
		value |= uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			return int64(value>>1) ^ -int64(value&1), b[i+1:], nil
		}
		shift += 7
	}
	return 0, nil, fmt.Errorf("cannot decode binary long: %w", io.ErrShortBuffer)
}

func decReadInt(b []byte) (int32, []byte, error) {
	var value int
	var shift uint
	for i := 0; i < len(b); i++ {
		c := b[i]
		value |= int(c&0x7f) << shift
		if c&0x80 == 0 {
			return int32(value>>1) ^ -int32(value&1), b[i+1:], nil
		}
		shift += 7
	}
	return 0, nil, fmt.Errorf("cannot decode binary int: %w", io.ErrShortBuffer)
}

func decReadBytes(b []byte) ([]byte, []byte, error) {
	n, b, err := decReadLong(b)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot decode binary bytes: %w", err)
	}
	if n < 0 {
		return nil, nil, fmt.Errorf("cannot decode binary bytes: negative size: %d", n)
	}
	if n > int64(len(b)) {
		return nil, nil, fmt.Errorf("cannot decode binary bytes: %w", io.ErrShortBuffer)
	}
	return b[:n], b[n:], nil
}

func decReadString(b []byte) (string, []byte, error) {
	s, b, err := decReadBytes(b)
	if err != nil {
		return "", nil, fmt.Errorf("cannot decode binary string: %w", err)
	}
	return string(s), b, nil
}

func decReadBool(b []byte) (bool, []byte, error) {
	if len(b) < 1 {
		return false, nil, fmt.Errorf("cannot decode binary boolean: %w", io.ErrShortBuffer)
	}
	switch b[0] {
	case 0:
		return false, b[1:], nil
	case 1:
		return true, b[1:], nil
	}
	return false, nil, fmt.Errorf("cannot decode binary boolean: expected byte 0 or 1; received byte %d", b[0])
}

// decBlockCount reads an array or map block count, skipping the block size
// that follows a negative count.
func decBlockCount(b []byte) (int64, []byte, error) {
	n, b, err := decReadLong(b)
	if err != nil {
		return 0, nil, err
	}
	if n < 0 {
		if n == math.MinInt64 {
			return 0, nil, fmt.Errorf("block count: %d", n)
		}
		n = -n
		if _, b, err = decReadLong(b); err != nil {
			return 0, nil, err
		}
	}
	if n > math.MaxInt32 {
		return 0, nil, fmt.Errorf("block count exceeds %d: %d", math.MaxInt32, n)
	}
	return n, b, nil
}

func decTimeMicrosValue(us int64) time.Time {
	s := us / 1e6
	return time.Unix(s, (us-s*1e6)*1e3).UTC()
}

func decDecimalValue(bs []byte, scale int) *big.Rat {
	num := new(big.Int).SetBytes(bs)
	if len(bs) > 0 && bs[0]&0x80 != 0 {
		num.Sub(num, new(big.Int).Lsh(big.NewInt(1), uint(len(bs))*8))
	}
	denom := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(scale)), nil)
	return new(big.Rat).SetFrac(num, denom)
}

func (n *decNode) native(b []byte) (any, []byte, error) {
	switch n.kind {
	case decNull:
		return nil, b, nil
	case decBool:
		return decReadBool(b)
	case decInt:
		return decReadInt(b)
	case decLong:
		return decReadLong(b)
	case decFloat:
		if len(b) < 4 {
			return nil, nil, fmt.Errorf("cannot decode binary float: %w", io.ErrShortBuffer)
		}
		return math.Float32frombits(binary.LittleEndian.Uint32(b)), b[4:], nil
	case decDouble:
		if len(b) < 8 {
			return nil, nil, fmt.Errorf("cannot decode binary double: %w", io.ErrShortBuffer)
		}
		return math.Float64frombits(binary.LittleEndian.Uint64(b)), b[8:], nil
	case decBytes:
		return decReadBytes(b)
	case decString:
		return decReadString(b)
	case decDate:
		i, b, err := decReadInt(b)
		if err != nil {
			return nil, nil, err
		}
		return decEpochDate.AddDate(0, 0, int(i)).UTC(), b, nil
	case decTimeMillis:
		i, b, err := decReadInt(b)
		if err != nil {
			return nil, nil, err
		}
		return time.Duration(i) * time.Millisecond, b, nil
	case decTimeMicros:
		i, b, err := decReadLong(b)
		if err != nil {
			return nil, nil, err
		}
		return time.Duration(i) * time.Microsecond, b, nil
	case decTsMillis:
		ms, b, err := decReadLong(b)
		if err != nil {
			return nil, nil, err
		}
		s := ms / 1e3
		return time.Unix(s, (ms-s*1e3)*1e6).UTC(), b, nil
	case decTsMicros:
		us, b, err := decReadLong(b)
		if err != nil {
			return nil, nil, err
		}
		return decTimeMicrosValue(us), b, nil
	case decDecimal:
		bs, b, err := decReadBytes(b)
		if err != nil {
			return nil, nil, err
		}
		return decDecimalValue(bs, n.scale), b, nil
	case decEnum:
		i, b, err := decReadLong(b)
		if err != nil {
			return nil, nil, fmt.Errorf("cannot decode binary enum %s: %w", n.name, err)
		}
		if i < 0 || i >= int64(len(n.symbols)) {
			return nil, nil, fmt.Errorf("cannot decode binary enum %s: index %d out of range", n.name, i)
		}
		return n.symbols[i], b, nil
	case decFixed:
		if len(b) < n.size {
			return nil, nil, fmt.Errorf("cannot decode binary fixed %s: %w", n.name, io.ErrShortBuffer)
		}
		return b[:n.size], b[n.size:], nil
	case decRecord:
		m := make(map[string]any, len(n.fields))
		for _, f := range n.fields {
			v, rest, err := f.node.native(b)
			if err != nil {
				return nil, nil, fmt.Errorf("cannot decode binary record %q field %q: %w", n.name, f.name, err)
			}
			m[f.name] = v
			b = rest
		}
		return m, b, nil
	case decUnion:
		i, b, err := decReadLong(b)
		if err != nil {
			return nil, nil, err
		}
		if i < 0 || i >= int64(len(n.branches)) {
			return nil, nil, fmt.Errorf("cannot decode binary union: index ought to be between 0 and %d; read index: %d", len(n.branches)-1, i)
		}
		br := n.branches[i]
		v, b, err := br.native(b)
		if err != nil {
			return nil, nil, fmt.Errorf("cannot decode binary union item %d: %w", i+1, err)
		}
		if v == nil {
			return nil, b, nil
		}
		return map[string]any{br.name: v}, b, nil
	case decArray:
		var out []any
		for {
			cnt, rest, err := decBlockCount(b)
			if err != nil {
				return nil, nil, fmt.Errorf("cannot decode binary array: %w", err)
			}
			b = rest
			if cnt == 0 {
				break
			}
			if out == nil {
				out = make([]any, 0, min(cnt, int64(len(b))+1))
			}
			for j := int64(0); j < cnt; j++ {
				v, rest, err := n.elem.native(b)
				if err != nil {
					return nil, nil, fmt.Errorf("cannot decode binary array item %d: %w", len(out)+1, err)
				}
				out = append(out, v)
				b = rest
			}
		}
		if out == nil {
			out = []any{}
		}
		return out, b, nil
	case decMap:
		out := map[string]any{}
		for {
			cnt, rest, err := decBlockCount(b)
			if err != nil {
				return nil, nil, fmt.Errorf("cannot decode binary map: %w", err)
			}
			b = rest
			if cnt == 0 {
				break
			}
			for j := int64(0); j < cnt; j++ {
				k, rest, err := decReadString(b)
				if err != nil {
					return nil, nil, fmt.Errorf("cannot decode binary map key: %w", err)
				}
				v, rest, err := n.elem.native(rest)
				if err != nil {
					return nil, nil, fmt.Errorf("cannot decode binary map value for key %q: %w", k, err)
				}
				out[k] = v
				b = rest
			}
		}
		return out, b, nil
	}
	return nil, nil, fmt.Errorf("%w: node kind %d", ErrDecoderUnsupported, n.kind)
}
