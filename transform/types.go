package transform

import (
	"fmt"
	"math"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/schemas"
)

// Type is the type of a column as a transform sees it: the SQL type the
// target column is declared with, and the PostgreSQL type whose Avro form
// its values take (schemas/TYPES.md). Values are what goavro decodes for that
// form: int32 for integer, *big.Rat for numeric(p,s), time.Time for date and
// timestamptz, int64 microseconds for timestamp, and so on.
type Type struct {
	SQL    string // e.g. "integer", "numeric(12,2)", "timestamp with time zone"
	PG     schemas.PGType
	Typmod int32
	codec  schemas.Codec
}

// String is the SQL type.
func (t Type) String() string { return t.SQL }

// Encode renders a non-nil value of t as a PostgreSQL text literal.
func (t Type) Encode(v any) (string, error) { return t.codec.Encode(v) }

// typeOf is the Type of a decoded source column.
func typeOf(c consumer.Column) (Type, error) {
	codec, err := schemas.MapType(c.Type, c.Typmod, schemas.UnsupportedFail)
	if err != nil {
		return Type{}, fmt.Errorf("column %q (%s): %w", c.Name, c.SQLType, err)
	}
	return Type{SQL: c.SQLType, PG: c.Type, Typmod: c.Typmod, codec: codec}, nil
}

func baseType(sql string, oid uint32, name string, typmod int32) Type {
	pt := schemas.PGType{OID: oid, Name: name, Kind: schemas.KindBase}
	c, err := schemas.MapType(pt, typmod, schemas.UnsupportedFail)
	if err != nil {
		panic(err) // only called with built-in types
	}
	return Type{SQL: sql, PG: pt, Typmod: typmod, codec: c}
}

// The types transforms produce by default.
var (
	typeText        = baseType("text", pgtype.TextOID, "text", -1)
	typeBool        = baseType("boolean", pgtype.BoolOID, "bool", -1)
	typeBigint      = baseType("bigint", pgtype.Int8OID, "int8", -1)
	typeDouble      = baseType("double precision", pgtype.Float8OID, "float8", -1)
	typeNumeric     = baseType("numeric", pgtype.NumericOID, "numeric", -1)
	typeBytea       = baseType("bytea", pgtype.ByteaOID, "bytea", -1)
	typeTimestamptz = baseType("timestamp with time zone", pgtype.TimestamptzOID, "timestamptz", -1)
	typeTimestamp   = baseType("timestamp without time zone", pgtype.TimestampOID, "timestamp", -1)
	typeDate        = baseType("date", pgtype.DateOID, "date", -1)
)

var sqlTypeRe = regexp.MustCompile(`^([a-z ]+?)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?$`)

// ParseType parses the SQL type a transform's output column is declared with:
// smallint, integer, bigint, real, double precision, numeric[(p[,s])],
// text, varchar(n), char(n), boolean, date, time, timestamp, timestamptz,
// uuid, json, jsonb, bytea (and their PostgreSQL aliases: int4, float8, ...).
func ParseType(sql string) (Type, error) {
	s := strings.ToLower(strings.TrimSpace(sql))
	m := sqlTypeRe.FindStringSubmatch(s)
	if m == nil {
		return Type{}, fmt.Errorf("unknown type %q", sql)
	}
	name, p, sc := strings.Join(strings.Fields(m[1]), " "), m[2], m[3]
	noMod := func(t Type) (Type, error) {
		if p != "" {
			return Type{}, fmt.Errorf("type %q takes no modifier", sql)
		}
		return t, nil
	}
	switch name {
	case "smallint", "int2":
		return noMod(baseType("smallint", pgtype.Int2OID, "int2", -1))
	case "integer", "int", "int4":
		return noMod(baseType("integer", pgtype.Int4OID, "int4", -1))
	case "bigint", "int8":
		return noMod(typeBigint)
	case "real", "float4":
		return noMod(baseType("real", pgtype.Float4OID, "float4", -1))
	case "double precision", "float8", "double":
		return noMod(typeDouble)
	case "numeric", "decimal":
		if p == "" {
			return typeNumeric, nil
		}
		prec, _ := strconv.Atoi(p)
		scale, _ := strconv.Atoi(sc)
		if prec < 1 || prec > 1000 || scale > prec {
			return Type{}, fmt.Errorf("type %q: precision must be 1..1000 and scale at most the precision", sql)
		}
		return baseType(fmt.Sprintf("numeric(%d,%d)", prec, scale), pgtype.NumericOID, "numeric", int32(prec<<16|scale)+4), nil
	case "text":
		return noMod(typeText)
	case "varchar", "character varying", "char", "character", "bpchar":
		if p == "" || sc != "" {
			if p == "" && (name == "varchar" || name == "character varying") {
				return baseType("character varying", pgtype.VarcharOID, "varchar", -1), nil
			}
			return Type{}, fmt.Errorf("type %q: want %s(n)", sql, name)
		}
		if strings.HasPrefix(name, "char") || name == "bpchar" {
			return baseType("character("+p+")", pgtype.BPCharOID, "bpchar", -1), nil
		}
		return baseType("character varying("+p+")", pgtype.VarcharOID, "varchar", -1), nil
	case "boolean", "bool":
		return noMod(typeBool)
	case "date":
		return noMod(typeDate)
	case "time", "time without time zone":
		return noMod(baseType("time without time zone", pgtype.TimeOID, "time", -1))
	case "timestamp", "timestamp without time zone":
		return noMod(typeTimestamp)
	case "timestamptz", "timestamp with time zone":
		return noMod(typeTimestamptz)
	case "uuid":
		return noMod(baseType("uuid", pgtype.UUIDOID, "uuid", -1))
	case "json":
		return noMod(baseType("json", pgtype.JSONOID, "json", -1))
	case "jsonb":
		return noMod(baseType("jsonb", pgtype.JSONBOID, "jsonb", -1))
	case "bytea":
		return noMod(typeBytea)
	}
	return Type{}, fmt.Errorf("unknown type %q (want one of smallint, integer, bigint, real, double precision, "+
		"numeric(p,s), text, varchar(n), boolean, date, time, timestamp, timestamptz, uuid, json, jsonb, bytea)", sql)
}

