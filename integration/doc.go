// Package integration holds Tributary's integration suite: tests against a
// real PostgreSQL 15 and a real Kafka (the embedded kfake broker by default,
// Apache Kafka when TRIBUTARY_TEST_BROKERS is set), driven through the same
// packages and binary that users run. Tests of broker failures start their
// own three-broker cluster (harness.StartCluster): Apache Kafka from the jars
// in TRIBUTARY_TEST_KAFKA_DIR on the real-Kafka lane, kfake brokers otherwise.
// A missing service fails a test; nothing here skips.
package integration
