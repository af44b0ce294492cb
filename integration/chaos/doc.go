// Package chaos is Tributary's fault-injection suite. It runs a mixed
// multi-table workload against a source PostgreSQL while the producer, a
// PostgreSQL consumer and a history consumer run as subprocesses, injects
// process kills, broker, source and target restarts, a registry outage,
// network faults through TCP proxies, a huge transaction and a burst of DDL,
// and then checks G1–G3 end to end: `tributary verify` passes, Kafka holds
// every source transaction exactly once in commit order, the history sink
// holds exactly one row per change, and the money total is unchanged.
//
// The default is the short version that `go test ./integration/...` runs
// (each fault at least once); `-chaos.full` (make chaos) injects each fault
// several times with longer outages; `-chaos.soak DURATION` (make
// chaos-soak) injects faults chosen at random, by weight, for that long,
// with mid-way checks, and `-chaos.seed` repeats a run's choices. See
// docs/CHAOS.md.
package chaos
