package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/tributary-cdc/tributary/cmd/tributary/internal/flagconf"
)

// terminal is what slot drop may ask on: the answer source and whether it
// is an interactive terminal (without one, only --yes drops).
type terminal struct {
	in          io.Reader
	interactive bool
}

func runSlot(ctx context.Context, args []string, e env) error {
	return slotMain(ctx, args, e, terminal{in: os.Stdin, interactive: isTerminal(os.Stdin)})
}

const slotUsage = `Usage: tributary slot <list|drop> [flags]

Lists or drops the source's replication slots. A slot retains WAL until its
reader confirms it: an abandoned slot fills the source's disk, and dropping a
slot that a producer still needs loses the changes since its confirmed LSN.

Subcommands:
  list   every slot with its state, lag and retained WAL
  drop   drop one inactive slot, after confirmation

Run 'tributary slot <subcommand> --help' for flags and examples.
`

// slotMain is runSlot with its terminal given, for tests.
func slotMain(ctx context.Context, args []string, e env, term terminal) error {
	return dispatch(args, e, slotUsage, "list or drop", map[string]func([]string) error{
		"list": func(args []string) error { return slotList(ctx, args, e) },
		"drop": func(args []string) error { return slotDrop(ctx, args, e, term) },
	})
}

func slotList(ctx context.Context, args []string, e env) error {
	fs := flagconf.New("tributary slot list", e.stdout, flagconf.Info{
		Synopsis:    "tributary slot list --source DSN [--json]",
		Description: "Lists every replication slot of the source cluster: type, database, whether it is\nactive (and by which pid), WAL status, confirmed LSN, lag and retained WAL.",
		Examples:    "  tributary slot list --source 'postgres://admin@db:5432/app'\n  tributary slot list --source 'postgres://admin@db:5432/app' --json",
	})
	source := fs.String("source", "", "source PostgreSQL `DSN`")
	asJSON := fs.Bool("json", false, "print JSON")
	fs.Require("source")
	if err := parse(fs, args, e); err != nil {
		return err
	}
	ctx, conn, done, err := dial(ctx, 30*time.Second, *source, "source")
	if err != nil {
		return err
	}
	defer done()
	slots, err := gatherSlots(ctx, conn, nil)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(slots)
	}
	if len(slots) == 0 {
		fmt.Fprintf(e.stdout, "no replication slots on %s\n", redactDSN(*source))
		return nil
	}
	renderSlots(e.stdout, slots)
	return nil
}

func slotDrop(ctx context.Context, args []string, e env, term terminal) error {
	fs := flagconf.New("tributary slot drop", e.stdout, flagconf.Info{
		Synopsis: "tributary slot drop --source DSN --slot NAME [--yes]",
		Description: "Drops one replication slot so that the source stops retaining WAL for it.\n" +
			"It refuses a slot that is in use and names the process that holds it. On a terminal it\n" +
			"asks for confirmation; elsewhere (scripts, cron) it drops only with --yes.\n\n" +
			"What is lost: the changes after the slot's confirmed LSN that Kafka does not hold yet.\n" +
			"A producer started again with the same --slot creates a new slot and, with\n" +
			"--snapshot initial, takes a new snapshot; changes in between are not captured.",
		Examples: "  tributary slot drop --source 'postgres://admin@db:5432/app' --slot old_slot\n" +
			"  tributary slot drop --source 'postgres://admin@db:5432/app' --slot old_slot --yes",
	})
	source := fs.String("source", "", "source PostgreSQL `DSN`")
	slot := fs.String("slot", "", "replication slot `name` to drop")
	yes := fs.Bool("yes", false, "drop without asking")
	fs.Require("source", "slot")
	if err := parse(fs, args, e); err != nil {
		return err
	}
	ctx, conn, done, err := dial(ctx, 5*time.Minute, *source, "source") // a prompt may wait for the operator
	if err != nil {
		return err
	}
	defer done()
	slots, err := gatherSlots(ctx, conn, []string{*slot})
	if err != nil {
		return err
	}
	s := slots[0]
	if s.Active {
		return errActiveSlot(s)
	}
	what := describeSlot(s)
	if !*yes {
		if !term.interactive {
			return usageError{fmt.Errorf("not dropping slot %s (%s) without confirmation: standard input is not a terminal; pass --yes", s.Name, what)}
		}
		fmt.Fprintf(e.stdout, "Drop replication slot %s (%s)?\nChanges after its confirmed LSN that Kafka does not hold yet will be lost. [y/N] ", s.Name, what)
		answer, _ := bufio.NewReader(term.in).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
			fmt.Fprintln(e.stdout, "not dropped")
			return exitCode(1)
		}
	}
	// The slot may have become active since it was read; PostgreSQL then
	// refuses, and the error names the pid.
	if _, err := conn.Exec(ctx, `SELECT pg_catalog.pg_drop_replication_slot($1)`, s.Name); err != nil {
		return fmt.Errorf("drop slot %s: %v", s.Name, err)
	}
	fmt.Fprintf(e.stdout, "dropped replication slot %s (%s)\n", s.Name, what)
	return nil
}

// errActiveSlot explains why an active slot is not dropped.
func errActiveSlot(s slotStatus) error {
	pid := "an unknown pid"
	if s.ActivePID != nil {
		pid = fmt.Sprintf("pid %d", *s.ActivePID)
	}
	if s.Client != "" {
		pid += ", " + s.Client
	}
	return fmt.Errorf("slot %s is active (held by %s): stop that producer first, then drop the slot; "+
		"to end the session from SQL: SELECT pg_terminate_backend(<pid>)", s.Name, pid)
}

// describeSlot is a one-line summary used in the prompt and the result.
func describeSlot(s slotStatus) string {
	parts := []string{s.Type}
	if s.Plugin != "" {
		parts[0] += "/" + s.Plugin
	}
	if s.Database != "" {
		parts = append(parts, "database "+s.Database)
	}
	if s.ConfirmedFlushLSN != "" {
		parts = append(parts, "confirmed "+s.ConfirmedFlushLSN)
	}
	if s.RetainedBytes != nil {
		parts = append(parts, "retaining "+formatBytes(*s.RetainedBytes)+" of WAL")
	}
	if s.WALStatus != "" {
		parts = append(parts, "wal_status "+s.WALStatus)
	}
	return strings.Join(parts, ", ")
}
