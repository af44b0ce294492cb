package avrobin

import (
	"bytes"
	"errors"
	"io"
	"math"
	"math/big"
	"testing"
	"time"
)

func TestLongRoundTrip(t *testing.T) {
	for _, v := range []int64{0, -1, 1, 63, -64, 64, math.MaxInt32, math.MinInt32, math.MaxInt64, math.MinInt64} {
		b := AppendLong(nil, v)
		got, rest, err := ReadLong(append(b, 0xaa))
		if err != nil || got != v || !bytes.Equal(rest, []byte{0xaa}) {
			t.Errorf("%d: %x reads back as %d, rest %x, %v", v, b, got, rest, err)
		}
		if _, _, err := ReadLong(b[:len(b)-1]); !errors.Is(err, io.ErrShortBuffer) {
			t.Errorf("%d: truncated read: %v", v, err)
		}
	}
}

func TestDecimalIntMatchesBig(t *testing.T) {
	for _, n := range []int64{0, 1, -1, 127, 128, -128, -129, 255, 256, math.MaxInt64, math.MinInt64} {
		small := AppendDecimalInt(nil, n)
		large := AppendDecimalBig(nil, big.NewInt(n))
		if !bytes.Equal(small, large) {
			t.Errorf("%d: AppendDecimalInt %x, AppendDecimalBig %x", n, small, large)
		}
		bs, _, err := ReadBytes(small)
		if err != nil {
			t.Fatal(err)
		}
		if got := decimalFromBytes(bs, 0); got.Cmp(new(big.Rat).SetInt64(n)) != 0 {
			t.Errorf("%d reads back as %v", n, got)
		}
	}
}

func TestMicrosFromTime(t *testing.T) {
	for _, us := range []int64{0, -1, 1, 1_700_000_000_123_456, -62_135_596_800_000_000} {
		if got := MicrosFromTime(TimeFromMicros(us)); got != us {
			t.Errorf("%d: round trip %d", us, got)
		}
	}
	if got := DateFromDays(-1); !got.Equal(time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("day -1 is %v", got)
	}
}

func TestCompileUnsupported(t *testing.T) {
	_, err := Compile(`{"type":"fixed","name":"f","size":4,"logicalType":"decimal","precision":4}`)
	if !errors.Is(err, ErrUnsupported) {
		t.Errorf("fixed decimal: %v", err)
	}
}
