// Package txlog reads and writes Tributary's transaction log: the commit
// frames of <prefix>.transactions and the producer's state on <prefix>.state.
// Every program that reads either topic (the producer, the consumer, status,
// reseed, the test harness and the benchmarks) reads it through this package,
// so there is one reading of the format.
//
// Promises:
//   - Reads are read_committed: a frame or state record of an aborted Kafka
//     transaction is never returned.
//   - A read never moves silently past missing records: reading from an
//     offset below a partition's log start (retention deleted the records)
//     returns an error wrapping ErrBelowLogStart that names the topic,
//     partition, offset and log start.
//   - In the transactions topic, commit LSNs never decrease in log order
//     (the producer writes frames in the order the source commits them, and
//     snapshot chunks at the position of their watermark), so a frame can be
//     found by commit LSN with a binary search (FirstAtOrPast). Records of a
//     data partition carry their transaction's commit LSN in the
//     tributary.commit_lsn header, in the same order.
//   - The producer's state is one JSON document per key on a compacted topic,
//     written in the same Kafka transaction as the frames it describes, so a
//     read_committed reader sees state and frames that agree. A restart reads
//     the state, never the transactions topic from its start, so topics may
//     have any retention.
package txlog
