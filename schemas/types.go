package schemas

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tributary-cdc/tributary/schemas/internal/avrobin"
	"github.com/tributary-cdc/tributary/schemas/internal/pgtext"
)

// TypeKind classifies a PostgreSQL type as pg_type.typtype / typcategory say.
type TypeKind int

// The kinds of PostgreSQL types MapType distinguishes.
const (
	KindBase   TypeKind = iota // typtype 'b' (not an array): built-in or extension base type
	KindEnum                   // typtype 'e'
	KindDomain                 // typtype 'd'; Base and BaseTypmod describe what it constrains
	KindArray                  // typcategory 'A'; Elem is the element type
	KindOther                  // composite, range, multirange, pseudo-types
)

// String returns the kind's name.
func (k TypeKind) String() string {
	switch k {
	case KindBase:
		return "base"
	case KindEnum:
		return "enum"
	case KindDomain:
		return "domain"
	case KindArray:
		return "array"
	case KindOther:
		return "other"
	}
	return "TypeKind(" + strconv.Itoa(int(k)) + ")"
}

// PGType describes a column's PostgreSQL type as the producer reads it from pg_type.
type PGType struct {
	OID        uint32
	Name       string // pg_type.typname, e.g. "int4", "numeric", "mood", "_int4"
	Kind       TypeKind
	Elem       *PGType // KindArray: element type
	Base       *PGType // KindDomain: base type
	BaseTypmod int32   // KindDomain: typtypmod of the domain
	// Dropped is set on a type no longer in the catalog when the producer
	// read a change that uses it (KindOther, carried as its text form).
	Dropped bool
}

// UnsupportedPolicy says what MapType does with a base type it does not know:
// one that is neither built into PostgreSQL nor one of the extension types
// TYPES.md lists (a user-defined base type, or one of an extension such as
// PostGIS). Every known type has a mapping whatever the policy; types
// without a natural Avro form (money, ranges, composites, hstore, ...) are
// carried as their exact text form.
type UnsupportedPolicy int

// The unsupported-type policies.
const (
	// UnsupportedAsText, the default, carries an unknown type's values as
	// an Avro string holding their PostgreSQL text form, and sets
	// Codec.Fallback.
	UnsupportedAsText UnsupportedPolicy = iota
	// UnsupportedFail makes MapType return an error wrapping
	// ErrUnsupportedType for an unknown type.
	UnsupportedFail
)

// ErrUnsupportedType is wrapped by MapType's error for an unknown type under
// UnsupportedFail. The message names the type and its OID.
var ErrUnsupportedType = errors.New("unsupported PostgreSQL type")

// ErrUnrepresentable is wrapped by a typed conversion's error when a
// well-formed value has no representation in the typed Avro branch that every
// stock Avro reader decodes: NaN in a constrained numeric, a
// multi-dimensional array or one whose lower bound is not 1, a date outside
// the years 1 to 9999 or infinite, 24:00:00, a long (int8, timestamp,
// interval microseconds) beyond ±TypeSafeLong. A Codec with Text carries
// such a value in its text branch instead, so Decode does not return it
// then. It remains an error for text that no Avro string can hold (not
// UTF-8, as a SQL_ASCII database may store, or containing NUL), and for
// Encode of a native value the PostgreSQL type cannot hold.
var ErrUnrepresentable = errors.New("value not representable")

// TypeSafeLong bounds the Avro longs that the typed branches carry:
// JavaScript's avsc (behind kafkajs's schema registry client) refuses to
// decode a long beyond ±9007199254740990 ("potential precision loss"), so
// larger int8 values, timestamps more than about 285 years from 1970 and
// intervals with more than 2^53-2 microseconds travel in the text branch.
const TypeSafeLong = 9007199254740990

// TypeTextBranch is goavro's union branch name of the text branch, and the
// Avro type of a value that travels there.
const TypeTextBranch = "string"

// AttrText marks the text branch of a field's union: a string holding the
// value's exact PostgreSQL text form (TYPES.md).
const AttrText = "tributary.text"

// TypeTextAvro returns a fresh Avro schema of the text branch.
func TypeTextAvro() map[string]any { return map[string]any{"type": "string", AttrText: true} }

// Codec converts one PostgreSQL type between its text form and its Avro form.
//
// Decode and Encode are safe for concurrent use and keep no state between
// calls.
type Codec struct {
	// Avro is the Avro schema of a non-null value: a primitive name such as
	// "long", or a map[string]any (with logicalType and so on) that
	// encoding/json marshals. The caller wraps it in ["null", Avro]. Each
	// MapType call returns a fresh value that the caller may modify. Named
	// types (tributary.Interval) are fully defined every time; pass the
	// whole record schema through AvroNamedTypesOnce before using it.
	Avro any
	// Decode converts PostgreSQL's text output (as pgoutput and COPY TO
	// text send it, under the session settings in TYPES.md) to the native
	// value that goavro's BinaryFromNative accepts for Avro. It does not
	// retain text. Errors wrap ErrUnrepresentable for valid values that Avro
	// cannot carry; anything else is malformed input.
	Decode func(text []byte) (any, error)
	// Encode converts the native value goavro's NativeFromBinary returns
	// for Avro (it also accepts what Decode returns) to a PostgreSQL text
	// input literal L such that '<L>'::type yields the same value.
	Encode func(native any) (string, error)
	// Text is true when the column's union has a third branch after Avro,
	// TypeTextAvro: a string holding the value's exact PostgreSQL text form,
	// for the well-formed values the typed branch cannot carry for a stock
	// reader (ErrUnrepresentable). Decode then returns that text as a Go
	// string, and Encode accepts a string as the text form. No codec with
	// Text has a typed native that is a string, so a string always means the
	// text branch. Text is set for int8, numeric(p,s), date, time,
	// timestamp, timestamptz, interval and every typed array.
	Text bool
	// Fallback is true when the type is unknown (UnsupportedPolicy) and
	// carried as its text form because of UnsupportedAsText.
	Fallback bool
	// appendText, when set, appends the Avro binary of the typed branch
	// straight from the text, with typed's errors (see encoder.go).
	appendText encodeAppendFunc
	// typed is Decode without the text branch: it fails with
	// ErrUnrepresentable where Decode returns the text. Nil without Text.
	typed func(text []byte) (any, error)
	// asText marks the exact-text mapping of a type without a natural Avro
	// form; an array of such a type is carried whole as its text too.
	asText bool
	// reader, with Text, converts a text-branch value to the native that
	// goavro's NativeFromBinary returns for the typed branch, when that
	// native can hold it (see ReaderValue).
	reader func(text []byte) (any, bool)
}

