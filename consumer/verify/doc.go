// Package verify compares a source PostgreSQL database with a consumer's
// target at a consistent point and reports the rows that differ. It is the
// engine of `tributary verify`.
//
// # Consistency rule
//
// The source is read in one REPEATABLE READ, READ ONLY transaction. Its first
// statement takes the snapshot and then reads L = pg_current_wal_insert_lsn().
// A transaction becomes visible only after its commit record is in the WAL,
// so every transaction the snapshot sees has a commit LSN below L.
//
// The consumer's checkpoint (the 'transactions' row of tributary_checkpoint)
// holds the commit LSN C of the last source transaction it applied, written in
// the same target transaction as the data. The target is read once the
// consumer has caught up with the snapshot, which is decided by either rule:
//
//   - C >= L: a transaction committed at or after L was applied, and the
//     consumer applies in commit order, so everything below L was applied.
//     To make such a transaction exist on an idle source, verify writes a
//     barrier right after taking the snapshot: a non-transactional logical
//     message with prefix BarrierPrefix (pg_logical_emit_message), which the
//     producer frames on its own and the consumer applies as an empty
//     transaction. It also appears on <prefix>.messages, where consumers of
//     that topic should ignore the prefix. The barrier needs EXECUTE on
//     pg_logical_emit_message; without it verify falls back to the next rule.
//   - The checkpoint's commit time is at or after the commit time of the
//     source cluster's last commit, pg_last_committed_xact(), read inside the
//     snapshot (needs track_commit_timestamp = on). This holds on an idle
//     source whose last commit was published, and never when the last commit
//     touched something the producer does not publish.
//
// Then the target is read in one REPEATABLE READ, READ ONLY transaction.
//
// Limits of the rule. The target snapshot is at some commit C' >= L, so
// source transactions committed between the source snapshot and C' are on the
// target but not in the source snapshot: under a live workload the rows they
// touch differ. Verify therefore re-checks the key ranges that differ with a
// fresh pair of snapshots (Config.Rechecks) and reports only what still
// differs in the last round; a row that is rewritten faster than the consumer
// applies can still be reported. PostgreSQL's visibility order can differ from
// commit-LSN order by a few microseconds, which has the same effect. Commit
// timestamps are not strictly ordered with commit LSNs either. The consumer
// must run in transactional mode: per-key checkpoints have no single commit
// LSN, and verify refuses them. The source transaction stays open while
// verify waits and compares, which holds back VACUUM on the source for that
// long (bounded by Config.Timeout plus the comparison).
//
// # Comparison
//
// Each table is compared over ranges of its primary key (or replica identity
// index). For a range, both sides compute in SQL the row count and the sum of
// a 64-bit hash of every row: the first 16 hex digits of md5 of
// ROW(col1::text, col2::text, ...)::text over the source's column list, in the
// source's order, with the same session settings (DateStyle, TimeZone,
// extra_float_digits, ...) on both sides. Equal sums end the range. A range
// that differs is split into Config.Fanout sub-ranges at key boundaries picked
// on the source, and only differing sub-ranges are split again, until a range
// holds at most Config.LeafRows source rows. Then the keys and row hashes of
// the range are read (the source's at most LeafRows into memory, the
// target's streamed) and each key is classified as missing (on the source
// only), extra (on the target only) or different.
//
// Promises:
//   - Memory does not depend on table size: aggregation is server-side and a
//     leaf holds at most LeafRows source keys. Reported keys are bounded by
//     Config.MaxKeys per table; the counts are exact.
//   - Rows compare equal exactly when the text forms of their columns are
//     equal. Columns the target has and the source lacks are ignored; a
//     column or table the target lacks is a difference.
//   - Text keys are compared with their own collation when it is the same on
//     both sides, and with COLLATE "C" on both sides when it is not.
//   - Passwords are never logged or reported; databases are named by
//     user@host:port/database.
//
// # Transforms
//
// With Config.Transform the target is compared with what the consumer's
// transform makes of the source, not with the source itself. Each source
// table is bound to the pipeline through the table version the consumer
// decodes (the registry's latest value schema); tables no step applies to
// are compared as they are. For the others, the source rows of a range are
// read in key order, converted to the values the consumer decodes (the
// producer's type conversion, then through Avro and back), passed through the
// same transform code as snapshot reads (row filters drop rows, splits,
// combines, renames, masks and conversions apply), encoded as the sink
// encodes them (pgtarget.Values), and hashed by the target's database
// (Target.Hasher) after a cast to each target column's type, so both sides
// print values the same way. A DuckDB target's rows are hashed by the source
// database after a cast to the consumer's column types, and so are the
// transformed source rows. Nothing is held but one batch of rows.
//
// Steps keep key columns in place, so source key ranges are target key
// ranges and range splitting works as without transforms. When a step
// rewrites a key column's value (a hash of the key), that is detected on the
// first pass and the table is compared as a whole: equal or not, without the
// differing keys.
//
// # History sinks
//
// NewHistoryTarget compares each source table with the current versions of
// its history table (valid_to open, op not d or t). Config.CheckInvariants
// also checks the whole history table: versions 1..n per key in commit
// order, every version but the last closed no later than the next opens, no
// range ending before it starts, delete and truncate records closed at once.
//
// # DuckDB sinks
//
// NewDuckDBTarget (cgo builds only; otherwise an *InputError) compares each
// source table with the DuckDB sink's current-state table of the same name
// (with Config.Transform, the table the transform writes). DuckDB prints
// values differently, so the DuckDB side prints each value as a PostgreSQL
// literal in DuckDB SQL (hex for BLOB, array literals for lists) and the
// source database casts it to the source column's type (with
// Config.Transform, the consumer's column type) and hashes it: both sides
// are hashed by PostgreSQL. Text keys are compared in byte
// order (COLLATE "C" on the source), as DuckDB orders them. DuckDB lets no
// other process open a file that a process writes, so the consumer must not
// hold it: until it lets go, the checkpoint reads as not there yet.
//
// New sinks plug in through Target: a reader of the sink's applied position
// and a consistent snapshot that computes the same checksums. A key that
// appears twice on the target (a damaged history with two open versions) is
// reported as extra.
package verify
