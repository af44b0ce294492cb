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
//   - The decision for each touched group is one pure function (decide,
//     decide.go) of the group's local values and who wrote them when, the
//     remote change, the method, ownership and a declared action; the
//     Session reads its inputs in one round trip and writes its result.
//   - latest, earliest and site-priority compare the remote change with
//     who wrote the group's local values and when: the group's own last
//     change, kept in tributary_row_meta (table, key, group, site, commit
//     time, and for a local write its transaction id). The trigger
//     SetupSQL installs (tributary setup multisite) records each local
//     write of each group; the consumer records its own writes in the same
//     transaction. Without the trigger, the row's last commit time is used
//     (pg_xact_commit_timestamp(xmin)) unless the consumer's write is the
//     last one, and Setup warns. A group with a timestamp_column compares
//     that column's values instead. With exact times, latest is a
//     last-writer-wins register (docs/MULTISITE.md, "Convergence").
//   - Setup warns, once per table, about every configuration that can leave
//     sites different: routines that converge only under some workloads,
//     and missing or outdated triggers.
//   - Every conflict and ownership violation is a row of
//     tributary_conflicts written in the same transaction, so it commits
//     exactly when the resolution does. RunOutbox publishes those rows to
//     the conflicts topic (Avro, conflict.avsc) exactly once (outbox.go);
//     Notifiers (a webhook) and Config.OnRecord get each record after the
//     commit, at most once, without holding up the apply.
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
