package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/cmd/tributary/internal/flagconf"
	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/postgres/pgtarget"
	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog"
)

// statusReport is everything `tributary status` shows. Gathering fills it
// from the databases and Kafka; renderStatus and JSON print it, so the
// rendering is testable from a fixed value.
type statusReport struct {
	CheckedAt time.Time         `json:"checked_at"`
	Source    *sourceStatus     `json:"source,omitempty"`
	Consumers []consumerStatus  `json:"consumers,omitempty"`
	Targets   []targetStatus    `json:"targets,omitempty"`
	Kafka     []transactionsLog `json:"kafka,omitempty"`
	Checks    []check           `json:"checks"`
	// WarnFraction and FailFraction are the slot-safety thresholds used.
	WarnFraction float64 `json:"warn_fraction"`
	FailFraction float64 `json:"fail_fraction"`
	// The consumer thresholds used, in seconds (0: no check): a consumer
	// whose checkpoint has not moved for ...Stall while Kafka holds newer
	// frames, and one whose applied source commit time is ...Lag behind the
	// last frame's.
	WarnStall float64 `json:"warn_consumer_stall_seconds"`
	FailStall float64 `json:"fail_consumer_stall_seconds"`
	WarnLag   float64 `json:"warn_consumer_lag_seconds"`
	FailLag   float64 `json:"fail_consumer_lag_seconds"`
}

// sourceStatus is the source cluster's replication state.
type sourceStatus struct {
	DSN      string `json:"dsn"` // password removed
	Version  string `json:"server_version"`
	Database string `json:"database"`
	// CurrentLSN is pg_current_wal_lsn() (the replay LSN on a standby).
	CurrentLSN string `json:"current_lsn"`
	// MaxSlotWALKeepSize is max_slot_wal_keep_size in bytes; -1 is unlimited.
	MaxSlotWALKeepSize int64 `json:"max_slot_wal_keep_size_bytes"`
	// WALBudget is --wal-budget in bytes (0: not set); it is the limit when
	// max_slot_wal_keep_size is unlimited.
	WALBudget int64 `json:"wal_budget_bytes,omitempty"`
	// WALDirBytes is the size of pg_wal from pg_ls_waldir(); nil when the
	// role may not read it (it needs pg_monitor or superuser).
	WALDirBytes  *int64              `json:"wal_dir_bytes,omitempty"`
	Slots        []slotStatus        `json:"slots"`
	Publications []publicationStatus `json:"publications"`
}

// slotStatus is one row of pg_replication_slots with its lag.
type slotStatus struct {
	Name      string `json:"name"`
	Type      string `json:"type"` // logical or physical
	Plugin    string `json:"plugin,omitempty"`
	Database  string `json:"database,omitempty"`
	Temporary bool   `json:"temporary"`
	Active    bool   `json:"active"`
	ActivePID *int32 `json:"active_pid,omitempty"`
	// Client is the walsender's application_name and address, when visible.
	Client string `json:"client,omitempty"`
	// WALStatus is reserved, extended, unreserved or lost.
	WALStatus string `json:"wal_status"`
	// SafeWALSize is how many more bytes of WAL may be written before the
	// slot is in danger of losing WAL; nil when max_slot_wal_keep_size is -1.
	SafeWALSize       *int64 `json:"safe_wal_size_bytes,omitempty"`
	RestartLSN        string `json:"restart_lsn,omitempty"`
	ConfirmedFlushLSN string `json:"confirmed_flush_lsn,omitempty"`
	// LagBytes is the current LSN minus confirmed_flush_lsn (restart_lsn
	// for a physical slot): the changes not yet confirmed by the reader.
	LagBytes *int64 `json:"lag_bytes,omitempty"`
	// LagSeconds is the walsender's flush_lag: how long ago the WAL that was
	// just confirmed was written. Only known while the slot is active.
	LagSeconds *float64 `json:"lag_seconds,omitempty"`
	// RetainedBytes is the current LSN minus restart_lsn: the WAL this slot
	// keeps on disk, which is what max_slot_wal_keep_size limits.
	RetainedBytes *int64 `json:"retained_bytes,omitempty"`
	// LimitBytes is the limit RetainedBytes is measured against, and
	// UsedFraction RetainedBytes/LimitBytes; both absent without a limit.
	LimitBytes   int64    `json:"limit_bytes,omitempty"`
	UsedFraction *float64 `json:"used_fraction,omitempty"`
	// InactiveSince is when the slot was last released (PostgreSQL 17+).
	InactiveSince *time.Time `json:"inactive_since,omitempty"`
}

// publicationStatus is one publication and its tables.
type publicationStatus struct {
	Name      string        `json:"name"`
	Exists    bool          `json:"exists"`
	AllTables bool          `json:"all_tables"`
	Actions   []string      `json:"actions"` // insert, update, delete, truncate
	Tables    []tableStatus `json:"tables"`
}

// tableStatus is a published table and how its changes are keyed.
type tableStatus struct {
	Schema string `json:"schema"`
	Name   string `json:"name"`
	// Identity is "primary key", "index <name>", "full", "nothing" or
	// "default without primary key".
	Identity string `json:"identity"`
	Usable   bool   `json:"usable"`
	// Fix is the statement that gives an unusable table a replica identity.
	Fix string `json:"fix,omitempty"`
}

// targetStatus is one --target database.
type targetStatus struct {
	DSN   string `json:"dsn"`
	Error string `json:"error,omitempty"`
}

