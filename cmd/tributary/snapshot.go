package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/cmd/tributary/internal/flagconf"
	"github.com/tributary-cdc/tributary/producer"
	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog"
)

const snapshotUsage = `Usage: tributary snapshot <start|pause|resume|cancel|status> [flags]

Online snapshots: the producer reads tables again while it streams, without
locks and without delaying the stream, chunk by chunk between watermarks
(docs/SNAPSHOTS.md). Use one for a consumer that starts after retention
deleted the history (tributary consumer --from-snapshot), to repair a target
that tributary verify found different, or after a restore.

The requests travel through the source's WAL as logical decoding messages,
so they need the source's DSN (a role that may call pg_logical_emit_message)
and take effect at their place in the stream, also when the producer is
down when they are sent.

Subcommands:
  start   take an online snapshot of some tables (default: every captured table)
  pause   read no more chunks of active snapshots until resumed
  resume  continue paused snapshots
  cancel  end active snapshots
  status  each table's capture and snapshot progress, from the producer's state in Kafka

Run 'tributary snapshot <subcommand> --help' for flags and examples.
`

func runSnapshot(ctx context.Context, args []string, e env) error {
	return dispatch(args, e, snapshotUsage, "start, pause, resume, cancel or status", map[string]func([]string) error{
		"start":  func(args []string) error { return snapshotSignal(ctx, args, e, producer.SignalSnapshot) },
		"pause":  func(args []string) error { return snapshotSignal(ctx, args, e, producer.SignalPause) },
		"resume": func(args []string) error { return snapshotSignal(ctx, args, e, producer.SignalResume) },
		"cancel": func(args []string) error { return snapshotSignal(ctx, args, e, producer.SignalCancel) },
		"status": func(args []string) error { return snapshotStatus(ctx, args, e) },
	})
}

func snapshotSignal(ctx context.Context, args []string, e env, action producer.SignalAction) error {
	what := map[producer.SignalAction]string{
		producer.SignalSnapshot: "Requests an online snapshot of --tables (default: every table the producer captures).\n" +
			"A table with an active snapshot starts again under the new ID. The snapshot's ID is printed;\n" +
			"a consumer bootstraps from it with --from-snapshot ID.",
		producer.SignalPause:  "Pauses the active online snapshots of --tables (default: all): chunks being read finish, no new one starts.",
		producer.SignalResume: "Resumes the paused online snapshots of --tables (default: all).",
		producer.SignalCancel: "Cancels the active online snapshots of --tables (default: all). Rows not read yet may be missing\nat targets that bootstrapped from them.",
	}[action]
	name := map[producer.SignalAction]string{producer.SignalSnapshot: "start"}[action]
	if name == "" {
		name = string(action)
	}
	fs := flagconf.New("tributary snapshot "+name, e.stdout, flagconf.Info{
		Synopsis:    "tributary snapshot " + name + " --source DSN --slot SLOT [--tables schema.table,...]",
		Description: what,
		Examples: "  tributary snapshot " + name + " --source 'postgres://capture@db:5432/app' --slot app_slot --tables public.orders\n" +
			"  tributary snapshot " + name + " --source 'postgres://capture@db:5432/app' --slot app_slot",
	})
	source := fs.String("source", "", "source PostgreSQL `DSN`")
	slot := fs.String("slot", "tributary", "the producer's replication slot `name`")
	tables := fs.StringList("tables", nil, "`schema.table,...`; a name without a schema is in public")
	id := fs.String("id", "", "snapshot `ID` (start only; default: snap-<UTC time>)")
	fs.Require("source")
	if err := parse(fs, args, e); err != nil {
		return err
	}
	if *id != "" && action != producer.SignalSnapshot {
		return usageError{fmt.Errorf("--id is for start only")}
	}
	sig := producer.Signal{Slot: *slot, ID: *id, Action: action, Tables: *tables}
	if sig.ID == "" {
		sig.ID = "snap-" + time.Now().UTC().Format("20060102T150405.000Z")
		if action != producer.SignalSnapshot {
			sig.ID = string(action) + "-" + time.Now().UTC().Format("20060102T150405.000Z")
		}
	}
	ctx, conn, done, err := dial(ctx, 30*time.Second, *source, "source")
	if err != nil {
		return err
	}
	defer done()
	lsn, err := producer.SendSignal(ctx, conn, sig)
	if err != nil {
		return err
	}
	target := "every table"
	if len(sig.Tables) > 0 {
		target = strings.Join(sig.Tables, ", ")
	}
	fmt.Fprintf(e.stdout, "%s signal %s sent for %s at %s; slot %s acts on it when its stream reaches it\n", action, sig.ID, target, lsn, *slot)
	return nil
}

func snapshotStatus(ctx context.Context, args []string, e env) error {
	fs := flagconf.New("tributary snapshot status", e.stdout, flagconf.Info{
		Synopsis: "tributary snapshot status --brokers HOST:PORT --prefix PREFIX --slot SLOT [--json]",
		Description: "Prints each table the producer knows, from its state on <prefix>.state: how it is captured,\n" +
			"and its latest snapshot (kind, status, chunks and rows written, estimate).",
		Examples: "  tributary snapshot status --brokers 127.0.0.1:9092 --prefix app --slot app_slot",
	})
	k := declareKafka(fs, false)
	slot := fs.String("slot", "tributary", "the producer's replication slot `name`")
	asJSON := fs.Bool("json", false, "print JSON")
	fs.Require("brokers", "prefix")
	if err := parse(fs, args, e); err != nil {
		return err
	}
	opts, err := k.kgoOpts()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	st, err := txlog.ReadState(ctx, opts, kadm.NewClient(cl), schemas.StateTopic(*k.prefix), *slot)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"slot": st.Slot, "position": st.Position, "tables": st.SortedTables()})
	}
	if st.Empty() {
		fmt.Fprintf(e.stdout, "no state of slot %s on %s\n", *slot, schemas.StateTopic(*k.prefix))
		return nil
	}
	fmt.Fprintf(e.stdout, "slot %s: last frame commit %s (xid %d, %s)\n", st.Slot, st.Position.CommitLSN, st.Position.Xid,
		st.Position.CommitTime.Format(time.RFC3339))
	if src := st.Position.Source; src.SystemID != "" {
		fmt.Fprintf(e.stdout, "source: system identifier %s, timeline %d (from %s)\n", src.SystemID, src.Timeline, src.TimelineStart)
	}
	tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TABLE\tCAPTURE\tSNAPSHOT\tKIND\tSTATUS\tCHUNKS\tROWS\tESTIMATE\tNOTE")
	for _, t := range st.SortedTables() {
		sn := t.Snapshot
		if sn == nil {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t\n", t.Name(), t.Status)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", t.Name(), t.Status, sn.ID, sn.Kind, sn.Status, sn.Chunks, sn.Rows, sn.Estimate, sn.Reason)
	}
	return tw.Flush()
}
