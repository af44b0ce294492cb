// Package reseed re-instantiates a multi-site target whose data is lost from
// a healthy donor site (seed 001: "its database can be re-instantiated from
// the failover site"; docs/MULTISITE.md, "Reseed"). It is what `tributary
// reseed` runs.
//
// Run takes one snapshot of the donor: the exported snapshot of a temporary
// logical slot (internal/pgexport), whose consistent point C divides the
// donor's commits exactly, those before C being in it. It copies the
// published tables' rows into the target with COPY, streaming, under
// session_replication_role = replica and the replication origin of the
// donor's site, so the target's own producer never publishes them. In the
// same target transaction it writes the target's consumer checkpoints
// (through pgtarget.Checkpoints, as a consumer would):
//
//   - Config.Consumer (it reads the donor's Config.Prefix): the donor's last
//     frame below C, and every data partition positioned at its first
//     record at or past C, after waiting until the donor's producer has
//     published past C (see streamPosition);
//   - every other consumer: the donor's own checkpoint rows for that stream,
//     read in the same snapshot, that is what the donor had applied from
//     each third site (see thirdSite).
//
// The donor's tributary_row_meta is copied too, each group's commit time
// in place of the donor's local transaction id (conflict.RowMetaCopyQuery),
// and every instance of Config.Origin at the target (origin#1, ...: the
// per-key consumers') is moved with the copy, refusing while one is in use.
//
// Before the snapshot it waits until the donor's consumers of the target's
// own stream (Config.SitePrefix) have applied everything of it in Kafka, so
// that the copy holds every change the target published. It refuses, with a
// *RefusalError, while a consumer is connected to the target, and when a
// target table is missing or has rows (Config.Force empties them in the
// same transaction).
//
// Run is the whole operation: each call is independent, and nothing is
// written at the target unless the one target transaction commits.
package reseed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/consumer/postgres/pgtarget"
	"github.com/tributary-cdc/tributary/internal/pgexport"
	"github.com/tributary-cdc/tributary/schemas"
)

// MessagePrefix is the prefix of the logical message Run writes at the
// donor so that an idle donor's producer publishes past the snapshot.
const MessagePrefix = "tributary.reseed"

// ApplicationName is the application_name of Run's connections.
const ApplicationName = "tributary-reseed"

// Config is one reseed.
type Config struct {
	DonorDSN  string // the healthy donor site (a role with REPLICATION and SELECT on the published tables)
	TargetDSN string // the site to re-instantiate (the apply role)
	// Publication is the donor's publication: its tables are copied, with
	// their column lists and row filters.
	Publication string
	Prefix      string // the donor's producer prefix
	SitePrefix  string // the target's own producer prefix
	// Consumer is the target's consumer of the donor's stream.
	Consumer string
	// Origin is the replication origin the copy runs under: the one the
	// target's Consumer applies the donor's changes under.
	Origin string
	// Rename selects the donor's third-site consumers whose checkpoints are
	// copied, and their names at the target; nil selects every donor
	// consumer that does not read SitePrefix, under its own name. NoThird
	// copies none.
	Rename  map[string]string
	NoThird bool
	// CheckpointSchema and MetaSchema are the schemas of
	// tributary_checkpoint and tributary_row_meta at both sites ("public").
	CheckpointSchema string
	MetaSchema       string
	// Force empties target tables that have rows, in the copy's transaction.
	Force bool
	// WaitOwnStream first waits for the donor's consumers of SitePrefix.
	WaitOwnStream bool
	// Timeout bounds each wait: for the donor's consumers of the target's
	// stream, and for the donor's producer to publish past the snapshot
	// (5m).
	Timeout time.Duration
	// Kafka reaches the brokers; Registry decodes frames.
	Kafka    []kgo.Opt
	Registry *schemas.Registry
	Log      *slog.Logger
	// Progress gets a line per table every two seconds while it copies;
	// nil discards them.
	Progress io.Writer
}

// Result is what a reseed did.
type Result struct {
	Tables int
	Rows   int64
	// ConsistentPoint is the donor snapshot's; DonorCommitLSN that of the
	// donor's last frame below it, where Config.Consumer resumes.
	ConsistentPoint pglogrepl.LSN
	DonorCommitLSN  pglogrepl.LSN
	// Consumers are the consumers whose checkpoints were written:
	// Config.Consumer, then the third-site ones, sorted.
	Consumers []string
}

// RefusalError is a reason not to reseed that the operator must fix; nothing
// was written.
type RefusalError struct{ msg string }

func (r *RefusalError) Error() string { return r.msg }

func refuse(format string, a ...any) error { return &RefusalError{msg: fmt.Sprintf(format, a...)} }

