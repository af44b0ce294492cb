package main

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tributary-cdc/tributary/cmd/tributary/internal/flagconf"
	"github.com/tributary-cdc/tributary/producer"
	"github.com/tributary-cdc/tributary/schemas"
)

const setupUsage = `Usage: tributary setup roles|synchronous|ddl|multisite [flags]

Prepares a deployment. Subcommands:
  roles         the SQL for the least-privilege capture and apply roles: printed, or run with --apply
  synchronous   the SQL that makes the producer a synchronous standby (producer --synchronous)
  ddl           the event triggers that capture schema changes in WAL order (consumer --apply-ddl)
  multisite     a site's conflict tables and per-group change-time triggers (docs/MULTISITE.md)

Run 'tributary setup <subcommand> --help' for flags and examples.
`

func runSetup(ctx context.Context, args []string, e env) error {
	return dispatch(args, e, setupUsage, "roles, synchronous, ddl or multisite", map[string]func([]string) error{
		"roles":       func(args []string) error { return setupRoles(ctx, args, e) },
		"synchronous": func(args []string) error { return setupSynchronous(args, e) },
		"ddl":         func(args []string) error { return setupDDL(ctx, args, e) },
		"multisite":   func(args []string) error { return setupMultisite(ctx, args, e) },
	})
}

// setupDDL prints or installs DDL capture (producer/ddl.go).
func setupDDL(ctx context.Context, args []string, e env) error {
	fs := flagconf.New("tributary setup ddl", e.stdout, flagconf.Info{
		Description: "Prints, or with --apply runs, the SQL that captures schema changes in WAL order: event\n" +
			"triggers that, at the end of each CREATE TABLE, ALTER TABLE and DROP TABLE, write a\n" +
			"transactional logical decoding message (tributary.ddl) describing the change: columns\n" +
			"added, dropped, renamed or retyped, NOT NULL, table renames, partitions attached or\n" +
			"detached. Each change then sits in the stream between the data before it and after it;\n" +
			"consumers apply it (consumer --apply-ddl), history and warehouse sinks rename columns.\n" +
			"The objects live in schema " + producer.InternalSchema + " (its table schema_log keeps each table's\n" +
			"columns by attribute number, to tell a rename from a drop and an add); the producer\n" +
			"never captures that schema. Event triggers need a superuser.",
		Examples: "  tributary setup ddl | psql \"$SOURCE_ADMIN\"\n" +
			"  tributary setup ddl --apply --source 'postgres://postgres@db/app'",
	})
	source := fs.String("source", "", "source PostgreSQL `DSN` of a superuser (with --apply)")
	apply := fs.Bool("apply", false, "run the SQL instead of printing it")
	if err := parse(fs, args, e); err != nil {
		return err
	}
	sql := producer.DDLCaptureSQL(producer.InternalSchema)
	if !*apply {
		fmt.Fprint(e.stdout, sql)
		return nil
	}
	if *source == "" {
		return usageError{errors.New("--apply needs --source")}
	}
	ctx, conn, done, err := dial(ctx, time.Minute, *source, "source")
	if err != nil {
		return err
	}
	defer done()
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("install DDL capture: %w", err)
	}
	fmt.Fprintf(e.stdout, "DDL capture installed in schema %s\n", producer.InternalSchema)
	return nil
}

// setupSynchronous prints the settings that make source commits wait for
// the producer (seed 001, "Store-and-Forward vs. Real-Time").
func setupSynchronous(args []string, e env) error {
	fs := flagconf.New("tributary setup synchronous", e.stdout, flagconf.Info{
		Description: "Prints the SQL that lists the producer's replication connection in the source's\n" +
			"synchronous_standby_names. With it, and the producer run with --synchronous, a source\n" +
			"COMMIT returns only once the transaction is committed in Kafka.\n\n" +
			"The trade-off: while the producer is down or cannot reach Kafka, every commit on the\n" +
			"source waits (wait_event SyncRep in pg_stat_activity). List a second standby, or use\n" +
			"ANY 1 (...) with a physical standby, if the source must stay writable without it;\n" +
			"RESET synchronous_standby_names returns to asynchronous propagation.",
		Examples: "  tributary setup synchronous --slot app_slot | psql \"$SOURCE\"",
	})
	slot := fs.String("slot", "tributary", "the producer's replication slot `name`")
	standby := fs.String("standby-name", "", "the producer's --standby-name (default tributary_<slot>)")
	if err := parse(fs, args, e); err != nil {
		return err
	}
	name := *standby
	if name == "" {
		name = "tributary_" + *slot
	}
	value := schemas.QuoteIdent(name)
	fmt.Fprintf(e.stdout, "-- Source commits wait until the producer %s has them in Kafka.\n"+
		"ALTER SYSTEM SET synchronous_standby_names = '%s';\nSELECT pg_reload_conf();\n",
		name, strings.ReplaceAll(value, "'", "''"))
	return nil
}