// ReaderValue returns the value Tributary's readers hand to sinks and
// transforms for v, a non-null value decoded from a column of this codec
// (goavro's native of the typed branch, or the string of the text branch):
// v itself, except that a text-branch string becomes the native the typed
// branch decodes to wherever that native holds the value, in the forms
// contract v1 used before the text branch: infinite dates and timestamps
// as the extreme values (MaxInt32 days, MaxInt64 µs), 24:00:00 as 24 hours,
// BC and distant years and int8 or interval microseconds beyond
// TypeSafeLong as they are. What no native holds stays text: NaN in
// numeric(p,s), and arrays that are not one-dimensional with lower bound 1
// (or hold such an element). Encode takes both forms.
func (c Codec) ReaderValue(v any) any {
	if s, ok := v.(string); ok && c.reader != nil {
		if n, ok := c.reader([]byte(s)); ok {
			return n
		}
	}
	return v
}

// Field returns a fresh Avro schema of the nullable field of a column of
// this codec in the row records: ["null", Avro] or ["null", Avro,
// TypeTextAvro()].
func (c Codec) Field() []any {
	return c.KeyField(true).([]any)
}

// KeyField returns a fresh Avro schema of the column's field in the key
// record: Avro alone, or a union of Avro with "null" first when nullable
// (a REPLICA IDENTITY FULL key column without NOT NULL) and the text branch
// last when Text.
func (c Codec) KeyField(nullable bool) any {
	if !nullable && !c.Text {
		return deepCopy(c.Avro)
	}
	u := make([]any, 0, 3)
	if nullable {
		u = append(u, "null")
	}
	u = append(u, deepCopy(c.Avro))
	if c.Text {
		u = append(u, TypeTextAvro())
	}
	return u
}

// Branch returns goavro's union branch name for a non-null value native
// that Decode returned: TypeTextBranch for the text form, else the typed
// branch's name (TypeUnionBranch(c.Avro)).
func (c Codec) Branch(native any) string {
	if c.Text {
		if _, ok := native.(string); ok {
			return TypeTextBranch
		}
	}
	return TypeUnionBranch(c.Avro)
}

// typeWithText adds the text branch to c: a value that c's Decode rejects
// with ErrUnrepresentable is returned as its text, and Encode takes a
// string as the literal itself.
func typeWithText(c Codec) Codec {
	typed, enc := c.Decode, c.Encode
	c.Text, c.typed = true, typed
	c.Decode = func(text []byte) (any, error) {
		v, err := typed(text)
		if err == nil || !errors.Is(err, ErrUnrepresentable) {
			return v, err
		}
		if terr := typeTextCheck(text); terr != nil {
			return nil, fmt.Errorf("%w (and %w)", err, terr)
		}
		return string(text), nil
	}
	c.Encode = func(native any) (string, error) {
		if s, ok := native.(string); ok {
			if strings.IndexByte(s, 0) >= 0 {
				return "", typeBadText("text form", []byte(s), fmt.Errorf("%w: contains NUL", ErrUnrepresentable))
			}
			return s, nil
		}
		return enc(native)
	}
	return c
}

// typeTextCheck reports why text cannot be an Avro string: not UTF-8, or
// containing NUL.
func typeTextCheck(text []byte) error {
	if !utf8.Valid(text) {
		return typeBadText("text form", text, fmt.Errorf("%w: not UTF-8", ErrUnrepresentable))
	}
	if bytes.IndexByte(text, 0) >= 0 {
		return typeBadText("text form", text, fmt.Errorf("%w: contains NUL", ErrUnrepresentable))
	}
	return nil
}

// typeNumericScale decodes numeric's typmod into precision and scale. Scale is
// an 11-bit two's-complement field since PostgreSQL 15 (negative scales).
func typeNumericScale(typmod int32) (precision, scale int) {
	t := typmod - 4 // VARHDRSZ
	precision = int((t >> 16) & 0xffff)
	scale = int(((t & 0x7ff) ^ 1024) - 1024)
	return precision, scale
}

// MapType returns the Codec of a column of type t with type modifier typmod
// (pg_attribute.atttypmod, -1 when none). The mapping is documented in
// TYPES.md: built-in types with a natural Avro form are typed, the other
// known types are carried as their exact text form, and an
// unknown base type follows policy: an error wrapping ErrUnsupportedType
// under UnsupportedFail, a text-carrying Codec with Fallback set under
// UnsupportedAsText. MapType is not on the hot path; it allocates a fresh
// Codec.Avro on every call.
func MapType(t PGType, typmod int32, policy UnsupportedPolicy) (Codec, error) {
	c, err := typeMap(t, typmod, 0)
	if err != nil && errors.Is(err, ErrUnsupportedType) && policy == UnsupportedAsText {
		c = typeAsText(t.Name)
		c.Fallback = true
		return c, nil
	}
	return c, err
}

func typeUnsupported(t PGType, why string) error {
	return fmt.Errorf("%w: %s (oid %d)%s", ErrUnsupportedType, t.Name, t.OID, why)
}

// typeFirstUserOID is PostgreSQL's FirstNormalObjectId: every built-in type
// has a lower OID, every type created by CREATE TYPE or CREATE EXTENSION a
// higher one.
const typeFirstUserOID = 16384