// consumerStatus is one consumer's checkpoint in a target.
type consumerStatus struct {
	Name   string `json:"name"`
	Target string `json:"target"` // DSN, password removed
	Prefix string `json:"prefix,omitempty"`
	Mode   string `json:"mode"` // transactional or per-key
	// CommitLSN and CommitTime are those of the last applied source transaction.
	CommitLSN  string     `json:"commit_lsn,omitempty"`
	CommitTime *time.Time `json:"commit_time,omitempty"`
	AppliedAt  time.Time  `json:"applied_at"`
	// IdleSeconds is how long ago the checkpoint last moved, by the
	// target's clock.
	IdleSeconds float64 `json:"idle_seconds"`
	// NextFrameOffset is the next offset of <prefix>.transactions to read.
	NextFrameOffset *int64 `json:"next_frame_offset,omitempty"`
	// Behind is the lag against the last frame in Kafka (with --brokers).
	Behind *consumerLag `json:"behind,omitempty"`
}

// consumerLag is how far a consumer is behind the last committed frame.
type consumerLag struct {
	// Transactions is the number of frames after the consumer's position
	// that are source transactions (or snapshot chunks), and Frames that
	// number plus the producer's heartbeats.
	Transactions int64 `json:"transactions"`
	Frames       int64 `json:"frames"`
	// AtLeast is set when the counts are lower bounds (too many to count).
	AtLeast bool `json:"at_least,omitempty"`
	// Bytes is the last frame's commit LSN minus the consumer's.
	Bytes int64 `json:"bytes"`
	// Seconds is the last frame's commit time minus the consumer's.
	Seconds *float64 `json:"seconds,omitempty"`
}

// transactionsLog is the end of one prefix's transactions topic.
type transactionsLog struct {
	Topic string `json:"topic"`
	// EndOffset is the last stable offset of partition 0.
	EndOffset int64 `json:"end_offset"`
	// LastCommitLSN and LastCommitTime are those of the last frame.
	LastCommitLSN  string     `json:"last_commit_lsn,omitempty"`
	LastCommitTime *time.Time `json:"last_commit_time,omitempty"`
	Error          string     `json:"error,omitempty"`
	// readFrom is the first offset read; frames before it were not counted.
	readFrom int64
	// logStart is the partition's log start: offsets below it were deleted.
	logStart int64
}

// Check levels.
const (
	levelWarn  = "WARN"
	levelError = "ERROR"
)

// check is one finding; any ERROR makes status exit 1.
type check struct {
	Level   string `json:"level"`
	Subject string `json:"subject"`
	Message string `json:"message"`
}

func (r *statusReport) add(level, subject, format string, a ...any) {
	r.Checks = append(r.Checks, check{Level: level, Subject: subject, Message: fmt.Sprintf(format, a...)})
}

// errors counts the ERROR checks.
func (r *statusReport) errorCount() int {
	n := 0
	for _, c := range r.Checks {
		if c.Level == levelError {
			n++
		}
	}
	return n
}

// statusOptions are the settings of one status run.
type statusOptions struct {
	source           string
	publications     []string // empty: every publication
	slots            []string // empty: every slot
	targets          []string
	checkpointSchema string
	prefix           string
	kafka            *kafkaFlags // nil without --brokers
	warnFraction     float64
	failFraction     float64
	walBudget        int64
	warnStall        float64 // seconds; see statusReport
	failStall        float64
	warnLag          float64
	failLag          float64
	frameScanLimit   int64
	log              *slog.Logger
}