// rolePlan is what `setup roles` grants, independent of how it is run.
type rolePlan struct {
	CaptureRole string
	ApplyRole   string
	Publication string
	// SourceDB and TargetDB name the databases for GRANT CONNECT; empty
	// leaves the grant out (PUBLIC has CONNECT by default).
	SourceDB string
	TargetDB string
	// Tables are the published source tables; the apply role gets DML on
	// the tables of the same names in the target.
	Tables []producer.TableSpec
	// PublicationExists leaves CREATE PUBLICATION out.
	PublicationExists bool
	// CheckpointSchema holds the consumer's tributary_checkpoint table.
	CheckpointSchema string
	// CreateTables lets the apply role create target tables
	// (consumer --create-tables): CREATE on the target schemas.
	CreateTables bool
	// Capture and Apply select the sections to produce.
	Capture, Apply bool
}

// grantOnDatabase grants privs on db to role; when db is not known it grants
// them on the database the script runs in.
func grantOnDatabase(privs, db, role string) string {
	if db != "" {
		return "GRANT " + privs + " ON DATABASE " + qi(db) + " TO " + qi(role)
	}
	tag := "$grant$"
	for i := 0; strings.Contains(role, tag); i++ {
		tag = fmt.Sprintf("$grant%d$", i)
	}
	return fmt.Sprintf("DO %s BEGIN EXECUTE format('GRANT %s ON DATABASE %%I TO %%I', current_database(), %s); END %s",
		tag, privs, "'"+strings.ReplaceAll(role, "'", "''")+"'", tag)
}

// sqlStep is one statement with the reason it is needed.
type sqlStep struct {
	Why string
	SQL string
	// secret marks a statement whose text must not be printed.
	secret bool
}

func qi(s string) string { return schemas.QuoteIdent(s) }

func tableList(ts []producer.TableSpec) string {
	q := make([]string, len(ts))
	for i, t := range ts {
		q[i] = qi(t.Schema) + "." + qi(t.Name)
	}
	return strings.Join(q, ", ")
}

func schemaNames(ts []producer.TableSpec) []string {
	seen := map[string]bool{}
	var out []string
	for _, t := range ts {
		if !seen[t.Schema] {
			seen[t.Schema] = true
			out = append(out, t.Schema)
		}
	}
	sort.Strings(out)
	return out
}

// captureSQL is the source side: a role that may stream the publication
// and read its tables for the snapshot, and nothing else.
func captureSQL(p rolePlan) []sqlStep {
	r := qi(p.CaptureRole)
	steps := []sqlStep{{
		Why: "LOGIN REPLICATION: it may open a replication connection and create its logical slot; it is not a superuser.\n" +
			`Set its password in psql with \password ` + r + " (or run with --apply and TRIBUTARY_CAPTURE_PASSWORD).",
		SQL: "CREATE ROLE " + r + " WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE",
	}}
	steps = append(steps, sqlStep{SQL: grantOnDatabase("CONNECT", p.SourceDB, p.CaptureRole)})
	for _, s := range schemaNames(p.Tables) {
		steps = append(steps, sqlStep{SQL: "GRANT USAGE ON SCHEMA " + qi(s) + " TO " + r})
	}
	steps = append(steps, sqlStep{
		Why: "SELECT on the published tables only: the initial snapshot reads them.",
		SQL: "GRANT SELECT ON TABLE " + tableList(p.Tables) + " TO " + r,
	})
	if !p.PublicationExists {
		specs := make([]string, len(p.Tables))
		for i, t := range p.Tables {
			specs[i] = t.String()
		}
		steps = append(steps, sqlStep{
			Why: "The publication is created here, by the tables' owner: CREATE PUBLICATION ... FOR TABLE requires owning\n" +
				"the tables, so the capture role needs neither CREATE on the database nor ownership of anything.",
			SQL: "CREATE PUBLICATION " + qi(p.Publication) + " FOR TABLE " + strings.Join(specs, ", "),
		})
	}
	return steps
}