// typeKnownExtensions are the extension types (by pg_type.typname, since
// their OIDs differ per database) that TYPES.md documents as text.
var typeKnownExtensions = map[string]bool{
	"hstore": true, "citext": true, "ltree": true, "lquery": true, "ltxtquery": true, "cube": true,
	"ean13": true, "isbn": true, "isbn13": true, "ismn": true, "ismn13": true, "issn": true, "issn13": true, "upc": true,
}

func typeMap(t PGType, typmod int32, depth int) (Codec, error) {
	if depth > 16 {
		return Codec{}, typeUnsupported(t, ": domain or array nesting deeper than 16")
	}
	switch t.Kind {
	case KindEnum:
		return typeStringCodec(t.Name, map[string]any{"type": "string", "tributary.enum": true}, nil), nil
	case KindDomain:
		if t.Base == nil {
			return Codec{}, typeUnsupported(t, ": domain without base type")
		}
		c, err := typeMap(*t.Base, t.BaseTypmod, depth+1)
		if err != nil {
			return Codec{}, fmt.Errorf("%w (base type of domain %s, oid %d)", err, t.Name, t.OID)
		}
		return c, nil
	case KindArray:
		if t.Elem == nil {
			return Codec{}, typeUnsupported(t, ": array without element type")
		}
		ec, err := typeMap(*t.Elem, typmod, depth+1)
		if err != nil {
			return Codec{}, fmt.Errorf("%w (element type of %s, oid %d)", err, t.Name, t.OID)
		}
		if ec.asText {
			// The whole array literal, as its elements have no typed form.
			return typeAsText(t.Name), nil
		}
		if m, ok := ec.Avro.(map[string]any); ok && m["type"] == "array" {
			// An array of an array-valued domain: PostgreSQL has no arrays
			// of arrays, only multi-dimensional ones.
			return typeAsText(t.Name), nil
		}
		c := typeWithText(typeArrayCodec(t.Name, ec))
		c.reader = typeArrayReader(ec)
		return c, nil
	case KindBase:
	default:
		// Composite, range and multirange types.
		return typeAsText(t.Name), nil
	}
	switch t.OID {
	case pgtype.BoolOID:
		return typeBoolCodec(), nil
	case pgtype.Int2OID:
		return typeIntCodec("int2", math.MinInt16, math.MaxInt16), nil
	case pgtype.Int4OID:
		return typeIntCodec("int4", math.MinInt32, math.MaxInt32), nil
	case pgtype.Int8OID:
		c := typeWithText(typeLongCodec("int8", math.MinInt64, math.MaxInt64, TypeSafeLong))
		c.reader = func(text []byte) (any, bool) {
			n, ok := pgtext.ParseInt(text, math.MinInt64, math.MaxInt64)
			return n, ok
		}
		return c, nil
	case pgtype.OIDOID:
		return typeLongCodec("oid", 0, math.MaxUint32, math.MaxUint32), nil
	case pgtype.Float4OID:
		return typeFloatCodec(32), nil
	case pgtype.Float8OID:
		return typeFloatCodec(64), nil
	case pgtype.NumericOID:
		if typmod < 0 {
			return typeNumericTextCodec(), nil
		}
		c, err := typeDecimalCodec(typmod)
		if err != nil {
			return c, err
		}
		return typeWithText(c), nil
	case pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.QCharOID, pgtype.NameOID,
		pgtype.TimetzOID, pgtype.InetOID, pgtype.CIDROID, pgtype.MacaddrOID, pgtype.Macaddr8OID:
		return typeTextCodec(t.Name, false), nil
	case pgtype.JSONOID, pgtype.JSONBOID:
		return typeStringCodec(t.Name, map[string]any{"type": "string", "tributary.json": true}, nil), nil
	case pgtype.UUIDOID:
		return typeStringCodec("uuid", map[string]any{"type": "string", "logicalType": "uuid"}, pgtext.ValidUUID), nil
	case pgtype.ByteaOID:
		return typeByteaCodec(), nil
	case pgtype.DateOID:
		c := typeWithText(typeDateCodec())
		c.reader = func(text []byte) (any, bool) {
			d, ok := pgtext.ParseDate(text)
			return avrobin.DateFromDays(int(d)), ok
		}
		return c, nil
	case pgtype.TimeOID:
		c := typeWithText(typeTimeCodec())
		c.reader = func(text []byte) (any, bool) {
			us, ok := pgtext.ParseTime(text)
			return time.Duration(us) * time.Microsecond, ok
		}
		return c, nil
	case pgtype.TimestampOID:
		c := typeWithText(typeTimestampCodec(false))
		c.reader = func(text []byte) (any, bool) {
			us, err := pgtext.ParseTimestamp(text, false)
			return us, err == nil
		}
		return c, nil
	case pgtype.TimestamptzOID:
		c := typeWithText(typeTimestampCodec(true))
		c.reader = func(text []byte) (any, bool) {
			us, err := pgtext.ParseTimestamp(text, true)
			return avrobin.TimeFromMicros(us), err == nil
		}
		return c, nil
	case pgtype.IntervalOID:
		c := typeWithText(typeIntervalCodec())
		c.reader = func(text []byte) (any, bool) {
			v, ok := pgtext.ParseInterval(text)
			return map[string]any{"months": v.Months, "days": v.Days, "micros": v.Micros}, ok
		}
		return c, nil
	}
	if t.OID < typeFirstUserOID || typeKnownExtensions[t.Name] {
		return typeAsText(t.Name), nil
	}
	return Codec{}, typeUnsupported(t, "")
}

// typeAsText is the mapping of a known type without a natural Avro form: an
// Avro string holding its exact text form.
func typeAsText(name string) Codec {
	c := typeTextCodec(name, false)
	c.asText = true
	return c
}

// typeBadText is the error for text that Decode cannot parse.
func typeBadText(typ string, text []byte, cause error) error {
	const max = 64
	s := string(text)
	if len(s) > max {
		s = s[:max] + "..."
	}
	return fmt.Errorf("%s: %w: %q", typ, cause, s)
}

