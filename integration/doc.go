// Package integration holds Tributary's integration suite: tests against a
// real PostgreSQL 15 and a real Kafka (the embedded kfake broker by default,
// Apache Kafka when TRIBUTARY_TEST_BROKERS is set), driven through the same
// packages and binary that users run. A missing service fails a test; nothing
// here skips.
package integration
