package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/cmd/tributary/internal/flagconf"
	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/conflict"
	"github.com/tributary-cdc/tributary/consumer/postgres/pgtarget"
	"github.com/tributary-cdc/tributary/producer"
	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog"
)

// reseedMessagePrefix is the prefix of the logical message reseed writes at
// the donor so that an idle donor's producer publishes past the snapshot.
const reseedMessagePrefix = "tributary.reseed"

// reseedSession are the settings of both reseed connections: COPY's text
// form depends on them, so donor and target must agree. They are the
// producer's, under reseed's own application_name.
var reseedSession = func() map[string]string {
	p := producer.SessionParams()
	p["application_name"] = "tributary-reseed"
	return p
}()

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
	if err := parse(fs, args, e); err != nil {
		return err
	}
	log, err := newLogger(e.stderr, *k.logFormat, *k.logLevel)
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
	opts, reg, err := k.clients(log)
	if err != nil {
		return err
	}
	if err := k.checkBrokers(ctx, opts); err != nil {
		return err
	}
	r := &reseed{log: log, opts: opts, reg: reg, prefix: *k.prefix, sitePrefix: *sitePrefix, consumer: *name,
		origin: *originName, publication: *publication, cpSchema: *cpSchema, metaSchema: *metaSchema, force: *force, timeout: *timeout,
		waitOwn: *waitOwn, rename: rename, noThird: noThird, progress: e.stderr, out: e.stdout}
	if err := r.run(ctx, *donor, *target); err != nil {
		var re *reseedRefusal
		if errors.As(err, &re) {
			return usageError{err}
		}
		return err
	}
	return nil
}

// reseedRefusal is a reason not to reseed that the operator must fix.
type reseedRefusal struct{ msg string }

func (r *reseedRefusal) Error() string { return r.msg }

func refuse(format string, a ...any) error { return &reseedRefusal{msg: fmt.Sprintf(format, a...)} }

// reseed is one run of tributary reseed.
type reseed struct {
	log         *slog.Logger
	opts        []kgo.Opt
	reg         *schemas.Registry
	prefix      string // the donor's
	sitePrefix  string // the target's
	consumer    string
	origin      string
	publication string
	cpSchema    string
	metaSchema  string
	force       bool
	timeout     time.Duration
	waitOwn     bool
	rename      map[string]string
	noThird     bool      // --checkpoints none
	progress    io.Writer // copy progress
	out         io.Writer // the summary
}

// pubTable is one published table of the donor, with its PG15 column list
// and row filter.
type pubTable struct {
	schema, name string
	cols         []string // nil: every column
	filter       string   // "" : every row
	query        string   // the donor's SELECT of cols, when set
}

func (t pubTable) qualified() string {
	return schemas.QuoteIdent(t.schema) + "." + schemas.QuoteIdent(t.name)
}

func (t pubTable) String() string { return t.schema + "." + t.name }

// quotedCols are the published columns, quoted; nil for every column.
func (t pubTable) quotedCols() []string {
	if t.cols == nil {
		return nil
	}
	q := make([]string, len(t.cols))
	for i, c := range t.cols {
		q[i] = schemas.QuoteIdent(c)
	}
	return q
}

func (t pubTable) selectList() string {
	if t.cols == nil {
		return "*"
	}
	return strings.Join(t.quotedCols(), ", ")
}

func (t pubTable) columnList() string {
	if t.cols == nil {
		return ""
	}
	return " (" + strings.Join(t.quotedCols(), ", ") + ")"
}

// cpRow is one row of a tributary_checkpoint table.
type cpRow struct {
	consumer string
	stream   consumer.Stream
	next     int64
	lsn      string
	ts       *time.Time
}

// sessionConfig parses dsn (role names the flag) with reseedSession's
// settings; replication makes it a replication connection.
func sessionConfig(dsn, role string, replication bool) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, usageError{fmt.Errorf("--%s: %w", role, err)}
	}
	for k, v := range reseedSession {
		cfg.RuntimeParams[k] = v
	}
	if replication {
		cfg.RuntimeParams["replication"] = "database"
	}
	return cfg, nil
}

