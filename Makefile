# Tributary build, test and demo targets. A fresh machine needs only `make build`.
SHELL := /bin/bash
GO ?= go
# The Go module proxy refuses @latest for some modules; go.mod pins pseudo-versions,
# and GONOSUMDB lets their checksum look-ups go straight to the proxy's copy.
export GOFLAGS ?= -mod=mod
export GONOSUMDB ?= github.com/jackc/pglogrepl,github.com/twmb/franz-go/pkg/kfake
export PATH := /usr/lib/postgresql/15/bin:$(PATH)

BIN := bin/tributary
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
KAFKA_DIR ?= $(CURDIR)/.cache/kafka

.PHONY: build test test-unit test-integration test-kafka lint demo bench chaos chaos-kafka chaos-soak chaos-soak-kafka clean

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/tributary

test-unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /integration)

# The integration suite needs the PostgreSQL 15 server binaries; it fails (never skips)
# when they are missing. The broker is the in-process kfake unless TRIBUTARY_TEST_BROKERS is set.
# Packages run two at a time (the short chaos suite beside the integration suite):
# every test starts its own broker, registry and PostgreSQL clusters on free ports.
# make test-kafka runs them one at a time, because the chaos suite restarts the
# one real broker that the lane shares.
test-integration: build
	$(GO) test -count=1 -timeout 30m -p 2 ./integration/...

test: test-unit test-integration

# Tests whose subject is not the broker (schema changes at the target, source and
# target restarts, consumer kills and error policies, sinks, transforms, verify, the
# deployment files, multi-site behaviour beyond the regression tests) run on the
# embedded broker only, so that .ci/run stays under its time limit (README, "Test lanes").
# KAFKA_LANE_SKIP= runs everything on the real broker too.
KAFKA_LANE_SKIP ?= ^(TestSchemaChangesInWALOrder|TestProducerRidesOutSourceRestarts|TestConsumerTargetCrashAsyncCommit|TestEndToEndKillNineConsumer|TestConsumerCheckViolationResume|TestConsumerDeadLetter|TestMultisiteSurviveSiteDown|TestMultisiteConvergeMesh|TestMultisiteConvergeHub|TestMultisiteReseedLostSite|TestMultisiteCascadeWorkflowOwnership|TestMultisiteRoutinesConverge|TestMultisiteOwnershipAndDeletePolicies|TestMultisiteNoLoopColumnGroupsWebhook|TestVerify.*|TestDuckDB.*|TestTransform.*|TestHistorySink.*|TestSinksKeyEqualInAnotherForm|TestMultisitePrefixReaders|TestParityWithNativeReplication|TestProducerNewSlotSnapshotSurvivesFailedStart|TestProducerStopsWhenTheSourceWentBack|TestProducerDroppedTypeBehind|TestSinksKeyChangeKeepsUnchangedTOAST|TestSinkSetBasedSchemaVersions|TestMultisiteInsertRacesApply|TestTypesMatrix|TestOpsStaticBuild|TestOpsLeastPrivilegeRolesHostileNames|TestOpsPostgresVerifyFull|TestProducerGroupHoldsItsWindowTLS|TestMonitoringUsesExposedMetrics)$$

# The same integration suite against a real Apache Kafka started from Maven Central jars,
# less $(KAFKA_LANE_SKIP).
test-kafka: build
	deploy/local/kafka.sh fetch $(KAFKA_DIR)
	KAFKA_PROXIED_LISTENER=1 deploy/local/kafka.sh start $(KAFKA_DIR)
	TRIBUTARY_TEST_BROKERS=$$(cat $(KAFKA_DIR)/run/bootstrap) TRIBUTARY_TEST_KAFKA_DIR=$(KAFKA_DIR) \
	  $(GO) test -count=1 -timeout 30m -p 1 -skip '$(KAFKA_LANE_SKIP)' ./integration/... ; rc=$$?; \
	  deploy/local/kafka.sh stop $(KAFKA_DIR); exit $$rc

# The full fault-injection suite (its short version runs inside make test and
# make test-kafka): three rounds of every fault, results in .cache/chaos-results.md;
# then the long multi-site convergence test (docs/MULTISITE.md, Convergence).
chaos: build
	$(GO) test -count=1 -timeout 60m -v ./integration/chaos -chaos.full -chaos.report $(CURDIR)/.cache/chaos-results.md
	TRIBUTARY_MULTISITE_LONG=1 $(GO) test -count=1 -timeout 60m -v -run 'TestMultisiteConverge' ./integration/

chaos-kafka: build
	deploy/local/kafka.sh fetch $(KAFKA_DIR)
	KAFKA_PROXIED_LISTENER=1 deploy/local/kafka.sh start $(KAFKA_DIR)
	TRIBUTARY_TEST_BROKERS=$$(cat $(KAFKA_DIR)/run/bootstrap) TRIBUTARY_TEST_KAFKA_DIR=$(KAFKA_DIR) \
	  $(GO) test -count=1 -timeout 60m -v ./integration/chaos -chaos.full -chaos.report $(CURDIR)/.cache/chaos-kafka-results.md ; rc=$$?; \
	  deploy/local/kafka.sh stop $(KAFKA_DIR); exit $$rc

# A soak (docs/CHAOS.md): faults chosen at random, one at a time, for SOAK (a Go
# duration), checked every 100 faults or 10 minutes and at the end; SEED=N repeats
# a run's fault sequence (0 picks a seed, printed first). go test's -timeout is
# SOAK plus an hour: Go adds up a duration's parts, so 2h1h is 3h.
SOAK ?= 2h
SEED ?= 0
chaos-soak: build
	mkdir -p .cache
	$(GO) test -count=1 -timeout $(SOAK)1h -v ./integration/chaos -chaos.soak $(SOAK) -chaos.seed $(SEED) \
	  -chaos.report $(CURDIR)/.cache/chaos-soak-results.md

chaos-soak-kafka: build
	deploy/local/kafka.sh fetch $(KAFKA_DIR)
	KAFKA_PROXIED_LISTENER=1 deploy/local/kafka.sh start $(KAFKA_DIR)
	TRIBUTARY_TEST_BROKERS=$$(cat $(KAFKA_DIR)/run/bootstrap) TRIBUTARY_TEST_KAFKA_DIR=$(KAFKA_DIR) \
	  $(GO) test -count=1 -timeout $(SOAK)1h -v ./integration/chaos -chaos.soak $(SOAK) -chaos.seed $(SEED) \
	  -chaos.report $(CURDIR)/.cache/chaos-soak-kafka-results.md ; rc=$$?; \
	  deploy/local/kafka.sh stop $(KAFKA_DIR); exit $$rc

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Throw-away source and target PostgreSQL, the embedded broker, a workload,
# the producer and a consumer, then `tributary verify`; cleans up after itself.
demo:
	deploy/demo/demo.sh

# Side by side against pg_recvlogical, native logical replication, Debezium
# Server and COPY; writes docs/BENCHMARKS.md. Full run 20-40 min on 2 cores;
# `make bench BENCH_FLAGS=--quick` for a smoke run.
bench: build
	$(GO) run ./bench/cmd/tribench $(BENCH_FLAGS)

clean:
	rm -rf bin
