package conflict

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tributary-cdc/tributary/consumer/postgres/pgtarget"
	"github.com/tributary-cdc/tributary/schemas"
)

// The triggers `tributary setup multisite` installs on each table the
// configuration handles (SetupSQL).
const (
	// GroupTimesTrigger records, for each local write, which column groups
	// it changed and in which transaction (AFTER INSERT, UPDATE, DELETE,
	// for each row).
	GroupTimesTrigger = "tributary_group_times"
	// truncateTrigger forgets a table's group times when it is truncated.
	truncateTrigger = "tributary_group_times_truncate"
	// MonotoneTrigger keeps the columns of minimum and maximum groups
	// moving one way under local writes (BEFORE UPDATE, for each row).
	MonotoneTrigger = "tributary_monotone"
)

func quoteLiteral(s string) string { return `'` + strings.ReplaceAll(s, `'`, `''`) + `'` }

// tablesSQL creates the tables of package conflict in schema when missing,
// and brings tables of earlier versions up to date: tributary_conflicts
// gains xid (the recording transaction, the outbox position; rows recorded
// before have none and are never published), tributary_row_meta gains xid
// (a local write's transaction) and forgets keys of its earlier format.
func tablesSQL(schema string) string {
	q := schemas.QuoteIdent(schema) + "."
	conflicts, meta := q+"tributary_conflicts", q+"tributary_row_meta"
	return fmt.Sprintf(pgtarget.DDLLock+`;
CREATE SCHEMA IF NOT EXISTS %[1]s;
CREATE TABLE IF NOT EXISTS %[2]s (
	id               bigserial PRIMARY KEY,
	detected_at      timestamptz NOT NULL DEFAULT now(),
	site             text NOT NULL,
	remote_site      text NOT NULL,
	consumer         text NOT NULL,
	table_name       text NOT NULL,
	key              jsonb NOT NULL,
	kind             text NOT NULL,
	column_group     text NOT NULL,
	method           text NOT NULL,
	outcome          text NOT NULL,
	local_row        jsonb,
	remote_before    jsonb,
	remote_after     jsonb,
	resolved         jsonb,
	commit_lsn       pg_lsn,
	xid              bigint,
	remote_commit_ts timestamptz,
	local_site       text,
	local_commit_ts  timestamptz,
	detail           text
);
CREATE TABLE IF NOT EXISTS %[3]s (
	table_name text NOT NULL,
	key        text NOT NULL,
	grp        text NOT NULL,
	site       text NOT NULL,
	commit_ts  timestamptz,
	hash       text NOT NULL,
	PRIMARY KEY (table_name, key, grp)
);
CREATE TABLE IF NOT EXISTS %[4]s (
	table_name text NOT NULL,
	key        jsonb NOT NULL,
	commit_lsn pg_lsn NOT NULL,
	action     text NOT NULL CHECK (action IN ('keep-local', 'apply-remote')),
	created_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (table_name, key, commit_lsn)
);
CREATE TABLE IF NOT EXISTS %[5]s (
	consumer   text NOT NULL,
	topic      text NOT NULL,
	xact       xid8 NOT NULL,
	id         bigint NOT NULL,
	offsets    jsonb NOT NULL,
	sent_at    timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (consumer, topic)
);
DO $tributary$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = %[6]s::regclass AND attname = 'xact' AND NOT attisdropped) THEN
		ALTER TABLE %[2]s ADD COLUMN xact xid8;
		ALTER TABLE %[2]s ALTER COLUMN xact SET DEFAULT pg_current_xact_id();
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = %[7]s::regclass AND attname = 'xid' AND NOT attisdropped) THEN
		ALTER TABLE %[3]s ADD COLUMN xid xid8;
		DELETE FROM %[3]s WHERE key NOT LIKE '{%%';
	END IF;
END $tributary$;
CREATE INDEX IF NOT EXISTS tributary_conflicts_outbox ON %[2]s (consumer, xact, id)`,
		schemas.QuoteIdent(schema), conflicts, meta, q+"tributary_conflict_actions", q+"tributary_conflicts_sent",
		quoteLiteral(conflicts), quoteLiteral(meta))
}