func (r *reseed) run(ctx context.Context, donorDSN, targetDSN string) error {
	tcfg, err := sessionConfig(targetDSN, "target", false)
	if err != nil {
		return err
	}
	dcfg, err := sessionConfig(donorDSN, "donor", false)
	if err != nil {
		return err
	}
	rcfg, err := sessionConfig(donorDSN, "donor", true)
	if err != nil {
		return err
	}
	tgt, err := pgx.ConnectConfig(ctx, tcfg)
	if err != nil {
		return fmt.Errorf("connect to the target: %w", err)
	}
	defer tgt.Close(context.WithoutCancel(ctx))
	if err := r.checkNoConsumer(ctx, tgt); err != nil {
		return err
	}

	// Refuse early, before waiting: the tables, as published now (the
	// snapshot's list is checked again below).
	pre, err := pgx.ConnectConfig(ctx, dcfg)
	if err != nil {
		return fmt.Errorf("connect to the donor: %w", err)
	}
	tables, err := r.publishedTables(ctx, pre)
	pre.Close(ctx)
	if err != nil {
		return err
	}
	if err := r.checkTargetTables(ctx, tgt, tables); err != nil {
		return err
	}
	if r.waitOwn {
		if err := r.waitOwnStream(ctx, dcfg); err != nil {
			return err
		}
	}

	// The donor snapshot: a temporary slot's exported snapshot, imported by
	// a REPEATABLE READ transaction; the slot's connection stays idle until
	// the import is done, then goes (the imported snapshot lives on).
	repl, err := pgconn.ConnectConfig(ctx, &rcfg.Config)
	if err != nil {
		return fmt.Errorf("replication connection to the donor (its role needs REPLICATION): %w", err)
	}
	slot := fmt.Sprintf("tributary_reseed_%d", time.Now().UnixNano()%1e9)
	res, err := pglogrepl.CreateReplicationSlot(ctx, repl, slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Temporary: true, Mode: pglogrepl.LogicalReplication, SnapshotAction: "EXPORT_SNAPSHOT"})
	if err != nil {
		repl.Close(ctx)
		return fmt.Errorf("temporary slot %s on the donor for the snapshot: %w", slot, err)
	}
	cp, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		repl.Close(ctx)
		return fmt.Errorf("slot %s consistent point %q: %w", slot, res.ConsistentPoint, err)
	}
	src, err := pgx.ConnectConfig(ctx, dcfg)
	if err != nil {
		repl.Close(ctx)
		return fmt.Errorf("connect to the donor: %w", err)
	}
	defer src.Close(context.WithoutCancel(ctx))
	stx, err := src.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err == nil {
		_, err = stx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+res.SnapshotName+"'")
	}
	repl.Close(ctx)
	if err != nil {
		return fmt.Errorf("import the donor snapshot %s: %w", res.SnapshotName, err)
	}
	defer stx.Rollback(context.WithoutCancel(ctx))
	r.log.Info("donor snapshot taken", "consistent_point", cp.String(), "slot", slot)

	if tables, err = r.publishedTables(ctx, stx); err != nil {
		return err
	}
	third, err := r.donorCheckpoints(ctx, stx)
	if err != nil {
		return err
	}
	var snapTime time.Time
	if err := stx.QueryRow(ctx, `SELECT now()`).Scan(&snapTime); err != nil {
		return fmt.Errorf("donor snapshot time: %w", err)
	}

	// The target: tables exist, and are empty unless --force.
	if err := r.checkTargetTables(ctx, tgt, tables); err != nil {
		return err
	}

	// The donor's stream: its position for commits below cp.
	own, err := r.streamPosition(ctx, src, tables, cp)
	if err != nil {
		return err
	}

	// One target transaction: origin, (truncate,) copy, checkpoints.
	if err := pgtarget.CreateOrigin(ctx, tgt, r.origin); err != nil {
		return err
	}
	if _, err := tgt.Exec(ctx, "SET session_replication_role = replica"); err != nil {
		return fmt.Errorf("SET session_replication_role = replica on the target (the apply role must be a superuser "+
			"or have GRANT SET ON PARAMETER session_replication_role): %w", err)
	}
	if err := pgtarget.OriginSessionSetup(ctx, tgt, r.origin); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "55006" {
			return refuse("%v: stop the consumers of the target before reseeding it", err)
		}
		return err
	}
	defer pgtarget.OriginSessionReset(context.WithoutCancel(ctx), tgt, r.log)
	ttx, err := tgt.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin the target transaction: %w", err)
	}
	defer ttx.Rollback(context.WithoutCancel(ctx))
	if err := pgtarget.OriginXactSetup(ctx, ttx, own.CommitLSN, snapTime); err != nil {
		return err
	}
	if r.force {
		names := make([]string, len(tables))
		for i, t := range tables {
			names[i] = t.qualified()
		}
		if len(names) > 0 {
			if _, err := ttx.Exec(ctx, "TRUNCATE "+strings.Join(names, ", ")); err != nil {
				return fmt.Errorf("--force: empty the target tables: %w", err)
			}
		}
	}
	var total int64
	for _, t := range tables {
		n, err := r.copyTable(ctx, stx, ttx, t)
		if err != nil {
			return err
		}
		total += n
	}
	if err := r.copyRowMeta(ctx, stx, ttx); err != nil {
		return err
	}
	cps := pgtarget.NewCheckpoints(r.cpSchema, r.consumer)
	if err := cps.Create(ctx, ttx.Conn()); err != nil {
		return err
	}
	if err := cps.Replace(ctx, ttx, own); err != nil {
		return err
	}
	for name, cpt := range third {
		if err := pgtarget.NewCheckpoints(r.cpSchema, name).Replace(ctx, ttx, cpt); err != nil {
			return err
		}
	}
	// A consumer that connected meanwhile would have read the old checkpoint.
	if err := r.checkNoConsumer(ctx, tgt); err != nil {
		return err
	}
	if err := r.advanceInstances(ctx, ttx, own.CommitLSN); err != nil {
		return err
	}
	if err := ttx.Commit(ctx); err != nil {
		return fmt.Errorf("commit the reseed at the target: %w", err)
	}
	r.log.Info("reseed committed", "tables", len(tables), "rows", total, "consumer", r.consumer,
		"donor_commit_lsn", own.CommitLSN.String(), "consistent_point", cp.String(), "third_site_consumers", len(third))
	names := []string{r.consumer}
	for n := range third {
		names = append(names, n)
	}
	sort.Strings(names[1:])
	fmt.Fprintf(r.out, "reseeded %d rows of %d tables from the donor's snapshot at %s (its stream's last frame below it: commit %s).\n"+
		"Checkpoints written for consumers %s.\n"+
		"Now start the target's consumers, and its producer with --snapshot never.\n",
		total, len(tables), cp, own.CommitLSN, strings.Join(names, ", "))
	return nil
}

