// Package conflict is multi-site replication's write step: it detects update
// conflicts between an incoming change and the target's current row,
// resolves them by declared routines per table and column group, enforces
// row and column ownership, and records and notifies every conflict (seed
// 001, "Shared Ownership" and "Update Conflicts"; docs/MULTISITE.md).
//
// The PostgreSQL sink (consumer/postgres) runs the changes of the tables an
// Engine handles through Session.Apply, inside its target transaction and
// under a replication origin. Promises:
//
//   - Detection is done under the row lock (SELECT ... FOR UPDATE), in the
//     target transaction that applies the change, with values compared as
//     the target types print them. An update conflicts in a column group
//     when the group's columns differ between its before-image and the
//     local row; an insert conflicts when the key exists with other values;
//     an update or delete conflicts when the row is missing, and a delete
//     when the row differs from its before-image. Updates and deletes need
//     before-images: REPLICA IDENTITY FULL at every site; one without is a
//     permanent error naming the table, key and LSN.
//   - Column groups resolve independently: a group the change did not touch
//     keeps its local values, so non-overlapping updates from two sites both
//     survive without a conflict.
//   - latest and earliest compare the remote source commit time with the
//     commit time of whoever last wrote the group's local values, or, for a
//     group with a timestamp_column, that column's value in the remote
//     after-image with its value in the local row. The commit time is
//     kept in tributary_row_meta (table, key, group, site, commit_ts and an
//     md5 of the group's values), written in the same transaction whenever
//     the consumer writes a row: while the hash matches the row, the
//     consumer's write is the last one; otherwise a local application
//     changed the group, at pg_xact_commit_timestamp(xmin) (this needs
//     track_commit_timestamp = on, which Setup checks).
//   - Every conflict and ownership violation is a row of
//     tributary_conflicts written in the same transaction, so it commits
//     exactly when the resolution does. Notifiers (the <prefix>.conflicts
//     topic, a webhook) and Config.OnRecord get it after the commit, at most
//     once, without holding up the apply.
//   - Method error and delete policy error stop the consumer with a
//     permanent error (ErrUnresolved) that names the table, key, commit LSN
//     and both versions, for a person; nothing is written. A row of
//     tributary_conflict_actions for that table, key and commit LSN
//     (keep-local or apply-remote) resolves it when the consumer applies
//     the change again; the row is used up in the same transaction.
//   - Ownership is judged on the before-image: a change from a site that
//     does not own the row is not applied and is recorded; under column
//     ownership only the columns the site does not own are left out. A
//     change from the owner of the row (or of every column of a group)
//     wins a conflict with the local values.
//   - Changes made at the local site that come back through a hub (their
//     replication origin names the local site) are skipped (Engine.Own).
//
// An Engine is safe for concurrent use; a Session belongs to one target
// transaction and one goroutine.
package conflict