// applySQL is the target side: a role that may change the replicated
// tables, keep its checkpoint and suppress triggers during replay.
func applySQL(p rolePlan) []sqlStep {
	r := qi(p.ApplyRole)
	steps := []sqlStep{{
		Why: `Set its password in psql with \password ` + r + " (or run with --apply and TRIBUTARY_APPLY_PASSWORD).",
		SQL: "CREATE ROLE " + r + " WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION",
	}}
	steps = append(steps, sqlStep{
		Why: "CREATE on the database: the consumer runs CREATE SCHEMA IF NOT EXISTS for its checkpoint schema,\n" +
			"and PostgreSQL checks this privilege even when the schema exists.",
		SQL: grantOnDatabase("CONNECT, CREATE", p.TargetDB, p.ApplyRole),
	})
	why := "The checkpoint table " + qi(p.CheckpointSchema) + ".tributary_checkpoint is created by the consumer on its first start."
	if p.CheckpointSchema != "public" {
		steps = append(steps, sqlStep{Why: why + "\nA dedicated schema keeps the role from creating tables next to the data.",
			SQL: "CREATE SCHEMA IF NOT EXISTS " + qi(p.CheckpointSchema) + " AUTHORIZATION " + r})
		why = ""
	}
	steps = append(steps, sqlStep{Why: why, SQL: "GRANT USAGE, CREATE ON SCHEMA " + qi(p.CheckpointSchema) + " TO " + r})
	for _, s := range schemaNames(p.Tables) {
		if s == p.CheckpointSchema {
			continue
		}
		priv := "USAGE"
		if p.CreateTables {
			priv = "USAGE, CREATE"
		}
		steps = append(steps, sqlStep{SQL: "GRANT " + priv + " ON SCHEMA " + qi(s) + " TO " + r})
	}
	if len(p.Tables) > 0 {
		steps = append(steps, sqlStep{
			Why: "DML on the replicated tables; SELECT because updates and deletes find rows by key.",
			SQL: "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON TABLE " + tableList(p.Tables) + " TO " + r,
		})
	}
	steps = append(steps, sqlStep{
		Why: "Replay runs SET session_replication_role = replica so that target triggers and foreign keys do not fire\n" +
			"again (PostgreSQL 15 or later; on older servers the apply role must be a superuser).",
		SQL: "GRANT SET ON PARAMETER session_replication_role TO " + r,
	})
	return steps
}

// writeScript prints steps as an SQL script with their reasons as comments.
func writeScript(w io.Writer, title string, steps []sqlStep) {
	fmt.Fprintf(w, "-- %s\n", title)
	for _, s := range steps {
		if s.Why != "" {
			for _, l := range strings.Split(s.Why, "\n") {
				fmt.Fprintf(w, "-- %s\n", l)
			}
		}
		fmt.Fprintf(w, "%s;\n", s.SQL)
	}
}