// advanceInstances moves every instance of the copy's origin at the target
// (per-key consumers apply under origin#1, origin#2, ...; see
// conflict.OriginInstance) to where the copy leaves the donor's stream, as
// the copy's commit moves the origin itself, so that
// pg_replication_origin_status tells the truth for all of them. An
// instance in use refuses the reseed: a consumer runs.
func (r *reseed) advanceInstances(ctx context.Context, ttx pgx.Tx, lsn pglogrepl.LSN) error {
	rows, err := ttx.Query(ctx, `SELECT roname FROM pg_replication_origin WHERE starts_with(roname, $1)`, r.origin+"#")
	if err != nil {
		return fmt.Errorf("instances of origin %s: %w", r.origin, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("instances of origin %s: %w", r.origin, err)
	}
	for _, n := range names {
		if _, err := ttx.Exec(ctx, `SELECT pg_replication_origin_advance($1, $2::text::pg_lsn)`, n, lsn.String()); err != nil {
			var pe *pgconn.PgError
			if errors.As(err, &pe) && pe.Code == "55006" {
				return refuse("%v: stop the consumers of the target before reseeding it", err)
			}
			return fmt.Errorf("advance origin %s: %w", n, err)
		}
	}
	return nil
}

// checkNoConsumer refuses while a consumer is connected to the target.
func (r *reseed) checkNoConsumer(ctx context.Context, tgt *pgx.Conn) error {
	var who *string
	err := tgt.QueryRow(ctx, `SELECT string_agg(pid || ' ' || coalesce(host(client_addr), 'local'), ', ')
		FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = $1`,
		pgtarget.ConsumerApplicationName).Scan(&who)
	if err != nil {
		return fmt.Errorf("look for consumers connected to the target: %w", err)
	}
	if who == nil {
		return nil
	}
	return refuse("a consumer is connected to the target (backends %s): stop every consumer of the target "+
		"before reseeding it, and start them again afterwards", *who)
}

// publishedTables lists the donor publication's tables, as q sees them.
func (r *reseed) publishedTables(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) ([]pubTable, error) {
	rows, err := q.Query(ctx, `SELECT schemaname, tablename, attnames, coalesce(rowfilter, '')
		FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2`, r.publication)
	if err != nil {
		return nil, fmt.Errorf("list the tables of publication %s on the donor: %w", r.publication, err)
	}
	defer rows.Close()
	var out []pubTable
	for rows.Next() {
		var t pubTable
		var cols []string
		if err := rows.Scan(&t.schema, &t.name, &cols, &t.filter); err != nil {
			return nil, fmt.Errorf("list the tables of publication %s: %w", r.publication, err)
		}
		t.cols = cols
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, refuse("publication %s on the donor has no tables (or does not exist)", r.publication)
	}
	return out, nil
}

// donorCheckpoints reads, in the donor snapshot, the donor's checkpoints of
// the streams the target also consumes: every consumer except those that
// read the target's own prefix, or those --checkpoints names, renamed.
func (r *reseed) donorCheckpoints(ctx context.Context, tx pgx.Tx) (map[string]consumer.Checkpoint, error) {
	table := schemas.QuoteIdent(r.cpSchema) + "." + schemas.QuoteIdent("tributary_checkpoint")
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&exists); err != nil {
		return nil, fmt.Errorf("look for %s on the donor: %w", table, err)
	}
	out := map[string]consumer.Checkpoint{}
	if r.noThird {
		return out, nil
	}
	if !exists {
		if len(r.rename) > 0 {
			return nil, refuse("--checkpoints: the donor has no %s", table)
		}
		return out, nil
	}
	rows, err := tx.Query(ctx, `SELECT consumer, kind, topic, partition, next_offset, coalesce(commit_lsn::text, ''), commit_ts
		FROM `+table+` ORDER BY consumer, kind, topic, partition`)
	if err != nil {
		return nil, fmt.Errorf("read %s on the donor: %w", table, err)
	}
	defer rows.Close()
	var all []cpRow
	skip := map[string]bool{}
	for rows.Next() {
		var c cpRow
		var kind string
		if err := rows.Scan(&c.consumer, &kind, &c.stream.Topic, &c.stream.Partition, &c.next, &c.lsn, &c.ts); err != nil {
			return nil, fmt.Errorf("read %s on the donor: %w", table, err)
		}
		c.stream.Kind = consumer.StreamKind(kind)
		if strings.HasPrefix(c.stream.Topic, r.sitePrefix+".") || strings.HasPrefix(c.stream.Topic, r.prefix+".") {
			skip[c.consumer] = true // reads the target's own stream (or, oddly, the donor's)
		}
		all = append(all, c)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, c := range all {
		to := c.consumer
		if len(r.rename) > 0 {
			var ok bool
			if to, ok = r.rename[c.consumer]; !ok {
				continue
			}
		} else if skip[c.consumer] {
			continue
		}
		if to == r.consumer {
			return nil, refuse("donor consumer %s would be copied as %s, the consumer of the donor's own stream", c.consumer, to)
		}
		cp, ok := out[to]
		if !ok {
			cp = consumer.Checkpoint{Next: map[consumer.Stream]int64{}}
		}
		cp.Next[c.stream] = c.next
		if c.lsn != "" {
			if l, err := pglogrepl.ParseLSN(c.lsn); err == nil && l > cp.CommitLSN {
				cp.CommitLSN = l
				if c.ts != nil {
					cp.CommitTime = *c.ts
				}
			}
		}
		out[to] = cp
	}
	for from := range r.rename {
		found := false
		for _, c := range all {
			found = found || c.consumer == from
		}
		if !found {
			return nil, refuse("--checkpoints: the donor has no checkpoint of consumer %s", from)
		}
	}
	for name, cp := range out {
		r.log.Info("third-site checkpoint from the donor", "consumer", name, "streams", len(cp.Next), "commit_lsn", cp.CommitLSN.String())
	}
	return out, nil
}

// checkTargetTables checks that every table exists at the target and, without
// --force, is empty.
func (r *reseed) checkTargetTables(ctx context.Context, tgt *pgx.Conn, tables []pubTable) error {
	for _, t := range tables {
		var exists bool
		if err := tgt.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, t.qualified()).Scan(&exists); err != nil {
			return fmt.Errorf("look for table %s on the target: %w", t, err)
		}
		if !exists {
			return refuse("table %s does not exist on the target: create the schema first "+
				"(pg_dump --schema-only of the donor, without its publications and subscriptions)", t)
		}
		if r.force {
			continue
		}
		var rows bool
		if err := tgt.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+t.qualified()+`)`).Scan(&rows); err != nil {
			return fmt.Errorf("look for rows in %s on the target: %w", t, err)
		}
		if rows {
			return refuse("table %s on the target has rows: reseed copies whole tables; "+
				"give --force to empty the published tables in the copy's transaction", t)
		}
	}
	return nil
}