// class groups types by how expressions and conversions treat their values.
type class int

const (
	classOther       class = iota // interval, arrays, ...: seen as their text form
	classBool                     // bool
	classInt                      // int32 or int64
	classFloat                    // float32 or float64
	classDecimal                  // *big.Rat (numeric(p,s))
	classNumericText              // string holding numeric_out text (unconstrained numeric)
	classString                   // string (text, varchar, uuid, json, enum, inet, timetz, ...)
	classBytes                    // []byte
	classDate                     // time.Time at UTC midnight
	classTime                     // time.Duration since midnight
	classTimestamptz              // time.Time (UTC)
	classTimestamp                // int64 microseconds of the wall clock
)

func (t Type) class() class {
	if t.PG.Kind == schemas.KindEnum {
		return classString
	}
	if t.PG.Kind != schemas.KindBase {
		if t.PG.Kind == schemas.KindDomain && t.PG.Base != nil {
			return Type{PG: *t.PG.Base, Typmod: t.PG.BaseTypmod}.class()
		}
		return classOther
	}
	switch t.PG.OID {
	case pgtype.BoolOID:
		return classBool
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.OIDOID:
		return classInt
	case pgtype.Float4OID, pgtype.Float8OID:
		return classFloat
	case pgtype.NumericOID:
		if t.Typmod < 0 {
			return classNumericText
		}
		return classDecimal
	case pgtype.ByteaOID:
		return classBytes
	case pgtype.DateOID:
		return classDate
	case pgtype.TimeOID:
		return classTime
	case pgtype.TimestamptzOID:
		return classTimestamptz
	case pgtype.TimestampOID:
		return classTimestamp
	case pgtype.IntervalOID:
		return classOther
	}
	return classString
}

// normalize turns what a Codec's Decode returns into what goavro decodes, so
// that a column's values have one Go form whichever way they were made.
func normalize(t Type, v any) any {
	switch t.class() {
	case classDate:
		if d, ok := v.(int32); ok {
			return time.Unix(0, 0).UTC().AddDate(0, 0, int(d))
		}
	case classTime:
		if us, ok := v.(int64); ok {
			return time.Duration(us) * time.Microsecond
		}
	case classTimestamptz:
		if us, ok := v.(int64); ok {
			return microsTime(us)
		}
	}
	return v
}

func microsTime(us int64) time.Time {
	return time.Unix(us/1e6, (us%1e6)*1e3).UTC()
}

// timeMicros is the inverse of microsTime, as goavro computes it.
func timeMicros(t time.Time) int64 { return t.Unix()*1e6 + int64(t.Nanosecond()/1e3) }