// typeBadNative is the error for a native value Encode cannot convert.
func typeBadNative(typ string, native any) error {
	return fmt.Errorf("%s: cannot encode Go %T", typ, native)
}

func typeBoolCodec() Codec {
	parse := func(text []byte) (bool, error) {
		switch string(text) {
		case "t", "true":
			return true, nil
		case "f", "false":
			return false, nil
		}
		return false, typeBadText("bool", text, pgtext.ErrSyntax)
	}
	return Codec{
		Avro: "boolean",
		Decode: func(text []byte) (any, error) {
			b, err := parse(text)
			if err != nil {
				return nil, err
			}
			return b, nil
		},
		appendText: func(dst, text []byte) ([]byte, error) {
			b, err := parse(text)
			return avrobin.AppendBool(dst, b), err
		},
		Encode: func(native any) (string, error) {
			b, ok := native.(bool)
			if !ok {
				return "", typeBadNative("bool", native)
			}
			if b {
				return "t", nil
			}
			return "f", nil
		},
	}
}

// typeNativeInt converts any Go integer goavro may hand back to int64.
func typeNativeInt(native any) (int64, bool) {
	switch v := native.(type) {
	case int32:
		return int64(v), true
	case int64:
		return v, true
	case int:
		return int64(v), true
	case int16:
		return int64(v), true
	case int8:
		return int64(v), true
	case uint32:
		return int64(v), true
	case uint16:
		return int64(v), true
	case uint8:
		return int64(v), true
	}
	return 0, false
}

func typeIntEncoder(typ string, lo, hi int64) func(any) (string, error) {
	return func(native any) (string, error) {
		n, ok := typeNativeInt(native)
		if !ok {
			return "", typeBadNative(typ, native)
		}
		if n < lo || n > hi {
			return "", fmt.Errorf("%s: %w: %d out of range", typ, ErrUnrepresentable, n)
		}
		return strconv.FormatInt(n, 10), nil
	}
}

// typeIntAppender appends an int or long parsed from text within [lo, hi].
func typeIntAppender(typ string, lo, hi int64) encodeAppendFunc {
	return func(dst, text []byte) ([]byte, error) {
		n, ok := pgtext.ParseInt(text, lo, hi)
		if !ok {
			return dst, typeBadText(typ, text, pgtext.ErrSyntax)
		}
		return avrobin.AppendLong(dst, n), nil
	}
}

// typeIntCodec maps int2 and int4 to Avro int (goavro native int32).
func typeIntCodec(typ string, lo, hi int64) Codec {
	return Codec{
		Avro: "int",
		Decode: func(text []byte) (any, error) {
			n, ok := pgtext.ParseInt(text, lo, hi)
			if !ok {
				return nil, typeBadText(typ, text, pgtext.ErrSyntax)
			}
			return int32(n), nil
		},
		Encode:     typeIntEncoder(typ, lo, hi),
		appendText: typeIntAppender(typ, lo, hi),
	}
}

// typeLongCodec maps int8 and oid to Avro long (goavro native int64). Text
// in [lo, hi] is well-formed; a value beyond ±safe is ErrUnrepresentable
// for the typed branch.
func typeLongCodec(typ string, lo, hi, safe int64) Codec {
	parse := func(text []byte) (int64, error) {
		n, ok := pgtext.ParseInt(text, lo, hi)
		if !ok {
			return 0, typeBadText(typ, text, pgtext.ErrSyntax)
		}
		if n > safe || n < -safe {
			return 0, typeBadText(typ, text, typeErrUnsafeLong)
		}
		return n, nil
	}
	return longCodec("long", parse, typeIntEncoder(typ, lo, hi))
}

// longCodec is a codec whose Avro value is an int or a long that parse
// reads from PostgreSQL's text.
func longCodec[T int32 | int64](avro any, parse func(text []byte) (T, error), encode func(native any) (string, error)) Codec {
	return Codec{
		Avro: avro,
		Decode: func(text []byte) (any, error) {
			n, err := parse(text)
			if err != nil {
				return nil, err
			}
			return n, nil
		},
		appendText: func(dst, text []byte) ([]byte, error) {
			n, err := parse(text)
			if err != nil {
				return dst, err
			}
			return avrobin.AppendLong(dst, int64(n)), nil
		},
		Encode: encode,
	}
}

// typeErrUnsafeLong is the cause for a long that a stock JavaScript reader
// cannot decode exactly.
var typeErrUnsafeLong = fmt.Errorf("%w: beyond ±%d, which JavaScript readers cannot decode exactly", ErrUnrepresentable, int64(TypeSafeLong))

// typeFloatCodec maps float4 to Avro float (float32) and float8 to Avro double
// (float64). NaN and the infinities are ordinary IEEE values on both sides.
func typeFloatCodec(bits int) Codec {
	typ, avro := "float8", "double"
	if bits == 32 {
		typ, avro = "float4", "float"
	}
	return Codec{
		Avro: avro,
		Decode: func(text []byte) (any, error) {
			// strconv also accepts "inf", "0x1p3" and "1_0"; PostgreSQL
			// prints none of those, and only Infinity/NaN are spelled out.
			if len(text) == 0 || !typeFloatChars(text) {
				return nil, typeBadText(typ, text, pgtext.ErrSyntax)
			}
			f, err := strconv.ParseFloat(string(text), bits)
			if err != nil {
				return nil, typeBadText(typ, text, pgtext.ErrSyntax)
			}
			if bits == 32 {
				return float32(f), nil
			}
			return f, nil
		},
		Encode: func(native any) (string, error) {
			var f float64
			switch v := native.(type) {
			case float32:
				f = float64(v)
			case float64:
				if bits == 32 && !math.IsNaN(v) && !math.IsInf(v, 0) && float64(float32(v)) != v {
					return "", fmt.Errorf("%s: %w: %v is not a float32", typ, ErrUnrepresentable, v)
				}
				f = v
			default:
				return "", typeBadNative(typ, native)
			}
			switch {
			case math.IsNaN(f):
				return "NaN", nil
			case math.IsInf(f, 1):
				return "Infinity", nil
			case math.IsInf(f, -1):
				return "-Infinity", nil
			}
			return typeFormatFloat(f, bits), nil
		},
	}
}

