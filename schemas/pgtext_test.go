package schemas

import (
	"bytes"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"
)

func TestPGTCivilDays(t *testing.T) {
	// Against the time package over a wide range, BC included (time uses
	// astronomical years too: year 0 is 1 BC).
	for _, y := range []int{-4713, -1000, -1, 0, 1, 4, 100, 1582, 1899, 1900, 1969, 1970, 2000, 2024, 9999, 294276, 5874897} {
		for _, m := range []int{1, 2, 3, 12} {
			for _, d := range []int{1, 28} {
				want := time.Date(y, time.Month(m), d, 0, 0, 0, 0, time.UTC).Unix() / 86400
				if tm := time.Date(y, time.Month(m), d, 0, 0, 0, 0, time.UTC).Unix(); tm < 0 && tm%86400 != 0 {
					want--
				}
				got := pgtDaysFromCivil(int64(y), m, d)
				if got != want {
					t.Errorf("%d-%d-%d: %d, want %d", y, m, d, got, want)
				}
				yy, mm, dd := pgtCivilFromDays(got)
				if yy != int64(y) || mm != m || dd != d {
					t.Errorf("inverse of %d: %d-%d-%d, want %d-%d-%d", got, yy, mm, dd, y, m, d)
				}
			}
		}
	}
}

func TestPGTParseArray(t *testing.T) {
	type el struct {
		s    string
		null bool
	}
	cases := []struct {
		in   string
		want []el
		err  error
	}{
		{"{}", nil, nil},
		{" { } ", nil, nil},
		{"{a}", []el{{"a", false}}, nil},
		{`{NULL,null,"NULL",\NULL,NULLx}`, []el{{"NULL", true}, {"null", true}, {"NULL", false}, {"NULL", false}, {"NULLx", false}}, nil},
		{`{"a,b","c}d","e{f","g\"h","i\\j",""}`, []el{{"a,b", false}, {"c}d", false}, {"e{f", false}, {`g"h`, false}, {`i\j`, false}, {"", false}}, nil},
		{`{ a b , c\ }`, []el{{"a b", false}, {"c ", false}}, nil},
		{`{"x" , "y"}`, []el{{"x", false}, {"y", false}}, nil},
		{"[1:2]={a,b}", nil, pgtErrArrayShape},
		{"{{a}}", nil, pgtErrArrayShape},
		{"{a,{b}}", nil, pgtErrArrayShape},
		{"{a,,b}", nil, errPGTSyntax},
		{`{"a"b}`, nil, errPGTSyntax},
		{`{a"b"}`, nil, errPGTSyntax},
		{`{"a}`, nil, errPGTSyntax},
		{`{a\`, nil, errPGTSyntax},
		{"{a} b", nil, errPGTSyntax},
	}
	for _, tc := range cases {
		var got []el
		_, err := pgtParseArray([]byte(tc.in), ',', nil, func(e []byte, null bool) error {
			got = append(got, el{string(e), null})
			return nil
		})
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%q: err = %v, want %v", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if len(got) != len(tc.want) {
			t.Errorf("%q: %v, want %v", tc.in, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%q: %v, want %v", tc.in, got, tc.want)
				break
			}
		}
	}
}

func TestPGTAppendArrayElem(t *testing.T) {
	for in, want := range map[string]string{
		"a": "a", "": `""`, "NULL": `"NULL"`, "nUlL": `"nUlL"`, "NULLS": "NULLS", "a b": `"a b"`,
		"a,b": `"a,b"`, `a"b`: `"a\"b"`, `a\b`: `"a\\b"`, "{": `"{"`, "}": `"}"`, "a\tb": "\"a\tb\"",
		"a;b": "a;b", "ünï": "ünï", "'": "'",
	} {
		if got := string(pgtAppendArrayElem(nil, in, ',')); got != want {
			t.Errorf("%q: %s, want %s", in, got, want)
		}
	}
}

func TestPGTInterval(t *testing.T) {
	for _, v := range []pgtInterval{
		{}, {1, 0, 0}, {-1, 0, 0}, {0, 0, -1}, {0, 0, 1}, {12, -1, 1}, {math.MaxInt32, 0, 0}, {math.MinInt32, math.MinInt32, 0},
		{0, 0, math.MaxInt64}, {0, 0, math.MinInt64}, pgtIntervalInf, pgtIntervalNegInf, {-13, 5, -pgtUsecPerHour - 1},
	} {
		s := pgtAppendInterval(nil, v)
		got, ok := pgtParseInterval(s)
		if !ok || got != v {
			t.Errorf("%+v prints %s, which parses to %+v, %v", v, s, got, ok)
		}
	}
}

func TestPGTTimestampLimits(t *testing.T) {
	for _, us := range []int64{0, -1, 1, math.MaxInt64 - 1, pgtMinTimestampUsec, 946684800000000} {
		for _, tz := range []bool{false, true} {
			s, ok := pgtAppendTimestamp(nil, us, tz)
			if !ok {
				t.Fatalf("%d: not printable", us)
			}
			got, err := pgtParseTimestamp(s, tz)
			if err != nil || got != us {
				t.Errorf("%d prints %s, which parses to %d, %v", us, s, got, err)
			}
		}
	}
	if _, ok := pgtAppendTimestamp(nil, pgtMinTimestampUsec-1, false); ok {
		t.Error("printed a timestamp before 4714-11-24 BC")
	}
}

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

func FuzzArrayLiteral(f *testing.F) {
	// The raw parser: whatever it accepts re-quotes to a literal that
	// parses to the same elements.
	for _, s := range []string{"{}", `{a,"b c",NULL,"NULL",""}`, `{"\\","\""}`, "[0:1]={a,b}", "{{a},{b}}", `{ a\ b ,c}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		type el struct {
			s    string
			null bool
		}
		var first []el
		if _, err := pgtParseArray(in, ',', nil, func(e []byte, null bool) error {
			first = append(first, el{string(e), null})
			return nil
		}); err != nil {
			return
		}
		lit := []byte{'{'}
		for i, e := range first {
			if i > 0 {
				lit = append(lit, ',')
			}
			if e.null {
				lit = append(lit, "NULL"...)
			} else {
				lit = pgtAppendArrayElem(lit, e.s, ',')
			}
		}
		lit = append(lit, '}')
		i := 0
		if _, err := pgtParseArray(lit, ',', nil, func(e []byte, null bool) error {
			if i >= len(first) || first[i] != (el{string(e), null}) {
				t.Fatalf("%q re-quoted as %q: element %d differs", in, lit, i)
			}
			i++
			return nil
		}); err != nil || i != len(first) {
			t.Fatalf("%q re-quoted as %q: %v (%d of %d elements)", in, lit, err, i, len(first))
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
