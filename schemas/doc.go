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
//     the same schemas; goavro remains the decoder.
package schemas