// typeFormatFloat prints f as float4out/float8out do with
// extra_float_digits > 0: the shortest digits that read back exactly, in
// fixed notation when the decimal exponent is in [-4, 6) for float4 and
// [-4, 15) for float8, else as d.ddde+XX.
func typeFormatFloat(f float64, bits int) string {
	var buf [32]byte
	e := strconv.AppendFloat(buf[:0], f, 'e', -1, bits)
	k := len(e) - 1
	for e[k] != 'e' {
		k--
	}
	exp, _ := strconv.Atoi(string(e[k+1:]))
	limit := 15
	if bits == 32 {
		limit = 6
	}
	if exp >= -4 && exp < limit {
		return strconv.FormatFloat(f, 'f', -1, bits)
	}
	return string(e)
}

// typeFloatChars accepts float8out's spellings: NaN, Infinity, -Infinity and
// decimal numbers with an optional exponent.
func typeFloatChars(b []byte) bool {
	switch string(b) {
	case "NaN", "Infinity", "-Infinity":
		return true
	}
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c == '.' || c == 'e' || c == '-' || c == '+') {
			return false
		}
	}
	return true
}

// typeNumericTextCodec maps unconstrained numeric to an Avro string holding
// numeric_out's exact text, including NaN, Infinity and -Infinity.
func typeNumericTextCodec() Codec {
	return Codec{
		Avro: map[string]any{"type": "string", "tributary.numeric": true},
		Decode: func(text []byte) (any, error) {
			if !pgtext.ValidNumeric(string(text)) {
				return nil, typeBadText("numeric", text, pgtext.ErrSyntax)
			}
			return string(text), nil
		},
		Encode: func(native any) (string, error) {
			s, ok := native.(string)
			if !ok {
				return "", typeBadNative("numeric", native)
			}
			if !pgtext.ValidNumeric(s) {
				return "", typeBadText("numeric", []byte(s), pgtext.ErrSyntax)
			}
			return s, nil
		},
	}
}

// typeDecimalCodec maps numeric(p,s) to Avro bytes/decimal (goavro native
// *big.Rat). Avro requires 0 <= scale <= precision, PostgreSQL 15 allows
// -1000 <= s <= 1000 independently of p: a negative s becomes
// decimal(p-s, 0) and s > p becomes decimal(s, s); both hold every value the
// column can.
func typeDecimalCodec(typmod int32) (Codec, error) {
	p, s := typeNumericScale(typmod)
	if p < 1 || p > 1000 || s < -1000 || s > 1000 {
		return Codec{}, fmt.Errorf("%w: numeric with invalid typmod %d", ErrUnsupportedType, typmod)
	}
	ap, as := p, s
	if s < 0 {
		ap, as = p-s, 0
	} else if s > p {
		ap = s
	}
	denom := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(as)), nil)
	var denom64 int64
	if as <= 18 {
		denom64 = denom.Int64()
	}
	typ := "numeric(" + strconv.Itoa(p) + "," + strconv.Itoa(s) + ")"
	return Codec{
		Avro: map[string]any{"type": "bytes", "logicalType": "decimal", "precision": ap, "scale": as},
		Decode: func(text []byte) (any, error) {
			switch string(text) {
			case "NaN", "Infinity", "-Infinity":
				return nil, fmt.Errorf("%s: %w: %s cannot be an Avro decimal", typ, ErrUnrepresentable, text)
			}
			neg, ip, fp, ok := pgtext.SplitNumeric(text)
			if !ok {
				return nil, typeBadText(typ, text, pgtext.ErrSyntax)
			}
			if len(fp) > as {
				return nil, typeBadText(typ, text, errors.New("more fraction digits than the scale"))
			}
			for len(ip) > 1 && ip[0] == '0' {
				ip = ip[1:]
			}
			if ip[0] == '0' {
				ip = ip[:0]
			}
			if len(ip)+as > ap {
				return nil, typeBadText(typ, text, errors.New("more digits than the precision"))
			}
			r := new(big.Rat)
			if len(ip)+as <= 18 {
				var n int64
				for _, c := range ip {
					n = n*10 + int64(c-'0')
				}
				for _, c := range fp {
					n = n*10 + int64(c-'0')
				}
				for k := len(fp); k < as; k++ {
					n *= 10
				}
				if neg {
					n = -n
				}
				return r.SetFrac64(n, denom64), nil
			}
			digits := make([]byte, 0, 1+len(ip)+as)
			if neg {
				digits = append(digits, '-')
			}
			digits = append(digits, ip...)
			digits = append(digits, fp...)
			for k := len(fp); k < as; k++ {
				digits = append(digits, '0')
			}
			num, ok := new(big.Int).SetString(string(digits), 10)
			if !ok {
				return nil, typeBadText(typ, text, pgtext.ErrSyntax)
			}
			return r.SetFrac(num, denom), nil
		},
		Encode: func(native any) (string, error) {
			var r *big.Rat
			switch v := native.(type) {
			case *big.Rat:
				r = v
			case big.Rat:
				r = &v
			}
			if r == nil {
				return "", typeBadNative(typ, native)
			}
			return r.FloatString(as), nil
		},
	}, nil
}

// typeTextCodec carries the text form as an Avro string: text, varchar,
// bpchar (with its padding), "char", name, timetz, inet, cidr, macaddr,
// macaddr8, and (through typeAsText) the types without a natural Avro form.
func typeTextCodec(name string, fallback bool) Codec {
	c := typeStringCodec(name, "string", nil)
	c.Fallback = fallback
	return c
}

