package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/linkedin/goavro/v2"
)

// PGType constructors for the tests.
func tcBase(oid uint32, name string) PGType { return PGType{OID: oid, Name: name, Kind: KindBase} }
func tcArr(e PGType) PGType {
	return PGType{OID: 1, Name: "_" + e.Name, Kind: KindArray, Elem: &e}
}

// tcNumTypmod builds numeric(p,s)'s typmod as PostgreSQL 15 does.
func tcNumTypmod(p, s int) int32 { return int32(p<<16|(s&0x7ff)) + 4 }

var (
	tcBool     = tcBase(pgtype.BoolOID, "bool")
	tcInt2     = tcBase(pgtype.Int2OID, "int2")
	tcInt4     = tcBase(pgtype.Int4OID, "int4")
	tcInt8     = tcBase(pgtype.Int8OID, "int8")
	tcOID      = tcBase(pgtype.OIDOID, "oid")
	tcFloat4   = tcBase(pgtype.Float4OID, "float4")
	tcFloat8   = tcBase(pgtype.Float8OID, "float8")
	tcNumeric  = tcBase(pgtype.NumericOID, "numeric")
	tcText     = tcBase(pgtype.TextOID, "text")
	tcVarchar  = tcBase(pgtype.VarcharOID, "varchar")
	tcBPChar   = tcBase(pgtype.BPCharOID, "bpchar")
	tcQChar    = tcBase(pgtype.QCharOID, "char")
	tcName     = tcBase(pgtype.NameOID, "name")
	tcBytea    = tcBase(pgtype.ByteaOID, "bytea")
	tcUUID     = tcBase(pgtype.UUIDOID, "uuid")
	tcDate     = tcBase(pgtype.DateOID, "date")
	tcTime     = tcBase(pgtype.TimeOID, "time")
	tcTimetz   = tcBase(pgtype.TimetzOID, "timetz")
	tcTS       = tcBase(pgtype.TimestampOID, "timestamp")
	tcTSTZ     = tcBase(pgtype.TimestamptzOID, "timestamptz")
	tcInterval = tcBase(pgtype.IntervalOID, "interval")
	tcJSON     = tcBase(pgtype.JSONOID, "json")
	tcJSONB    = tcBase(pgtype.JSONBOID, "jsonb")
	tcInet     = tcBase(pgtype.InetOID, "inet")
	tcCIDR     = tcBase(pgtype.CIDROID, "cidr")
	tcMacaddr  = tcBase(pgtype.MacaddrOID, "macaddr")
	tcMacaddr8 = tcBase(pgtype.Macaddr8OID, "macaddr8")
	tcMood     = PGType{OID: 90001, Name: "mood", Kind: KindEnum}
	tcPosInt   = PGType{OID: 90002, Name: "posint", Kind: KindDomain, Base: &tcInt4, BaseTypmod: -1}
	tcPrice    = PGType{OID: 90003, Name: "price", Kind: KindDomain, Base: &tcNumeric, BaseTypmod: tcNumTypmod(10, 2)}
)

// tcCase is one text value of one type. The same table drives the Go-only
// round trip through goavro and the round trip through a real PostgreSQL.
type tcCase struct {
	t      PGType
	typmod int32
	sql    string // SQL type name for casts in the PostgreSQL test
	in     string // text as PostgreSQL prints it (unless out is set)
	out    string // the literal Encode must return, when it differs from in
	want   any    // when not nil, what Decode must return
	err    error  // when not nil, Decode must fail with an error wrapping it
	text   bool   // the value travels in the text branch: Decode returns in
}

func (c tcCase) String() string { return c.sql + "/" + c.in }

func tcAll256() string {
	var b strings.Builder
	b.WriteString(`\x`)
	for i := 0; i < 256; i++ {
		fmt.Fprintf(&b, "%02x", i)
	}
	return b.String()
}

var tcThousandDigits = strings.Repeat("9", 600) + "." + strings.Repeat("1234567890", 40)

