package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/cmd/tributary/internal/flagconf"
	"github.com/tributary-cdc/tributary/producer"
	"github.com/tributary-cdc/tributary/schemas"
)

func runProducer(ctx context.Context, args []string, e env) error {
	fs := flagconf.New("tributary producer", e.stdout, flagconf.Info{
		Description: "Streams a PostgreSQL publication through a logical replication slot (pgoutput) into\n" +
			"Kafka: one topic per table keyed by the replication key, one commit frame per source\n" +
			"transaction on <prefix>.transactions, Avro in the Confluent wire format. Exactly once:\n" +
			"the slot is confirmed only after Kafka commits, and a restart skips what Kafka holds.\n" +
			"The source password comes from PGPASSWORD or a passfile, never the command line.",
		Examples: "  tributary producer --source 'postgres://capture@db:5432/app' --publication app_pub \\\n" +
			"      --slot app_slot --brokers 127.0.0.1:9092 --registry http://127.0.0.1:8081 --prefix app\n" +
			"  tributary producer --config producer.yaml --tables 'public.orders (id, region, total) WHERE (region = ''NE'')'",
	})
	k := declareKafka(fs, true)
	source := fs.String("source", "", "source PostgreSQL `DSN`; its application_name, if any, names the ordinary connections (default tributary)")
	publication := fs.String("publication", "tributary", "publication `name`; created when missing")
	slot := fs.String("slot", "tributary", "replication slot `name`; created when missing")
	tables := fs.StringList("tables", nil, "tables to publish when creating the publication, `schema.table[(cols)][ WHERE (expr)],...`; default every table in the publication")
	partitions := fs.Int("partitions", 3, "partition `count` of the data topics it creates")
	compression := fs.String("compression", "none", "record batch `codec`: none, gzip, snappy, lz4 or zstd; none is read by every Kafka client\n"+
		"(kafkajs reads snappy, lz4 and zstd only with an extra codec) and costs no CPU")
	maxEvent := fs.String("max-event-bytes", "8MB", "largest event `size` (key, value and headers of one change), e.g. 8MB or 64MB; a larger one stops the producer,\n"+
		"naming its table, key and LSN, before its transaction is written; topics it creates allow record batches of this size plus 64kB")
	topicConfig := fs.StringList("topic-config", nil, "`key=value,...` for the topics it creates, e.g. retention.ms=604800000;\n"+
		"cleanup.policy applies to the data topics only")
	snapshot := fs.String("snapshot", "initial", "initial snapshot `mode`: initial, never or only")
	chunkRows := fs.Int("snapshot-chunk-rows", 50000, "`rows` per snapshot chunk")
	workers := fs.Int("snapshot-workers", 2, "`tables` the snapshot reads in parallel, each on its own connection")
	groupEvents := fs.Int("group-max-events", 20000, "`events` per Kafka transaction before it commits at the next source commit")
	groupDelay := fs.Duration("group-max-delay", 0, "age of a Kafka transaction before it commits at the next source commit (default 20ms)")
	txnTimeout := fs.Duration("kafka-txn-timeout", 0, "Kafka transaction timeout; bounds how long one source transaction may take to stream (default 10m)")
	progressEvery := fs.Duration("progress-interval", 0, "how often the stream logs a progress line (committed transactions, confirmed LSN, lag); negative disables (default 1m)")
	commitTimeout := fs.Duration("kafka-commit-timeout", 0, "bound on each step of a Kafka commit (flush, EndTxn) and on a Kafka client that delivers nothing while it holds records;\n"+
		"past it the session reconnects with a new Kafka client; negative for no bound (default 1m)")
	heartbeat := fs.Duration("heartbeat-interval", 0, "heartbeat interval; negative disables (default 30s)")
	statusEvery := fs.Duration("status-interval", 0, "how often the producer reports its positions to the source when nothing else makes it (default 10s)")
	unsupported := fs.String("unsupported-types", "text", "`policy` for base types unknown to schemas/TYPES.md (user-defined, or from an unlisted extension such as PostGIS):\n"+
		"text carries their exact text form, fail refuses them; every known type has a mapping either way")
	schemaChange := fs.String("schema-change", "fail", "`policy` for incompatible schema changes: fail, or new-version")
	synchronous := fs.Bool("synchronous", false, "commit and confirm each source transaction at once; with the standby name in the source's\n"+
		"synchronous_standby_names, source commits return only once they are in Kafka (and wait while the producer is down)")
	adopt := fs.Bool("adopt-source", false, "go on when the source is another PostgreSQL cluster than the one the position in Kafka was read from,\n"+
		"as after pg_upgrade: stream its commits after that position, and read the captured tables again when the slot is gone (docs/SNAPSHOTS.md)")
	standby := fs.String("standby-name", "", "replication `application_name`, the name synchronous_standby_names lists (default tributary_<slot>)")
	metricsAddr := fs.String("metrics-addr", "", "serve /metrics, /healthz and /readyz on this `address`, e.g. 127.0.0.1:9187")
	forward := fs.StringList("forward-origins", []string{"none"}, "replication `origins` whose transactions are published: none, all, or names")
	envelope := fs.String("envelope", "tributary", "`shape` of the data records' values: tributary, or debezium (Debezium's PostgreSQL connector envelope;\n"+
		"docs/CONSUMING.md, Debezium envelope); the commit frames are the same with both")
	tombstones := fs.Bool("tombstones", false, "after each delete, a record with its key and a null value, counted in the frame (debezium envelope only)")
	toastPlaceholder := fs.String("toast-placeholder", "", "`value` an unchanged TOASTed text-like, bytea or text[] column holds in a debezium envelope\n"+
		"(default __debezium_unavailable_value, as Debezium's unavailable.value.placeholder); other types hold null")
	skipTruncate := fs.Bool("envelope-skip-truncate", false, "write no records for TRUNCATE, as Debezium's default skipped.operations=t (debezium envelope only)")
	rt := declareRuntime(fs, "0")
	fs.Require("source")
	log, stopProfile, err := k.parseRuntime(fs, args, e, rt)
	if err != nil {
		return err
	}
	defer stopProfile()
	specs, err := producer.ParseTableSpecs(*tables)
	if err != nil {
		return usageError{err}
	}
	var up schemas.UnsupportedPolicy
	switch *unsupported {
	case "fail":
		up = schemas.UnsupportedFail
	case "text":
		up = schemas.UnsupportedAsText
	default:
		return usageError{errorf("--unsupported-types %q: want fail or text", *unsupported)}
	}
	sc, err := schemas.ParseSchemaChangePolicy(*schemaChange)
	if err != nil {
		return usageError{err}
	}
	tc := map[string]string{}
	for _, kv := range *topicConfig {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return usageError{errorf("--topic-config %q: want key=value", kv)}
		}
		tc[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	env, err := schemas.ParseEnvelope(*envelope)
	if err != nil {
		return usageError{err}
	}
	maxEventBytes, err := parseSize(*maxEvent)
	if err != nil || maxEventBytes <= 0 || maxEventBytes > 1<<30 {
		return usageError{errorf("--max-event-bytes %q: want a size such as 8MB, up to 1GB", *maxEvent)}
	}
	opts, reg, h, err := k.connect(*metricsAddr, log)
	if err != nil {
		return err
	}
	defer h.close()
	p, err := producer.New(producer.Config{
		SourceDSN: *source, Publication: *publication, Slot: *slot, Tables: specs, Prefix: *k.prefix,
		KafkaOpts: opts, Registry: reg, Version: version,
		Partitions: int32(*partitions), Compression: *compression, MaxEventBytes: int(maxEventBytes), TopicConfig: tc, KafkaHooks: []kgo.Hook{h.kafkaMetrics()}, Snapshot: producer.SnapshotMode(*snapshot), SnapshotChunkRows: *chunkRows,
		SnapshotWorkers: *workers, Observer: newProducerMetrics(h, progressLine(e.stderr)),
		GroupMaxEvents: *groupEvents, GroupMaxDelay: *groupDelay, KafkaTxnTimeout: *txnTimeout, KafkaCommitTimeout: *commitTimeout, ProgressInterval: *progressEvery,
		HeartbeatInterval: *heartbeat, StatusInterval: *statusEvery, Synchronous: *synchronous, AdoptSource: *adopt, StandbyName: *standby, UnsupportedTypes: up, SchemaChange: sc, ForwardOrigins: *forward,
		Envelope: env, Tombstones: *tombstones, ToastPlaceholder: *toastPlaceholder, EnvelopeSkipTruncate: *skipTruncate,
		Log: log,
	})
	if err != nil {
		return usageError{err}
	}
	if err := k.checkBrokers(ctx, opts); err != nil {
		return err
	}
	return p.Run(ctx)
}

// progressLine renders snapshot progress as one self-updating line when w is
// a terminal; otherwise the producer's log lines carry it.
func progressLine(w io.Writer) func(producer.SnapshotProgress) {
	f, ok := w.(*os.File)
	if !ok || !isTerminal(f) {
		return nil
	}
	tables := map[string]producer.SnapshotProgress{}
	return func(p producer.SnapshotProgress) {
		tables[p.Table] = p
		names := make([]string, 0, len(tables))
		for n := range tables {
			names = append(names, n)
		}
		sort.Strings(names)
		var b strings.Builder
		for _, n := range names {
			t := tables[n]
			if t.Done && n != p.Table {
				continue
			}
			fmt.Fprintf(&b, "  %s %d", n, t.Rows)
			if t.Estimate > 0 {
				fmt.Fprintf(&b, "/~%d (%d%%)", t.Estimate, min(100, t.Rows*100/max(t.Estimate, 1)))
			}
			fmt.Fprintf(&b, " %.0f rows/s", t.Rate())
			if eta, ok := t.ETA(); ok {
				fmt.Fprintf(&b, " ETA %s", eta.Round(time.Second))
			}
			if t.Done {
				b.WriteString(" done")
			}
		}
		fmt.Fprintf(f, "\r\033[Ksnapshot:%s", b.String())
		if p.Done {
			fmt.Fprintln(f)
		}
	}
}
