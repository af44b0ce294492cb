package schemas

import (
	"bytes"
	"testing"

	"github.com/linkedin/goavro/v2"
)

// tcFuzzCodec is the property every fuzz target checks: Decode never panics,
// and when it succeeds, the value goes through goavro, Encode makes a literal
// that Decode accepts, and that literal has the same Avro encoding (the same
// value) and is a fixed point of Decode+Encode.
func tcFuzzCodec(f *testing.F, pt PGType, typmod int32, seeds ...string) {
	c, err := MapType(pt, typmod, UnsupportedFail)
	if err != nil {
		f.Fatal(err)
	}
	ac := tcAvroCodec(f, c)
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	for _, tc := range tcCases {
		if tc.t.Name == pt.Name && tc.typmod == typmod {
			f.Add([]byte(tc.in))
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		orig := bytes.Clone(in)
		native, lit, bin, err := tcRoundTrip(ac, c, string(in))
		if !bytes.Equal(in, orig) {
			t.Fatal("Decode modified its input")
		}
		if native == nil {
			return // Decode rejected the input
		}
		if err != nil {
			t.Fatalf("%q decoded to %#v but failed the round trip: %v", in, native, err)
		}
		_, lit2, bin2, err := tcRoundTrip(ac, c, lit)
		if err != nil {
			t.Fatalf("%q: Encode's literal %q: %v", in, lit, err)
		}
		if !bytes.Equal(bin, bin2) {
			t.Fatalf("%q and its literal %q differ in Avro: %x, %x", in, lit, bin, bin2)
		}
		if lit2 != lit {
			t.Fatalf("%q: literal %q is not a fixed point, next is %q", in, lit, lit2)
		}
	})
}

func FuzzTextArray(f *testing.F)     { tcFuzzCodec(f, tcArr(tcText), -1, `{"a\"b",NULL,c}`) }
func FuzzIntArray(f *testing.F)      { tcFuzzCodec(f, tcArr(tcInt4), -1, "{1,NULL,-3}", "{ 1 , 2 }") }
func FuzzIntervalArray(f *testing.F) { tcFuzzCodec(f, tcArr(tcInterval), -1, "{PT0S,NULL}") }
func FuzzInterval(f *testing.F)      { tcFuzzCodec(f, tcInterval, -1, "P1Y2M3DT4H5M6.5S") }
func FuzzTimestamp(f *testing.F)     { tcFuzzCodec(f, tcTS, -1, "2000-01-01 00:00:00.5 BC") }
func FuzzTimestamptz(f *testing.F)   { tcFuzzCodec(f, tcTSTZ, -1, "2000-01-01 00:00:00+05:30:15 BC") }
func FuzzDate(f *testing.F)          { tcFuzzCodec(f, tcDate, -1, "2000-02-29") }
func FuzzTime(f *testing.F)          { tcFuzzCodec(f, tcTime, -1, "12:34:56.789") }
func FuzzDecimal(f *testing.F)       { tcFuzzCodec(f, tcNumeric, tcNumTypmod(20, 4), "-12.3400", "0.0001") }
func FuzzDecimalNegScale(f *testing.F) {
	tcFuzzCodec(f, tcNumeric, tcNumTypmod(3, -2), "99900", "-100")
}
func FuzzNumericText(f *testing.F) { tcFuzzCodec(f, tcNumeric, -1, "-1.5", "NaN") }
func FuzzFloat8(f *testing.F)      { tcFuzzCodec(f, tcFloat8, -1, "1e+300", "-0", "NaN") }
func FuzzFloat4(f *testing.F)      { tcFuzzCodec(f, tcFloat4, -1, "1e+30", "-Infinity") }
func FuzzInt8(f *testing.F)        { tcFuzzCodec(f, tcInt8, -1, "-1") }
func FuzzInt2(f *testing.F)        { tcFuzzCodec(f, tcInt2, -1, "-1") }
func FuzzBytea(f *testing.F)       { tcFuzzCodec(f, tcBytea, -1, `\x00ff`) }
func FuzzUUID(f *testing.F)        { tcFuzzCodec(f, tcUUID, -1) }
func FuzzBool(f *testing.F)        { tcFuzzCodec(f, tcBool, -1) }
func FuzzText(f *testing.F)        { tcFuzzCodec(f, tcText, -1, "a\x00b") }

// TestGoavroUnionOfNull documents that a NULL column is a plain nil for goavro.
func TestGoavroUnionOfNull(t *testing.T) {
	if goavro.Union("null", nil) != nil {
		t.Error("goavro.Union(null, nil) is not nil")
	}
}