// copyTable streams t's published rows from the donor snapshot into the
// target transaction with COPY, through a pipe: memory stays bounded
// whatever the table's size.
func (r *reseed) copyTable(ctx context.Context, stx, ttx pgx.Tx, t pubTable) (int64, error) {
	sel := "SELECT " + t.selectList() + " FROM " + t.qualified()
	if t.filter != "" {
		sel += " WHERE " + t.filter
	}
	if t.query != "" {
		sel = t.query
	}
	start := time.Now()
	pr, pw := io.Pipe()
	cr := &countingReader{r: pr, out: r.progress, table: t.String(), next: time.Now().Add(2 * time.Second)}
	done := make(chan error, 1)
	go func() {
		_, err := stx.Conn().PgConn().CopyTo(ctx, pw, "COPY ("+sel+") TO STDOUT")
		pw.CloseWithError(err)
		done <- err
	}()
	tag, err := ttx.Conn().PgConn().CopyFrom(ctx, cr, "COPY "+t.qualified()+t.columnList()+" FROM STDIN")
	pr.CloseWithError(errors.New("the target stopped reading"))
	derr := <-done
	if derr != nil {
		return 0, fmt.Errorf("copy %s: read from the donor: %w", t, derr)
	}
	if err != nil {
		return 0, fmt.Errorf("copy %s: write to the target: %w", t, err)
	}
	r.log.Info("table copied", "table", t.String(), "rows", tag.RowsAffected(), "bytes", cr.n, "took", time.Since(start).Round(time.Millisecond).String())
	return tag.RowsAffected(), nil
}

