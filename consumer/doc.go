// Package consumer is the "Write" step: it reads Tributary's transaction-framed
// Avro events from Kafka and replays them into a Sink, exactly once, in commit
// order.
//
// # Transactional mode (the default)
//
// The consumer reads the transactions topic (<prefix>.transactions) in order,
// from the offset stored in the sink's checkpoint, never from Kafka group
// offsets. For each commit frame it takes exactly the frame's count of records
// from each listed topic-partition, starting at that partition's checkpointed
// next offset, and checks that every record's tributary.commit_lsn header
// equals the frame's commit LSN and that tributary.position increases within
// the partition. Events of one source transaction reach the sink in position
// order, merged across partitions. Promises:
//
//   - Whole transactions, in commit order (G3): the sink receives consecutive
//     whole source transactions in one Batch, which it applies in one target
//     transaction. A Batch never splits a source transaction. So the target
//     only ever shows states the source had at a commit boundary, across
//     tables and partitions.
//   - Exactly once (G2): the Batch carries the checkpoint (the next offset of
//     the transactions topic and of every data partition it read, the last
//     commit LSN and commit time) and the sink writes it in the same target
//     transaction as the data. On start the consumer resumes from it.
//   - Bounded memory (G6): records stream from Kafka into the sink; a source
//     transaction is never held whole. The read-ahead is bounded in records
//     and in bytes for each partition (Config.PartitionBuffer and
//     PartitionBufferBytes) and for all partitions together (ReadAhead and
//     ReadAheadBytes), and a partition that reaches either bound is paused,
//     so that memory grows with neither transaction size, row size nor the
//     number of partitions beyond one small fetch (256 KiB) each. A
//     buffered record is copied out of the fetch it came in, which it
//     would otherwise keep whole.
//   - Bad input is never dropped silently (G7): a record that cannot be
//     decoded, an unknown schema ID, a value that cannot be converted, a
//     target constraint violation, and a frame whose counts or LSNs do not
//     match the records each produce an error naming the topic, partition,
//     offset, table, key and commit LSN. Under OnErrorStop (the default) Run
//     returns it, and the next Run resumes from the same place. Under
//     OnErrorDeadLetter the failed source transaction's raw records are
//     written with the reason to <prefix>.dlq.<name>, then the checkpoint
//     moves past it. Structural errors (a frame that cannot be decoded, a
//     count or LSN mismatch) always stop: skipping them would misalign every
//     later transaction.
//
// A frame that lists partitions of tables outside Config.Tables has those
// records read, checked and skipped; the checkpoint still advances.
// Records of the messages topic (<prefix>.messages) listed in a frame reach the
// sink as events with Op "" and a Message.
//
// # Retention and bootstrapping
//
// A consumer never skips records that retention deleted: at the start of
// each session it compares its checkpoint with every partition's log start
// and stops with a *BehindRetentionError (naming topic, partition,
// checkpoint and log start) when records it has not applied are gone, or
// when it has no checkpoint and the transactions topic's beginning is gone;
// its Kafka clients never reset an out-of-range offset. With
// Config.FromSnapshot, such a consumer starts instead at the frame where
// that online snapshot was requested: its first batch empties the
// snapshot's tables at the sink (truncate events), and the snapshot's reads
// rebuild them. A data partition a frame lists for the first time without
// a checkpoint is positioned by commit LSN (txlog.PositionFor), never read
// from its start.
//
// # Applications
//
// HandlerSink adapts a function that takes one whole source transaction
// (TxnHandler) to a Sink, with a CheckpointStore for the position
// (FileCheckpoints keeps it in a file): the same reassembly, checks and
// retention rules, for an application that is not a database replica.
// docs/CONSUMING.md is the contract for readers in other languages.
//
// # Per-key mode
//
// ModePerKey applies data partitions in parallel, one worker per partition,
// each with its own checkpoint rows. Order holds per key only (G4): there is
// no cross-table or cross-partition atomicity, and the target may show states
// the source never had. A truncate is applied when the first partition's
// truncate record arrives. Use it only for targets that do not need G3.
//
// # Errors and retries
//
// Errors follow internal/retry's one rule: retried unless terminal. A
// terminal error (retry.IsTerminal: marked with Permanent, a target
// error outside the transient SQLSTATE classes, a Kafka error no client can
// retry, a certificate that does not verify) about one source transaction
// follows Config.OnError (stop, or dead-letter it); one marked with Halt, or
// about the stream itself, stops Run. Run retries every other error (broker
// or target unreachable, connection reset, serialization failure) from the
// last checkpoint with exponential backoff, giving up after
// Config.RetryMaxElapsed. Kafka group offsets of the group
// "tributary-<name>" are committed on a best-effort basis, so that lag shows
// in Kafka tools; they are never used to resume.
package consumer
