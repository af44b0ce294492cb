package schemas

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrNotWireFormat reports bytes that do not start with the Confluent wire
// format header (magic byte 0 and a 4-byte schema ID).
var ErrNotWireFormat = errors.New("not Confluent wire format")

// AppendHeader appends the Confluent wire format header for schema id to dst.
// The Avro binary body follows it.
func AppendHeader(dst []byte, id int) []byte {
	dst = append(dst, 0)
	return binary.BigEndian.AppendUint32(dst, uint32(id))
}

// SplitWire returns the schema ID and the Avro body of a wire-format message.
func SplitWire(b []byte) (id int, body []byte, err error) {
	if len(b) < 5 || b[0] != 0 {
		n := len(b)
		if n > 8 {
			n = 8
		}
		return 0, nil, fmt.Errorf("%w: %d bytes starting % x", ErrNotWireFormat, len(b), b[:n])
	}
	return int(binary.BigEndian.Uint32(b[1:5])), b[5:], nil
}