func (c *Config) validate() error {
	var errs []string
	for _, f := range []struct{ name, v string }{{"DonorDSN", c.DonorDSN}, {"TargetDSN", c.TargetDSN},
		{"Publication", c.Publication}, {"Prefix", c.Prefix}, {"SitePrefix", c.SitePrefix},
		{"Consumer", c.Consumer}, {"Origin", c.Origin}} {
		if f.v == "" {
			errs = append(errs, f.name+" is required")
		}
	}
	if c.SitePrefix != "" && c.SitePrefix == c.Prefix {
		errs = append(errs, fmt.Sprintf("SitePrefix %q is the donor's Prefix: the target's own stream is not the donor's", c.SitePrefix))
	}
	if c.Registry == nil {
		errs = append(errs, "Registry is required")
	}
	if len(errs) > 0 {
		return errors.New("reseed config: " + strings.Join(errs, "; "))
	}
	if c.CheckpointSchema == "" {
		c.CheckpointSchema = "public"
	}
	if c.MetaSchema == "" {
		c.MetaSchema = "public"
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Minute
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	return nil
}

// run is one call of Run.
type run struct {
	cfg Config
	log *slog.Logger
}

// Run reseeds the target from the donor (see the package comment). A
// *RefusalError (wrapped) is a condition the operator must fix first.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.validate(); err != nil {
		return Result{}, err
	}
	r := &run{cfg: cfg, log: cfg.Log}
	return r.run(ctx)
}

// sessionConfig parses dsn (role names it) with the contract's session
// settings: COPY's text form depends on them, so donor and target agree.
// replication makes it a replication connection.
func sessionConfig(dsn, role string, replication bool) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%s DSN: %w", role, err)
	}
	for k, v := range schemas.SessionParams() {
		cfg.RuntimeParams[k] = v
	}
	cfg.RuntimeParams["application_name"] = ApplicationName
	if replication {
		cfg.RuntimeParams["replication"] = "database"
	}
	return cfg, nil
}