// countingReader counts the bytes COPY passes through and prints progress
// every two seconds.
type countingReader struct {
	r     io.Reader
	out   io.Writer
	table string
	n     int64
	next  time.Time
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if time.Now().After(c.next) {
		c.next = time.Now().Add(2 * time.Second)
		fmt.Fprintf(c.out, "reseed: %s: %d MB copied\n", c.table, c.n>>20)
	}
	return n, err
}

// streamPosition is the checkpoint of the donor's stream just before the
// consistent point cp: the transactions topic and every data partition read
// up to the donor's last frame whose commit LSN is below cp. It first writes
// a logical message at the donor and waits until the donor's producer has
// published a frame at or past cp, so that every frame below cp is committed
// in Kafka (frames are committed in commit-LSN order).
func (r *reseed) streamPosition(ctx context.Context, src *pgx.Conn, tables []pubTable, cp pglogrepl.LSN) (consumer.Checkpoint, error) {
	out := consumer.Checkpoint{Next: map[consumer.Stream]int64{}}
	bc, err := pgx.ConnectConfig(ctx, src.Config().Copy())
	if err != nil {
		return out, fmt.Errorf("connect to the donor for the barrier message: %w", err)
	}
	_, err = bc.Exec(ctx, `SELECT pg_logical_emit_message(false, $1, now()::text)`, reseedMessagePrefix)
	bc.Close(ctx)
	if err != nil {
		r.log.Warn("could not write the barrier message at the donor; waiting for its next commit instead "+
			"(grant EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text))", "err", err)
	}
	cl, err := kgo.NewClient(r.opts...)
	if err != nil {
		return out, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	txTopic := schemas.TransactionsTopic(r.prefix)
	frames := txlog.NewFrames(r.opts, adm, txlog.NewFrameDecoder(r.reg), txTopic)
	// Wait for a committed frame at or past cp.
	wctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	var txNext int64
	var txb txlog.Bounds
	for next := time.Now(); ; {
		txb, err = frames.Bounds(wctx)
		if err == nil {
			txNext, err = frames.FirstAtOrPast(wctx, txb, cp)
		}
		if err == nil && txNext < txb.End {
			break
		}
		if err != nil && wctx.Err() == nil {
			return out, err
		}
		if wctx.Err() != nil {
			if ctx.Err() != nil {
				return out, ctx.Err()
			}
			return out, fmt.Errorf("the donor's producer did not publish past the snapshot (LSN %s) on %s within %s: "+
				"is it running with --prefix %s?", cp, txTopic, r.timeout, r.prefix)
		}
		if time.Now().After(next) {
			r.log.Info("waiting for the donor's producer to publish past the snapshot", "consistent_point", cp.String(), "topic", txTopic)
			next = time.Now().Add(5 * time.Second)
		}
		time.Sleep(200 * time.Millisecond)
	}
	out.Next[consumer.Stream{Kind: consumer.StreamTransactions, Topic: txTopic}] = txNext
	// The last frame below cp gives the checkpoint's commit LSN and time.
	lctx, lcancel := context.WithTimeout(ctx, reseedReadTimeout)
	defer lcancel()
	if _, last, err := frames.Last(lctx, txb, txNext); err != nil {
		return out, err
	} else if last != nil {
		out.CommitLSN, out.CommitTime = last.CommitLSN, last.CommitTime
	}
	// Data partitions: every table topic of the publication and the messages topic.
	topics := []string{schemas.MessagesTopic(r.prefix)}
	for _, t := range tables {
		topics = append(topics, schemas.TopicName(r.prefix, t.schema, t.name))
	}
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return out, fmt.Errorf("partitions of the donor's topics: %w", err)
	}
	// firstAtOrPast is where a reader of a data partition's records at or
	// past cp starts, found by their commit LSN header.
	firstAtOrPast := func(topic string, part int32) (int64, txlog.Bounds, error) {
		ctx, cancel := context.WithTimeout(ctx, reseedReadTimeout)
		defer cancel()
		b, err := txlog.PartitionBounds(ctx, adm, topic, part)
		if err != nil {
			return 0, b, err
		}
		n, err := txlog.Seek(ctx, r.opts, topic, part, b, uint64(cp), txlog.HeaderLSN)
		return n, b, err
	}
	var lerr error
	ends.Each(func(o kadm.ListedOffset) {
		if lerr != nil || errors.Is(o.Err, kerr.UnknownTopicOrPartition) {
			return
		}
		if o.Err != nil {
			lerr = fmt.Errorf("end offset of %s partition %d: %w", o.Topic, o.Partition, o.Err)
			return
		}
		n, b, err := firstAtOrPast(o.Topic, o.Partition)
		if err != nil {
			lerr = err
			return
		}
		if n > b.Start {
			out.Next[consumer.Stream{Kind: consumer.StreamData, Topic: o.Topic, Partition: o.Partition}] = n
		}
	})
	if lerr != nil {
		return out, lerr
	}
	r.log.Info("donor stream position", "topic", txTopic, "next_offset", txNext, "commit_lsn", out.CommitLSN.String(),
		"partitions", len(out.Next)-1)
	return out, nil
}