func runStatus(ctx context.Context, args []string, e env) error {
	fs := flagconf.New("tributary status", e.stdout, flagconf.Info{
		Description: "Shows, on one screen (or as JSON), the state of replication: every slot of the\n" +
			"source with its lag and how close its retained WAL is to max_slot_wal_keep_size,\n" +
			"the publications' tables and any that cannot be keyed, and, with --target, every\n" +
			"consumer's checkpoint; with --brokers also how many transactions each consumer is\n" +
			"behind the last frame in Kafka.\n\n" +
			"Slot safety: a slot whose retained WAL passes --warn-fraction of the limit is a WARN,\n" +
			"past --fail-fraction an ERROR. The limit is max_slot_wal_keep_size, or --wal-budget\n" +
			"when that is unlimited (-1). A lost slot, a keyless published table, an unreachable\n" +
			"target, or (with --brokers) a consumer whose next frame offset Kafka has deleted is an\n" +
			"ERROR too.\n\n" +
			"Consumers (with --target and --brokers): one whose checkpoint has not moved for\n" +
			"--warn-consumer-stall / --fail-consumer-stall while Kafka holds newer frames is a\n" +
			"WARN / ERROR (it has stopped, however small its lag; the producer's heartbeats move\n" +
			"the log on an idle source), and one whose applied source commit time is\n" +
			"--warn-consumer-lag / --fail-consumer-lag behind the last frame's is a WARN / ERROR.\n\n" +
			"Exit status: 0 without errors (warnings allowed), 1 with any\n" +
			"error, 2 for a usage error; so it works as a cron or monitoring check.\n\n" +
			"Passwords come from PGPASSWORD or a passfile and are never printed: DSNs are shown\n" +
			"without them.",
		Examples: "  tributary status --source 'postgres://monitor@db:5432/app'\n" +
			"  tributary status --source 'postgres://monitor@db/app' --target 'postgres://monitor@replica/app' \\\n" +
			"      --brokers 127.0.0.1:9092 --prefix app --json\n" +
			"  tributary status --source 'postgres://monitor@db/app' --wal-budget 50GB --fail-fraction 0.7",
	})
	k := declareKafka(fs, false) // optional: with --brokers, consumer lag is measured against Kafka
	source := fs.String("source", "", "source PostgreSQL `DSN`")
	targets := fs.StringList("target", nil, "target PostgreSQL `DSN`s whose tributary_checkpoint tables are read")
	pubs := fs.StringList("publication", nil, "publication `names` to show; default every publication of the source database")
	slots := fs.StringList("slot", nil, "slot `names` to show and check; default every slot")
	cps := fs.String("checkpoint-schema", "public", "`schema` of the tributary_checkpoint table in the targets")
	asJSON := fs.Bool("json", false, "print JSON instead of the screen")
	warn := fs.Float("warn-fraction", 0.5, "WARN when a slot retains this `fraction` of the WAL limit")
	fail := fs.Float("fail-fraction", 0.8, "ERROR (exit 1) when a slot retains this `fraction` of the WAL limit")
	warnStall := fs.Duration("warn-consumer-stall", 2*time.Minute, "WARN when a consumer's checkpoint has not moved for this long while Kafka holds newer frames (needs --brokers; 0 disables)")
	failStall := fs.Duration("fail-consumer-stall", 10*time.Minute, "ERROR (exit 1) when a consumer's checkpoint has not moved for this long while Kafka holds newer frames (needs --brokers; 0 disables)")
	warnLag := fs.Duration("warn-consumer-lag", 5*time.Minute, "WARN when a consumer's last applied source commit is this far behind the last frame's (needs --brokers; 0 disables)")
	failLag := fs.Duration("fail-consumer-lag", 0, "ERROR (exit 1) when a consumer's last applied source commit is this far behind the last frame's (needs --brokers; 0 disables)")
	budget := fs.String("wal-budget", "", "WAL `size` (e.g. 20GB) to measure slots and pg_wal against when max_slot_wal_keep_size is -1")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	if err := parse(fs, args, e); err != nil {
		return err
	}
	if *source == "" && len(*targets) == 0 {
		return usageError{errors.New("give --source, --target or both")}
	}
	if !(*warn > 0 && *warn <= *fail && *fail <= 1) {
		return usageError{fmt.Errorf("--warn-fraction %g and --fail-fraction %g: want 0 < warn <= fail <= 1", *warn, *fail)}
	}
	o := statusOptions{source: *source, publications: *pubs, slots: *slots, targets: *targets,
		checkpointSchema: *cps, prefix: *k.prefix, warnFraction: *warn, failFraction: *fail, frameScanLimit: 100000,
		warnStall: warnStall.Seconds(), failStall: failStall.Seconds(), warnLag: warnLag.Seconds(), failLag: failLag.Seconds()}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"--warn-consumer-stall", *warnStall}, {"--fail-consumer-stall", *failStall}, {"--warn-consumer-lag", *warnLag}, {"--fail-consumer-lag", *failLag}} {
		if d.v < 0 {
			return usageError{fmt.Errorf("%s %s: want 0 (no check) or more", d.name, d.v)}
		}
	}
	if *budget != "" {
		b, err := parseSize(*budget)
		if err != nil || b <= 0 {
			return usageError{fmt.Errorf("--wal-budget %q: want a size such as 500MB or 20GB", *budget)}
		}
		o.walBudget = b
	}
	if len(*k.brokers) > 0 {
		o.kafka = k
	}
	log, err := k.logger(e)
	if err != nil {
		return err
	}
	o.log = log
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	r, err := gatherStatus(ctx, o)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return err
		}
	} else {
		renderStatus(e.stdout, r)
	}
	if r.errorCount() > 0 {
		return exitCode(1)
	}
	return nil
}

// gatherStatus reads the source, the targets and Kafka. A source that
// cannot be reached is an error; an unreachable target or broker is
// reported as an ERROR check so that the rest of the screen still shows.
func gatherStatus(ctx context.Context, o statusOptions) (*statusReport, error) {
	r := &statusReport{CheckedAt: time.Now().UTC(), WarnFraction: o.warnFraction, FailFraction: o.failFraction, Checks: []check{},
		WarnStall: o.warnStall, FailStall: o.failStall, WarnLag: o.warnLag, FailLag: o.failLag}
	if o.source != "" {
		conn, err := connectDB(ctx, o.source, "source")
		if err != nil {
			return nil, err
		}
		defer conn.Close(context.Background())
		src, err := gatherSource(ctx, conn, o)
		if err != nil {
			return nil, fmt.Errorf("source %s: %w", redactDSN(o.source), err)
		}
		src.DSN = redactDSN(o.source)
		r.Source = src
	}
	for _, t := range o.targets {
		ts := targetStatus{DSN: redactDSN(t)}
		cs, err := gatherConsumers(ctx, t, o.checkpointSchema)
		if err != nil {
			ts.Error = strings.Replace(err.Error(), "connect to target "+ts.DSN+": ", "cannot connect: ", 1)
		}
		r.Targets = append(r.Targets, ts)
		r.Consumers = append(r.Consumers, cs...)
	}
	if o.prefix != "" {
		kept := r.Consumers[:0]
		for _, c := range r.Consumers {
			if c.Prefix == "" || c.Prefix == o.prefix {
				kept = append(kept, c)
			}
		}
		r.Consumers = kept
	}
	if o.kafka != nil {
		gatherKafka(ctx, o, r)
	}
	evaluate(r)
	return r, nil
}

// connectDB connects with a bounded wait; its errors never contain the DSN.
func connectDB(ctx context.Context, dsn, what string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx's parse errors may quote the DSN; name the problem only.
		return nil, usageError{fmt.Errorf("%s DSN %s: cannot parse it", what, redactDSN(dsn))}
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	cfg.RuntimeParams["application_name"] = "tributary-ops"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s %s: %v", what, redactDSN(dsn), err)
	}
	return conn, nil
}

// dial connects to dsn (connectDB) under a timeout of d from now, and
// returns the context of the timeout; done closes the connection and ends
// the timeout.
func dial(ctx context.Context, d time.Duration, dsn, what string) (context.Context, *pgx.Conn, func(), error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	conn, err := connectDB(ctx, dsn, what)
	if err != nil {
		cancel()
		return nil, nil, nil, err
	}
	return ctx, conn, func() {
		conn.Close(context.Background())
		cancel()
	}, nil
}