// convert converts a value of type from to type to. nil stays nil. It follows
// PostgreSQL's casts: numbers round half away from zero into integers and
// scaled numerics, timestamps truncate to their date, anything converts to
// text, and text converts to anything that parses it.
func convert(v any, from, to Type) (any, error) {
	if v == nil {
		return nil, nil
	}
	fc, tc := from.class(), to.class()
	if from.PG.OID == to.PG.OID && from.Typmod == to.Typmod && from.PG.Kind == to.PG.Kind {
		return v, nil
	}
	switch tc {
	case classString:
		if fc == classString {
			return v, nil
		}
		return from.codec.Encode(v)
	case classInt, classFloat, classDecimal, classNumericText:
		if r, ok := toRat(v); ok {
			return fromRat(r, to)
		}
		if x, ok := v.(string); ok && fc == classNumericText {
			if r, ok := new(big.Rat).SetString(x); ok {
				return fromRat(r, to)
			}
		}
		if f, ok := v.(float64); ok { // NaN or infinity
			if tc == classFloat || tc == classNumericText {
				return parseText(strconv.FormatFloat(f, 'g', -1, 64), to)
			}
			return nil, fmt.Errorf("%v cannot be converted to %s", f, to.SQL)
		}
	case classDate:
		switch fc {
		case classTimestamptz:
			t := v.(time.Time)
			return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC), nil
		case classTimestamp:
			t := microsTime(v.(int64))
			return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC), nil
		}
	case classTimestamptz:
		switch fc {
		case classDate:
			return v, nil
		case classTimestamp:
			return microsTime(v.(int64)), nil
		}
	case classTimestamp:
		switch fc {
		case classDate, classTimestamptz:
			return timeMicros(v.(time.Time)), nil
		}
	}
	var s string
	switch x := v.(type) {
	case string:
		s = x
	default:
		var err error
		if s, err = from.codec.Encode(v); err != nil {
			return nil, err
		}
	}
	return parseText(s, to)
}

// parseText parses PostgreSQL text as a value of to.
func parseText(s string, to Type) (any, error) {
	if to.class() == classBool {
		switch strings.ToLower(strings.TrimSpace(s)) {
		case "t", "true", "yes", "y", "on", "1":
			return true, nil
		case "f", "false", "no", "n", "off", "0":
			return false, nil
		}
	}
	if c := to.class(); c == classInt || c == classFloat || c == classDecimal || c == classNumericText {
		s = strings.TrimSpace(s)
	}
	v, err := to.codec.Decode([]byte(s))
	if err != nil {
		return nil, fmt.Errorf("cannot convert %q to %s: %w", truncate(s, 64), to.SQL, err)
	}
	return normalize(to, to.codec.ReaderValue(v)), nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// toRat returns a finite number as a rational.
func toRat(v any) (*big.Rat, bool) {
	switch x := v.(type) {
	case int32:
		return new(big.Rat).SetInt64(int64(x)), true
	case int64:
		return new(big.Rat).SetInt64(x), true
	case int:
		return new(big.Rat).SetInt64(int64(x)), true
	case float32:
		return toRat(float64(x))
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, false
		}
		r, _ := new(big.Rat).SetString(strconv.FormatFloat(x, 'g', -1, 64))
		return r, r != nil
	case *big.Rat:
		return x, true
	}
	return nil, false
}

// fromRat converts r to a numeric type, rounding half away from zero to the
// target's scale, and fails when it does not fit.
func fromRat(r *big.Rat, to Type) (any, error) {
	switch to.class() {
	case classInt:
		return parseText(roundRat(r, 0), to)
	case classFloat:
		f, _ := r.Float64()
		if to.PG.OID == pgtype.Float4OID {
			return float32(f), nil
		}
		return f, nil
	case classDecimal:
		_, scale := numericTypmod(to.Typmod)
		return parseText(roundRat(r, scale), to)
	default: // unconstrained numeric: exact when the decimal expansion ends
		return ratText(r), nil
	}
}

func numericTypmod(typmod int32) (precision, scale int) {
	t := typmod - 4
	return int((t >> 16) & 0xffff), int(t & 0x7ff)
}

// roundRat formats r with scale decimals, rounding half away from zero.
func roundRat(r *big.Rat, scale int) string {
	return new(big.Rat).Set(r).FloatString(scale) // FloatString rounds half away from zero
}

// ratText is r's exact decimal text when it has one (its denominator has no
// prime factor but 2 and 5), else r rounded to 20 decimals.
func ratText(r *big.Rat) string {
	d := new(big.Int).Set(r.Denom())
	m := new(big.Int)
	for _, p := range []*big.Int{big.NewInt(2), big.NewInt(5)} {
		for {
			q, rem := new(big.Int).QuoRem(d, p, m)
			if rem.Sign() != 0 {
				break
			}
			d = q
		}
	}
	if d.Cmp(big.NewInt(1)) != 0 {
		return r.FloatString(20)
	}
	scale := 0
	pow := big.NewInt(1)
	for new(big.Int).Rem(pow, r.Denom()).Sign() != 0 {
		pow.Mul(pow, big.NewInt(10))
		scale++
	}
	return r.FloatString(scale)
}
