// Package transform is the seed's "Manipulate" step: per-table pipelines that
// reshape a consumer's events between decoding and the sink. A Pipeline
// implements consumer.Transformer; docs/TRANSFORMS.md documents the YAML
// configuration, every step and the expression functions.
//
// # Model
//
// A pipeline is a list of Steps per source table. Each Step is bound once per
// source table version (Step.Bind): it checks the columns it refers to,
// type-checks its CEL expressions against the table's columns, and describes
// its output (columns added, replaced, renamed, dropped; the target table).
// The result is the schema the sink sees: its create-tables path follows it.
// Binding happens at start-up (Pipeline.Check against the registry's latest
// schemas) and again when a new schema version appears in the stream; a step
// that no longer fits (a column the source dropped) is an *Error wrapping
// ErrSchema, marked with consumer.Halt, so the consumer stops with it instead
// of dead-lettering every later transaction.
//
// Per row, bound steps run over a slot array (column indexes resolved at bind
// time, CEL activations and scratch rows pooled), on the after image and,
// for updates and deletes, the before image.
//
// # Row filters
//
// A filter keeps the rows for which its expression is true. Like PostgreSQL's
// publication row filters it judges an update by both images:
//
//   - in before and after: update; out before and after: dropped;
//   - in before, out after: delete at the target;
//   - out before, in after: insert at the target;
//   - insert or snapshot read: kept when in; delete: kept when the before
//     image was in.
//
// That needs a complete before image: give filtered source tables REPLICA
// IDENTITY FULL. Without it (no before image, or one holding the key only:
// every non-key column NULL) the previous state is unknown, and the change
// is passed on as an update when the after image is in, and as a delete when
// it is out: a sink with --on-conflict upsert then converges (an update of a
// missing row is inserted, a delete of a missing row is ignored), while the
// strict sink reports the mismatch.
//
// # Errors
//
// Errors are *Error values naming the source table, the step (with its line
// in the config), the column and the row's key. Value errors (a conversion
// that fails, an expression that fails on a row) are ordinary permanent
// errors for the consumer: they follow --on-error (stop, or dead-letter the
// source transaction).
//
// # Custom steps
//
// A Step is a small interface; the declarative steps are built on it. See
// the example of WithStep.
package transform