// typeStringCodec maps a type whose text form is carried as an Avro string.
// valid, if not nil, checks the text's syntax. Text must be valid UTF-8 (Avro
// strings are UTF-8); Encode rejects NUL, which no PostgreSQL text can hold.
func typeStringCodec(name string, avro any, valid func([]byte) bool) Codec {
	check := func(text []byte) error {
		if valid != nil && !valid(text) {
			return typeBadText(name, text, pgtext.ErrSyntax)
		}
		if !utf8.Valid(text) {
			return typeBadText(name, text, fmt.Errorf("%w: not UTF-8", ErrUnrepresentable))
		}
		if bytes.IndexByte(text, 0) >= 0 {
			return typeBadText(name, text, fmt.Errorf("%w: contains NUL", ErrUnrepresentable))
		}
		return nil
	}
	return Codec{
		Avro: avro,
		Decode: func(text []byte) (any, error) {
			if err := check(text); err != nil {
				return nil, err
			}
			return string(text), nil
		},
		appendText: func(dst, text []byte) ([]byte, error) {
			if err := check(text); err != nil {
				return dst, err
			}
			return avrobin.AppendBytes(dst, text), nil
		},
		Encode: func(native any) (string, error) {
			s, ok := native.(string)
			if !ok {
				return "", typeBadNative(name, native)
			}
			if strings.IndexByte(s, 0) >= 0 {
				return "", typeBadText(name, []byte(s), fmt.Errorf("%w: contains NUL", ErrUnrepresentable))
			}
			if valid != nil && !valid([]byte(s)) {
				return "", typeBadText(name, []byte(s), pgtext.ErrSyntax)
			}
			return s, nil
		},
	}
}

// typeByteaCodec maps bytea to Avro bytes; the text is byteaout's hex form.
func typeByteaCodec() Codec {
	return Codec{
		Avro: "bytes",
		Decode: func(text []byte) (any, error) {
			b, ok := pgtext.ParseByteaHex(text)
			if !ok {
				return nil, typeBadText("bytea", text, pgtext.ErrSyntax)
			}
			return b, nil
		},
		Encode: func(native any) (string, error) {
			var b []byte
			switch v := native.(type) {
			case []byte:
				b = v
			case string:
				b = []byte(v)
			default:
				return "", typeBadNative("bytea", native)
			}
			return string(pgtext.AppendByteaHex(make([]byte, 0, 2+2*len(b)), b)), nil
		},
	}
}

// typeEpoch is 1970-01-01 00:00:00 UTC.
var typeEpoch = time.Unix(0, 0).UTC()

// The dates the typed branch carries: the years 1 to 9999, which Python's
// datetime.date (fastavro) can hold. Infinities, BC dates and later years
// travel in the text branch.
const (
	typeMinSafeDate = -719162 // 0001-01-01
	typeMaxSafeDate = 2932896 // 9999-12-31
)

// typeDateCodec maps date to Avro int/date, days since 1970-01-01, for the
// years 1 to 9999 (others are ErrUnrepresentable). goavro decodes it to a
// time.Time at UTC midnight. Encode also takes math.MaxInt32 and
// math.MinInt32 as infinity and -infinity, as event contract v1 wrote them
// before the text branch.
func typeDateCodec() Codec {
	parse := func(text []byte) (int32, error) {
		d, ok := pgtext.ParseDate(text)
		if !ok {
			return 0, typeBadText("date", text, pgtext.ErrSyntax)
		}
		if d < typeMinSafeDate || d > typeMaxSafeDate {
			return 0, typeBadText("date", text, fmt.Errorf("%w: outside the years 1 to 9999", ErrUnrepresentable))
		}
		return d, nil
	}
	return longCodec(map[string]any{"type": "int", "logicalType": "date"}, parse, func(native any) (string, error) {
		var days int64
		switch v := native.(type) {
		case time.Time:
			days = pgtext.FloorDiv(v.Unix(), 86400)
		default:
			n, ok := typeNativeInt(native)
			if !ok {
				return "", typeBadNative("date", native)
			}
			days = n
		}
		var buf [24]byte
		out, ok := pgtext.AppendDate(buf[:0], days)
		if !ok {
			return "", fmt.Errorf("date: %w: %d days since 1970-01-01 is out of range", ErrUnrepresentable, days)
		}
		return string(out), nil
	})
}

// typeTimeCodec maps time to Avro long/time-micros (microseconds since
// midnight); goavro decodes it to a time.Duration. 24:00:00, which stock
// readers refuse (Python's datetime.time), is ErrUnrepresentable; Encode
// still takes 86400000000 µs as 24:00:00, as contract v1 wrote it.
func typeTimeCodec() Codec {
	parse := func(text []byte) (int64, error) {
		us, ok := pgtext.ParseTime(text)
		if !ok {
			return 0, typeBadText("time", text, pgtext.ErrSyntax)
		}
		if us >= pgtext.UsecPerDay {
			return 0, typeBadText("time", text, fmt.Errorf("%w: 24:00:00 is not a time of day for stock readers", ErrUnrepresentable))
		}
		return us, nil
	}
	return longCodec(map[string]any{"type": "long", "logicalType": "time-micros"}, parse, func(native any) (string, error) {
		var us int64
		switch v := native.(type) {
		case time.Duration:
			if v%time.Microsecond != 0 {
				return "", fmt.Errorf("time: %w: %v is not whole microseconds", ErrUnrepresentable, v)
			}
			us = int64(v / time.Microsecond)
		default:
			n, ok := typeNativeInt(native)
			if !ok {
				return "", typeBadNative("time", native)
			}
			us = n
		}
		var buf [24]byte
		out, ok := pgtext.AppendTime(buf[:0], us)
		if !ok {
			return "", fmt.Errorf("time: %w: %d microseconds is out of range", ErrUnrepresentable, us)
		}
		return string(out), nil
	})
}

