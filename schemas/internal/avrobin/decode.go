package avrobin

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

// Kind is what a compiled Node decodes: an Avro type, or one of the logical
// types goavro implements.
type Kind uint8

// The kinds of Node. The logical kinds decode to goavro's native forms.
const (
	KindNull Kind = iota
	KindBoolean
	KindInt
	KindLong
	KindFloat
	KindDouble
	KindBytes
	KindString
	KindRecord
	KindEnum
	KindFixed
	KindArray
	KindMap
	KindUnion
	KindDate            // int.date: time.Time at UTC midnight
	KindTimeMillis      // int.time-millis: time.Duration
	KindTimeMicros      // long.time-micros: time.Duration
	KindTimestampMillis // long.timestamp-millis: time.Time UTC
	KindTimestampMicros // long.timestamp-micros: time.Time UTC
	KindDecimal         // bytes.decimal: *big.Rat
)

// Node is one compiled schema node. Named types are shared nodes, so a
// recursive schema is a cyclic graph. A Node is immutable once Compile has
// returned it and safe for concurrent use.
type Node struct {
	Kind     Kind
	Name     string   // goavro's union branch name of this type
	Fields   []Field  // record fields, in order
	Elem     *Node    // array items, map values
	Branches []*Node  // union members
	symbols  []string // enum
	size     int      // fixed
	scale    int      // decimal
}

// Field is one field of a record Node.
type Field struct {
	Name string
	Node *Node
}

// ErrUnsupported is wrapped by Compile's error for a schema
// construct the compiled decoder does not implement; callers then decode
// with goavro.
var ErrUnsupported = errors.New("schema not supported by the compiled decoder")

// Compile compiles the Avro JSON schema text of a writer schema into the
// Node of its root.
func Compile(schema string) (*Node, error) {
	var s any
	if err := json.Unmarshal([]byte(schema), &s); err != nil {
		return nil, fmt.Errorf("schema is not JSON: %w", err)
	}
	c := &compiler{named: map[string]*Node{}}
	return c.node(s, "")
}

type compiler struct {
	named map[string]*Node
}

var primitives = map[string]Kind{
	"null": KindNull, "boolean": KindBoolean, "int": KindInt, "long": KindLong, "float": KindFloat,
	"double": KindDouble, "bytes": KindBytes, "string": KindString,
}

