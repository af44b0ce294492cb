// Package schemas is Tributary's event contract, version 1: the Avro schemas of
// the data, key, commit-frame and message records, the mapping of PostgreSQL
// types to Avro, the Confluent wire format, and the schema-registry client that
// checks compatibility before it registers anything.
//
// The files in avro/ are the single source of truth for the fixed records
// (Source, Tx, Frame, Message); row and key records are derived per table
// version by BuildTableSchema from the columns a pgoutput Relation message and
// the catalog describe.
//
// Promises:
//   - Topic and subject names are deterministic functions of the prefix and the
//     table (TopicNameStrategy: "<topic>-key", "<topic>-value").
//   - Avro field names are injective per table: a PostgreSQL column name that is
//     not a valid Avro name is sanitized, a collision gets a numeric suffix, and
//     the original name is kept in the field attribute "tributary.column".
//   - Every row field is nullable with a null default, so a new column is a
//     compatible schema version. Key fields are not nullable.
//   - A value is never replaced by a placeholder: a TOASTed column that did not
//     change is null in the row and named in the envelope's unchanged_toast list.
//   - Encoder, the producer's hot path, writes keys, envelopes and frames
//     straight from PostgreSQL's text, byte for byte what goavro writes for
//     the same schemas; DecoderEnvelope and DecoderFrame, the consumer's,
//     read them into the same values goavro would, and goavro decodes
//     whatever the compiled decoder does not support.
//
// The package is the contract; two internal packages do the work below it
// and know nothing of the contract:
//   - internal/pgtext parses and prints the PostgreSQL text formats that
//     SessionParams fixes (dates, times, timestamps, intervals, numerics,
//     bytea, uuids, arrays);
//   - internal/avrobin reads and writes Avro binary as goavro does (the
//     primitive encodings, a decoder compiled from a writer schema, and
//     field setters that decode a record straight into a struct).
package schemas