// typeTimestampCodec maps timestamptz to Avro long/timestamp-micros and
// timestamp to long/local-timestamp-micros, microseconds since 1970-01-01
// (UTC, or of the wall clock), within ±TypeSafeLong (about 1684 to 2255);
// infinities and other values are ErrUnrepresentable. goavro decodes
// timestamp-micros to a UTC time.Time and does not know
// local-timestamp-micros, which stays an int64. Encode also takes
// math.MaxInt64 and math.MinInt64 as infinity and -infinity, as contract v1
// wrote them.
func typeTimestampCodec(withTZ bool) Codec {
	typ, lt := "timestamp", "local-timestamp-micros"
	if withTZ {
		typ, lt = "timestamptz", "timestamp-micros"
	}
	parse := func(text []byte) (int64, error) {
		us, err := pgtext.ParseTimestamp(text, withTZ)
		if errors.Is(err, pgtext.ErrTimestampRange) {
			// A valid PostgreSQL timestamp that int64 microseconds cannot hold.
			err = fmt.Errorf("%w: %w", ErrUnrepresentable, err)
		}
		if err != nil {
			return 0, typeBadText(typ, text, err)
		}
		if us > TypeSafeLong || us < -TypeSafeLong {
			return 0, typeBadText(typ, text, typeErrUnsafeLong)
		}
		return us, nil
	}
	return longCodec(map[string]any{"type": "long", "logicalType": lt}, parse, func(native any) (string, error) {
		var us int64
		switch v := native.(type) {
		case time.Time:
			// goavro's own inverse, wrapping arithmetic included: it
			// maps math.MinInt64 and math.MaxInt64 back exactly.
			us = v.Unix()*1e6 + int64(v.Nanosecond()/1e3)
			if v.Nanosecond()%1e3 != 0 {
				return "", fmt.Errorf("%s: %w: %v is not whole microseconds", typ, ErrUnrepresentable, v)
			}
		default:
			n, ok := typeNativeInt(native)
			if !ok {
				return "", typeBadNative(typ, native)
			}
			us = n
		}
		var buf [40]byte
		out, ok := pgtext.AppendTimestamp(buf[:0], us, withTZ)
		if !ok {
			return "", fmt.Errorf("%s: %w: %d microseconds since 1970 is out of range", typ, ErrUnrepresentable, us)
		}
		return string(out), nil
	})
}

// TypeIntervalRecordName is the full name of the Avro record interval maps to.
const TypeIntervalRecordName = "tributary.Interval"

// typeIntervalCodec maps interval to the record tributary.Interval {months
// int, days int, micros long}, PostgreSQL's own three independent fields.
// goavro decodes it to a map[string]any with int32, int32, int64. Micros
// beyond ±TypeSafeLong (PostgreSQL 17's infinities among them) are
// ErrUnrepresentable.
func typeIntervalCodec() Codec {
	return Codec{
		Avro: map[string]any{
			"type": "record",
			"name": TypeIntervalRecordName,
			"doc":  "PostgreSQL interval: months, days and microseconds, each signed and independent",
			"fields": []any{
				map[string]any{"name": "months", "type": "int"},
				map[string]any{"name": "days", "type": "int"},
				map[string]any{"name": "micros", "type": "long"},
			},
		},
		Decode: func(text []byte) (any, error) {
			v, ok := pgtext.ParseInterval(text)
			if !ok {
				return nil, typeBadText("interval", text, pgtext.ErrSyntax)
			}
			if v.Micros > TypeSafeLong || v.Micros < -TypeSafeLong {
				return nil, typeBadText("interval", text, typeErrUnsafeLong)
			}
			return map[string]any{"months": v.Months, "days": v.Days, "micros": v.Micros}, nil
		},
		Encode: func(native any) (string, error) {
			m, ok := native.(map[string]any)
			if !ok {
				return "", typeBadNative("interval", native)
			}
			mo, ok1 := typeNativeInt(m["months"])
			d, ok2 := typeNativeInt(m["days"])
			us, ok3 := typeNativeInt(m["micros"])
			if !ok1 || !ok2 || !ok3 || mo != int64(int32(mo)) || d != int64(int32(d)) {
				return "", fmt.Errorf("interval: cannot encode %v", native)
			}
			var buf [64]byte
			return string(pgtext.AppendInterval(buf[:0], pgtext.Interval{Months: int32(mo), Days: int32(d), Micros: us})), nil
		},
	}
}

// TypeUnionBranch returns the name goavro uses for a union member of schema
// avro: the key of the single-entry map goavro.Union builds and
// NativeFromBinary returns. It is goavro-specific: logical types goavro
// implements are named "<type>.<logicalType>" (e.g. "long.timestamp-micros",
// "bytes.decimal"), named types by their full name, others by their type.
func TypeUnionBranch(avro any) string {
	switch v := avro.(type) {
	case string:
		return v
	case map[string]any:
		t, _ := v["type"].(string)
		switch t {
		case "record", "enum", "fixed":
			return typeFullName(v, "")
		}
		lt, _ := v["logicalType"].(string)
		switch t + "." + lt {
		case "long.timestamp-millis", "long.timestamp-micros", "int.time-millis",
			"long.time-micros", "int.date", "bytes.decimal":
			return t + "." + lt
		}
		return t
	}
	return ""
}

