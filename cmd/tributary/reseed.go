package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tributary-cdc/tributary/cmd/tributary/internal/flagconf"
	"github.com/tributary-cdc/tributary/consumer/conflict"
	"github.com/tributary-cdc/tributary/consumer/conflict/reseed"
)

// runReseed re-instantiates a site whose data is lost from a healthy donor
// site (docs/MULTISITE.md, "Reseed").
func runReseed(ctx context.Context, args []string, e env) error {
	fs := flagconf.New("tributary reseed", e.stdout, flagconf.Info{
		Description: "Re-instantiates a multi-site target whose data is lost, from a healthy donor site\n" +
			"(seed 001: \"its database can be re-instantiated from the failover site\").\n\n" +
			"In one snapshot of the donor (the exported snapshot of a temporary logical slot, whose\n" +
			"consistent point C divides the donor's commits exactly: those before C are in it), it\n" +
			"copies the published tables' rows into the target with COPY, streaming, under\n" +
			"session_replication_role = replica and the replication origin of the donor's site, so\n" +
			"the target's own producer never publishes them. In the same target transaction it\n" +
			"writes the target's consumer checkpoints:\n" +
			"  --consumer (reads the donor's --prefix): the donor's last frame below C, after\n" +
			"      waiting until the donor's producer has published past C;\n" +
			"  every other consumer: the donor's own checkpoint rows for that stream, read in the\n" +
			"      same snapshot (what the donor had applied from each third site).\n\n" +
			"Before the snapshot it waits until the donor's consumers of the target's own stream\n" +
			"(--site-prefix) have applied everything the target published, so the copy holds it.\n" +
			"It refuses while a consumer is connected to the target, and when a table has rows\n" +
			"(--force empties them in the same transaction). Create the target's tables first\n" +
			"(pg_dump --schema-only of the donor). Afterwards start the target's consumers, and\n" +
			"its producer with --snapshot never.\n" +
			"Passwords come from PGPASSWORD or a passfile, never the command line.",
		Examples: "  # site B lost its data; A is healthy. B's consumer of A is from_a, of C from_c.\n" +
			"  tributary reseed --donor 'postgres://capture@a:5432/app' --target 'postgres://apply@b:5432/app' \\\n" +
			"      --publication pub --brokers k:9092 --registry http://k:8081 --prefix a \\\n" +
			"      --site-prefix b --consumer from_a --donor-site A\n" +
			"  # the donor's consumer of C is named c_to_a, B's is from_c:\n" +
			"  tributary reseed --config reseed.yaml --checkpoints c_to_a=from_c --force",
	})
	k := declareKafka(fs, true)
	donor := fs.String("donor", "", "`DSN` of the healthy donor site (a role with REPLICATION and SELECT on the published tables)")
	target := fs.String("target", "", "`DSN` of the site to re-instantiate (the apply role)")
	publication := fs.String("publication", "", "the donor's `publication`: its tables are copied")
	name := fs.String("consumer", "", "`name` of the target's consumer of the donor's stream (--prefix)")
	sitePrefix := fs.String("site-prefix", "", "the target site's own producer `prefix`: the donor's consumers of it are not copied")
	donorSite := fs.String("donor-site", "", "the donor's site `name`: the copy runs under replication origin tributary_<name>")
	originName := fs.String("origin-name", "", "replication origin `name` of the copy (default tributary_<donor-site>), as the target's --consumer uses")
	copyCP := fs.StringList("checkpoints", nil, "donor consumer checkpoints to copy, `donor[=target],...` "+
		"(default every donor consumer that does not read --site-prefix, under its own name; none for no other)")
	cpSchema := fs.String("checkpoint-schema", "public", "`schema` of tributary_checkpoint at both sites")
	metaSchema := fs.String("conflict-schema", "public", "`schema` of tributary_row_meta at both sites (schema: in the --conflicts file)")
	force := fs.Bool("force", false, "empty target tables that have rows, in the copy's transaction")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait for the donor's consumer of the target's stream, "+
		"and for the donor's producer to publish past the snapshot")
	waitOwn := fs.Bool("wait-own-stream", true, "first wait until the donor's consumers of the target's own stream (--site-prefix) "+
		"have applied all of it that is in Kafka, so that the copy holds every change the target published")
	fs.Require("donor", "target", "publication", "consumer", "site-prefix")
	log, err := k.parse(fs, args, e)
	if err != nil {
		return err
	}
	if *originName == "" {
		if *donorSite == "" {
			return usageError{errors.New("--donor-site or --origin-name is needed: the copy runs under the donor's replication origin")}
		}
		*originName = conflict.OriginPrefix + *donorSite
	}
	if *sitePrefix == *k.prefix {
		return usageError{fmt.Errorf("--site-prefix %q is the donor's --prefix: the target's own stream is not the donor's", *sitePrefix)}
	}
	rename := map[string]string{}
	noThird := len(*copyCP) == 1 && (*copyCP)[0] == "none"
	for _, c := range *copyCP {
		if noThird {
			break
		}
		from, to, ok := strings.Cut(c, "=")
		if !ok {
			to = from
		}
		if from == "" || to == "" {
			return usageError{fmt.Errorf("--checkpoints %q: want donor[=target]", c)}
		}
		rename[from] = to
	}
	for _, d := range []struct{ flag, dsn string }{{"donor", *donor}, {"target", *target}} {
		if _, err := pgx.ParseConfig(d.dsn); err != nil {
			return usageError{fmt.Errorf("--%s: %w", d.flag, err)}
		}
	}
	opts, reg, err := k.clients(log)
	if err != nil {
		return err
	}
	if err := k.checkBrokers(ctx, opts); err != nil {
		return err
	}
	res, err := reseed.Run(ctx, reseed.Config{DonorDSN: *donor, TargetDSN: *target, Publication: *publication,
		Prefix: *k.prefix, SitePrefix: *sitePrefix, Consumer: *name, Origin: *originName, Rename: rename, NoThird: noThird,
		CheckpointSchema: *cpSchema, MetaSchema: *metaSchema, Force: *force, WaitOwnStream: *waitOwn, Timeout: *timeout,
		Kafka: opts, Registry: reg, Log: log, Progress: e.stderr})
	if err != nil {
		var re *reseed.RefusalError
		if errors.As(err, &re) {
			return usageError{err}
		}
		return err
	}
	fmt.Fprintf(e.stdout, "reseeded %d rows of %d tables from the donor's snapshot at %s (its stream's last frame below it: commit %s).\n"+
		"Checkpoints written for consumers %s.\n"+
		"Now start the target's consumers, and its producer with --snapshot never.\n",
		res.Rows, res.Tables, res.ConsistentPoint, res.DonorCommitLSN, strings.Join(res.Consumers, ", "))
	return nil
}