// reseedReadTimeout bounds each read of the donor's topics after the wait
// for its producer: the last frame below the snapshot, and the search of
// each data partition.
const reseedReadTimeout = 2 * time.Minute

// waitOwnStream waits until every donor consumer of the target's own stream
// has applied every frame committed in Kafka when it starts: the target's
// changes that reached Kafka but not the donor would otherwise be missing
// from the copy, and no consumer of the target replays its own stream.
func (r *reseed) waitOwnStream(ctx context.Context, dcfg *pgx.ConnConfig) error {
	topic := schemas.TransactionsTopic(r.sitePrefix)
	cl, err := kgo.NewClient(r.opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	frames := txlog.NewFrames(r.opts, kadm.NewClient(cl), txlog.NewFrameDecoder(r.reg), topic)
	b, err := frames.Bounds(ctx)
	if err != nil {
		return err
	}
	end := b.End
	if end == 0 {
		r.log.Info("the target's own stream is empty; nothing to wait for", "topic", topic)
		return nil
	}
	c, err := pgx.ConnectConfig(ctx, dcfg)
	if err != nil {
		return fmt.Errorf("connect to the donor: %w", err)
	}
	defer c.Close(context.WithoutCancel(ctx))
	table := schemas.QuoteIdent(r.cpSchema) + "." + schemas.QuoteIdent("tributary_checkpoint")
	wctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	for logAt := time.Now(); ; {
		behind, err := r.ownStreamBehind(wctx, c, table, frames, end)
		if err == nil && len(behind) == 0 {
			r.log.Info("the donor has applied the target's own stream", "topic", topic, "end_offset", end)
			return nil
		}
		if err != nil && wctx.Err() == nil {
			return err
		}
		if wctx.Err() != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("the donor's consumers of the target's own stream %s did not apply it up to offset %d "+
				"within %s (%s): start them, or give --wait-own-stream=false to copy without the target's changes "+
				"they have not applied", topic, end, r.timeout, strings.Join(behind, ", "))
		}
		if time.Now().After(logAt) {
			r.log.Info("waiting for the donor's consumers of the target's own stream", "topic", topic,
				"end_offset", end, "behind", strings.Join(behind, ", "))
			logAt = time.Now().Add(5 * time.Second)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ownStreamBehind lists the donor consumers of the target's transactions
// topic (read by frames) that have a committed frame below end still to
// apply, as "name at offset"; a donor with no checkpoint of the topic is
// behind too: the target's changes would be in no copy. A consumer whose next
// offset retention deleted is an error wrapping txlog.ErrBelowLogStart: the
// target's changes there may never reach the donor.
func (r *reseed) ownStreamBehind(ctx context.Context, c *pgx.Conn, table string, frames *txlog.Frames, end int64) ([]string, error) {
	topic := frames.Topic()
	var exists bool
	if err := c.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&exists); err != nil {
		return nil, fmt.Errorf("look for %s on the donor: %w", table, err)
	}
	var rows []cpRow
	if exists {
		rs, err := c.Query(ctx, `SELECT consumer, next_offset FROM `+table+` WHERE kind = $1 AND topic = $2 AND partition = 0`,
			string(consumer.StreamTransactions), topic)
		if err != nil {
			return nil, fmt.Errorf("read %s on the donor: %w", table, err)
		}
		for rs.Next() {
			var row cpRow
			if err := rs.Scan(&row.consumer, &row.next); err != nil {
				rs.Close()
				return nil, fmt.Errorf("read %s on the donor: %w", table, err)
			}
			rows = append(rows, row)
		}
		rs.Close()
		if err := rs.Err(); err != nil {
			return nil, fmt.Errorf("read %s on the donor: %w", table, err)
		}
	}
	if len(rows) == 0 {
		return []string{"no donor consumer has a checkpoint of it yet"}, nil
	}
	var behind []string
	for _, row := range rows {
		found := false
		err := frames.Scan(ctx, row.next, end, func(int64, schemas.Frame) error {
			found = true
			return txlog.ErrStop
		})
		if errors.Is(err, txlog.ErrBelowLogStart) {
			return nil, fmt.Errorf("donor consumer %s of the target's own stream has not read records that were deleted: %w; "+
				"the target's changes among them may be missing at the donor: give --wait-own-stream=false to copy without them", row.consumer, err)
		}
		if err != nil {
			return nil, err
		}
		if found {
			behind = append(behind, fmt.Sprintf("%s at offset %d", row.consumer, row.next))
		}
	}
	return behind, nil
}

// copyRowMeta copies the donor's tributary_row_meta (who last wrote each
// column group of a row the donor's consumers applied, and when) over the
// target's, so that latest and earliest judge the copied rows as the donor
// does. A donor without the table has nothing to copy; a target without it
// gets a warning (pg_dump --schema-only of the donor creates it).
func (r *reseed) copyRowMeta(ctx context.Context, stx, ttx pgx.Tx) error {
	t := pubTable{schema: r.metaSchema, name: "tributary_row_meta", cols: conflict.RowMetaCopyColumns,
		query: conflict.RowMetaCopyQuery(r.metaSchema)}
	var atDonor, atTarget bool
	if err := stx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, t.qualified()).Scan(&atDonor); err != nil {
		return fmt.Errorf("look for %s on the donor: %w", t, err)
	}
	if err := ttx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, t.qualified()).Scan(&atTarget); err != nil {
		return fmt.Errorf("look for %s on the target: %w", t, err)
	}
	switch {
	case !atDonor:
		return nil
	case !atTarget:
		r.log.Warn("the target has no conflict metadata table; latest and earliest will take the copied rows as "+
			"written at the snapshot's time (create the target's schema with pg_dump --schema-only of the donor)", "table", t.String())
		return nil
	}
	if _, err := ttx.Exec(ctx, "DELETE FROM "+t.qualified()); err != nil {
		return fmt.Errorf("clear %s on the target: %w", t, err)
	}
	_, err := r.copyTable(ctx, stx, ttx, t)
	return err
}