// SetupTable is one table that SetupSQL prepares, as the target's catalog
// describes it.
type SetupTable struct {
	Schema, Name string
	// Key holds the key columns (the primary key, or the replica identity
	// index), as the consumer's events name them.
	Key []string
	// Columns holds every column, in order.
	Columns []string
}

func (t SetupTable) name() string { return t.Schema + "." + t.Name }

// SetupSQL is what `tributary setup multisite` runs at one site: the
// tables, the trigger functions, and on each table the triggers:
//
//   - tributary_group_times (AFTER INSERT OR UPDATE OR DELETE, each row)
//     records, for each column group a local write changes (its text
//     differs, so a no-op UPDATE SET x = x changes nothing), the writing
//     transaction in tributary_row_meta; the consumer reads that
//     transaction's commit time as the group's local time. A write of one
//     group never moves another group's time. The consumer's own writes
//     run with session_replication_role = replica, which does not fire the
//     trigger; it records them itself.
//   - tributary_group_times_truncate forgets the table's times on TRUNCATE.
//   - with monotone, tributary_monotone (BEFORE UPDATE, each row) on tables
//     with minimum or maximum groups keeps their columns moving one way:
//     a local write of a larger value to a minimum column (smaller, for
//     maximum) keeps the old value, as a min or max register does, which is
//     what makes those methods converge under any workload.
//
// Every trigger is replaced if present, so running it again after a change
// of the groups or the key is how they are brought up to date.
func SetupSQL(f *File, site string, tables []SetupTable, monotone bool) (string, error) {
	if site == "" {
		return "", errors.New("site: required")
	}
	q := schemas.QuoteIdent(f.Schema) + "."
	meta := q + "tributary_row_meta"
	var b strings.Builder
	fmt.Fprintf(&b, "-- tributary setup multisite, site %s\nBEGIN;\n%s;\n", site, tablesSQL(f.Schema))
	fmt.Fprintf(&b, `
-- Records the transaction of each local write of each column group.
-- Arguments: site, key columns (text[]), declared groups ({"group": [columns]}), table name.
CREATE OR REPLACE FUNCTION %[1]s%[2]s() RETURNS trigger LANGUAGE plpgsql AS $tributary$
DECLARE
	site    text   := TG_ARGV[0];
	keycols text[] := TG_ARGV[1]::text[];
	groups  jsonb  := TG_ARGV[2]::jsonb;
	tname   text   := TG_ARGV[3];
	n       jsonb;
	o       jsonb;
	nkey    text;
	okey    text;
	grouped text[];
	changed text[] := '{}';
	g       text;
	cols    text[];
BEGIN
	IF TG_OP <> 'INSERT' THEN
		o := to_jsonb(OLD);
		okey := (SELECT jsonb_object_agg(c, o->c) FROM unnest(keycols) c)::text;
	END IF;
	IF TG_OP = 'DELETE' THEN
		DELETE FROM %[3]s WHERE table_name = tname AND key = okey;
		RETURN NULL;
	END IF;
	n := to_jsonb(NEW);
	nkey := (SELECT jsonb_object_agg(c, n->c) FROM unnest(keycols) c)::text;
	IF okey IS DISTINCT FROM nkey THEN
		IF okey IS NOT NULL THEN
			DELETE FROM %[3]s WHERE table_name = tname AND key = okey;
		END IF;
		o := NULL;
	END IF;
	grouped := ARRAY(SELECT c FROM jsonb_each(groups) e, jsonb_array_elements_text(e.value) c);
	FOR g, cols IN
		SELECT e.key, ARRAY(SELECT jsonb_array_elements_text(e.value)) FROM jsonb_each(groups) e
		UNION ALL
		SELECT 'default', ARRAY(SELECT k FROM jsonb_object_keys(n) k WHERE k <> ALL (keycols) AND k <> ALL (grouped))
	LOOP
		IF cardinality(cols) > 0 AND (o IS NULL OR EXISTS (SELECT 1 FROM unnest(cols) c WHERE (o->>c) IS DISTINCT FROM (n->>c))) THEN
			changed := changed || g;
		END IF;
	END LOOP;
	IF cardinality(changed) > 0 THEN
		INSERT INTO %[3]s AS m (table_name, key, grp, site, commit_ts, hash, xid)
		SELECT tname, nkey, c, site, NULL, '', pg_current_xact_id() FROM unnest(changed) c
		ON CONFLICT (table_name, key, grp) DO UPDATE SET site = EXCLUDED.site, commit_ts = NULL, hash = '', xid = EXCLUDED.xid;
	END IF;
	RETURN NULL;
END
$tributary$;

-- Forgets a table's group times on TRUNCATE. Argument: table name.
CREATE OR REPLACE FUNCTION %[1]s%[4]s() RETURNS trigger LANGUAGE plpgsql AS $tributary$
BEGIN
	DELETE FROM %[3]s WHERE table_name = TG_ARGV[0];
	RETURN NULL;
END
$tributary$;

-- Keeps minimum and maximum columns moving one way. Argument: {"column": "LEAST" or "GREATEST"}.
CREATE OR REPLACE FUNCTION %[1]s%[5]s() RETURNS trigger LANGUAGE plpgsql AS $tributary$
DECLARE
	c     text;
	f     text;
	v     jsonb;
	patch jsonb := '{}';
BEGIN
	FOR c, f IN SELECT key, value FROM jsonb_each_text(TG_ARGV[0]::jsonb) LOOP
		IF f NOT IN ('LEAST', 'GREATEST') THEN
			RAISE EXCEPTION 'tributary_monotone: %% is not LEAST or GREATEST', f;
		END IF;
		EXECUTE format('SELECT to_jsonb(%%s(($1).%%I, ($2).%%I))', f, c, c) INTO v USING OLD, NEW;
		patch := patch || jsonb_build_object(c, v);
	END LOOP;
	RETURN jsonb_populate_record(NEW, patch);
END
$tributary$;
`, q, GroupTimesTrigger, meta, truncateTrigger, MonotoneTrigger)
	for _, t := range tables {
		tc := f.table(t.name())
		if tc == nil {
			return "", fmt.Errorf("table %s: not handled by the configuration (no tables entry, no defaults)", t.name())
		}
		if len(t.Key) == 0 {
			return "", fmt.Errorf("table %s: no primary key or replica identity index", t.name())
		}
		qt := schemas.QuoteIdent(t.Schema) + "." + schemas.QuoteIdent(t.Name)
		fmt.Fprintf(&b, "\n-- %s\n", t.name())
		fmt.Fprintf(&b, "DROP TRIGGER IF EXISTS %s ON %s;\n", GroupTimesTrigger, qt)
		fmt.Fprintf(&b, "CREATE TRIGGER %s AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION %s%s(%s);\n",
			GroupTimesTrigger, qt, q, GroupTimesTrigger, strings.Join(quoteAll(groupTimesArgs(site, t.name(), t.Key, tc)), ", "))
		fmt.Fprintf(&b, "DROP TRIGGER IF EXISTS %s ON %s;\n", truncateTrigger, qt)
		fmt.Fprintf(&b, "CREATE TRIGGER %s AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION %s%s(%s);\n",
			truncateTrigger, qt, q, truncateTrigger, quoteLiteral(t.name()))
		fmt.Fprintf(&b, "DROP TRIGGER IF EXISTS %s ON %s;\n", MonotoneTrigger, qt)
		if spec := monotoneSpec(t, tc); monotone && spec != "" {
			fmt.Fprintf(&b, "CREATE TRIGGER %s BEFORE UPDATE ON %s FOR EACH ROW EXECUTE FUNCTION %s%s(%s);\n",
				MonotoneTrigger, qt, q, MonotoneTrigger, quoteLiteral(spec))
		}
	}
	b.WriteString("COMMIT;\n")
	return b.String(), nil
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = quoteLiteral(s)
	}
	return out
}