func setupRoles(ctx context.Context, args []string, e env) error {
	fs := flagconf.New("tributary setup roles", e.stdout, flagconf.Info{
		Synopsis: "tributary setup roles [--source DSN] [--target DSN] [--tables ...] [--apply]",
		Description: "Prints, or with --apply runs, the SQL for Tributary's two least-privilege roles:\n" +
			"  capture role (source): LOGIN REPLICATION, SELECT on the published tables, nothing else.\n" +
			"               The publication is created by the admin running this SQL, not by the role.\n" +
			"  apply role (target):   SELECT, INSERT, UPDATE, DELETE, TRUNCATE on the replicated tables,\n" +
			"               its checkpoint table, and GRANT SET ON PARAMETER session_replication_role\n" +
			"               (PostgreSQL 15+), so replay can suppress target triggers.\n\n" +
			"The tables are --tables, or the tables of an existing --publication read through --source.\n" +
			"--source and --target are admin connections (a superuser, or the tables' owner with\n" +
			"CREATEROLE); without --apply they are only read. All identifiers are quoted.\n\n" +
			"Passwords are never printed. Set them with psql's \\password, or with --apply from\n" +
			"TRIBUTARY_CAPTURE_PASSWORD and TRIBUTARY_APPLY_PASSWORD (or --capture-password-file and\n" +
			"--apply-password-file): they are hashed (SCRAM-SHA-256) here, so the plain password\n" +
			"reaches neither the server nor its log.",
		Examples: "  tributary setup roles --tables 'public.orders,public.\"Order Lines\"' --publication app_pub\n" +
			"  tributary setup roles --source 'postgres://admin@db/app' --publication app_pub > roles.sql\n" +
			"  TRIBUTARY_CAPTURE_PASSWORD=... TRIBUTARY_APPLY_PASSWORD=... tributary setup roles --apply \\\n" +
			"      --source 'postgres://admin@db/app' --target 'postgres://admin@replica/app' --publication app_pub",
	})
	source := fs.String("source", "", "source PostgreSQL `DSN` of an admin (read without --apply)")
	target := fs.String("target", "", "target PostgreSQL `DSN` of an admin, for the apply role")
	pub := fs.String("publication", "tributary", "publication `name`; created when missing")
	tables := fs.StringList("tables", nil, "source tables, `schema.table[(cols)][ WHERE (expr)],...`; default the publication's tables")
	capRole := fs.String("capture-role", "tributary_capture", "capture role `name` (source)")
	appRole := fs.String("apply-role", "tributary_apply", "apply role `name` (target)")
	cps := fs.String("checkpoint-schema", "public", "`schema` of the consumer's tributary_checkpoint table (as consumer --checkpoint-schema); "+
		"a dedicated one, such as tributary, is created owned by the apply role")
	createTables := fs.Bool("allow-create-tables", false, "let the apply role create target tables (consumer --create-tables)")
	only := fs.String("only", "", "produce only one role: capture or apply")
	apply := fs.Bool("apply", false, "run the SQL instead of printing it")
	capPass := fs.Secret("capture-password", "the capture role's password (with --apply)")
	appPass := fs.Secret("apply-password", "the apply role's password (with --apply)")
	if err := parse(fs, args, e); err != nil {
		return err
	}
	p := rolePlan{CaptureRole: *capRole, ApplyRole: *appRole, Publication: *pub, CheckpointSchema: *cps,
		CreateTables: *createTables, Capture: *only != "apply", Apply: *only != "capture"}
	switch {
	case *only != "" && *only != "capture" && *only != "apply":
		return usageError{fmt.Errorf("--only %q: want capture or apply", *only)}
	case *capRole == "" || *appRole == "" || *pub == "" || *cps == "":
		return usageError{errors.New("--capture-role, --apply-role, --publication and --checkpoint-schema must not be empty")}
	case p.Capture && p.Apply && *capRole == *appRole:
		return usageError{fmt.Errorf("--capture-role and --apply-role are both %q: use two roles, each with only what it needs", *capRole)}
	case *apply && p.Capture && *source == "":
		return usageError{errors.New("--apply needs --source for the capture role (or --only apply)")}
	case *apply && p.Apply && *target == "":
		return usageError{errors.New("--apply needs --target for the apply role (or --only capture)")}
	}
	specs, err := producer.ParseTableSpecs(*tables)
	if err != nil {
		return usageError{fmt.Errorf("--tables: %w", err)}
	}
	p.Tables = specs
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()

	var src, tgt *pgx.Conn
	if *source != "" {
		if src, err = connectDB(ctx, *source, "source"); err != nil {
			return err
		}
		defer src.Close(context.Background())
		if err := src.QueryRow(ctx, `SELECT current_database(),
			EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1)`, p.Publication).
			Scan(&p.SourceDB, &p.PublicationExists); err != nil {
			return fmt.Errorf("source: %v", err)
		}
		if len(p.Tables) == 0 && p.PublicationExists {
			if p.Tables, err = readPublicationTables(ctx, src, p.Publication); err != nil {
				return err
			}
		}
	}
	if len(p.Tables) == 0 {
		return usageError{fmt.Errorf("no tables: give --tables, or --source with an existing --publication %s that has tables", p.Publication)}
	}
	if *target != "" {
		if tgt, err = connectDB(ctx, *target, "target"); err != nil {
			return err
		}
		defer tgt.Close(context.Background())
		var ver int
		if err := tgt.QueryRow(ctx, `SELECT current_database(), current_setting('server_version_num')::int`).Scan(&p.TargetDB, &ver); err != nil {
			return fmt.Errorf("target: %v", err)
		}
		if p.Apply && ver < 150000 {
			return fmt.Errorf("target is PostgreSQL %d.%d: GRANT SET ON PARAMETER needs 15 or later; there the apply role must be a superuser", ver/10000, ver%10000/100)
		}
	}

	if !*apply {
		fmt.Fprintln(e.stdout, "-- Tributary least-privilege roles. Review, then run as an admin (psql -v ON_ERROR_STOP=1 -f FILE).")
		if p.Capture {
			fmt.Fprintln(e.stdout)
			writeScript(e.stdout, "On the SOURCE database"+inDB(p.SourceDB)+":", captureSQL(p))
		}
		if p.Apply {
			fmt.Fprintln(e.stdout)
			writeScript(e.stdout, "On the TARGET database"+inDB(p.TargetDB)+" (the tables must exist there):", applySQL(p))
		}
		return nil
	}
	if p.Capture {
		steps := captureSQL(p)
		if err := runSteps(ctx, src, "source", p.CaptureRole, *capPass, steps, e.stdout); err != nil {
			return err
		}
	}
	if p.Apply {
		steps := applySQL(p)
		if err := runSteps(ctx, tgt, "target", p.ApplyRole, *appPass, steps, e.stdout); err != nil {
			return err
		}
	}
	return nil
}