var tcCases = []tcCase{
	{t: tcBool, typmod: -1, sql: "bool", in: "t", want: true},
	{t: tcBool, typmod: -1, sql: "bool", in: "f", want: false},
	{t: tcInt2, typmod: -1, sql: "int2", in: "-32768", want: int32(-32768)},
	{t: tcInt2, typmod: -1, sql: "int2", in: "32767", want: int32(32767)},
	{t: tcInt2, typmod: -1, sql: "int2", in: "0", want: int32(0)},
	{t: tcInt4, typmod: -1, sql: "int4", in: "-2147483648", want: int32(math.MinInt32)},
	{t: tcInt4, typmod: -1, sql: "int4", in: "2147483647", want: int32(math.MaxInt32)},
	{t: tcInt8, typmod: -1, sql: "int8", in: "-9223372036854775808", text: true},
	{t: tcInt8, typmod: -1, sql: "int8", in: "9223372036854775807", text: true},
	{t: tcInt8, typmod: -1, sql: "int8", in: "9007199254740990", want: int64(TypeSafeLong)},
	{t: tcInt8, typmod: -1, sql: "int8", in: "-9007199254740990", want: int64(-TypeSafeLong)},
	{t: tcInt8, typmod: -1, sql: "int8", in: "9007199254740991", text: true},
	{t: tcInt8, typmod: -1, sql: "int8", in: "-9007199254740991", text: true},
	{t: tcOID, typmod: -1, sql: "oid", in: "0", want: int64(0)},
	{t: tcOID, typmod: -1, sql: "oid", in: "4294967295", want: int64(math.MaxUint32)},
	{t: tcFloat4, typmod: -1, sql: "float4", in: "NaN"},
	{t: tcFloat4, typmod: -1, sql: "float4", in: "Infinity", want: float32(math.Inf(1))},
	{t: tcFloat4, typmod: -1, sql: "float4", in: "-Infinity", want: float32(math.Inf(-1))},
	{t: tcFloat4, typmod: -1, sql: "float4", in: "-0"},
	{t: tcFloat4, typmod: -1, sql: "float4", in: "3.4028235e+38", want: float32(math.MaxFloat32)},
	{t: tcFloat4, typmod: -1, sql: "float4", in: "1e-45", want: float32(math.SmallestNonzeroFloat32)},
	{t: tcFloat4, typmod: -1, sql: "float4", in: "1.234567e+06"},
	{t: tcFloat4, typmod: -1, sql: "float4", in: "100000"},
	{t: tcFloat4, typmod: -1, sql: "float4", in: "0.1", want: float32(0.1)},
	{t: tcFloat8, typmod: -1, sql: "float8", in: "NaN"},
	{t: tcFloat8, typmod: -1, sql: "float8", in: "Infinity", want: math.Inf(1)},
	{t: tcFloat8, typmod: -1, sql: "float8", in: "-Infinity", want: math.Inf(-1)},
	{t: tcFloat8, typmod: -1, sql: "float8", in: "-0"},
	{t: tcFloat8, typmod: -1, sql: "float8", in: "1.7976931348623157e+308", want: math.MaxFloat64},
	{t: tcFloat8, typmod: -1, sql: "float8", in: "5e-324", want: math.SmallestNonzeroFloat64},
	{t: tcFloat8, typmod: -1, sql: "float8", in: "1e+15"},
	{t: tcFloat8, typmod: -1, sql: "float8", in: "100000000000000"},
	{t: tcFloat8, typmod: -1, sql: "float8", in: "0.1", want: 0.1},
	{t: tcFloat8, typmod: -1, sql: "float8", in: "1.234e-05"},
	{t: tcFloat8, typmod: -1, sql: "float8", in: "123456789012345.6"},
	{t: tcFloat8, typmod: -1, sql: "float8", in: "-2.5e-300"},
	{t: tcNumeric, typmod: tcNumTypmod(38, 10), sql: "numeric(38,10)", in: "9999999999999999999999999999.9999999999"},
	{t: tcNumeric, typmod: tcNumTypmod(38, 10), sql: "numeric(38,10)", in: "-9999999999999999999999999999.9999999999"},
	{t: tcNumeric, typmod: tcNumTypmod(38, 10), sql: "numeric(38,10)", in: "0.0000000000", want: new(big.Rat)},
	{t: tcNumeric, typmod: tcNumTypmod(38, 10), sql: "numeric(38,10)", in: "-0.0000000001", want: big.NewRat(-1, 1e10)},
	{t: tcNumeric, typmod: tcNumTypmod(5, 2), sql: "numeric(5,2)", in: "123.45", want: big.NewRat(12345, 100)},
	{t: tcNumeric, typmod: tcNumTypmod(5, 2), sql: "numeric(5,2)", in: "-999.99"},
	{t: tcNumeric, typmod: tcNumTypmod(5, 2), sql: "numeric(5,2)", in: "NaN", text: true},
	{t: tcNumeric, typmod: tcNumTypmod(3, -2), sql: "numeric(3,-2)", in: "99900", want: big.NewRat(99900, 1)},
	{t: tcNumeric, typmod: tcNumTypmod(3, -2), sql: "numeric(3,-2)", in: "-12300"},
	{t: tcNumeric, typmod: tcNumTypmod(3, -2), sql: "numeric(3,-2)", in: "0"},
	{t: tcNumeric, typmod: tcNumTypmod(2, 5), sql: "numeric(2,5)", in: "0.00099", want: big.NewRat(99, 100000)},
	{t: tcNumeric, typmod: tcNumTypmod(2, 5), sql: "numeric(2,5)", in: "-0.00001"},
	{t: tcNumeric, typmod: tcNumTypmod(18, 0), sql: "numeric(18,0)", in: "-999999999999999999"},
	{t: tcNumeric, typmod: tcNumTypmod(19, 2), sql: "numeric(19,2)", in: "12345678901234567.89"},
	{t: tcNumeric, typmod: tcNumTypmod(1000, 400), sql: "numeric(1000,400)", in: "-" + tcThousandDigits},
	{t: tcNumeric, typmod: -1, sql: "numeric", in: "NaN", want: "NaN"},
	{t: tcNumeric, typmod: -1, sql: "numeric", in: "Infinity"},
	{t: tcNumeric, typmod: -1, sql: "numeric", in: "-Infinity"},
	{t: tcNumeric, typmod: -1, sql: "numeric", in: "0"},
	{t: tcNumeric, typmod: -1, sql: "numeric", in: "-1.50"},
	{t: tcNumeric, typmod: -1, sql: "numeric", in: "0.000000000000000000000000000000001"},
	{t: tcNumeric, typmod: -1, sql: "numeric", in: tcThousandDigits},
	{t: tcText, typmod: -1, sql: "text", in: "", want: ""},
	{t: tcText, typmod: -1, sql: "text", in: "hello"},
	{t: tcText, typmod: -1, sql: "text", in: "ünïcødé 🎉 中文"},
	{t: tcText, typmod: -1, sql: "text", in: "line\nbreak\ttab\r"},
	{t: tcText, typmod: -1, sql: "text", in: `quote" back\slash 'single'`},
	{t: tcText, typmod: -1, sql: "text", in: "NULL"},
	{t: tcVarchar, typmod: 9, sql: "varchar(5)", in: "abcde"},
	{t: tcBPChar, typmod: 9, sql: "bpchar(5)", in: "ab   ", want: "ab   "},
	{t: tcQChar, typmod: -1, sql: `"char"`, in: "a"},
	{t: tcQChar, typmod: -1, sql: `"char"`, in: `\300`},
	{t: tcName, typmod: -1, sql: "name", in: "pg_catalog"},
	{t: tcBytea, typmod: -1, sql: "bytea", in: `\x`, want: []byte{}},
	{t: tcBytea, typmod: -1, sql: "bytea", in: `\xdeadbeef`, want: []byte{0xde, 0xad, 0xbe, 0xef}},
	{t: tcBytea, typmod: -1, sql: "bytea", in: tcAll256()},
	{t: tcUUID, typmod: -1, sql: "uuid", in: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
	{t: tcUUID, typmod: -1, sql: "uuid", in: "00000000-0000-0000-0000-000000000000"},
	{t: tcDate, typmod: -1, sql: "date", in: "1970-01-01", want: int32(0)},
	{t: tcDate, typmod: -1, sql: "date", in: "1969-12-31", want: int32(-1)},
	{t: tcDate, typmod: -1, sql: "date", in: "2000-02-29", want: int32(11016)},
	{t: tcDate, typmod: -1, sql: "date", in: "0044-03-15 BC", text: true},
	{t: tcDate, typmod: -1, sql: "date", in: "0001-12-31 BC", text: true},
	{t: tcDate, typmod: -1, sql: "date", in: "0001-01-01", want: int32(-719162)},
	{t: tcDate, typmod: -1, sql: "date", in: "4714-11-24 BC", text: true},
	{t: tcDate, typmod: -1, sql: "date", in: "9999-12-31", want: int32(2932896)},
	{t: tcDate, typmod: -1, sql: "date", in: "10000-01-01", text: true},
	{t: tcDate, typmod: -1, sql: "date", in: "5874897-12-31", text: true},
	{t: tcDate, typmod: -1, sql: "date", in: "infinity", text: true},
	{t: tcDate, typmod: -1, sql: "date", in: "-infinity", text: true},
	{t: tcTime, typmod: -1, sql: "time", in: "00:00:00", want: int64(0)},
	{t: tcTime, typmod: -1, sql: "time", in: "24:00:00", text: true},
	{t: tcTime, typmod: -1, sql: "time", in: "23:59:59.999999"},
	{t: tcTime, typmod: -1, sql: "time", in: "04:05:06.789", want: int64(14706789000)},
	{t: tcTimetz, typmod: -1, sql: "timetz", in: "04:05:06.789+02"},
	{t: tcTimetz, typmod: -1, sql: "timetz", in: "00:00:00+15:59"},
	{t: tcTimetz, typmod: -1, sql: "timetz", in: "24:00:00-15:59"},
	{t: tcTS, typmod: -1, sql: "timestamp", in: "1970-01-01 00:00:00", want: int64(0)},
	{t: tcTS, typmod: -1, sql: "timestamp", in: "1969-12-31 23:59:59.999999", want: int64(-1)},
	{t: tcTS, typmod: -1, sql: "timestamp", in: "2000-01-01 12:34:56.123456", want: int64(946730096123456)},
	{t: tcTS, typmod: -1, sql: "timestamp", in: "2255-06-05 23:47:34.74099", want: int64(TypeSafeLong)},
	{t: tcTS, typmod: -1, sql: "timestamp", in: "2255-06-05 23:47:34.740991", text: true},
	{t: tcTS, typmod: -1, sql: "timestamp", in: "1684-07-28 00:12:25.25901", want: int64(-TypeSafeLong)},
	{t: tcTS, typmod: -1, sql: "timestamp", in: "1684-07-28 00:12:25.259009", text: true},
	{t: tcTS, typmod: -1, sql: "timestamp", in: "0044-03-15 12:00:00.5 BC", text: true},
	{t: tcTS, typmod: -1, sql: "timestamp", in: "4714-11-24 00:00:00 BC", text: true},
	{t: tcTS, typmod: -1, sql: "timestamp", in: "9999-12-31 23:59:59.999999", text: true},
	{t: tcTS, typmod: -1, sql: "timestamp", in: "294247-01-10 04:00:54.775806", text: true},
	{t: tcTS, typmod: -1, sql: "timestamp", in: "294247-01-10 04:00:54.775807", text: true},
	{t: tcTS, typmod: -1, sql: "timestamp", in: "294276-12-31 23:59:59.999999", text: true},
	{t: tcTS, typmod: -1, sql: "timestamp", in: "infinity", text: true},
	{t: tcTS, typmod: -1, sql: "timestamp", in: "-infinity", text: true},
	{t: tcTSTZ, typmod: -1, sql: "timestamptz", in: "1970-01-01 00:00:00+00", want: int64(0)},
	{t: tcTSTZ, typmod: -1, sql: "timestamptz", in: "2000-01-01 12:34:56.123456+00"},
	{t: tcTSTZ, typmod: -1, sql: "timestamptz", in: "0044-03-15 12:00:00.5+00 BC", text: true},
	{t: tcTSTZ, typmod: -1, sql: "timestamptz", in: "4714-11-24 00:00:00+00 BC", text: true},
	{t: tcTSTZ, typmod: -1, sql: "timestamptz", in: "294247-01-10 04:00:54.775806+00", text: true},
	{t: tcTSTZ, typmod: -1, sql: "timestamptz", in: "2021-06-01 12:00:00+05:30", out: "2021-06-01 06:30:00+00"},
	{t: tcTSTZ, typmod: -1, sql: "timestamptz", in: "infinity", text: true},
	{t: tcTSTZ, typmod: -1, sql: "timestamptz", in: "-infinity", text: true},
	{t: tcInterval, typmod: -1, sql: "interval", in: "PT0S", want: map[string]any{"months": int32(0), "days": int32(0), "micros": int64(0)}},
	{t: tcInterval, typmod: -1, sql: "interval", in: "P1Y2M3DT4H5M6.5S", want: map[string]any{"months": int32(14), "days": int32(3), "micros": int64(14706500000)}},
	{t: tcInterval, typmod: -1, sql: "interval", in: "P-1Y-2M3DT-4H-5M-6S", want: map[string]any{"months": int32(-14), "days": int32(3), "micros": int64(-14706000000)}},
	{t: tcInterval, typmod: -1, sql: "interval", in: "P1Y2M-3DT4H"},
	{t: tcInterval, typmod: -1, sql: "interval", in: "P-10M-3DT-1H"},
	{t: tcInterval, typmod: -1, sql: "interval", in: "P-10M3DT1H"},
	{t: tcInterval, typmod: -1, sql: "interval", in: "P10MT-1H-0.000001S"},
	{t: tcInterval, typmod: -1, sql: "interval", in: "P-1Y2DT-5M"},
	{t: tcInterval, typmod: -1, sql: "interval", in: "P-3DT1M"},
	{t: tcInterval, typmod: -1, sql: "interval", in: "PT-0.5S"},
	{t: tcInterval, typmod: -1, sql: "interval", in: "PT0.000001S"},
	{t: tcInterval, typmod: -1, sql: "interval", in: "PT2501999H47M34.74099S", want: map[string]any{"months": int32(0), "days": int32(0), "micros": int64(TypeSafeLong)}},
	{t: tcInterval, typmod: -1, sql: "interval", in: "PT2501999H47M34.740991S", text: true},
	{t: tcInterval, typmod: -1, sql: "interval", in: "P1DT-1S"},
	{t: tcInterval, typmod: -1, sql: "interval", in: "P178956970Y7M2147483646DT2562047788H54.775807S", text: true},
	{t: tcInterval, typmod: -1, sql: "interval", in: "P-178956970Y-8M-2147483647DT-2562047788H-54.775808S", text: true},
	{t: tcInterval, typmod: -1, sql: "interval", in: "infinity", text: true}, // PostgreSQL 17
	{t: tcJSON, typmod: -1, sql: "json", in: `{"a": "ünï \"q\"", "b": [1, 2.5, null]}`},
	{t: tcJSONB, typmod: -1, sql: "jsonb", in: `{"a": "ünï \"q\"", "b": [1, 2.5, null]}`},
	{t: tcMood, typmod: -1, sql: "mood", in: "happy"},
	{t: tcPosInt, typmod: -1, sql: "posint", in: "42", want: int32(42)},
	{t: tcPrice, typmod: -1, sql: "price", in: "12.30", want: big.NewRat(123, 10)},
	{t: tcInet, typmod: -1, sql: "inet", in: "192.168.0.1/24"},
	{t: tcInet, typmod: -1, sql: "inet", in: "::1"},
	{t: tcCIDR, typmod: -1, sql: "cidr", in: "10.0.0.0/8"},
	{t: tcMacaddr, typmod: -1, sql: "macaddr", in: "08:00:2b:01:02:03"},
	{t: tcMacaddr8, typmod: -1, sql: "macaddr8", in: "08:00:2b:01:02:03:04:05"},
	{t: tcArr(tcText), typmod: -1, sql: "text[]", in: "{}", want: []any{}},
	{t: tcArr(tcText), typmod: -1, sql: "text[]", in: `{a,NULL,"NULL",""}`,
		want: []any{map[string]any{"string": "a"}, nil, map[string]any{"string": "NULL"}, map[string]any{"string": ""}}},
	{t: tcArr(tcText), typmod: -1, sql: "text[]", in: `{"b c","x\\y","q\"q","{br}","com,ma"," lead","trail ",ünï,"null",semi;colon,'}`},
	{t: tcArr(tcText), typmod: -1, sql: "text[]", in: "{\"tab\there\",\"new\nline\"}"},
	{t: tcArr(tcText), typmod: -1, sql: "text[]", in: "{ a , b }", out: "{a,b}"},
	{t: tcArr(tcText), typmod: -1, sql: "text[]", in: `{a\,b,c\"d}`, out: `{"a,b","c\"d"}`},
	{t: tcArr(tcText), typmod: -1, sql: "text[]", in: `{{a,b},{c,d}}`, text: true},
	{t: tcArr(tcInt4), typmod: -1, sql: "int4[]", in: "{1,NULL,-3}"},
	{t: tcArr(tcInt4), typmod: -1, sql: "int4[]", in: "[0:1]={1,2}", text: true},
	{t: tcArr(tcInt4), typmod: -1, sql: "int4[]", in: "{{1,2},{3,4}}", text: true},
	{t: tcArr(tcBool), typmod: -1, sql: "bool[]", in: "{t,f,NULL}"},
	{t: tcArr(tcNumeric), typmod: tcNumTypmod(10, 2), sql: "numeric(10,2)[]", in: "{1.50,NULL,-0.01}",
		want: []any{map[string]any{"bytes.decimal": big.NewRat(3, 2)}, nil, map[string]any{"bytes.decimal": big.NewRat(-1, 100)}}},
	{t: tcArr(tcNumeric), typmod: -1, sql: "numeric[]", in: "{NaN,1.5,Infinity,-Infinity}"},
	{t: tcArr(tcDate), typmod: -1, sql: "date[]", in: `{2000-01-01,"0044-03-15 BC",infinity,NULL}`, text: true},
	{t: tcArr(tcTSTZ), typmod: -1, sql: "timestamptz[]", in: `{"2000-01-01 00:00:00+00",-infinity}`, text: true},
	{t: tcArr(tcUUID), typmod: -1, sql: "uuid[]", in: "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,NULL}"},
	{t: tcArr(tcInterval), typmod: -1, sql: "interval[]", in: "{PT0S,P1Y,NULL,PT-0.5S}"},
	{t: tcArr(tcBytea), typmod: -1, sql: "bytea[]", in: `{"\\x00ff","\\x"}`},
	{t: tcArr(tcJSONB), typmod: -1, sql: "jsonb[]", in: `{"{\"a\": 1}",NULL,[]}`},
	{t: tcArr(tcBPChar), typmod: 7, sql: "bpchar(3)[]", in: `{"a  ",abc}`},
	{t: tcArr(tcMood), typmod: -1, sql: "mood[]", in: "{happy,sad}"},
	{t: tcArr(tcFloat8), typmod: -1, sql: "float8[]", in: "{NaN,-Infinity,-0,1e+15}"},
	{t: tcArr(tcTime), typmod: -1, sql: "time[]", in: `{24:00:00,04:05:06.5}`, text: true},
	{t: tcArr(tcTime), typmod: -1, sql: "time[]", in: `{23:59:59.999999,04:05:06.5}`},
	{t: tcArr(tcPosInt), typmod: -1, sql: "posint[]", in: "{1,2}"},
	{t: tcArr(tcInt8), typmod: -1, sql: "int8[]", in: "{1,9223372036854775807}", text: true},
	{t: tcArr(tcNumeric), typmod: tcNumTypmod(5, 2), sql: "numeric(5,2)[]", in: "{1.00,NaN}", text: true},
	{t: tcArr(tcText), typmod: -1, sql: "text[]", in: `[-2:-1]={"a b",NULL}`, text: true},
	{t: tcArr(tcDate), typmod: -1, sql: "date[]", in: `{2000-01-01,9999-12-31}`},
}

// tcAvroCodec builds a goavro codec for a record with one nullable field "v"
// of the column's field type (c.Field()), as the producer's row records are
// built.
func tcAvroCodec(tb testing.TB, c Codec) *goavro.Codec {
	tb.Helper()
	rec := map[string]any{"type": "record", "name": "R", "namespace": "tributary.test", "fields": []any{
		map[string]any{"name": "v", "type": c.Field()},
	}}
	js, err := json.Marshal(AvroNamedTypesOnce(rec))
	if err != nil {
		tb.Fatal(err)
	}
	ac, err := goavro.NewCodec(string(js))
	if err != nil {
		tb.Fatalf("goavro.NewCodec(%s): %v", js, err)
	}
	return ac
}

// tcThroughAvro encodes native with goavro and decodes it back, returning the
// binary form and the native value goavro hands a consumer.
func tcThroughAvro(ac *goavro.Codec, c Codec, native any) ([]byte, any, error) {
	bin, err := ac.BinaryFromNative(nil, map[string]any{"v": goavro.Union(c.Branch(native), native)})
	if err != nil {
		return nil, nil, fmt.Errorf("BinaryFromNative(%#v): %w", native, err)
	}
	got, rest, err := ac.NativeFromBinary(bin)
	if err != nil {
		return nil, nil, fmt.Errorf("NativeFromBinary: %w", err)
	}
	if len(rest) != 0 {
		return nil, nil, fmt.Errorf("NativeFromBinary left %d bytes", len(rest))
	}
	u, ok := got.(map[string]any)["v"].(map[string]any)
	if !ok || len(u) != 1 {
		return nil, nil, fmt.Errorf("decoded field v is %#v, want a one-branch union", got.(map[string]any)["v"])
	}
	for _, v := range u {
		return bin, v, nil
	}
	panic("unreachable")
}

// tcRoundTrip takes text through Decode, goavro, and Encode, and returns the
// literal and the Avro binary form.
func tcRoundTrip(ac *goavro.Codec, c Codec, text string) (native any, lit string, bin []byte, err error) {
	native, err = c.Decode([]byte(text))
	if err != nil {
		return nil, "", nil, err
	}
	bin, back, err := tcThroughAvro(ac, c, native)
	if err != nil {
		return native, "", nil, err
	}
	lit, err = c.Encode(back)
	if err != nil {
		return native, "", nil, fmt.Errorf("Encode(%#v): %w", back, err)
	}
	// Encode must accept Decode's own output as well.
	lit2, err := c.Encode(native)
	if err != nil {
		return native, "", nil, fmt.Errorf("Encode(Decode output %#v): %w", native, err)
	}
	if lit2 != lit {
		return native, "", nil, fmt.Errorf("Encode(goavro native) = %q, Encode(Decode output) = %q", lit, lit2)
	}
	return native, lit, bin, nil
}

func tcEqualNative(a, b any) bool {
	if ra, ok := a.(*big.Rat); ok {
		rb, ok := b.(*big.Rat)
		return ok && ra.Cmp(rb) == 0
	}
	if sa, ok := a.([]any); ok {
		sb, ok := b.([]any)
		if !ok || len(sa) != len(sb) {
			return false
		}
		for i := range sa {
			if !tcEqualNative(sa[i], sb[i]) {
				return false
			}
		}
		return true
	}
	if ma, ok := a.(map[string]any); ok {
		mb, ok := b.(map[string]any)
		if !ok || len(ma) != len(mb) {
			return false
		}
		for k := range ma {
			if !tcEqualNative(ma[k], mb[k]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

func TestMapTypeRoundTrip(t *testing.T) {
	for _, tc := range tcCases {
		t.Run(tc.String(), func(t *testing.T) {
			c, err := MapType(tc.t, tc.typmod, UnsupportedFail)
			if err != nil {
				t.Fatal(err)
			}
			if c.Fallback {
				t.Error("Fallback set for a supported type")
			}
			ac := tcAvroCodec(t, c)
			native, lit, bin, err := tcRoundTrip(ac, c, tc.in)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want one wrapping %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.want != nil && !tcEqualNative(native, tc.want) {
				t.Errorf("Decode = %#v, want %#v", native, tc.want)
			}
			if s, isText := native.(string); c.Text && isText != tc.text || tc.text && s != tc.in {
				t.Errorf("Decode = %#v: text branch %v, want %v", native, isText, tc.text)
			}
			if tc.text {
				// Readers turn the text back into the typed native where
				// one holds the value; Encode prints the same literal.
				rv := c.ReaderValue(native)
				_, stillText := rv.(string)
				wantText := strings.Contains(tc.in, "NaN") || strings.Contains(tc.in, "{{") || strings.Contains(tc.in, "]=") ||
					strings.HasPrefix(tc.in, "294247-01-10 04:00:54.775807") || strings.HasPrefix(tc.in, "294276")
				if stillText != wantText {
					t.Errorf("ReaderValue(%q) = %#v: still text %v, want %v", tc.in, rv, stillText, wantText)
				}
				if lit, err := c.Encode(rv); err != nil || lit != tc.in {
					t.Errorf("Encode(ReaderValue(%q)) = %q, %v", tc.in, lit, err)
				}
			} else if v := c.ReaderValue(native); fmt.Sprint(v) != fmt.Sprint(native) {
				t.Errorf("ReaderValue changed a typed value: %#v -> %#v", native, v)
			}
			want := tc.in
			if tc.out != "" {
				want = tc.out
			}
			if lit != want {
				t.Errorf("Encode = %q, want %q", lit, want)
			}
			// The literal decodes to the same Avro value.
			_, _, bin2, err := tcRoundTrip(ac, c, lit)
			if err != nil {
				t.Fatalf("literal %q: %v", lit, err)
			}
			if !bytes.Equal(bin, bin2) {
				t.Errorf("Avro of %q = %x, of %q = %x", tc.in, bin, lit, bin2)
			}
		})
	}
}

func TestMapTypeGoavroNatives(t *testing.T) {
	// What goavro v2.15.0 hands a consumer for each logical type; Encode
	// is written against exactly these.
	cases := []struct {
		t      PGType
		typmod int32
		in     string
		want   any
	}{
		{tcDate, -1, "2000-02-29", time.Date(2000, 2, 29, 0, 0, 0, 0, time.UTC)},
		{tcDate, -1, "0001-01-01", time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)},
		{tcTime, -1, "23:59:59.999999", 24*time.Hour - time.Microsecond},
		{tcTSTZ, -1, "2000-01-01 12:34:56.123456+00", time.Date(2000, 1, 1, 12, 34, 56, 123456000, time.UTC)},
		{tcDate, -1, "infinity", "infinity"},
		{tcTime, -1, "24:00:00", "24:00:00"},
		{tcTSTZ, -1, "-infinity", "-infinity"},
		{tcTS, -1, "2000-01-01 12:34:56.123456", int64(946730096123456)},
		{tcNumeric, tcNumTypmod(5, 2), "1.50", big.NewRat(3, 2)},
		{tcUUID, -1, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
		{tcInterval, -1, "P1M2DT3S", map[string]any{"months": int32(1), "days": int32(2), "micros": int64(3000000)}},
	}
	for _, tc := range cases {
		c, err := MapType(tc.t, tc.typmod, UnsupportedFail)
		if err != nil {
			t.Fatal(err)
		}
		native, err := c.Decode([]byte(tc.in))
		if err != nil {
			t.Fatal(err)
		}
		_, got, err := tcThroughAvro(tcAvroCodec(t, c), c, native)
		if err != nil {
			t.Fatal(err)
		}
		if tm, ok := tc.want.(time.Time); ok {
			if g, ok := got.(time.Time); !ok || !g.Equal(tm) {
				t.Errorf("%s %q: goavro native %#v, want %v", tc.t.Name, tc.in, got, tm)
			}
			continue
		}
		if !tcEqualNative(got, tc.want) {
			t.Errorf("%s %q: goavro native %#v, want %#v", tc.t.Name, tc.in, got, tc.want)
		}
	}
}

// TestEncodeContractV1Sentinels: before the text branch, contract v1 wrote
// infinite dates and timestamps as the extreme int values and 24:00:00 as 24
// hours of microseconds; records in a topic keep them, so Encode still turns
// what goavro decodes of them back into the same literals.
func TestEncodeContractV1Sentinels(t *testing.T) {
	epoch := time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		t      PGType
		native any
		want   string
	}{
		{tcDate, epoch.AddDate(0, 0, math.MaxInt32), "infinity"},
		{tcDate, epoch.AddDate(0, 0, math.MinInt32), "-infinity"},
		{tcDate, int32(math.MaxInt32), "infinity"},
		{tcDate, epoch.AddDate(0, 0, -2440588), "4714-11-24 BC"},
		{tcTime, 24 * time.Hour, "24:00:00"},
		{tcTime, int64(86400000000), "24:00:00"},
		{tcTSTZ, time.Unix(math.MaxInt64/1000000, math.MaxInt64%1000000*1000).UTC(), "infinity"},
		{tcTSTZ, time.Unix(math.MinInt64/1000000, math.MinInt64%1000000*1000).UTC(), "-infinity"},
		{tcTS, int64(math.MaxInt64), "infinity"},
		{tcTS, int64(math.MinInt64), "-infinity"},
		{tcTS, int64(math.MaxInt64 - 1), "294247-01-10 04:00:54.775806"},
		{tcInt8, int64(math.MaxInt64), "9223372036854775807"},
		{tcInterval, map[string]any{"months": int32(math.MaxInt32), "days": int32(math.MaxInt32), "micros": int64(math.MaxInt64)}, "infinity"},
	}
	for _, tc := range cases {
		c, err := MapType(tc.t, -1, UnsupportedFail)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := c.Encode(tc.native); err != nil || got != tc.want {
			t.Errorf("%s: Encode(%v) = %q, %v; want %q", tc.t.Name, tc.native, got, err, tc.want)
		}
	}
}

func TestMapTypeAvroSchemas(t *testing.T) {
	cases := []struct {
		t      PGType
		typmod int32
		want   string
	}{
		{tcBool, -1, `"boolean"`},
		{tcInt2, -1, `"int"`},
		{tcInt8, -1, `"long"`},
		{tcOID, -1, `"long"`},
		{tcFloat4, -1, `"float"`},
		{tcFloat8, -1, `"double"`},
		{tcNumeric, -1, `{"tributary.numeric":true,"type":"string"}`},
		{tcNumeric, tcNumTypmod(38, 10), `{"logicalType":"decimal","precision":38,"scale":10,"type":"bytes"}`},
		{tcNumeric, tcNumTypmod(3, -2), `{"logicalType":"decimal","precision":5,"scale":0,"type":"bytes"}`},
		{tcNumeric, tcNumTypmod(2, 5), `{"logicalType":"decimal","precision":5,"scale":5,"type":"bytes"}`},
		{tcBPChar, 9, `"string"`},
		{tcBytea, -1, `"bytes"`},
		{tcUUID, -1, `{"logicalType":"uuid","type":"string"}`},
		{tcDate, -1, `{"logicalType":"date","type":"int"}`},
		{tcTime, -1, `{"logicalType":"time-micros","type":"long"}`},
		{tcTimetz, -1, `"string"`},
		{tcTS, -1, `{"logicalType":"local-timestamp-micros","type":"long"}`},
		{tcTSTZ, -1, `{"logicalType":"timestamp-micros","type":"long"}`},
		{tcJSONB, -1, `{"tributary.json":true,"type":"string"}`},
		{tcMood, -1, `{"tributary.enum":true,"type":"string"}`},
		{tcPrice, -1, `{"logicalType":"decimal","precision":10,"scale":2,"type":"bytes"}`},
		{tcArr(tcInt4), -1, `{"items":["null","int"],"type":"array"}`},
		{tcArr(tcPrice), -1, `{"items":["null",{"logicalType":"decimal","precision":10,"scale":2,"type":"bytes"}],"type":"array"}`},
		{tcArr(tcNumeric), tcNumTypmod(4, 1), `{"items":["null",{"logicalType":"decimal","precision":4,"scale":1,"type":"bytes"}],"type":"array"}`},
	}
	for _, tc := range cases {
		c, err := MapType(tc.t, tc.typmod, UnsupportedFail)
		if err != nil {
			t.Fatalf("%s: %v", tc.t.Name, err)
		}
		js, _ := json.Marshal(c.Avro)
		if string(js) != tc.want {
			t.Errorf("%s(%d): Avro = %s, want %s", tc.t.Name, tc.typmod, js, tc.want)
		}
	}
	c, _ := MapType(tcInterval, -1, UnsupportedFail)
	if c.Avro.(map[string]any)["name"] != TypeIntervalRecordName {
		t.Errorf("interval Avro = %v", c.Avro)
	}
}

// TestMapTypeText: known types without a natural Avro form are their exact
// text form whatever the policy; an unknown base type is an error under
// UnsupportedFail and text (Fallback) under UnsupportedAsText, the default.
func TestMapTypeText(t *testing.T) {
	point := tcBase(pgtype.PointOID, "point")
	known := []PGType{
		tcBase(790, "money"),
		point,
		tcBase(pgtype.XMLOID, "xml"),
		tcBase(pgtype.TSVectorOID, "tsvector"),
		tcBase(pgtype.BitOID, "bit"),
		tcBase(pgtype.VarbitOID, "varbit"),
		tcBase(3220, "pg_lsn"),
		tcBase(16385, "citext"), // an extension type: OID assigned at CREATE EXTENSION
		tcBase(16390, "hstore"),
		tcBase(16391, "ltree"),
		tcBase(16392, "cube"),
		tcBase(16393, "isbn13"),
		{OID: pgtype.Int4rangeOID, Name: "int4range", Kind: KindOther},
		{OID: 4451, Name: "int4multirange", Kind: KindOther},
		{OID: 90010, Name: "my_composite", Kind: KindOther},
		tcArr(point),
		tcArr(tcBase(16385, "citext")),
		{OID: 90011, Name: "d_point", Kind: KindDomain, Base: &point},
		tcArr(PGType{OID: 90014, Name: "d_intarr", Kind: KindDomain, Base: &PGType{OID: 1007, Name: "_int4", Kind: KindArray, Elem: &tcInt4}}),
	}
	unknown := []PGType{
		tcBase(16400, "geometry"),
		tcArr(tcBase(16400, "geometry")),
		{OID: 90012, Name: "broken_domain", Kind: KindDomain},
		{OID: 90013, Name: "_broken", Kind: KindArray},
	}
	for _, pt := range append(known, unknown...) {
		isKnown := len(known) > 0 && pt.Name != "geometry" && pt.Name != "_geometry" && pt.Name != "broken_domain" && pt.Name != "_broken"
		for _, policy := range []UnsupportedPolicy{UnsupportedFail, UnsupportedAsText} {
			c, err := MapType(pt, -1, policy)
			if !isKnown && policy == UnsupportedFail {
				if !errors.Is(err, ErrUnsupportedType) {
					t.Errorf("%s: err = %v, want ErrUnsupportedType", pt.Name, err)
				} else if !strings.Contains(err.Error(), pt.Name) || !strings.Contains(err.Error(), fmt.Sprintf("oid %d", pt.OID)) {
					t.Errorf("%s: error %q does not name the type and its oid", pt.Name, err)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s (policy %d): %v", pt.Name, policy, err)
				continue
			}
			if c.Fallback != !isKnown || c.Avro != "string" || c.Text {
				t.Errorf("%s (policy %d): Fallback=%v Avro=%v Text=%v", pt.Name, policy, c.Fallback, c.Avro, c.Text)
			}
			for _, in := range []string{"(1,2)", "$1,000.00", "{\"(1,2)\",NULL}", "", `"a"=>"b", "c"=>NULL`, "[0:1]={{1,2},{3,4}}"} {
				_, lit, _, err := tcRoundTrip(tcAvroCodec(t, c), c, in)
				if err != nil || lit != in {
					t.Errorf("%s %q: %q, %v", pt.Name, in, lit, err)
				}
			}
		}
	}
	// An invalid numeric typmod is a mapping error, not a panic.
	if _, err := MapType(tcNumeric, 3, UnsupportedFail); err == nil {
		t.Error("numeric typmod 3: no error")
	}
	// The zero policy is UnsupportedAsText.
	if c, err := MapType(tcBase(16400, "geometry"), -1, UnsupportedPolicy(0)); err != nil || !c.Fallback {
		t.Errorf("zero policy: %v, %v", c, err)
	}
}

func TestDecodeRejectsMalformed(t *testing.T) {
	bad := map[*PGType][]string{
		&tcBool:     {"", "T", "yes", "1", "tru"},
		&tcInt2:     {"", "-", "32768", "-32769", "1.0", " 1", "1 ", "0x10", "١"},
		&tcInt4:     {"2147483648", "-2147483649", "--1", "+"},
		&tcInt8:     {"9223372036854775808", "-9223372036854775809", "99999999999999999999"},
		&tcOID:      {"-1", "4294967296"},
		&tcFloat8:   {"", "inf", "nan", "1_0", "0x1p3", "1e400", " 1", "infinity"},
		&tcFloat4:   {"1e39", "Inf"},
		&tcNumeric:  {"", "1e5", "+1", ".5", "5.", "1.2.3", "nan", " 1", "1,0"},
		&tcBytea:    {"", "00", `\x0`, `\xzz`, `\\x00`, `\X00`},
		&tcUUID:     {"", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "a0eebc999c0b4ef8bb6d6bb9bd380a11", "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}"},
		&tcDate:     {"", "2000-02-30", "2001-02-29", "2000-13-01", "2000-00-10", "0000-01-01", "2000-1-1", "2000-01-01 AD", "2000-01-01 BC ", "Infinity", "4714-11-23 BC", "5874898-01-01", "01/02/2000"},
		&tcTime:     {"", "24:00:00.000001", "24:00:01", "25:00:00", "12:60:00", "12:00:60", "12:00", "12:00:00.1234567", "12:00:00.", "12:00:00+00"},
		&tcTS:       {"", "2000-01-01", "2000-01-01T00:00:00", "2000-01-01 24:00:00", "2000-01-01 00:00:00+00", "2000-02-30 00:00:00", "4714-11-23 23:59:59 BC"},
		&tcTSTZ:     {"2000-01-01 00:00:00", "2000-01-01 00:00:00+", "2000-01-01 00:00:00+16", "2000-01-01 00:00:00+00:60", "2000-01-01 00:00:00 BC+00"},
		&tcInterval: {"", "P", "PT", "P1", "P1H", "PT1Y", "P1M1Y", "P1Y1Y", "P1.5Y", "PT1.5M", "P1YT", "PT1S1M", "1 day", "P--1D", "P-D", "P2147483648D", "P178956971Y", "PT2562047789H", "PT0.1234567S", "PT9223372036854775807S", "P178956970Y8M"},
		&tcJSON:     {"\xff"},
		&tcText:     {"\xc3\x28"},
	}
	for pt, ins := range bad {
		c, err := MapType(*pt, -1, UnsupportedFail)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range ins {
			if v, err := c.Decode([]byte(in)); err == nil {
				t.Errorf("%s: Decode(%q) = %#v, want an error", pt.Name, in, v)
			}
		}
	}
	dec, _ := MapType(tcNumeric, tcNumTypmod(5, 2), UnsupportedFail)
	// NaN (and the Infinities PostgreSQL refuses for numeric(p,s)) take the
	// text branch; see TestMapTypeRoundTrip.
	for _, in := range []string{"1.234", "1234.5", "1e2", "Nan"} {
		if _, err := dec.Decode([]byte(in)); err == nil {
			t.Errorf("numeric(5,2): Decode(%q) succeeded", in)
		}
	}
	arr, _ := MapType(tcArr(tcInt4), -1, UnsupportedFail)
	for _, in := range []string{"", "{", "}", "{1", "{1,}", "{,1}", "{1}x", `{"1}`, "{1 2}", "{a}", `{"1"x}`, "1,2", `{\}`} {
		if v, err := arr.Decode([]byte(in)); err == nil {
			t.Errorf("int4[]: Decode(%q) = %#v, want an error", in, v)
		}
	}
}

func TestEncodeRejects(t *testing.T) {
	cases := []struct {
		t      PGType
		typmod int32
		native any
	}{
		{tcInt2, -1, int32(40000)},
		{tcInt4, -1, "1"},
		{tcOID, -1, int64(-1)},
		{tcText, -1, "a\x00b"},
		{tcText, -1, 5},
		{tcFloat4, -1, 0.1},
		{tcNumeric, -1, "1e5"},
		{tcNumeric, tcNumTypmod(5, 2), 1.5},
		{tcUUID, -1, "not-a-uuid"},
		{tcDate, -1, int64(math.MaxInt32 - 1)},
		{tcTime, -1, 25 * time.Hour},
		{tcTime, -1, time.Nanosecond},
		{tcTSTZ, -1, time.Date(-5000, 1, 1, 0, 0, 0, 0, time.UTC)},
		{tcTSTZ, -1, time.Unix(0, 1)},
		{tcInterval, -1, map[string]any{"months": int64(1) << 40, "days": int32(0), "micros": int64(0)}},
		{tcInterval, -1, map[string]any{"months": int32(0)}},
		{tcArr(tcInt4), -1, []any{"x"}},
		{tcArr(tcInt4), -1, "{1}\x00"},
		{tcDate, -1, "infinity\x00"},
	}
	for _, tc := range cases {
		c, err := MapType(tc.t, tc.typmod, UnsupportedFail)
		if err != nil {
			t.Fatal(err)
		}
		if s, err := c.Encode(tc.native); err == nil {
			t.Errorf("%s: Encode(%#v) = %q, want an error", tc.t.Name, tc.native, s)
		}
	}
}

func TestAvroNamedTypesOnce(t *testing.T) {
	iv, _ := MapType(tcInterval, -1, UnsupportedFail)
	ivArr, _ := MapType(tcArr(tcInterval), -1, UnsupportedFail)
	rec := map[string]any{"type": "record", "name": "Row", "namespace": "tributary.t", "fields": []any{
		map[string]any{"name": "a", "type": []any{"null", iv.Avro}},
		map[string]any{"name": "b", "type": []any{"null", iv.Avro}},
		map[string]any{"name": "c", "type": []any{"null", ivArr.Avro}},
		map[string]any{"name": "d", "type": []any{"null", map[string]any{"type": "enum", "name": "E", "symbols": []any{"x"}}}},
		map[string]any{"name": "e", "type": map[string]any{"type": "map", "values": map[string]any{"type": "enum", "name": "E", "namespace": "tributary.t", "symbols": []any{"x"}}}},
		map[string]any{"name": "f", "type": map[string]any{"type": "fixed", "name": "x.E", "size": 1}},
	}}
	before, _ := json.Marshal(rec)
	out := AvroNamedTypesOnce(rec)
	after, _ := json.Marshal(rec)
	if !bytes.Equal(before, after) {
		t.Fatal("AvroNamedTypesOnce modified its input")
	}
	fields := out.(map[string]any)["fields"].([]any)
	ft := func(i int) any { return fields[i].(map[string]any)["type"] }
	if _, ok := ft(0).([]any)[1].(map[string]any); !ok {
		t.Errorf("first interval is not a definition: %v", ft(0))
	}
	if got := ft(1).([]any)[1]; got != TypeIntervalRecordName {
		t.Errorf("second interval = %v, want the name", got)
	}
	if got := ft(2).([]any)[1].(map[string]any)["items"].([]any)[1]; got != TypeIntervalRecordName {
		t.Errorf("array items = %v, want the name", got)
	}
	if _, ok := ft(3).([]any)[1].(map[string]any); !ok {
		t.Errorf("first E (namespace inherited) is not a definition: %v", ft(3))
	}
	if got := ft(4).(map[string]any)["values"]; got != "tributary.t.E" {
		t.Errorf("second E = %v, want tributary.t.E", got)
	}
	if _, ok := ft(5).(map[string]any); !ok {
		t.Errorf("x.E is a different name but was replaced: %v", ft(5))
	}
	js, _ := json.Marshal(out)
	if _, err := goavro.NewCodec(string(js)); err != nil {
		t.Fatalf("goavro rejects the deduplicated schema: %v\n%s", err, js)
	}
	if _, err := goavro.NewCodec(string(before)); err == nil {
		t.Log("note: goavro accepted the duplicate definitions too")
	}
	// Scalars and strings come back unchanged.
	if AvroNamedTypesOnce("long") != "long" {
		t.Error("string schema changed")
	}
}

func TestTypeNumericScale(t *testing.T) {
	for _, ps := range [][2]int{{38, 10}, {1, 0}, {1000, 1000}, {3, -2}, {5, -1000}, {2, 5}} {
		p, s := typeNumericScale(tcNumTypmod(ps[0], ps[1]))
		if p != ps[0] || s != ps[1] {
			t.Errorf("typmod of numeric(%d,%d) decodes to (%d,%d)", ps[0], ps[1], p, s)
		}
	}
}

func TestTypeKindString(t *testing.T) {
	if KindArray.String() != "array" || TypeKind(42).String() != "TypeKind(42)" {
		t.Error(KindArray.String(), TypeKind(42).String())
	}
}

var tcSink any

func BenchmarkDecode(b *testing.B) {
	for _, bc := range []struct {
		t      PGType
		typmod int32
		in     string
	}{
		{tcInt8, -1, "-9223372036854775808"},
		{tcFloat8, -1, "1.7976931348623157e+308"},
		{tcNumeric, tcNumTypmod(12, 2), "1234567890.12"},
		{tcText, -1, "hello, world"},
		{tcTSTZ, -1, "2000-01-01 12:34:56.123456+00"},
		{tcDate, -1, "2000-01-01"},
		{tcInterval, -1, "P1Y2M3DT4H5M6.5S"},
		{tcArr(tcInt4), -1, "{1,2,3,4,5,6,7,8}"},
	} {
		c, _ := MapType(bc.t, bc.typmod, UnsupportedFail)
		in := []byte(bc.in)
		b.Run(bc.t.Name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				v, err := c.Decode(in)
				if err != nil {
					b.Fatal(err)
				}
				tcSink = v
			}
		})
	}
}