// table is the configuration of table name (schema.table): its entry, or
// the defaults; nil when neither.
func (f *File) table(name string) *TableConfig {
	if tc, ok := f.Tables[name]; ok {
		return tc
	}
	return f.Defaults
}

// groupTimesArgs are the arguments of a table's group-times trigger: the
// site, the key columns (an array literal), the declared groups (JSON) and
// the table's name as the consumer knows it.
func groupTimesArgs(site, table string, key []string, tc *TableConfig) []string {
	quoted := make([]string, len(key))
	for i, k := range key {
		quoted[i] = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(k) + `"`
	}
	return []string{site, "{" + strings.Join(quoted, ",") + "}", groupsJSON(tc), table}
}

// groupsJSON is the declared groups of tc as {"group": [columns]}, keys sorted.
func groupsJSON(tc *TableConfig) string {
	m := map[string][]string{}
	for g, gc := range tc.Groups {
		m[g] = gc.Columns
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// monotoneSpec is the argument of a table's monotone trigger: its minimum
// and maximum columns, {"column": "LEAST" or "GREATEST"}; "" when none.
func monotoneSpec(t SetupTable, tc *TableConfig) string {
	spec := map[string]string{}
	fn := map[Method]string{MethodMinimum: "LEAST", MethodMaximum: "GREATEST"}
	inGroup := map[string]bool{}
	for _, gc := range tc.Groups {
		for _, c := range gc.Columns {
			inGroup[c] = true
			if f, ok := fn[gc.Method]; ok {
				spec[c] = f
			}
		}
	}
	if f, ok := fn[tc.Method]; ok {
		for _, c := range t.Columns {
			if !inGroup[c] && !slices.Contains(t.Key, c) {
				spec[c] = f
			}
		}
	}
	if len(spec) == 0 {
		return ""
	}
	b, _ := json.Marshal(spec)
	return string(b)
}

// tableInfo is what the consumer found at start about a table at the
// target (inspect).
type tableInfo struct {
	// groupTimes: the table has the group-times trigger, so the row
	// metadata holds every local write's time (change.attr).
	groupTimes bool
}

// infoOf is what inspect found about table name (the zero tableInfo when
// nothing).
func (e *Engine) infoOf(name string) *tableInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	if ti, ok := e.infos[name]; ok {
		return ti
	}
	return &tableInfo{}
}

// inspect looks, once per table, at what the target has for table name
// (schema.table) and warns about what can leave sites different: a
// replica identity other than FULL, no group-times trigger where a method
// needs local times or writers, a trigger set up for another site or other
// groups (or, with rt, another key), and minimum or maximum groups without
// the monotone trigger. A table that does not exist yet is looked at again
// on its first change.
func (e *Engine) inspect(ctx context.Context, c *pgx.Conn, name string, rt *tableRT) error {
	e.mu.Lock()
	_, done := e.infos[name]
	e.mu.Unlock()
	if done {
		return nil
	}
	tc := e.file.table(name)
	if tc == nil {
		return nil
	}
	schema, table, _ := strings.Cut(name, ".")
	var found bool
	var ident string
	var args []byte
	var monotone bool
	err := c.QueryRow(ctx, `SELECT true, c.relreplident::text,
	(SELECT tgargs FROM pg_trigger WHERE tgrelid = c.oid AND tgname = $3 AND tgenabled <> 'D'),
	EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = c.oid AND tgname = $4 AND tgenabled <> 'D')
FROM pg_class c WHERE c.oid = to_regclass(quote_ident($1) || '.' || quote_ident($2))`,
		schema, table, GroupTimesTrigger, MonotoneTrigger).Scan(&found, &ident, &args, &monotone)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("inspect table %s: %w", name, err)
	}
	info := &tableInfo{groupTimes: args != nil}
	log := e.log.With("table", name)
	if ident != "f" {
		log.Warn("table is not REPLICA IDENTITY FULL at this site: other sites cannot detect conflicts on its changes; "+
			"run ALTER TABLE ... REPLICA IDENTITY FULL at every site", "replica_identity", ident)
	}
	var byAttribution, minMax []string
	for _, g := range append(groupsOf(tc), group{name: defaultGroup, method: tc.Method}) {
		switch g.method {
		case MethodLatest, MethodEarliest, MethodSitePriority:
			byAttribution = append(byAttribution, g.name)
		case MethodMinimum, MethodMaximum:
			minMax = append(minMax, g.name)
		}
	}
	if args == nil && len(byAttribution) > 0 {
		log.Warn("no "+GroupTimesTrigger+" trigger: a column group's local time and writer are taken from the row's last write "+
			"to any column, so a local write of another group, or an UPDATE that changes nothing, can decide a conflict wrongly "+
			"and leave sites different; run tributary setup multisite at every site", "groups", byAttribution)
	}
	if args != nil {
		got := bytes.Split(bytes.TrimSuffix(args, []byte{0}), []byte{0})
		var key []string
		if rt != nil {
			for _, k := range rt.t.Key {
				key = append(key, rt.cols[k].name)
			}
		}
		want := groupTimesArgs(e.cfg.Site, name, key, tc)
		switch {
		case len(got) != len(want):
			log.Warn(GroupTimesTrigger+" was set up by another version: run tributary setup multisite again", "args", len(got))
		case string(got[0]) != want[0]:
			log.Warn(GroupTimesTrigger+" was set up for another site: local writes are attributed to it; "+
				"run tributary setup multisite --site "+e.cfg.Site, "trigger_site", string(got[0]))
		case string(got[2]) != want[2]:
			log.Warn(GroupTimesTrigger+" was set up for other column groups: run tributary setup multisite again",
				"trigger_groups", string(got[2]), "groups", want[2])
		case rt != nil && string(got[1]) != want[1]:
			log.Warn(GroupTimesTrigger+" was set up for another key: run tributary setup multisite again",
				"trigger_key", string(got[1]), "key", want[1])
		}
	}
	if len(minMax) > 0 && !monotone {
		log.Warn("no "+MonotoneTrigger+" trigger: minimum and maximum converge only while every site's writes move their "+
			"columns one way; run tributary setup multisite at every site to make them min and max registers", "groups", minMax)
	}
	e.mu.Lock()
	e.infos[name] = info
	e.mu.Unlock()
	return nil
}