func gatherSource(ctx context.Context, conn *pgx.Conn, o statusOptions) (*sourceStatus, error) {
	s := &sourceStatus{WALBudget: o.walBudget, Slots: []slotStatus{}, Publications: []publicationStatus{}}
	err := conn.QueryRow(ctx, `SELECT current_setting('server_version'), current_database(),
		(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text,
		pg_size_bytes(current_setting('max_slot_wal_keep_size'))`).
		Scan(&s.Version, &s.Database, &s.CurrentLSN, &s.MaxSlotWALKeepSize)
	if err != nil {
		return nil, err
	}
	var waldir int64
	if err := conn.QueryRow(ctx, `SELECT coalesce(sum(size), 0)::bigint FROM pg_catalog.pg_ls_waldir()`).Scan(&waldir); err == nil {
		s.WALDirBytes = &waldir
	}
	if s.Slots, err = gatherSlots(ctx, conn, o.slots); err != nil {
		return nil, err
	}
	limit := s.MaxSlotWALKeepSize
	if limit < 0 {
		limit = o.walBudget
	}
	for i := range s.Slots {
		sl := &s.Slots[i]
		if limit > 0 && sl.RetainedBytes != nil {
			f := float64(*sl.RetainedBytes) / float64(limit)
			sl.LimitBytes, sl.UsedFraction = limit, &f
		}
	}
	if s.Publications, err = gatherPublications(ctx, conn, o.publications); err != nil {
		return nil, err
	}
	return s, nil
}