// typeArrayCodec maps a one-dimensional array to {"type":"array","items":
// ["null", elem]}. Decode returns []any whose entries are nil or the
// goavro union value map[string]any{branch: element}.
func typeArrayCodec(name string, ec Codec) Codec {
	branch := TypeUnionBranch(ec.Avro)
	decodeElem := ec.Decode
	if ec.typed != nil {
		// An element the typed branch cannot carry makes the whole array
		// ErrUnrepresentable: it travels in the array's text branch.
		decodeElem = ec.typed
	}
	const delim = ',' // every mapped element type; only box uses ';'
	return Codec{
		Avro: map[string]any{"type": "array", "items": []any{"null", ec.Avro}},
		Decode: func(text []byte) (any, error) {
			n := 0
			for _, c := range text {
				if c == delim {
					n++
				}
			}
			out := make([]any, 0, n+1)
			var scratchArr [64]byte
			_, err := pgtext.ParseArray(text, delim, scratchArr[:0], func(elem []byte, null bool) error {
				if null {
					out = append(out, nil)
					return nil
				}
				v, err := decodeElem(elem)
				if err != nil {
					return err
				}
				out = append(out, map[string]any{branch: v})
				return nil
			})
			if err != nil {
				if errors.Is(err, pgtext.ErrArrayShape) {
					return nil, typeBadText(name, text, fmt.Errorf("%w: %w", ErrUnrepresentable, err))
				}
				if errors.Is(err, pgtext.ErrSyntax) {
					return nil, typeBadText(name, text, err)
				}
				return nil, fmt.Errorf("%s element: %w", name, err)
			}
			return out, nil
		},
		Encode: func(native any) (string, error) {
			arr, ok := native.([]any)
			if !ok {
				return "", typeBadNative(name, native)
			}
			buf := make([]byte, 0, 2+8*len(arr))
			buf = append(buf, '{')
			for i, e := range arr {
				if i > 0 {
					buf = append(buf, delim)
				}
				if m, ok := e.(map[string]any); ok && len(m) == 1 {
					if v, ok := m[branch]; ok {
						e = v
					}
				}
				if e == nil {
					buf = append(buf, "NULL"...)
					continue
				}
				s, err := ec.Encode(e)
				if err != nil {
					return "", fmt.Errorf("%s element %d: %w", name, i, err)
				}
				buf = pgtext.AppendArrayElem(buf, s, delim)
			}
			buf = append(buf, '}')
			return string(buf), nil
		},
	}
}

// typeArrayReader is the ReaderValue conversion of an array codec whose
// elements are of ec: a one-dimensional array with lower bound 1 whose
// elements ec's ReaderValue (or typed decoding) holds becomes goavro's form
// of the typed array; nil and false for any other array.
func typeArrayReader(ec Codec) func(text []byte) (any, bool) {
	branch := TypeUnionBranch(ec.Avro)
	return func(text []byte) (any, bool) {
		var out []any
		var scratch [64]byte
		_, err := pgtext.ParseArray(text, ',', scratch[:0], func(elem []byte, null bool) error {
			if null {
				out = append(out, nil)
				return nil
			}
			var v any
			if ec.reader != nil {
				n, ok := ec.reader(elem)
				if !ok {
					return pgtext.ErrSyntax
				}
				v = n
			} else {
				decode := ec.Decode
				if ec.typed != nil {
					decode = ec.typed
				}
				n, err := decode(elem)
				if err != nil {
					return err
				}
				v = typeGoavroNative(ec.Avro, n)
			}
			out = append(out, map[string]any{branch: v})
			return nil
		})
		if err != nil {
			return nil, false
		}
		if out == nil {
			out = []any{}
		}
		return out, true
	}
}

// typeGoavroNative converts what a Codec's typed decoding returns for avro
// into what goavro's NativeFromBinary returns for it: the logical types
// whose forms differ (date, time-micros, timestamp-micros).
func typeGoavroNative(avro any, v any) any {
	switch TypeUnionBranch(avro) {
	case "int.date":
		if d, ok := v.(int32); ok {
			return avrobin.DateFromDays(int(d))
		}
	case "long.time-micros":
		if us, ok := v.(int64); ok {
			return time.Duration(us) * time.Microsecond
		}
	case "long.timestamp-micros":
		if us, ok := v.(int64); ok {
			return avrobin.TimeFromMicros(us)
		}
	}
	return v
}

// typeFullName resolves the full name of a named schema m inside enclosing
// namespace ns (Avro's name resolution rules).
func typeFullName(m map[string]any, ns string) string {
	n, _ := m["name"].(string)
	if strings.Contains(n, ".") {
		return n
	}
	if s, ok := m["namespace"].(string); ok {
		ns = s
	}
	if ns == "" {
		return n
	}
	return ns + "." + n
}

// typeNamespaceOf returns the namespace a full name defines for its children.
func typeNamespaceOf(full string) string {
	if i := strings.LastIndexByte(full, '.'); i >= 0 {
		return full[:i]
	}
	return ""
}

// AvroNamedTypesOnce returns a copy of the Avro schema (strings, maps and
// slices as encoding/json produces or Codec.Avro holds) in which the second
// and later definitions of each named type (record, enum, fixed) are replaced
// by the type's full name, as Avro requires (a name may be defined only once
// per schema). Definitions are visited depth-first in document order: record
// fields in order, then array items, map values and union members. The input
// is not modified.
func AvroNamedTypesOnce(schema any) any {
	seen := map[string]bool{}
	return typeOnce(schema, "", seen)
}

func typeOnce(s any, ns string, seen map[string]bool) any {
	switch v := s.(type) {
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = typeOnce(e, ns, seen)
		}
		return out
	case []map[string]any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = typeOnce(e, ns, seen)
		}
		return out
	case map[string]any:
		t, _ := v["type"].(string)
		childNS := ns
		if t == "record" || t == "enum" || t == "fixed" || t == "error" {
			if _, named := v["name"].(string); named {
				full := typeFullName(v, ns)
				if seen[full] {
					return full
				}
				seen[full] = true
				childNS = typeNamespaceOf(full)
			}
		}
		out := make(map[string]any, len(v))
		for k, e := range v {
			switch k {
			case "type", "items", "values", "fields":
				out[k] = e // filled below, in a fixed order
			default:
				out[k] = typeCopyPlain(e)
			}
		}
		if tv, ok := v["type"]; ok {
			if _, isStr := tv.(string); !isStr {
				out["type"] = typeOnce(tv, childNS, seen)
			}
		}
		if f, ok := v["fields"]; ok {
			out["fields"] = typeOnce(f, childNS, seen)
		}
		if it, ok := v["items"]; ok {
			out["items"] = typeOnce(it, childNS, seen)
		}
		if vals, ok := v["values"]; ok {
			out["values"] = typeOnce(vals, childNS, seen)
		}
		return out
	}
	return s
}

// typeCopyPlain deep-copies JSON-like values that hold no schemas (defaults,
// symbols, custom properties).
func typeCopyPlain(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = typeCopyPlain(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = typeCopyPlain(e)
		}
		return out
	}
	return v
}