// groupsOf are the declared groups of tc (names and methods only).
func groupsOf(tc *TableConfig) []group {
	names := make([]string, 0, len(tc.Groups))
	for g := range tc.Groups {
		names = append(names, g)
	}
	slices.Sort(names)
	out := make([]group, len(names))
	for i, n := range names {
		out[i] = group{name: n, method: tc.Groups[n].Method}
	}
	return out
}

// warning is a log line: a message and its attributes.
type warning struct {
	msg   string
	attrs []any
}

// configWarnings are the configuration's routines that converge only under
// some workloads (docs/MULTISITE.md, "Convergence"), one line per table and
// method.
func (e *Engine) configWarnings() []warning {
	names := make([]string, 0, len(e.file.Tables)+1)
	for n := range e.file.Tables {
		names = append(names, n)
	}
	slices.Sort(names)
	cfgs := map[string]*TableConfig{}
	for _, n := range names {
		cfgs[n] = e.file.Tables[n]
	}
	if e.file.Defaults != nil {
		names = append(names, "defaults")
		cfgs["defaults"] = e.file.Defaults
	}
	why := map[Method]string{
		MethodEarliest: "earliest converges only while no site changes a group again before it has received every " +
			"other site's changes to it, and no two sites write equal values to it",
		MethodSitePriority: "site-priority converges only while no site changes a group again before it has received every " +
			"other site's changes to it, and no two sites write equal values to it",
		MethodKeepLocal: "keep-local converges only with two sites, paired with apply-remote at the other, and under the " +
			"conditions of site-priority",
		MethodApplyRemote: "apply-remote converges only with two sites, paired with keep-local at the other, and under the " +
			"conditions of site-priority",
		MethodCustom: "custom converges only when its expression commutes as additive does (local + remote change), " +
			"whatever the order the changes arrive in",
	}
	var out []warning
	for _, n := range names {
		tc := cfgs[n]
		byMethod := map[Method][]string{}
		var tsGroups []string
		all := append(groupsOf(tc), group{name: defaultGroup, method: tc.Method})
		for _, g := range all {
			byMethod[g.method] = append(byMethod[g.method], g.name)
		}
		for g, gc := range tc.Groups {
			if gc.TimestampColumn != "" {
				tsGroups = append(tsGroups, g)
			}
		}
		if tc.TimestampColumn != "" {
			tsGroups = append(tsGroups, defaultGroup)
		}
		for _, m := range methods {
			if w, ok := why[m]; ok && len(byMethod[m]) > 0 {
				out = append(out, warning{"conflict routine may leave sites different: " + w + " (docs/MULTISITE.md, Convergence)",
					[]any{"table", n, "method", m, "groups", byMethod[m]}})
			}
		}
		if len(tsGroups) > 0 {
			slices.Sort(tsGroups)
			out = append(out, warning{"conflict routine may leave sites different: latest and earliest by timestamp_column " +
				"converge only while every change of the group sets the column later than the value it replaces " +
				"(docs/MULTISITE.md, Convergence)", []any{"table", n, "groups", tsGroups}})
		}
	}
	return out
}

