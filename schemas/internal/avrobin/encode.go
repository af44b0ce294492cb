package avrobin

import (
	"encoding/binary"
	"math"
	"math/big"
	"time"
)

// MicrosFromTime is goavro's timestamp-micros form of a time.Time, wrapping
// arithmetic included (the inverse of TimeFromMicros).
func MicrosFromTime(t time.Time) int64 { return t.Unix()*1e6 + int64(t.Nanosecond()/1e3) }

// AppendLong appends an Avro int or long: a zigzag varint.
func AppendLong(dst []byte, v int64) []byte {
	return binary.AppendUvarint(dst, uint64(v<<1)^uint64(v>>63))
}

// AppendBool appends an Avro boolean.
func AppendBool(dst []byte, v bool) []byte {
	if v {
		return append(dst, 1)
	}
	return append(dst, 0)
}

// AppendString appends an Avro string: its length, then its bytes.
func AppendString(dst []byte, s string) []byte {
	return append(AppendLong(dst, int64(len(s))), s...)
}

// AppendBytes appends Avro bytes: the length, then b.
func AppendBytes(dst, b []byte) []byte {
	return append(AppendLong(dst, int64(len(b))), b...)
}

// AppendNullableString is the ["null", "string"] union, with "" as null.
func AppendNullableString(dst []byte, s string) []byte {
	if s == "" {
		return append(dst, 0)
	}
	return AppendString(append(dst, 2), s)
}

// AppendFloat appends an Avro float, four bytes little-endian.
func AppendFloat(dst []byte, f float32) []byte {
	return binary.LittleEndian.AppendUint32(dst, math.Float32bits(f))
}

// AppendDouble appends an Avro double, eight bytes little-endian.
func AppendDouble(dst []byte, f float64) []byte {
	return binary.LittleEndian.AppendUint64(dst, math.Float64bits(f))
}

// AppendDecimalInt appends the bytes/decimal of unscaled value n: its
// minimal big-endian two's complement, as goavro's toSignedBytes writes it.
func AppendDecimalInt(dst []byte, n int64) []byte {
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], uint64(n))
	i := 0
	if n >= 0 {
		for i < 7 && buf[i] == 0 && buf[i+1]&0x80 == 0 {
			i++
		}
	} else {
		for i < 7 && buf[i] == 0xff && buf[i+1]&0x80 != 0 {
			i++
		}
	}
	return AppendBytes(dst, buf[i:])
}

var bigOne = big.NewInt(1)

// AppendDecimalBig appends the bytes/decimal of unscaled value n as
// goavro's toSignedBytes writes it.
func AppendDecimalBig(dst []byte, n *big.Int) []byte {
	switch n.Sign() {
	case 0:
		return AppendBytes(dst, []byte{0})
	case 1:
		b := n.Bytes()
		if b[0]&0x80 != 0 {
			dst = AppendLong(dst, int64(len(b)+1))
			return append(append(dst, 0), b...)
		}
		return AppendBytes(dst, b)
	}
	length := uint(n.BitLen()/8+1) * 8
	b := new(big.Int).Add(n, new(big.Int).Lsh(bigOne, length)).Bytes()
	if len(b) >= 2 && b[0] == 0xff && b[1]&0x80 != 0 {
		b = b[1:]
	}
	return AppendBytes(dst, b)
}
