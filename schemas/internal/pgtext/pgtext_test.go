package pgtext

import (
	"errors"
	"math"
	"testing"
	"time"
)

func TestCivilDays(t *testing.T) {
	// Against the time package over a wide range, BC included (time uses
	// astronomical years too: year 0 is 1 BC).
	for _, y := range []int{-4713, -1000, -1, 0, 1, 4, 100, 1582, 1899, 1900, 1969, 1970, 2000, 2024, 9999, 294276, 5874897} {
		for _, m := range []int{1, 2, 3, 12} {
			for _, d := range []int{1, 28} {
				want := time.Date(y, time.Month(m), d, 0, 0, 0, 0, time.UTC).Unix() / 86400
				if tm := time.Date(y, time.Month(m), d, 0, 0, 0, 0, time.UTC).Unix(); tm < 0 && tm%86400 != 0 {
					want--
				}
				got := DaysFromCivil(int64(y), m, d)
				if got != want {
					t.Errorf("%d-%d-%d: %d, want %d", y, m, d, got, want)
				}
				yy, mm, dd := CivilFromDays(got)
				if yy != int64(y) || mm != m || dd != d {
					t.Errorf("inverse of %d: %d-%d-%d, want %d-%d-%d", got, yy, mm, dd, y, m, d)
				}
			}
		}
	}
}

func TestParseArray(t *testing.T) {
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
		{"[1:2]={a,b}", nil, ErrArrayShape},
		{"{{a}}", nil, ErrArrayShape},
		{"{a,{b}}", nil, ErrArrayShape},
		{"{a,,b}", nil, ErrSyntax},
		{`{"a"b}`, nil, ErrSyntax},
		{`{a"b"}`, nil, ErrSyntax},
		{`{"a}`, nil, ErrSyntax},
		{`{a\`, nil, ErrSyntax},
		{"{a} b", nil, ErrSyntax},
	}
	for _, tc := range cases {
		var got []el
		_, err := ParseArray([]byte(tc.in), ',', nil, func(e []byte, null bool) error {
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

func TestAppendArrayElem(t *testing.T) {
	for in, want := range map[string]string{
		"a": "a", "": `""`, "NULL": `"NULL"`, "nUlL": `"nUlL"`, "NULLS": "NULLS", "a b": `"a b"`,
		"a,b": `"a,b"`, `a"b`: `"a\"b"`, `a\b`: `"a\\b"`, "{": `"{"`, "}": `"}"`, "a\tb": "\"a\tb\"",
		"a;b": "a;b", "ünï": "ünï", "'": "'",
	} {
		if got := string(AppendArrayElem(nil, in, ',')); got != want {
			t.Errorf("%q: %s, want %s", in, got, want)
		}
	}
}

func TestInterval(t *testing.T) {
	for _, v := range []Interval{
		{}, {1, 0, 0}, {-1, 0, 0}, {0, 0, -1}, {0, 0, 1}, {12, -1, 1}, {math.MaxInt32, 0, 0}, {math.MinInt32, math.MinInt32, 0},
		{0, 0, math.MaxInt64}, {0, 0, math.MinInt64}, IntervalInf, IntervalNegInf, {-13, 5, -UsecPerHour - 1},
	} {
		s := AppendInterval(nil, v)
		got, ok := ParseInterval(s)
		if !ok || got != v {
			t.Errorf("%+v prints %s, which parses to %+v, %v", v, s, got, ok)
		}
	}
}

func TestTimestampLimits(t *testing.T) {
	for _, us := range []int64{0, -1, 1, math.MaxInt64 - 1, minTimestampUsec, 946684800000000} {
		for _, tz := range []bool{false, true} {
			s, ok := AppendTimestamp(nil, us, tz)
			if !ok {
				t.Fatalf("%d: not printable", us)
			}
			got, err := ParseTimestamp(s, tz)
			if err != nil || got != us {
				t.Errorf("%d prints %s, which parses to %d, %v", us, s, got, err)
			}
		}
	}
	if _, ok := AppendTimestamp(nil, minTimestampUsec-1, false); ok {
		t.Error("printed a timestamp before 4714-11-24 BC")
	}
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
		if _, err := ParseArray(in, ',', nil, func(e []byte, null bool) error {
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
				lit = AppendArrayElem(lit, e.s, ',')
			}
		}
		lit = append(lit, '}')
		i := 0
		if _, err := ParseArray(lit, ',', nil, func(e []byte, null bool) error {
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