// SetupTables reads from the site's catalog the tables SetupSQL prepares:
// every table f lists, and with f.Defaults every table of publication
// (none without it). Each table's key is its replica identity index when
// REPLICA IDENTITY USING INDEX, else its primary key, as the producer's
// events carry it. A listed table that does not exist is an error.
func SetupTables(ctx context.Context, c *pgx.Conn, f *File, publication string) ([]SetupTable, error) {
	names := make([]string, 0, len(f.Tables))
	for n := range f.Tables {
		names = append(names, n)
	}
	if f.Defaults != nil && publication != "" {
		rows, err := c.Query(ctx, `SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1`, publication)
		if err != nil {
			return nil, fmt.Errorf("tables of publication %s: %w", publication, err)
		}
		pub, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("tables of publication %s: %w", publication, err)
		}
		for _, n := range pub {
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	slices.Sort(names)
	out := make([]SetupTable, 0, len(names))
	for _, n := range names {
		schema, table, _ := strings.Cut(n, ".")
		t := SetupTable{Schema: schema, Name: table}
		err := c.QueryRow(ctx, `WITH r AS (SELECT to_regclass(quote_ident($1) || '.' || quote_ident($2)) AS oid),
idx AS (SELECT i.indkey::int2[] AS keys, i.indnkeyatts AS n FROM r, pg_index i JOIN pg_class c ON c.oid = i.indrelid
	WHERE i.indrelid = r.oid AND CASE WHEN c.relreplident = 'i' THEN i.indisreplident ELSE i.indisprimary END)
SELECT ARRAY(SELECT a.attname::text FROM r, idx, generate_subscripts(idx.keys, 1) s
		JOIN pg_attribute a ON true WHERE a.attrelid = r.oid AND a.attnum = idx.keys[s] AND s - array_lower(idx.keys, 1) < idx.n
		ORDER BY s),
	ARRAY(SELECT a.attname::text FROM r, pg_attribute a WHERE a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY a.attnum)
FROM r WHERE r.oid IS NOT NULL`, schema, table).Scan(&t.Key, &t.Columns)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return nil, fmt.Errorf("table %s: not found at this site", n)
		case err != nil:
			return nil, fmt.Errorf("table %s: read its key: %w", n, err)
		}
		out = append(out, t)
	}
	return out, nil
}

// RowMetaCopyColumns are the columns of tributary_row_meta that
// RowMetaCopyQuery returns, in order.
var RowMetaCopyColumns = []string{"table_name", "key", "grp", "site", "commit_ts", "hash"}

// RowMetaCopyQuery is the SELECT that copies a donor site's
// tributary_row_meta (in schema) to another site (tributary reseed). The
// transaction id the group-times trigger records for a local write means
// nothing at another site, so the copy carries its commit time, read at the
// donor, instead; a donor whose table predates the trigger is read as is.
func RowMetaCopyQuery(schema string) string {
	return `SELECT m.table_name, m.key, m.grp, m.site, coalesce(m.commit_ts, CASE WHEN current_setting('track_commit_timestamp') = 'on'
	AND (to_jsonb(m)->>'xid') IS NOT NULL AND pg_xact_status((to_jsonb(m)->>'xid')::xid8) = 'committed'
	THEN pg_xact_commit_timestamp((to_jsonb(m)->>'xid')::xid8::xid) END), m.hash
FROM ` + schemas.QuoteIdent(schema) + `.tributary_row_meta m`
}
