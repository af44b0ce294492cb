package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/cmd/tributary/internal/flagconf"
	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/history"
	"github.com/tributary-cdc/tributary/consumer/postgres"
	"github.com/tributary-cdc/tributary/transform"
)

func runConsumer(ctx context.Context, args []string, e env) error {
	fs := flagconf.New("tributary consumer", e.stdout, flagconf.Info{
		Description: "Replays a producer's events into a target. Each --name is an independent consumer\n" +
			"with its own checkpoint, stored in the target in the same transaction as the data,\n" +
			"so every source transaction is applied exactly once; any number of consumers may\n" +
			"read the same topics.\n\n" +
			"Modes:\n" +
			"  transactional (default)  whole source transactions in commit order, across tables\n" +
			"                           and partitions: the target only shows states the source had.\n" +
			"  per-key                  partitions applied in parallel; order holds per key only.\n" +
			"                           No cross-table atomicity: a reader may see half of a source\n" +
			"                           transaction. For targets that need only per-row order.\n\n" +
			"The target password comes from PGPASSWORD or a passfile, never the command line.",
		Examples: "  tributary consumer --brokers 127.0.0.1:9092 --registry http://127.0.0.1:8081 --prefix app \\\n" +
			"      --name replica1 --sink postgres --target 'postgres://apply@replica:5432/app' --create-tables\n" +
			"  tributary consumer --config consumer.yaml --until-caught-up     # on-demand site: catch up, exit 0\n" +
			"  tributary consumer --config consumer.yaml --interval 15m        # scheduled catch-ups",
	})
	k := declareKafka(fs, true)
	name := fs.String("name", "", "consumer `name`: its checkpoint, Kafka group tributary-<name> and dead-letter topic")
	sink := fs.String("sink", "postgres", "`sink`: postgres (a replica), history (every version of every row, in PostgreSQL) or duckdb (a warehouse file)")
	target := fs.String("target", "", "target PostgreSQL `DSN` (postgres, history)")
	historySchema := fs.String("history-schema", "", "history: `schema` of the history tables (default: each source table's)")
	duckFile := fs.String("duckdb-file", "", "duckdb: database `file`")
	flushRows := fs.Int("flush-rows", 0, "history: rows per statement (5000); duckdb: micro-batch `rows` (100000)")
	flushInterval := fs.Duration("flush-interval", 0, "duckdb: longest wait to fill a micro-batch (1s)")
	exportParquet := fs.String("export-parquet", "", "duckdb: export the history as Parquet, partitioned by table and day, into `dir`")
	exportInterval := fs.Duration("export-interval", 0, "duckdb: Parquet export `interval` (1m)")
	duckMemory := fs.String("duckdb-memory-limit", duckDBMemoryLimit, "duckdb: DuckDB memory_limit `size`, e.g. 512MB or 2GiB (beyond it, spills to <file>.tmp)")
	duckThreads := fs.Int("duckdb-threads", 0, "duckdb: DuckDB worker `threads` (default: the number of CPU cores)")
	metricsAddr := fs.String("metrics-addr", "", "serve /metrics, /healthz and /readyz on this `address`, e.g. 127.0.0.1:9188")
	transforms := fs.String("transforms", "", "YAML `file` of per-table transforms: renames, filters, splits, hashes... (docs/TRANSFORMS.md)")
	tables := fs.StringList("tables", nil, "apply only these `schema.table,...`; default every table")
	mode := fs.String("mode", "transactional", "apply `mode`: transactional or per-key (see above)")
	onConflict := fs.String("on-conflict", "error", "`policy` for an insert of an existing key or an update/delete of a missing row: error, or upsert")
	onError := fs.String("on-error", "stop", "`policy` for a transaction that cannot be applied: stop, or dead-letter (to <prefix>.dlq.<name>; transactional mode only)")
	createTables := fs.Bool("create-tables", false, "create missing target tables from the schema and add columns it gains")
	applyDDL := fs.Bool("apply-ddl", false, "postgres sink: apply the schema changes that DDL capture records (tributary setup ddl) to the target's tables,\n"+
		"at their place in the stream: columns added, dropped, renamed and retyped, tables created, renamed and dropped, partitions")
	untilCaughtUp := fs.Bool("until-caught-up", false, "apply everything committed so far, then exit 0")
	fromSnapshot := fs.String("from-snapshot", "", "with no usable checkpoint (a new consumer, or one retention left behind), start from the online snapshot\n"+
		"with this `ID` (or latest) instead of the log's start; see tributary snapshot")
	interval := fs.Duration("interval", 0, "run a catch-up every `interval` (scheduled propagation)")
	checkpointSchema := fs.String("checkpoint-schema", "public", "`schema` of the tributary_checkpoint table in the target")
	ms := declareMultisite(fs)
	rt := declareRuntime(fs, "0")
	groupTxns := fs.Int("group-max-txns", 0, "source `transactions` grouped into one target transaction at most, while more are already read (default 1000)")
	groupEvents := fs.Int("group-max-events", 0, "`events` in one target transaction before the group closes at the next source commit (default 20000; duckdb: its --flush-rows)")
	fs.Require("name")
	log, stopProfile, err := k.parseRuntime(fs, args, e, rt)
	if err != nil {
		return err
	}
	defer stopProfile()
	if err := checkSinkTarget(*sink, *target, *duckFile); err != nil {
		return err
	}
	if *sink == "duckdb" && *mode == "per-key" {
		return usageError{fmt.Errorf("--sink duckdb applies one batch at a time; use --mode transactional")}
	}
	m, err := consumer.ParseMode(*mode)
	if err != nil {
		return usageError{err}
	}
	oe, err := consumer.ParseOnError(*onError)
	if err != nil {
		return usageError{err}
	}
	oc, err := postgres.ParseOnConflict(*onConflict)
	if err != nil {
		return usageError{err}
	}
	opts, reg, h, err := k.connect(*metricsAddr, log)
	if err != nil {
		return err
	}
	defer h.close()
	var tr consumer.Transformer
	if *transforms != "" {
		tc, err := transform.LoadConfig(*transforms)
		if err != nil {
			return usageError{err}
		}
		p, err := transform.Compile(tc) // salts come from the environment or files the config names
		if err != nil {
			return usageError{err}
		}
		// Type-check every configured table against its latest schema now,
		// so that a typo fails at start-up rather than at the first row.
		if err := p.Check(ctx, transform.RegistryLookup(reg, *k.prefix)); err != nil {
			if errors.Is(err, transform.ErrSchema) {
				return usageError{err}
			}
			return err
		}
		tr = p
	}
	metrics := newConsumerMetrics(h)
	msite, err := ms.build(*sink, *mode, *k.prefix, *name, *target, opts, reg, log, metrics.conflict)
	if err != nil {
		return err
	}
	defer msite.close()
	var s consumer.Sink
	groupMax, linger := *groupEvents, time.Duration(0)
	switch *sink {
	case "postgres":
		s, err = postgres.New(postgres.Config{DSN: *target, Consumer: *name, CheckpointSchema: *checkpointSchema,
			OnConflict: oc, CreateTables: *createTables, ApplyDDL: *applyDDL, Origin: msite.origin, Conflicts: msite.engine, Logger: log})
	case "history":
		s, err = history.New(history.Config{DSN: *target, Consumer: *name, CheckpointSchema: *checkpointSchema,
			Schema: *historySchema, FlushRows: *flushRows, Logger: log})
	case "duckdb":
		s, groupMax, linger, err = newDuckDBSink(duckdbOptions{path: *duckFile, consumer: *name, flushRows: *flushRows,
			flushInterval: *flushInterval, exportParquet: *exportParquet, exportInterval: *exportInterval,
			memoryLimit: *duckMemory, threads: *duckThreads, log: log})
	}
	if err != nil {
		return usageError{err}
	}
	groupTxnsMax, err := msite.groupMaxTxns(*groupTxns)
	if err != nil {
		return usageError{err}
	}
	c, err := consumer.New(consumer.Config{Kafka: opts, KafkaHooks: []kgo.Hook{h.kafkaMetrics()}, Registry: reg, Prefix: *k.prefix, Name: *name, Sink: s,
		Tables: *tables, Transform: tr, GroupMaxTxns: groupTxnsMax, GroupMaxEvents: groupMax, GroupLinger: linger, Observer: metrics, Mode: m, OnError: oe, UntilCaughtUp: *untilCaughtUp, FromSnapshot: *fromSnapshot, Interval: *interval, Logger: log})
	if err != nil {
		return usageError{err}
	}
	if err := k.checkBrokers(ctx, opts); err != nil {
		return err
	}
	return msite.run(ctx, c.Run)
}

// duckdbOptions are the duckdb sink's flags.
type duckdbOptions struct {
	path, consumer, exportParquet string
	memoryLimit                   string
	flushRows, threads            int
	flushInterval, exportInterval time.Duration
	log                           *slog.Logger
}
