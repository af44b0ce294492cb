// Package producer is the "Acquire" step: it decodes PostgreSQL logical
// replication (pgoutput) into transaction-framed Avro events on Kafka.
//
// Promises, each of which the integration suite tries to break:
//   - Every committed change of a published table reaches Kafka (G1), once
//     (G2): events are written inside Kafka transactions, several source
//     transactions to one Kafka transaction, together with the producer's
//     state on the compacted <prefix>.state (its position and each table's
//     capture and snapshot progress, state.go). On start the producer reads
//     that state, never the transactions topic from its start, and skips the
//     source transactions whose commit LSN is not above its position, so
//     topics may have any retention.
//   - Every table is copied once: the initial snapshot reads the slot's
//     exported snapshot; an interrupted one continues online, and a table
//     that joins the publication later gets an online snapshot unless all of
//     its rows are in the stream (tables.go). Online snapshots read while
//     the stream goes on, between watermarks (online.go), on request
//     through the WAL too (signal.go).
//   - The slot's confirmed flush position moves past a source transaction
//     only after the Kafka transaction holding it has committed (G5). The
//     write position (received) and the flush position (durable in Kafka) are
//     reported separately. When nothing is in flight, a keepalive's WAL end is
//     confirmed, so an idle database does not hold WAL; a periodic heartbeat
//     message keeps the stream moving. One pure state machine decides the
//     flush position (slotPosition, position.go), property-tested against a
//     model of the stream.
//   - Memory does not grow with transaction size (G6): a source transaction's
//     events stream into the open Kafka transaction as they are decoded, and
//     the Kafka client's buffer is bounded, which back-pressures decoding.
//     While one group's Kafka transaction commits, decoding goes on into a
//     queue bounded to 8 MB / 20,000 records.
//   - Events are encoded by schemas.Encoder straight from pgoutput's text,
//     byte for byte what the table's goavro codecs write.
//   - Bad input stops with an error naming the table, column, key and LSN (G7),
//     at a resumable place: nothing past the last Kafka commit is confirmed.
//     So does an event larger than Config.MaxEventBytes (ErrEventTooLarge),
//     before the Kafka client or the broker would refuse it namelessly.
//
// Any error ends the replication session. Run retries it, restarting the
// session with backoff from the durable state (the slot and the state topic),
// unless it is terminal by internal/retry's one rule: marked terminal (bad
// configuration, an unsupported type, a schema change the policy refuses, a
// slot another producer holds), a PostgreSQL error outside the transient
// SQLSTATE classes, a Kafka error that no client can retry (a fenced
// producer, authorization), or a certificate that does not verify.
package producer
