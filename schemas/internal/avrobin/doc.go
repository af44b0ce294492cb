// Package avrobin reads and writes Avro binary without goavro: the primitive
// encodings (zig-zag varints, strings, bytes, floats, decimals, the
// timestamp-micros form of a time.Time), a decoder compiled once from a
// writer schema's JSON text (Compile, Node), and per-field setters that
// decode a record straight into a Go struct (Setter and the Set functions).
//
// Promises:
//   - Byte for byte what goavro writes and reads: the Append functions write
//     goavro's encodings of the same values, and Node.Native returns exactly
//     the values goavro's NativeFromBinary returns for the same schema and
//     bytes, errors included in kind (a short buffer wraps io.ErrShortBuffer).
//   - Decoded []byte values alias the input, as goavro's do.
//   - A schema construct the compiled decoder does not implement fails Compile
//     with an error wrapping ErrUnsupported, so callers can fall back to goavro.
//   - Nodes and setters are immutable once built and safe for concurrent use.
//
// It knows nothing of Tributary's records or of PostgreSQL: package schemas
// maps the event contract onto it.
package avrobin
