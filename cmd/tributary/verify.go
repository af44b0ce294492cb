package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/tributary-cdc/tributary/cmd/tributary/internal/flagconf"
	"github.com/tributary-cdc/tributary/consumer/verify"
	"github.com/tributary-cdc/tributary/transform"
)

// runVerify compares a source with a consumer's target. Exit status: 0 equal,
// 1 different (with a report), 2 when the comparison could not be made.
func runVerify(ctx context.Context, args []string, e env) error {
	fs := flagconf.New("tributary verify", e.stdout, flagconf.Info{
		Description: "Compares the source with a consumer's target at a consistent point and reports the\n" +
			"keys that differ. It takes a REPEATABLE READ snapshot of the source, waits until the\n" +
			"consumer's checkpoint has passed the snapshot's WAL position (writing a\n" +
			"'tributary.verify' logical message so that an idle source also gets there), then reads\n" +
			"the target in a REPEATABLE READ snapshot. Tables are compared by checksums over\n" +
			"primary-key ranges computed in the databases; only ranges that differ are split, down\n" +
			"to rows. Ranges that differ are re-checked with fresh snapshots before they are\n" +
			"reported, because a live workload moves both sides.\n\n" +
			"Exit status: 0 equal, 1 different, 2 the comparison could not be made.\n" +
			"Passwords come from PGPASSWORD or a passfile, never the command line.",
		Examples: "  tributary verify --source 'postgres://verify@db:5432/app' \\\n" +
			"      --target 'postgres://verify@replica:5432/app' --consumer replica1\n" +
			"  tributary verify --config verify.yaml --tables public.orders,public.customers --json",
	})
	source := fs.String("source", "", "source PostgreSQL `DSN`")
	target := fs.String("target", "", "target `DSN`")
	sink := fs.String("sink", "postgres", "`sink` of the consumer: postgres (a replica), history (compares the current versions of the history tables) "+
		"or duckdb (the current-state tables of --duckdb-file; needs a cgo build, and a consumer that does not hold the file)")
	duckFile := fs.String("duckdb-file", "", "duckdb: the consumer's database `file`, opened read-only")
	historySchema := fs.String("history-schema", "", "history: `schema` of the history tables (default: each source table's)")
	checkHistory := fs.Bool("check-history", false, "history: also check every key's versions (1..n, no gaps) and validity ranges (no overlaps)")
	transforms := fs.String("transforms", "", "the consumer's transforms YAML `file`: source rows are transformed as the consumer does before they are compared (needs --registry and --prefix)")
	k := declareKafka(fs, false)
	consumerName := fs.String("name", "", "the consumer's --name (from its config file); same as --consumer")
	ignoreConsumerSettings(fs)
	tables := fs.StringList("tables", nil, "compare these `schema.table,...`; default every table of the source's publications")
	publication := fs.String("publication", "", "with no --tables, compare the tables of this `publication` only")
	name := fs.String("consumer", "", "consumer `name` whose checkpoint is waited for; default the only consumer in the target, none if there is none")
	checkpointSchema := fs.String("checkpoint-schema", "public", "`schema` of the tributary_checkpoint table in the target")
	timeout := fs.Duration("timeout", 0, "how long to wait for the consumer to reach the source snapshot (default 5m)")
	noWait := fs.Bool("no-wait", false, "compare at once, without waiting for a consumer (quiescent databases)")
	barrier := fs.Bool("barrier", true, "write a 'tributary.verify' logical message after the snapshot so an idle source's consumer can pass it")
	rechecks := fs.Int("rechecks", 2, "`rounds` of re-checking differing ranges with fresh snapshots before reporting them")
	fanout := fs.Int("fanout", 16, "`ranges` a differing range is split into")
	leafRows := fs.Int("leaf-rows", 1000, "`rows` at or below which a differing range is compared row by row")
	maxKeys := fs.Int("max-keys", 100, "differing `keys` listed per table (the counts are always exact)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	fs.Require("source")
	log, err := k.parse(fs, args, e)
	if err != nil {
		return err
	}
	if *name == "" {
		*name = *consumerName
	}
	if err := checkSinkTarget(*sink, *target, *duckFile); err != nil {
		return err
	}
	var tr *verify.Transform
	if *transforms != "" {
		if tr, err = loadVerifyTransform(*transforms, k, log); err != nil {
			return err
		}
	}
	if *timeout < 0 || *rechecks < 0 || *fanout < 2 || *leafRows < 1 || *maxKeys < 0 {
		return usageError{errors.New("--timeout, --rechecks and --max-keys must not be negative, --fanout at least 2, --leaf-rows at least 1")}
	}
	fail := func(err error) error {
		var ie *verify.InputError
		if errors.As(err, &ie) {
			return usageError{errors.New(oneLine(err.Error()))}
		}
		fmt.Fprintf(e.stderr, "tributary verify: %s\n", oneLine(err.Error()))
		return exitCode(2)
	}
	if err := verify.CheckDSN(*source, "source"); err != nil {
		return fail(err)
	}
	if *sink != "duckdb" {
		if err := verify.CheckDSN(*target, "target"); err != nil {
			return fail(err)
		}
	}
	open := func(consumer string) (verify.Target, error) {
		if *sink == "duckdb" {
			return verify.NewDuckDBTarget(ctx, *duckFile, consumer, *source)
		}
		if *sink == "history" {
			return verify.NewHistoryTarget(ctx, *target, consumer, *checkpointSchema, *historySchema)
		}
		return verify.NewPostgresTarget(ctx, *target, consumer, *checkpointSchema)
	}
	tgt, err := open(*name)
	if err != nil {
		return fail(err)
	}
	defer tgt.Close(context.WithoutCancel(ctx))
	wait := !*noWait
	if wait && *name == "" {
		names, err := verify.Consumers(ctx, tgt)
		if err != nil {
			return fail(err)
		}
		switch len(names) {
		case 0:
			log.Warn("no consumer checkpoint in the target; comparing without waiting for a consumer")
			wait = false
		case 1:
			tgt.Close(ctx)
			if tgt, err = open(names[0]); err != nil {
				return fail(err)
			}
			log.Info("waiting for the target's only consumer", "consumer", names[0])
		default:
			return usageError{fmt.Errorf("the target has several consumers (%v): choose one with --consumer", names)}
		}
	}
	rc := *rechecks
	if rc == 0 {
		rc = -1
	}
	rep, err := verify.Run(ctx, verify.Config{SourceDSN: *source, Target: tgt, Tables: *tables, Publication: *publication,
		Wait: wait, Timeout: *timeout, Barrier: *barrier, Rechecks: rc, Fanout: *fanout, LeafRows: int64(*leafRows),
		MaxKeys: *maxKeys, Transform: tr, CheckInvariants: *checkHistory, Logger: log})
	if err != nil {
		return fail(err)
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	} else {
		err = rep.WriteText(e.stdout)
	}
	if err != nil {
		return fail(fmt.Errorf("write report: %w", err))
	}
	if !rep.Equal {
		return exitCode(1)
	}
	return nil
}

// oneLine joins a multi-line error message (pgx lists each connection
// attempt on its own line) into one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

// loadVerifyTransform compiles the consumer's transforms and binds them, as
// the consumer does, to the latest table versions in its registry.
func loadVerifyTransform(file string, k *kafkaFlags, log *slog.Logger) (*verify.Transform, error) {
	if *k.registry == "" || *k.prefix == "" {
		return nil, usageError{errors.New("--transforms needs the consumer's --registry and --prefix: " +
			"the transform is bound to the table versions the consumer decodes")}
	}
	tc, err := transform.LoadConfig(file)
	if err != nil {
		return nil, usageError{err}
	}
	p, err := transform.Compile(tc)
	if err != nil {
		return nil, usageError{err}
	}
	reg, err := k.registryClient(log)
	if err != nil {
		return nil, err
	}
	return &verify.Transform{Pipeline: p, Lookup: transform.RegistryLookup(reg, *k.prefix)}, nil
}

// ignoreConsumerSettings declares the consumer's settings that verify does
// not use, so that `tributary verify --config` accepts the consumer's own
// config file.
func ignoreConsumerSettings(fs *flagconf.Set) {
	const why = " (a consumer setting, accepted so that verify reads the consumer's --config; ignored)"
	fs.String("duckdb-memory-limit", "", "`size`"+why)
	fs.Int("duckdb-threads", 0, "`threads`"+why)
	fs.Int("flush-rows", 0, "`rows`"+why)
	fs.Duration("flush-interval", 0, "`interval`"+why)
	fs.String("export-parquet", "", "`dir`"+why)
	fs.Duration("export-interval", 0, "`interval`"+why)
	fs.String("metrics-addr", "", "`address`"+why)
	fs.String("mode", "transactional", "`mode`"+why+"; verify needs transactional")
	fs.String("on-conflict", "error", "`policy`"+why)
	fs.String("on-error", "stop", "`policy`"+why)
	fs.Bool("create-tables", false, "create tables"+why)
	fs.String("from-snapshot", "", "snapshot `ID`"+why)
	fs.Bool("apply-ddl", false, "apply schema changes"+why)
	fs.Bool("until-caught-up", false, "catch up and exit"+why)
	fs.Duration("interval", 0, "`interval`"+why)
	fs.Int("group-max-txns", 0, "`transactions`"+why)
	fs.Int("group-max-events", 0, "`events`"+why)
	fs.String("cpu-profile", "", "`file`"+why)
	fs.String("heap-profile", "", "`file`"+why)
	fs.String("memory-budget", "", "`size`"+why)
	declareMultisite(fs)
}