func (c *compiler) node(s any, ns string) (*Node, error) {
	switch v := s.(type) {
	case string:
		if k, ok := primitives[v]; ok {
			return &Node{Kind: k, Name: v}, nil
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
		u := &Node{Kind: KindUnion}
		for _, b := range v {
			n, err := c.node(b, ns)
			if err != nil {
				return nil, err
			}
			u.Branches = append(u.Branches, n)
		}
		return u, nil
	case map[string]any:
		return c.complex(v, ns)
	}
	return nil, fmt.Errorf("schema node is %T", s)
}

func (c *compiler) complex(m map[string]any, ns string) (*Node, error) {
	typ, ok := m["type"].(string)
	if !ok {
		// {"type": {...}} or {"type": [...]}: the inner schema.
		return c.node(m["type"], ns)
	}
	lt, _ := m["logicalType"].(string)
	switch typ + "." + lt {
	case "int.date":
		return &Node{Kind: KindDate, Name: "int.date"}, nil
	case "int.time-millis":
		return &Node{Kind: KindTimeMillis, Name: "int.time-millis"}, nil
	case "long.time-micros":
		return &Node{Kind: KindTimeMicros, Name: "long.time-micros"}, nil
	case "long.timestamp-millis":
		return &Node{Kind: KindTimestampMillis, Name: "long.timestamp-millis"}, nil
	case "long.timestamp-micros":
		return &Node{Kind: KindTimestampMicros, Name: "long.timestamp-micros"}, nil
	case "bytes.decimal":
		scale, _ := m["scale"].(float64)
		return &Node{Kind: KindDecimal, Name: "bytes.decimal", scale: int(scale)}, nil
	case "fixed.decimal", "string.validated-string":
		return nil, fmt.Errorf("%w: %s with logicalType %s", ErrUnsupported, typ, lt)
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
		n := &Node{Name: full}
		c.named[full] = n
		switch typ {
		case "enum":
			n.Kind = KindEnum
			syms, _ := m["symbols"].([]any)
			for _, s := range syms {
				str, _ := s.(string)
				n.symbols = append(n.symbols, str)
			}
		case "fixed":
			n.Kind = KindFixed
			size, _ := m["size"].(float64)
			n.size = int(size)
		default:
			n.Kind = KindRecord
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
				n.Fields = append(n.Fields, Field{Name: fname, Node: fn})
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
		k := KindArray
		if typ == "map" {
			k = KindMap
		}
		return &Node{Kind: k, Name: typ, Elem: e}, nil
	}
	// A primitive spelled as {"type": "long"}, or a logical type goavro
	// does not implement (uuid, local-timestamp-micros): the plain type.
	return c.node(typ, ns)
}

var epochDate = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)

// DateFromDays is the time.Time at UTC midnight of days since 1970-01-01,
// goavro's native form of an int.date.
func DateFromDays(days int) time.Time { return epochDate.AddDate(0, 0, days) }

// ReadLong reads an Avro int or long, a zig-zag varint, exactly as goavro
// does, and returns it and the bytes after it.
func ReadLong(b []byte) (int64, []byte, error) {
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

// ReadInt reads an Avro int as goavro does.
func ReadInt(b []byte) (int32, []byte, error) {
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

// ReadBytes reads Avro bytes; the result aliases b.
func ReadBytes(b []byte) ([]byte, []byte, error) {
	n, b, err := ReadLong(b)
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

// ReadString reads an Avro string.
func ReadString(b []byte) (string, []byte, error) {
	s, b, err := ReadBytes(b)
	if err != nil {
		return "", nil, fmt.Errorf("cannot decode binary string: %w", err)
	}
	return string(s), b, nil
}

// ReadBool reads an Avro boolean: byte 0 or 1, anything else is an error.
func ReadBool(b []byte) (bool, []byte, error) {
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

// ReadBlockCount reads an array or map block count, skipping the block size
// that follows a negative count.
func ReadBlockCount(b []byte) (int64, []byte, error) {
	n, b, err := ReadLong(b)
	if err != nil {
		return 0, nil, err
	}
	if n < 0 {
		if n == math.MinInt64 {
			return 0, nil, fmt.Errorf("block count: %d", n)
		}
		n = -n
		if _, b, err = ReadLong(b); err != nil {
			return 0, nil, err
		}
	}
	if n > math.MaxInt32 {
		return 0, nil, fmt.Errorf("block count exceeds %d: %d", math.MaxInt32, n)
	}
	return n, b, nil
}

// TimeFromMicros is goavro's native form of a timestamp-micros: a UTC
// time.Time.
func TimeFromMicros(us int64) time.Time {
	s := us / 1e6
	return time.Unix(s, (us-s*1e6)*1e3).UTC()
}

// decimalFromBytes is goavro's native form of a bytes.decimal: the
// big-endian two's complement unscaled value over 10^scale.
func decimalFromBytes(bs []byte, scale int) *big.Rat {
	num := new(big.Int).SetBytes(bs)
	if len(bs) > 0 && bs[0]&0x80 != 0 {
		num.Sub(num, new(big.Int).Lsh(big.NewInt(1), uint(len(bs))*8))
	}
	denom := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(scale)), nil)
	return new(big.Rat).SetFrac(num, denom)
}

// Native decodes one value of n from b, returning it in goavro's native form
// and the bytes after it.
func (n *Node) Native(b []byte) (any, []byte, error) {
	switch n.Kind {
	case KindNull:
		return nil, b, nil
	case KindBoolean:
		return ReadBool(b)
	case KindInt:
		return ReadInt(b)
	case KindLong:
		return ReadLong(b)
	case KindFloat:
		if len(b) < 4 {
			return nil, nil, fmt.Errorf("cannot decode binary float: %w", io.ErrShortBuffer)
		}
		return math.Float32frombits(binary.LittleEndian.Uint32(b)), b[4:], nil
	case KindDouble:
		if len(b) < 8 {
			return nil, nil, fmt.Errorf("cannot decode binary double: %w", io.ErrShortBuffer)
		}
		return math.Float64frombits(binary.LittleEndian.Uint64(b)), b[8:], nil
	case KindBytes:
		return ReadBytes(b)
	case KindString:
		return ReadString(b)
	case KindDate:
		i, b, err := ReadInt(b)
		if err != nil {
			return nil, nil, err
		}
		return DateFromDays(int(i)).UTC(), b, nil
	case KindTimeMillis:
		i, b, err := ReadInt(b)
		if err != nil {
			return nil, nil, err
		}
		return time.Duration(i) * time.Millisecond, b, nil
	case KindTimeMicros:
		i, b, err := ReadLong(b)
		if err != nil {
			return nil, nil, err
		}
		return time.Duration(i) * time.Microsecond, b, nil
	case KindTimestampMillis:
		ms, b, err := ReadLong(b)
		if err != nil {
			return nil, nil, err
		}
		s := ms / 1e3
		return time.Unix(s, (ms-s*1e3)*1e6).UTC(), b, nil
	case KindTimestampMicros:
		us, b, err := ReadLong(b)
		if err != nil {
			return nil, nil, err
		}
		return TimeFromMicros(us), b, nil
	case KindDecimal:
		bs, b, err := ReadBytes(b)
		if err != nil {
			return nil, nil, err
		}
		return decimalFromBytes(bs, n.scale), b, nil
	case KindEnum:
		i, b, err := ReadLong(b)
		if err != nil {
			return nil, nil, fmt.Errorf("cannot decode binary enum %s: %w", n.Name, err)
		}
		if i < 0 || i >= int64(len(n.symbols)) {
			return nil, nil, fmt.Errorf("cannot decode binary enum %s: index %d out of range", n.Name, i)
		}
		return n.symbols[i], b, nil
	case KindFixed:
		if len(b) < n.size {
			return nil, nil, fmt.Errorf("cannot decode binary fixed %s: %w", n.Name, io.ErrShortBuffer)
		}
		return b[:n.size], b[n.size:], nil
	case KindRecord:
		m := make(map[string]any, len(n.Fields))
		for _, f := range n.Fields {
			v, rest, err := f.Node.Native(b)
			if err != nil {
				return nil, nil, fmt.Errorf("cannot decode binary record %q field %q: %w", n.Name, f.Name, err)
			}
			m[f.Name] = v
			b = rest
		}
		return m, b, nil
	case KindUnion:
		i, b, err := ReadLong(b)
		if err != nil {
			return nil, nil, err
		}
		if i < 0 || i >= int64(len(n.Branches)) {
			return nil, nil, fmt.Errorf("cannot decode binary union: index ought to be between 0 and %d; read index: %d", len(n.Branches)-1, i)
		}
		br := n.Branches[i]
		v, b, err := br.Native(b)
		if err != nil {
			return nil, nil, fmt.Errorf("cannot decode binary union item %d: %w", i+1, err)
		}
		if v == nil {
			return nil, b, nil
		}
		return map[string]any{br.Name: v}, b, nil
	case KindArray:
		var out []any
		for {
			cnt, rest, err := ReadBlockCount(b)
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
				v, rest, err := n.Elem.Native(b)
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
	case KindMap:
		out := map[string]any{}
		for {
			cnt, rest, err := ReadBlockCount(b)
			if err != nil {
				return nil, nil, fmt.Errorf("cannot decode binary map: %w", err)
			}
			b = rest
			if cnt == 0 {
				break
			}
			for j := int64(0); j < cnt; j++ {
				k, rest, err := ReadString(b)
				if err != nil {
					return nil, nil, fmt.Errorf("cannot decode binary map key: %w", err)
				}
				v, rest, err := n.Elem.Native(rest)
				if err != nil {
					return nil, nil, fmt.Errorf("cannot decode binary map value for key %q: %w", k, err)
				}
				out[k] = v
				b = rest
			}
		}
		return out, b, nil
	}
	return nil, nil, fmt.Errorf("%w: node kind %d", ErrUnsupported, n.Kind)
}
