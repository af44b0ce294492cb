package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tributary-cdc/tributary/cmd/tributary/internal/flagconf"
	"github.com/tributary-cdc/tributary/consumer/conflict"
)

// setupMultisite prints or installs, at one site, the tables and triggers
// that conflict handling needs (conflict.SetupSQL; docs/MULTISITE.md).
func setupMultisite(ctx context.Context, args []string, e env) error {
	fs := flagconf.New("tributary setup multisite", e.stdout, flagconf.Info{
		Description: "Prints, or with --apply runs, the SQL that prepares one site for multi-site conflict\n" +
			"handling: the conflict tables, and on each table the configuration handles:\n" +
			"  " + conflict.GroupTimesTrigger + "  records which column groups each local write changes, and in\n" +
			"      which transaction, so that latest, earliest and site-priority compare a group's own last\n" +
			"      change (a write of another group, or an UPDATE that changes nothing, moves nothing);\n" +
			"  " + conflict.MonotoneTrigger + "      keeps minimum and maximum columns moving one way under local\n" +
			"      writes (a larger value written to a minimum column keeps the old one), which makes those\n" +
			"      methods converge whatever the workload (--monotone=false leaves it out).\n" +
			"Run it at every site, with that site's --site and the same --conflicts file, before the\n" +
			"applications write, and again after changing the file's groups or a table's key. The\n" +
			"consumer warns at start about a table whose triggers are missing or out of date.",
		Examples: "  tributary setup multisite --target \"$B\" --site B --conflicts conflicts.yaml | psql \"$B\"\n" +
			"  tributary setup multisite --target \"$B\" --site B --conflicts conflicts.yaml --publication pub --apply",
	})
	target := fs.String("target", "", "the site's PostgreSQL `DSN` (a role that may create triggers on its tables)")
	site := fs.String("site", "", "this site's `name`, as its consumers' --site")
	conflicts := fs.String("conflicts", "", "the conflict configuration `file` (docs/MULTISITE.md)")
	publication := fs.String("publication", "", "with defaults: in the file, the `publication` whose tables are prepared too")
	monotone := fs.Bool("monotone", true, "install "+conflict.MonotoneTrigger+" on tables with minimum or maximum groups")
	apply := fs.Bool("apply", false, "run the SQL instead of printing it")
	fs.Require("target", "site", "conflicts")
	if err := parse(fs, args, e); err != nil {
		return err
	}
	f, err := conflict.LoadFile(*conflicts)
	if err != nil {
		return usageError{err}
	}
	if f.Defaults != nil && *publication == "" {
		return usageError{errors.New("the file has defaults: name the --publication whose tables they cover")}
	}
	ctx, conn, done, err := dial(ctx, time.Minute, *target, "target")
	if err != nil {
		return err
	}
	defer done()
	tables, err := conflict.SetupTables(ctx, conn, f, *publication)
	if err != nil {
		return err
	}
	sql, err := conflict.SetupSQL(f, *site, tables, *monotone)
	if err != nil {
		return usageError{err}
	}
	if !*apply {
		fmt.Fprint(e.stdout, sql)
		return nil
	}
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("install multi-site triggers: %w", err)
	}
	fmt.Fprintf(e.stdout, "multi-site triggers installed at site %s on %d tables\n", *site, len(tables))
	return nil
}
