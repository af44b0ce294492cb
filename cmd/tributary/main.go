// Command tributary is Tributary's single binary: the producer, the
// consumers, the embedded development stack and the operator tools.
//
// Every command takes its settings from flags, TRIBUTARY_* environment
// variables and a --config YAML file (see internal/flagconf), prints a
// one-line error and exits non-zero when it cannot do its job, and stops
// cleanly on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// command is one subcommand. run gets the arguments after the command name.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, env env) error
}

// env is what a command may touch of the process.
type env struct {
	stdout, stderr io.Writer
	lookup         func(string) (string, bool)
}

func commands() map[string]command {
	return map[string]command{
		"consumer": {"replay the events into a target, in commit order, exactly once", runConsumer},
		"dev":      {"run an embedded Kafka broker and schema registry for development", runDev},
		"producer": {"stream PostgreSQL logical replication into Kafka", runProducer},
		"reseed":   {"re-instantiate a multi-site target whose data is lost from a healthy donor site", runReseed},
		"setup":    {"print or run the SQL for the least-privilege capture and apply roles", runSetup},
		"slot":     {"list replication slots, or drop one safely", runSlot},
		"snapshot": {"take, pause, resume or cancel online snapshots while the producer streams; show their progress", runSnapshot},
		"status":   {"show slot lag, publications and consumer checkpoints; exit 1 on errors", runStatus},
		"verify":   {"compare a source with a consumer's target and report the keys that differ", runVerify},
		"version":  {"print the version", runVersion},
	}
}

// exitCode is an error that carries the process exit status.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit %d", int(e)) }

func main() {
	os.Exit(realMain(os.Args[1:], env{stdout: os.Stdout, stderr: os.Stderr, lookup: os.LookupEnv}))
}

func realMain(args []string, e env) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(e.stdout, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] == "--version" {
		args[0] = "version"
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(e.stderr, "tributary: unknown command %q; run 'tributary --help'\n", args[0])
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := cmd.run(ctx, args[1:], e)
	var code exitCode
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &code):
		return int(code)
	case errors.As(err, new(usageError)):
		fmt.Fprintf(e.stderr, "tributary %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(e.stderr, "tributary %s: %v\n", args[0], err)
		return 1
	}
}

// usageError is a mistake in the command line or configuration.
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintf(w, "Tributary: transactional change-data-capture from PostgreSQL to Kafka and back.\n\nUsage:\n  tributary <command> [flags]\n\nCommands:\n")
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintf(w, "\nRun 'tributary <command> --help' for a command's flags and examples.\n"+
		"Every flag can also be set as TRIBUTARY_<FLAG> or in a --config YAML file.\n")
}

func runVersion(_ context.Context, args []string, e env) error {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprintln(e.stdout, "Usage: tributary version\n\nPrints the version.\n\nExample:\n  tributary version")
		return nil
	}
	fmt.Fprintf(e.stdout, "tributary %s\n", version)
	return nil
}