func (r *run) run(ctx context.Context) (Result, error) {
	var res Result
	tcfg, err := sessionConfig(r.cfg.TargetDSN, "target", false)
	if err != nil {
		return res, err
	}
	dcfg, err := sessionConfig(r.cfg.DonorDSN, "donor", false)
	if err != nil {
		return res, err
	}
	rcfg, err := sessionConfig(r.cfg.DonorDSN, "donor", true)
	if err != nil {
		return res, err
	}
	tgt, err := pgx.ConnectConfig(ctx, tcfg)
	if err != nil {
		return res, fmt.Errorf("connect to the target: %w", err)
	}
	defer tgt.Close(context.WithoutCancel(ctx))
	if err := r.checkNoConsumer(ctx, tgt); err != nil {
		return res, err
	}

	// Refuse early, before waiting: the tables, as published now (the
	// snapshot's list is checked again below).
	pre, err := pgx.ConnectConfig(ctx, dcfg)
	if err != nil {
		return res, fmt.Errorf("connect to the donor: %w", err)
	}
	tables, err := r.publishedTables(ctx, pre)
	pre.Close(ctx)
	if err != nil {
		return res, err
	}
	if err := r.checkTargetTables(ctx, tgt, tables); err != nil {
		return res, err
	}
	if r.cfg.WaitOwnStream {
		if err := r.waitOwnStream(ctx, dcfg); err != nil {
			return res, err
		}
	}

	// The donor snapshot: a temporary slot's exported snapshot, imported by
	// a REPEATABLE READ transaction; the slot's connection stays idle until
	// the import is done, then goes (the imported snapshot lives on).
	repl, err := pgconn.ConnectConfig(ctx, &rcfg.Config)
	if err != nil {
		return res, fmt.Errorf("replication connection to the donor (its role needs REPLICATION): %w", err)
	}
	slot, err := pgexport.CreateSlot(ctx, repl, fmt.Sprintf("tributary_reseed_%d", time.Now().UnixNano()%1e9),
		pgexport.Options{Export: true, Temporary: true})
	if err != nil {
		repl.Close(ctx)
		return res, fmt.Errorf("the donor snapshot: %w", err)
	}
	cp := slot.ConsistentPoint
	src, err := pgx.ConnectConfig(ctx, dcfg)
	if err != nil {
		repl.Close(ctx)
		return res, fmt.Errorf("connect to the donor: %w", err)
	}
	defer src.Close(context.WithoutCancel(ctx))
	stx, err := pgexport.Import(ctx, src, slot.Snapshot)
	repl.Close(ctx)
	if err != nil {
		return res, fmt.Errorf("the donor snapshot: %w", err)
	}
	defer stx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // read only
	r.log.Info("donor snapshot taken", "consistent_point", cp.String(), "slot", slot.Name)

	if tables, err = r.publishedTables(ctx, stx); err != nil {
		return res, err
	}
	third, err := r.donorCheckpoints(ctx, stx)
	if err != nil {
		return res, err
	}
	var snapTime time.Time
	if err := stx.QueryRow(ctx, `SELECT now()`).Scan(&snapTime); err != nil {
		return res, fmt.Errorf("donor snapshot time: %w", err)
	}

	// The target: tables exist, and are empty unless Force.
	if err := r.checkTargetTables(ctx, tgt, tables); err != nil {
		return res, err
	}

	// The donor's stream: its position for commits below cp.
	own, err := r.streamPosition(ctx, src, tables, cp)
	if err != nil {
		return res, err
	}

	// One target transaction: origin, (truncate,) copy, checkpoints.
	if err := pgtarget.CreateOrigin(ctx, tgt, r.cfg.Origin); err != nil {
		return res, err
	}
	if _, err := tgt.Exec(ctx, "SET session_replication_role = replica"); err != nil {
		return res, fmt.Errorf("SET session_replication_role = replica on the target (the apply role must be a superuser "+
			"or have GRANT SET ON PARAMETER session_replication_role): %w", err)
	}
	if err := pgtarget.OriginSessionSetup(ctx, tgt, r.cfg.Origin); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "55006" {
			return res, refuse("%v: stop the consumers of the target before reseeding it", err)
		}
		return res, err
	}
	defer pgtarget.OriginSessionReset(context.WithoutCancel(ctx), tgt, r.log)
	ttx, err := tgt.Begin(ctx)
	if err != nil {
		return res, fmt.Errorf("begin the target transaction: %w", err)
	}
	defer ttx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	if err := pgtarget.OriginXactSetup(ctx, ttx, own.CommitLSN, snapTime); err != nil {
		return res, err
	}
	if r.cfg.Force && len(tables) > 0 {
		names := make([]string, len(tables))
		for i, t := range tables {
			names[i] = t.qualified()
		}
		if _, err := ttx.Exec(ctx, "TRUNCATE "+strings.Join(names, ", ")); err != nil {
			return res, fmt.Errorf("--force: empty the target tables: %w", err)
		}
	}
	for _, t := range tables {
		n, err := r.copyTable(ctx, stx, ttx, t)
		if err != nil {
			return res, err
		}
		res.Rows += n
	}
	if err := r.copyRowMeta(ctx, stx, ttx); err != nil {
		return res, err
	}
	cps := pgtarget.NewCheckpoints(r.cfg.CheckpointSchema, r.cfg.Consumer)
	if err := cps.Create(ctx, ttx.Conn()); err != nil {
		return res, err
	}
	if err := cps.Replace(ctx, ttx, own); err != nil {
		return res, err
	}
	for name, cpt := range third {
		if err := pgtarget.NewCheckpoints(r.cfg.CheckpointSchema, name).Replace(ctx, ttx, cpt); err != nil {
			return res, err
		}
	}
	// A consumer that connected meanwhile would have read the old checkpoint.
	if err := r.checkNoConsumer(ctx, tgt); err != nil {
		return res, err
	}
	if err := r.advanceInstances(ctx, ttx, own.CommitLSN); err != nil {
		return res, err
	}
	if err := ttx.Commit(ctx); err != nil {
		return res, fmt.Errorf("commit the reseed at the target: %w", err)
	}
	res.Tables, res.ConsistentPoint, res.DonorCommitLSN = len(tables), cp, own.CommitLSN
	res.Consumers = append([]string{r.cfg.Consumer}, slices.Sorted(maps.Keys(third))...)
	r.log.Info("reseed committed", "tables", res.Tables, "rows", res.Rows, "consumer", r.cfg.Consumer,
		"donor_commit_lsn", own.CommitLSN.String(), "consistent_point", cp.String(), "third_site_consumers", len(third))
	return res, nil
}

// advanceInstances moves every instance of the copy's origin at the target
// (per-key consumers apply under origin#1, origin#2, ...; see
// conflict.OriginInstance) to where the copy leaves the donor's stream, as
// the copy's commit moves the origin itself, so that
// pg_replication_origin_status tells the truth for all of them. An
// instance in use refuses the reseed: a consumer runs.
func (r *run) advanceInstances(ctx context.Context, ttx pgx.Tx, lsn pglogrepl.LSN) error {
	origin := r.cfg.Origin
	rows, err := ttx.Query(ctx, `SELECT roname FROM pg_replication_origin WHERE starts_with(roname, $1)`, origin+"#")
	if err != nil {
		return fmt.Errorf("instances of origin %s: %w", origin, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("instances of origin %s: %w", origin, err)
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
func (r *run) checkNoConsumer(ctx context.Context, tgt *pgx.Conn) error {
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