// gatherSlots reads pg_replication_slots, joined to the walsender of each
// active slot. names filters the slots; empty means all.
func gatherSlots(ctx context.Context, conn *pgx.Conn, names []string) ([]slotStatus, error) {
	rows, err := conn.Query(ctx, `
		WITH cur AS (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END AS lsn)
		SELECT s.slot_name::text, s.slot_type, coalesce(s.plugin::text, ''), coalesce(s.database::text, ''),
		       s.temporary, s.active, s.active_pid, coalesce(s.wal_status, ''), s.safe_wal_size,
		       coalesce(s.restart_lsn::text, ''), coalesce(s.confirmed_flush_lsn::text, ''),
		       pg_wal_lsn_diff(cur.lsn, coalesce(s.confirmed_flush_lsn, s.restart_lsn))::bigint,
		       pg_wal_lsn_diff(cur.lsn, s.restart_lsn)::bigint,
		       extract(epoch FROM r.flush_lag)::float8,
		       trim(coalesce(r.application_name, '') || ' ' || coalesce(host(r.client_addr), '')),
		       (to_jsonb(s) ->> 'inactive_since')::timestamptz
		FROM pg_catalog.pg_replication_slots s CROSS JOIN cur
		LEFT JOIN pg_catalog.pg_stat_replication r ON r.pid = s.active_pid
		WHERE coalesce(cardinality($1::text[]), 0) = 0 OR s.slot_name::text = ANY($1)
		ORDER BY 1`, names)
	if err != nil {
		return nil, fmt.Errorf("read pg_replication_slots: %w", err)
	}
	defer rows.Close()
	out := []slotStatus{}
	for rows.Next() {
		var s slotStatus
		if err := rows.Scan(&s.Name, &s.Type, &s.Plugin, &s.Database, &s.Temporary, &s.Active, &s.ActivePID,
			&s.WALStatus, &s.SafeWALSize, &s.RestartLSN, &s.ConfirmedFlushLSN, &s.LagBytes, &s.RetainedBytes,
			&s.LagSeconds, &s.Client, &s.InactiveSince); err != nil {
			return nil, fmt.Errorf("read pg_replication_slots: %w", err)
		}
		if s.LagSeconds == nil && s.Active && s.LagBytes != nil && *s.LagBytes == 0 {
			zero := 0.0
			s.LagSeconds = &zero
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read pg_replication_slots: %w", err)
	}
	for _, n := range names {
		found := false
		for _, s := range out {
			found = found || s.Name == n
		}
		if !found {
			return nil, fmt.Errorf("replication slot %q does not exist", n)
		}
	}
	return out, nil
}

// gatherPublications reads the publications (all when names is empty) and
// the replica identity of each of their tables, with the rule the producer
// applies: a table is keyed by its primary key, a replica identity index, or
// every column (FULL); DEFAULT without a primary key and NOTHING are refused.
func gatherPublications(ctx context.Context, conn *pgx.Conn, names []string) ([]publicationStatus, error) {
	rows, err := conn.Query(ctx, `SELECT pubname::text, puballtables, pubinsert, pubupdate, pubdelete, pubtruncate
		FROM pg_catalog.pg_publication WHERE coalesce(cardinality($1::text[]), 0) = 0 OR pubname::text = ANY($1) ORDER BY 1`, names)
	if err != nil {
		return nil, fmt.Errorf("read pg_publication: %w", err)
	}
	pubs := []publicationStatus{}
	for rows.Next() {
		p := publicationStatus{Exists: true, Tables: []tableStatus{}}
		var ins, upd, del, trunc bool
		if err := rows.Scan(&p.Name, &p.AllTables, &ins, &upd, &del, &trunc); err != nil {
			rows.Close()
			return nil, err
		}
		for _, a := range []struct {
			on   bool
			name string
		}{{ins, "insert"}, {upd, "update"}, {del, "delete"}, {trunc, "truncate"}} {
			if a.on {
				p.Actions = append(p.Actions, a.name)
			}
		}
		pubs = append(pubs, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read pg_publication: %w", err)
	}
	for _, n := range names {
		found := false
		for _, p := range pubs {
			found = found || p.Name == n
		}
		if !found {
			pubs = append(pubs, publicationStatus{Name: n, Tables: []tableStatus{}})
		}
	}
	for i := range pubs {
		if !pubs[i].Exists {
			continue
		}
		if pubs[i].Tables, err = publicationTables(ctx, conn, pubs[i].Name); err != nil {
			return nil, err
		}
	}
	return pubs, nil
}

func publicationTables(ctx context.Context, conn *pgx.Conn, pub string) ([]tableStatus, error) {
	rows, err := conn.Query(ctx, `
		SELECT pt.schemaname::text, pt.tablename::text, c.relreplident::text,
		       EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
		       coalesce((SELECT ic.relname::text FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
		                 WHERE i.indrelid = c.oid AND i.indisreplident), '')
		FROM pg_catalog.pg_publication_tables pt
		JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
		JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
		WHERE pt.pubname = $1
		ORDER BY 1, 2`, pub)
	if err != nil {
		return nil, fmt.Errorf("tables of publication %s: %w", pub, err)
	}
	defer rows.Close()
	out := []tableStatus{}
	for rows.Next() {
		var t tableStatus
		var ident, index string
		var hasPK bool
		if err := rows.Scan(&t.Schema, &t.Name, &ident, &hasPK, &index); err != nil {
			return nil, err
		}
		t.Usable = true
		switch {
		case ident == "d" && hasPK:
			t.Identity = "primary key"
		case ident == "i":
			t.Identity = "index " + index
		case ident == "f":
			t.Identity = "full"
		case ident == "n":
			t.Identity, t.Usable = "nothing", false
		default:
			t.Identity, t.Usable = "default without primary key", false
		}
		if !t.Usable {
			t.Fix = fmt.Sprintf("ALTER TABLE %s.%s ADD PRIMARY KEY (...), or REPLICA IDENTITY USING INDEX <unique index>, or REPLICA IDENTITY FULL",
				schemas.QuoteIdent(t.Schema), schemas.QuoteIdent(t.Name))
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// gatherConsumers reads every consumer's checkpoint in one target.
func gatherConsumers(ctx context.Context, dsn, schema string) ([]consumerStatus, error) {
	conn, err := connectDB(ctx, dsn, "target")
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, now, err := pgtarget.ReadCheckpoints(ctx, conn, schema, "")
	if errors.Is(err, consumer.ErrNoCheckpointTable) {
		return nil, fmt.Errorf("no checkpoint table %s.tributary_checkpoint: no consumer has run against this target (or see --checkpoint-schema)", schema)
	}
	if err != nil {
		return nil, err
	}
	return consumerStatuses(rows, now, redactDSN(dsn)), nil
}

// consumerStatuses sums up each consumer's checkpoint rows (ordered by
// consumer, as pgtarget.ReadCheckpoints returns them) read at now by the
// target's clock: its highest commit LSN, latest commit time, last write,
// next frame offset and mode.
func consumerStatuses(rows []consumer.CheckpointRow, now time.Time, target string) []consumerStatus {
	var out []consumerStatus
	var maxLSN pglogrepl.LSN
	var txTopic, anyTopic string
	var perKey bool
	for i, r := range rows {
		if i == 0 || r.Consumer != rows[i-1].Consumer {
			out = append(out, consumerStatus{Name: r.Consumer, Target: target, Mode: "transactional"})
			maxLSN, txTopic, anyTopic, perKey = 0, "", r.Stream.Topic, false
		}
		c := &out[len(out)-1]
		if r.CommitLSN > maxLSN {
			maxLSN = r.CommitLSN
			c.CommitLSN = r.CommitLSN.String()
		}
		if !r.CommitTime.IsZero() && (c.CommitTime == nil || r.CommitTime.After(*c.CommitTime)) {
			t := r.CommitTime
			c.CommitTime = &t
		}
		if r.AppliedAt.After(c.AppliedAt) {
			c.AppliedAt = r.AppliedAt
			c.IdleSeconds = now.Sub(r.AppliedAt).Seconds()
		}
		switch r.Stream.Kind {
		case consumer.StreamTransactions:
			if c.NextFrameOffset == nil || r.Next > *c.NextFrameOffset {
				n := r.Next
				c.NextFrameOffset = &n
			}
			txTopic = max(txTopic, r.Stream.Topic)
		case consumer.StreamPerKey:
			perKey = true
		}
		anyTopic = min(anyTopic, r.Stream.Topic)
		if perKey {
			c.Mode = "per-key"
		}
		if p, ok := strings.CutSuffix(txTopic, ".transactions"); ok {
			c.Prefix = p
		} else if dot := strings.IndexByte(anyTopic, '.'); dot > 0 {
			c.Prefix = anyTopic[:dot]
		}
	}
	return out
}

// gatherKafka reads the end of each prefix's transactions topic and sets
// every transactional consumer's lag against its last frame.
func gatherKafka(ctx context.Context, o statusOptions, r *statusReport) {
	prefixes := map[string]bool{}
	if o.prefix != "" {
		prefixes[o.prefix] = true
	}
	for _, c := range r.Consumers {
		if c.Prefix != "" {
			prefixes[c.Prefix] = true
		}
	}
	if len(prefixes) == 0 {
		return
	}
	opts, err := o.kafka.kgoOpts()
	if err == nil {
		err = o.kafka.checkBrokers(ctx, opts)
	}
	if err != nil {
		r.add(levelError, "kafka", "%v", err)
		return
	}
	dec := txlog.NewBuiltinFrameDecoder()
	if *o.kafka.registry != "" {
		reg, err := o.kafka.registryClient(o.log)
		if err != nil {
			r.add(levelError, "registry", "%v", err)
			return
		}
		dec = txlog.NewFrameDecoder(reg)
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		r.add(levelError, "kafka", "%v", err)
		return
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	names := make([]string, 0, len(prefixes))
	for p := range prefixes {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, p := range names {
		r.kafkaLag(ctx, txlog.NewFrames(opts, adm, dec, schemas.TransactionsTopic(p)), p, o.frameScanLimit)
	}
}

// kafkaLag reads the end of prefix's transactions topic through fr (at most
// limit offsets of it) and sets the lag of each of the prefix's consumers.
func (r *statusReport) kafkaLag(ctx context.Context, fr *txlog.Frames, prefix string, limit int64) {
	from := int64(math.MaxInt64)
	for _, c := range r.Consumers {
		if c.Prefix == prefix && c.NextFrameOffset != nil && *c.NextFrameOffset < from {
			from = *c.NextFrameOffset
		}
	}
	tl, frames := readFrames(ctx, fr, from, limit)
	r.Kafka = append(r.Kafka, tl)
	if tl.Error != "" {
		r.add(levelError, tl.Topic, "%s", tl.Error)
		return
	}
	for i := range r.Consumers {
		c := &r.Consumers[i]
		if c.Prefix != prefix || c.NextFrameOffset == nil {
			continue
		}
		c.Behind = lagAgainst(c, tl, frames)
		if next := *c.NextFrameOffset; next < tl.logStart {
			// Retention deleted offsets the consumer has not read: any
			// frame among them will never reach its target.
			r.add(levelError, "consumer "+c.Name, "is behind the log start, so frames it has not applied may be lost: %v",
				&txlog.BelowLogStartError{Topic: tl.Topic, Partition: 0, Offset: next, LogStart: tl.logStart})
		}
	}
}

// frameRef is one frame's offset, commit LSN and time.
type frameRef struct {
	offset    int64
	lsn       pglogrepl.LSN
	time      time.Time
	heartbeat bool
}

// readFrames reads the committed frames of the transactions topic from
// offset from (at most limit offsets back from the end, and not below the
// log start) and reports the last one.
func readFrames(ctx context.Context, fr *txlog.Frames, from, limit int64) (transactionsLog, []frameRef) {
	tl := transactionsLog{Topic: fr.Topic()}
	b, err := fr.ExistingBounds(ctx)
	if err != nil {
		tl.Error = err.Error()
		return tl, nil
	}
	tl.EndOffset, tl.logStart = b.End, b.Start
	if b.Empty() {
		return tl, nil
	}
	start := min(from, b.End-1)
	start = max(start, b.End-limit, b.Start)
	tl.readFrom = start
	var frames []frameRef
	err = fr.Scan(ctx, start, b.End, func(off int64, f schemas.Frame) error {
		frames = append(frames, frameRef{offset: off, lsn: f.CommitLSN, time: f.CommitTime, heartbeat: f.Heartbeat()})
		return nil
	})
	if err != nil {
		tl.Error = err.Error()
		return tl, frames
	}
	if n := len(frames); n > 0 {
		last := frames[n-1]
		t := last.time.UTC()
		tl.LastCommitLSN, tl.LastCommitTime = last.lsn.String(), &t
	}
	return tl, frames
}

// lagAgainst computes a consumer's lag from the frames read after its position.
func lagAgainst(c *consumerStatus, tl transactionsLog, frames []frameRef) *consumerLag {
	lag := &consumerLag{}
	next := *c.NextFrameOffset
	for _, f := range frames {
		if f.offset >= next {
			lag.Frames++
			if !f.heartbeat {
				lag.Transactions++
			}
		}
	}
	if next < tl.readFrom {
		lag.AtLeast = true
	}
	if lag.Frames == 0 || tl.LastCommitLSN == "" {
		zero := 0.0
		lag.Seconds = &zero
		return lag
	}
	last, _ := pglogrepl.ParseLSN(tl.LastCommitLSN)
	mine, _ := pglogrepl.ParseLSN(c.CommitLSN)
	if last > mine {
		lag.Bytes = int64(last - mine)
	}
	if c.CommitTime != nil && tl.LastCommitTime != nil {
		s := max(tl.LastCommitTime.Sub(*c.CommitTime).Seconds(), 0)
		lag.Seconds = &s
	}
	return lag
}

// evaluate turns the gathered state into WARN and ERROR checks.
func evaluate(r *statusReport) {
	if src := r.Source; src != nil {
		limitName := "max_slot_wal_keep_size"
		if src.MaxSlotWALKeepSize < 0 {
			limitName = "--wal-budget"
			if src.WALBudget == 0 && len(src.Slots) > 0 {
				r.add(levelWarn, "source", "max_slot_wal_keep_size is -1 (unlimited): a stalled slot retains WAL until the disk fills; "+
					"set max_slot_wal_keep_size, or pass --wal-budget to check slots against a size")
			}
			if src.WALBudget > 0 && src.WALDirBytes != nil {
				r.checkFraction("pg_wal", float64(*src.WALDirBytes)/float64(src.WALBudget),
					fmt.Sprintf("pg_wal holds %s", formatBytes(*src.WALDirBytes)), "--wal-budget", src.WALBudget)
			}
		}
		for _, s := range src.Slots {
			subj := "slot " + s.Name
			switch s.WALStatus {
			case "lost":
				r.add(levelError, subj, "is lost: PostgreSQL removed WAL it needs, so changes were missed; drop it "+
					"(tributary slot drop) and start the producer with a new snapshot")
				continue
			case "unreserved":
				r.add(levelError, subj, "is unreserved: it retains more than max_slot_wal_keep_size and will lose WAL at the next checkpoint")
			}
			if s.UsedFraction != nil {
				r.checkFraction(subj, *s.UsedFraction, "retains "+formatBytes(*s.RetainedBytes)+" of WAL", limitName, s.LimitBytes)
			}
			if !s.Active && !s.Temporary {
				ret := ""
				if s.RetainedBytes != nil {
					ret = " and retains " + formatBytes(*s.RetainedBytes) + " of WAL"
				}
				r.add(levelWarn, subj, "is inactive: no producer reads it%s, growing with every write; start its producer, "+
					"or drop it with tributary slot drop if it is abandoned", ret)
			}
		}
		for _, p := range src.Publications {
			subj := "publication " + p.Name
			if !p.Exists {
				r.add(levelError, subj, "does not exist in database %s", src.Database)
				continue
			}
			if len(p.Tables) == 0 {
				r.add(levelWarn, subj, "has no tables")
			}
			for _, t := range p.Tables {
				if !t.Usable {
					r.add(levelError, "table "+t.Schema+"."+t.Name, "has no usable replica identity (%s); the producer refuses it. Fix: %s", t.Identity, t.Fix)
				}
			}
		}
	}
	for _, t := range r.Targets {
		if t.Error != "" {
			r.add(levelError, "target "+t.DSN, "%s", t.Error)
		}
	}
	for _, c := range r.Consumers {
		if c.Behind == nil || c.Behind.Frames == 0 {
			continue // up to date, or not measured (per-key, or without --brokers)
		}
		subj := "consumer " + c.Name
		frames := plural(int(c.Behind.Frames), "newer frame")
		if c.Behind.AtLeast {
			frames = "at least " + frames
		}
		if level, thr, flagName := thresholdLevel(c.IdleSeconds, r.WarnStall, r.FailStall, "consumer-stall"); level != "" {
			r.add(level, subj, "on %s has not moved its checkpoint for %s while Kafka holds %s: is it running? (%s %s)",
				c.Target, formatDuration(c.IdleSeconds), frames, flagName, formatDuration(thr))
		}
		if c.Behind.Seconds == nil {
			continue
		}
		if level, thr, flagName := thresholdLevel(*c.Behind.Seconds, r.WarnLag, r.FailLag, "consumer-lag"); level != "" {
			r.add(level, subj, "on %s is %s of source commits behind the last frame (%s) (%s %s)",
				c.Target, formatDuration(*c.Behind.Seconds), frames, flagName, formatDuration(thr))
		}
	}
}

// thresholdLevel is ERROR when v passes fail, WARN when it passes warn (a
// threshold of 0 is no check), with the threshold and its flag.
func thresholdLevel(v, warn, fail float64, flagSuffix string) (string, float64, string) {
	switch {
	case fail > 0 && v >= fail:
		return levelError, fail, "--fail-" + flagSuffix
	case warn > 0 && v >= warn:
		return levelWarn, warn, "--warn-" + flagSuffix
	}
	return "", 0, ""
}

// checkFraction adds a WARN or ERROR when f passes the thresholds.
func (r *statusReport) checkFraction(subject string, f float64, what, limitName string, limit int64) {
	level, thr, flagName := "", 0.0, ""
	switch {
	case f >= r.FailFraction:
		level, thr, flagName = levelError, r.FailFraction, "--fail-fraction"
	case f >= r.WarnFraction:
		level, thr, flagName = levelWarn, r.WarnFraction, "--warn-fraction"
	default:
		return
	}
	r.add(level, subject, "%s, %.0f%% of %s %s (%s %g)", what, 100*f, limitName, formatBytes(limit), flagName, thr)
}

// renderStatus writes the human screen. It depends only on r, so that a
// golden file can pin it.
func renderStatus(w io.Writer, r *statusReport) {
	fmt.Fprintf(w, "Tributary status at %s\n", r.CheckedAt.UTC().Format(time.RFC3339))
	if src := r.Source; src != nil {
		fmt.Fprintf(w, "\nSource   %s (PostgreSQL %s, database %s)\n", src.DSN, src.Version, src.Database)
		limit := "unlimited (-1)"
		if src.MaxSlotWALKeepSize >= 0 {
			limit = formatBytes(src.MaxSlotWALKeepSize)
		}
		fmt.Fprintf(w, "WAL      current LSN %s; max_slot_wal_keep_size %s", src.CurrentLSN, limit)
		if src.WALBudget > 0 {
			fmt.Fprintf(w, "; --wal-budget %s", formatBytes(src.WALBudget))
		}
		if src.WALDirBytes != nil {
			fmt.Fprintf(w, "; pg_wal %s", formatBytes(*src.WALDirBytes))
		}
		fmt.Fprintln(w)

		fmt.Fprintf(w, "\nReplication slots (%d)\n", len(src.Slots))
		if len(src.Slots) == 0 {
			fmt.Fprintln(w, "  none")
		} else {
			renderSlots(w, src.Slots)
		}
		for _, p := range src.Publications {
			renderPublication(w, p)
		}
		if len(src.Publications) == 0 {
			fmt.Fprintf(w, "\nPublications\n  none in database %s\n", src.Database)
		}
	}
	if len(r.Targets) > 0 {
		fmt.Fprintf(w, "\nConsumers (%d)\n", len(r.Consumers))
		if len(r.Consumers) == 0 {
			fmt.Fprintln(w, "  none")
		} else {
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "  NAME\tPREFIX\tMODE\tCOMMIT LSN\tCOMMIT TIME\tAPPLIED\tBEHIND KAFKA\tTARGET")
			for _, c := range r.Consumers {
				ct := "-"
				if c.CommitTime != nil {
					ct = c.CommitTime.UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s ago\t%s\t%s\n", c.Name, dash(c.Prefix), c.Mode, dash(c.CommitLSN), ct,
					formatDuration(r.CheckedAt.Sub(c.AppliedAt).Seconds()), formatLag(c.Behind), c.Target)
			}
			tw.Flush()
		}
	}
	if len(r.Kafka) > 0 {
		fmt.Fprintf(w, "\nKafka\n")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  TOPIC\tEND OFFSET\tLAST COMMIT LSN\tLAST COMMIT TIME")
		for _, k := range r.Kafka {
			lt := "-"
			if k.LastCommitTime != nil {
				lt = k.LastCommitTime.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\n", k.Topic, k.EndOffset, dash(k.LastCommitLSN), lt)
		}
		tw.Flush()
	}
	fmt.Fprintln(w)
	warns := 0
	for _, c := range r.Checks {
		fmt.Fprintf(w, "%-5s %s %s\n", c.Level, c.Subject, c.Message)
		if c.Level == levelWarn {
			warns++
		}
	}
	switch errs := r.errorCount(); {
	case errs > 0:
		fmt.Fprintf(w, "Result: ERROR (%s, %s)\n", plural(errs, "error"), plural(warns, "warning"))
	case warns > 0:
		fmt.Fprintf(w, "Result: WARN (%s)\n", plural(warns, "warning"))
	default:
		fmt.Fprintln(w, "Result: OK")
	}
}

// renderSlots writes the slot table shared by status and slot list.
func renderSlots(w io.Writer, slots []slotStatus) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  SLOT\tTYPE\tDATABASE\tACTIVE\tWAL STATUS\tCONFIRMED LSN\tLAG\tLAG TIME\tRETAINED\tOF LIMIT\tSAFE WAL")
	for _, s := range slots {
		active := "no"
		if s.Active {
			active = "yes"
			if s.ActivePID != nil {
				active = fmt.Sprintf("yes (pid %d)", *s.ActivePID)
			}
		}
		if s.Temporary {
			active += ", temporary"
		}
		lagTime := "-"
		if s.LagSeconds != nil {
			lagTime = formatDuration(*s.LagSeconds)
		}
		used := "-"
		if s.UsedFraction != nil {
			used = fmt.Sprintf("%.0f%%", 100**s.UsedFraction)
		}
		safe := "-"
		if s.SafeWALSize != nil {
			safe = formatBytes(*s.SafeWALSize)
		}
		typ := s.Type
		if s.Plugin != "" {
			typ += "/" + s.Plugin
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, typ, dash(s.Database), active, dash(s.WALStatus),
			dash(s.ConfirmedFlushLSN), optBytes(s.LagBytes), lagTime, optBytes(s.RetainedBytes), used, safe)
	}
	tw.Flush()
}

func renderPublication(w io.Writer, p publicationStatus) {
	if !p.Exists {
		fmt.Fprintf(w, "\nPublication %s: does not exist\n", p.Name)
		return
	}
	scope := ""
	if p.AllTables {
		scope = ", FOR ALL TABLES"
	}
	fmt.Fprintf(w, "\nPublication %s (%s%s): %s\n", p.Name, strings.Join(p.Actions, ", "), scope, plural(len(p.Tables), "table"))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, t := range p.Tables {
		mark := "ok"
		if !t.Usable {
			mark = "NOT USABLE; fix: " + t.Fix
		}
		fmt.Fprintf(tw, "  %s.%s\t%s\t%s\n", t.Schema, t.Name, t.Identity, mark)
	}
	tw.Flush()
}

func formatLag(l *consumerLag) string {
	if l == nil {
		return "-"
	}
	if l.Frames == 0 {
		return "caught up"
	}
	n := strconv.FormatInt(l.Transactions, 10)
	if l.AtLeast {
		n = ">=" + n
	}
	s := n + " txns"
	if hb := l.Frames - l.Transactions; hb > 0 {
		s += fmt.Sprintf(" (+%d heartbeats)", hb)
	}
	s += ", " + formatBytes(l.Bytes)
	if l.Seconds != nil {
		s += ", " + formatDuration(*l.Seconds)
	}
	return s
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func optBytes(p *int64) string {
	if p == nil {
		return "-"
	}
	return formatBytes(*p)
}

// formatBytes prints a size the way pg_size_pretty does (1024-based units).
func formatBytes(n int64) string {
	if n < 0 {
		return "-" + formatBytes(-n)
	}
	units := []string{"B", "kB", "MB", "GB", "TB", "PB"}
	f, u := float64(n), 0
	for f >= 1024 && u < len(units)-1 {
		f /= 1024
		u++
	}
	if u == 0 {
		return fmt.Sprintf("%d B", n)
	}
	if f < 10 {
		return fmt.Sprintf("%.1f %s", f, units[u])
	}
	return fmt.Sprintf("%.0f %s", f, units[u])
}

// parseSize parses a size such as "512MB", "20GB" or "1048576" (bytes), with
// pg_size_bytes' 1024-based units.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	f, err := strconv.ParseFloat(s[:i], 64)
	if err != nil {
		return 0, err
	}
	mult := map[string]float64{"": 1, "b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40, "pb": 1 << 50}
	m, ok := mult[strings.ToLower(strings.TrimSpace(s[i:]))]
	if !ok {
		return 0, fmt.Errorf("unknown unit %q", s[i:])
	}
	return int64(f * m), nil
}

// formatDuration prints seconds compactly: 0s, 1.5s, 42s, 3m12s, 5h3m, 2d4h.
func formatDuration(sec float64) string {
	switch {
	case sec < 0:
		return "0s"
	case sec < 10:
		return strconv.FormatFloat(math.Round(sec*10)/10, 'f', -1, 64) + "s"
	case sec < 3600:
		d := time.Duration(sec) * time.Second
		return strings.Replace(d.String(), "m0s", "m", 1)
	case sec < 86400:
		return fmt.Sprintf("%dh%dm", int(sec)/3600, int(sec)%3600/60)
	}
	return fmt.Sprintf("%dd%dh", int(sec)/86400, int(sec)%86400/3600)
}

var kvPassword = regexp.MustCompile(`(?i)\b(password|sslpassword)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)\s*`)

// redactDSN returns dsn without any password, in URL or key=value form, so
// that it can be printed. Anything it cannot parse is replaced entirely.
func redactDSN(dsn string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "<unparsable DSN>"
		}
		if u.User != nil {
			if _, has := u.User.Password(); has {
				u.User = url.User(u.User.Username())
			}
		}
		q := u.Query()
		changed := false
		for k := range q {
			if strings.EqualFold(k, "password") || strings.EqualFold(k, "sslpassword") {
				q.Del(k)
				changed = true
			}
		}
		if changed {
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	return strings.TrimSpace(kvPassword.ReplaceAllString(dsn, ""))
}
