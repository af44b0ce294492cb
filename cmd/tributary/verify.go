package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/tributary-cdc/tributary/cmd/tributary/internal/flagconf"
	"github.com/tributary-cdc/tributary/consumer/verify"
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
	sink := fs.String("sink", "postgres", "`sink` type of the target: postgres")
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
	logFormat := fs.String("log-format", "auto", "log `format`: text, json, or auto (text on a terminal, JSON otherwise)")
	logLevel := fs.String("log-level", "info", "log `level`: debug, info, warn, error")
	fs.Require("source", "target")
	if err := parse(fs, args, e); err != nil {
		return err
	}
	log, err := newLogger(e.stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	if *sink != "postgres" {
		return usageError{fmt.Errorf("--sink %q: want postgres", *sink)}
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
	if err := verify.CheckDSN(*target, "target"); err != nil {
		return fail(err)
	}
	tgt, err := verify.NewPostgresTarget(ctx, *target, *name, *checkpointSchema)
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
			if tgt, err = verify.NewPostgresTarget(ctx, *target, names[0], *checkpointSchema); err != nil {
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
		MaxKeys: *maxKeys, Logger: log})
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