func inDB(db string) string {
	if db == "" {
		return ""
	}
	return " " + qi(db)
}

// readPublicationTables returns the tables of an existing publication.
func readPublicationTables(ctx context.Context, conn *pgx.Conn, pub string) ([]producer.TableSpec, error) {
	rows, err := conn.Query(ctx, `SELECT schemaname::text, tablename::text FROM pg_catalog.pg_publication_tables
		WHERE pubname = $1 ORDER BY 1, 2`, pub)
	if err != nil {
		return nil, fmt.Errorf("tables of publication %s: %v", pub, err)
	}
	defer rows.Close()
	var out []producer.TableSpec
	for rows.Next() {
		var t producer.TableSpec
		if err := rows.Scan(&t.Schema, &t.Name); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// runSteps runs steps in one transaction on conn: either every grant is
// made or none. An existing role is altered rather than created. A password,
// when given, is set as a SCRAM-SHA-256 verifier and never printed.
func runSteps(ctx context.Context, conn *pgx.Conn, where, role, password string, steps []sqlStep, out io.Writer) error {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)`, role).Scan(&exists); err != nil {
		return fmt.Errorf("%s: %v", where, err)
	}
	if exists {
		steps[0].SQL = strings.Replace(steps[0].SQL, "CREATE ROLE", "ALTER ROLE", 1)
	}
	if password != "" {
		v, err := scramVerifier(password)
		if err != nil {
			return err
		}
		steps = append(steps, sqlStep{SQL: "ALTER ROLE " + qi(role) + " PASSWORD '" + strings.ReplaceAll(v, "'", "''") + "'", secret: true})
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("%s: %v", where, err)
	}
	defer tx.Rollback(context.Background())
	for _, s := range steps {
		if _, err := tx.Exec(ctx, s.SQL); err != nil {
			shown := s.SQL
			if s.secret {
				shown = "ALTER ROLE " + qi(role) + " PASSWORD ..."
			}
			return fmt.Errorf("%s: %s: %v (nothing was changed)", where, shown, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("%s: commit: %v", where, err)
	}
	fmt.Fprintf(out, "-- ran on the %s:\n", where)
	for _, s := range steps {
		if s.secret {
			fmt.Fprintf(out, "ALTER ROLE %s PASSWORD '<SCRAM-SHA-256 verifier; the password is not shown>';\n", qi(role))
			continue
		}
		fmt.Fprintf(out, "%s;\n", s.SQL)
	}
	if password == "" {
		fmt.Fprintf(out, "-- role %s has no password set by this run: use \\password %s in psql, or certificate authentication\n", qi(role), qi(role))
	}
	return nil
}

// scramVerifier computes the SCRAM-SHA-256 verifier PostgreSQL stores for
// password (RFC 5802 and 7677, 4096 iterations, as libpq's
// PQencryptPasswordConn does), so that only the verifier is sent.
// PostgreSQL applies SASLprep to non-ASCII passwords; those are refused
// here rather than risk a verifier that never matches.
func scramVerifier(password string) (string, error) {
	for _, r := range password {
		if r > 0x7e || r < 0x20 {
			return "", errors.New("password has non-ASCII or control characters: set it with psql's \\password instead")
		}
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	const iter = 4096
	salted, err := pbkdf2.Key(sha256.New, password, salt, iter, sha256.Size)
	if err != nil {
		return "", err
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	stored := sha256.Sum256(mac(salted, "Client Key"))
	server := mac(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iter, b64(salt), b64(stored[:]), b64(server)), nil
}
