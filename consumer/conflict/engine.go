package conflict

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/traits"
	"github.com/jackc/pgx/v5"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/postgres/pgtarget"
	"github.com/tributary-cdc/tributary/internal/retry"
	"github.com/tributary-cdc/tributary/schemas"
)

// defaultGroup names the columns of a table that are in no declared group.
const defaultGroup = "default"

// OriginPrefix is how default replication origin names start: the consumer
// that applies site S's changes uses the origin "tributary_S".
const OriginPrefix = "tributary_"

// Config configures an Engine.
type Config struct {
	// File is the conflict configuration (--conflicts); nil handles no
	// table, which still gives loop prevention (see Engine.Own).
	File *File
	// Site is the local site (--site). Required.
	Site string
	// RemoteSite is the site whose producer this consumer reads
	// (--remote-site). Required. A transaction that carries a replication
	// origin (it was forwarded by a hub) came from the origin's site instead.
	RemoteSite string
	// Consumer is the consumer's name, recorded with each conflict.
	Consumer string
	// Notifiers receive every record after its transaction commits, at
	// most once (a webhook).
	Notifiers []Notifier
	// Outbox, when set, publishes every record of tributary_conflicts that
	// this consumer writes to a conflicts topic, exactly once; RunOutbox
	// runs it.
	Outbox *OutboxConfig
	// OnRecord, when set, is called once per record after its transaction
	// commits (or, for method error, before the consumer stops), from the
	// apply goroutine; metrics count here. It must not block.
	OnRecord func(Record)
	// Logger receives structured logs; nil means slog.Default().
	Logger *slog.Logger
}

// Engine detects and resolves conflicts for one consumer. Create it with
// New, call Setup on a target connection once, then Begin for each target
// transaction. Begin and Own may be called concurrently; a Session may not.
type Engine struct {
	cfg       Config
	file      *File
	log       *slog.Logger
	meta      string // quoted schema.tributary_row_meta
	conflicts string // quoted schema.tributary_conflicts
	actions   string // quoted schema.tributary_conflict_actions
	disp      *dispatcher
	outbox    *outbox // nil without Config.Outbox

	// commitTS: track_commit_timestamp is on at the target (Setup), so
	// the commit times of local writes can be read.
	commitTS bool

	mu     sync.Mutex
	tables map[int]*tableRT      // by value schema ID
	infos  map[string]*tableInfo // what inspect found, by schema.table

	records atomic.Int64
	skipped atomic.Int64
}

// New validates cfg and returns an engine; it compiles every expression.
func New(cfg Config) (*Engine, error) {
	var errs []error
	if cfg.Site == "" {
		errs = append(errs, errors.New("Site (--site): required"))
	}
	if cfg.RemoteSite == "" {
		errs = append(errs, errors.New("RemoteSite (--remote-site): required"))
	}
	if cfg.RemoteSite != "" && cfg.RemoteSite == cfg.Site {
		errs = append(errs, fmt.Errorf("RemoteSite %q: must differ from Site", cfg.RemoteSite))
	}
	f := cfg.File
	if f == nil {
		f = &File{Schema: "public"}
	} else if err := f.validate(); err != nil {
		errs = append(errs, err)
	}
	// Compile expressions now, so that a typo fails at start-up.
	for name, tc := range f.Tables {
		if _, err := compileTable(tc); err != nil {
			errs = append(errs, fmt.Errorf("tables.%s: %w", name, err))
		}
	}
	if f.Defaults != nil {
		if _, err := compileTable(f.Defaults); err != nil {
			errs = append(errs, fmt.Errorf("defaults: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("conflict engine: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("component", "conflict", "site", cfg.Site, "remote_site", cfg.RemoteSite)
	q := schemas.QuoteIdent(f.Schema) + "."
	e := &Engine{cfg: cfg, file: f, log: log, meta: q + schemas.QuoteIdent("tributary_row_meta"),
		conflicts: q + schemas.QuoteIdent("tributary_conflicts"), actions: q + schemas.QuoteIdent("tributary_conflict_actions"),
		disp:   newDispatcher(log, cfg.Notifiers),
		tables: map[int]*tableRT{}, infos: map[string]*tableInfo{}}
	if cfg.Outbox != nil {
		var err error
		if e.outbox, err = newOutbox(e, *cfg.Outbox); err != nil {
			e.disp.close(context.Background())
			return nil, fmt.Errorf("conflict engine: %w", err)
		}
	}
	return e, nil
}

// compiled expressions of one table config.
type tableExprs struct {
	groups map[string]*program
	def    *program
	owner  *program
}

func compileTable(tc *TableConfig) (*tableExprs, error) {
	out := &tableExprs{groups: map[string]*program{}}
	rowVars := []string{"local", "remote_before", "remote_after"}
	var err error
	if tc.Method == MethodCustom {
		if out.def, err = compileCEL(tc.Expr, rowVars); err != nil {
			return nil, err
		}
	}
	for g, gc := range tc.Groups {
		if gc.Method == MethodCustom {
			if out.groups[g], err = compileCEL(gc.Expr, rowVars); err != nil {
				return nil, fmt.Errorf("groups.%s: %w", g, err)
			}
		}
	}
	if tc.Ownership != nil && tc.Ownership.Owner != "" {
		if out.owner, err = compileCEL(tc.Ownership.Owner, []string{"row"}, "site"); err != nil {
			return nil, fmt.Errorf("ownership.owner: %w", err)
		}
	}
	return out, nil
}

// Setup creates tributary_conflicts, tributary_row_meta and
// tributary_conflict_actions when missing (and brings older versions of
// them up to date), checks that track_commit_timestamp is on when a method
// compares commit times, and warns, once, about every table configuration
// that can leave sites different (configWarnings, and inspect for each
// listed table). Call it once, on any target connection, before the first
// Apply.
func (e *Engine) Setup(ctx context.Context, c *pgx.Conn) error {
	if _, err := c.Exec(ctx, tablesSQL(e.file.Schema), pgx.QueryExecModeSimpleProtocol); err != nil {
		return fmt.Errorf("create %s, %s and %s: %w", e.conflicts, e.meta, e.actions, err)
	}
	var on string
	if err := c.QueryRow(ctx, "SHOW track_commit_timestamp").Scan(&on); err != nil {
		return fmt.Errorf("SHOW track_commit_timestamp: %w", err)
	}
	e.commitTS = on == "on"
	if e.needsTime() && !e.commitTS {
		return consumer.Permanent(errors.New("the conflict methods latest and earliest need the commit time of " +
			"local changes: set track_commit_timestamp = on in the target's postgresql.conf and restart it"))
	}
	for _, w := range e.configWarnings() {
		e.log.Warn(w.msg, w.attrs...)
	}
	for name := range e.file.Tables {
		if err := e.inspect(ctx, c, name, nil); err != nil {
			return err
		}
	}
	return nil
}

func (e *Engine) needsTime() bool {
	cfgs := make([]*TableConfig, 0, len(e.file.Tables)+1)
	for _, tc := range e.file.Tables {
		cfgs = append(cfgs, tc)
	}
	if e.file.Defaults != nil {
		cfgs = append(cfgs, e.file.Defaults)
	}
	for _, tc := range cfgs {
		if tc.Method.usesTime() && tc.TimestampColumn == "" {
			return true
		}
		for _, g := range tc.Groups {
			if g.Method.usesTime() && g.TimestampColumn == "" {
				return true
			}
		}
	}
	return false
}

// OriginInstance is the name of the i-th replication origin of a consumer
// whose origin is base: base itself for 0, else base#i. Per-key mode applies
// on parallel sessions, and one session at a time may use an origin, so
// each concurrent apply takes its own instance; they all stand for one site.
func OriginInstance(base string, i int) string {
	if i == 0 {
		return base
	}
	return base + originInstanceSep + strconv.Itoa(i)
}

const originInstanceSep = "#"

// OriginSite is the site a replication origin name stands for: the File's
// Origins mapping, else the name without OriginPrefix, else the name; an
// instance (OriginInstance) stands for its base's site.
func (e *Engine) OriginSite(origin string) string {
	if s, ok := e.file.Origins[origin]; ok {
		return s
	}
	origin, _, _ = strings.Cut(origin, originInstanceSep)
	if s, ok := e.file.Origins[origin]; ok {
		return s
	}
	if s, ok := strings.CutPrefix(origin, OriginPrefix); ok && s != "" {
		return s
	}
	return origin
}

// SiteOf is the site where txn was made: the site of its replication origin
// when a hub forwarded it, else the remote site.
func (e *Engine) SiteOf(txn *consumer.Txn) string {
	if txn != nil && txn.Origin != "" {
		return e.OriginSite(txn.Origin)
	}
	return e.cfg.RemoteSite
}

// Own reports whether txn was made at the local site and came back through
// a hub: such changes must not be applied again (loop prevention). Safe for
// concurrent use.
func (e *Engine) Own(txn *consumer.Txn) bool {
	if e.SiteOf(txn) != e.cfg.Site {
		return false
	}
	e.skipped.Add(1)
	return true
}

// Handles reports whether changes to t go through Session.Apply.
func (e *Engine) Handles(t *consumer.Table) bool {
	if t == nil {
		return false
	}
	_, ok := e.file.Tables[t.Schema+"."+t.Name]
	return ok || e.file.Defaults != nil
}

// Records is how many conflicts and ownership violations were recorded
// since New (committed ones only).
func (e *Engine) Records() int64 { return e.records.Load() }

// Close delivers the queued notifications, waiting at most until ctx ends.
func (e *Engine) Close(ctx context.Context) { e.disp.close(ctx) }

// column is one column of a table version.
type column struct {
	name    string
	sqlType string
	class   class
	key     bool
}

// group is a resolved column group of a table version.
type group struct {
	name   string
	cols   []int
	method Method
	expr   *program
	tsCol  int // the timestamp_column's index, or -1 (commit times)
}

// tableRT is a table version with its conflict configuration applied.
type tableRT struct {
	t        *consumer.Table
	name     string // schema.table
	cfg      *TableConfig
	cols     []column
	groups   []group
	owner    *program
	colOwner map[int]string
	needTime bool
	// needAction: a group's method or the delete policy is error, so the
	// declared action for a change is read with the local row.
	needAction bool

	selectSQL  string // the local row, locked, its fallback time and group hashes
	canonSQL   string // the images as the target types print them, and the row metadata key
	metaSQL    string // the row's metadata
	actionSQL  string // the declared action for a change
	insertSQL  string
	deleteSQL  string
	metaKeyArg int // the first key parameter of canonSQL
}

func (e *Engine) table(t *consumer.Table) (*tableRT, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if rt, ok := e.tables[t.SchemaID]; ok && rt.t == t {
		return rt, nil
	}
	tc, ok := e.file.Tables[t.Schema+"."+t.Name]
	if !ok {
		tc = e.file.Defaults
	}
	ex, err := compileTable(tc)
	if err != nil {
		return nil, err
	}
	rt := &tableRT{t: t, name: t.String(), cfg: tc, colOwner: map[int]string{}}
	byName := map[string]int{}
	for i, c := range t.Columns {
		rt.cols = append(rt.cols, column{name: c.Name, sqlType: c.SQLType, class: classOf(c.SQLType), key: c.Key})
		byName[c.Name] = i
	}
	inGroup := map[int]bool{}
	names := make([]string, 0, len(tc.Groups))
	for g := range tc.Groups {
		names = append(names, g)
	}
	slices.Sort(names)
	for _, g := range names {
		gc := tc.Groups[g]
		gr := group{name: g, method: gc.Method, expr: ex.groups[g], tsCol: -1}
		if gc.TimestampColumn != "" {
			gr.tsCol = byName[gc.TimestampColumn] // a group column: checked below
		}
		for _, c := range gc.Columns {
			i, ok := byName[c]
			if !ok {
				return nil, fmt.Errorf("conflict config: table %s: group %s: no column %q", rt.name, g, c)
			}
			if rt.cols[i].key {
				return nil, fmt.Errorf("conflict config: table %s: group %s: %q is a key column; keys are in no group", rt.name, g, c)
			}
			gr.cols = append(gr.cols, i)
			inGroup[i] = true
		}
		rt.groups = append(rt.groups, gr)
	}
	def := group{name: defaultGroup, method: tc.Method, expr: ex.def, tsCol: -1}
	for i, c := range rt.cols {
		if !c.key && !inGroup[i] {
			def.cols = append(def.cols, i)
			if c.name == tc.TimestampColumn {
				def.tsCol = i
			}
		}
	}
	if tc.TimestampColumn != "" && def.tsCol < 0 {
		return nil, fmt.Errorf("conflict config: table %s: timestamp_column %q is not a column in no group", rt.name, tc.TimestampColumn)
	}
	if len(def.cols) > 0 {
		rt.groups = append(rt.groups, def)
	}
	rt.needAction = tc.Delete == DeleteError
	for _, g := range rt.groups {
		rt.needTime = rt.needTime || g.method.usesTime() && g.tsCol < 0
		rt.needAction = rt.needAction || g.method == MethodError
		if g.tsCol >= 0 && !isTimestamp(rt.cols[g.tsCol].sqlType) {
			return nil, fmt.Errorf("conflict config: table %s: group %s: timestamp_column %q is %s, want timestamp or timestamptz",
				rt.name, g.name, rt.cols[g.tsCol].name, rt.cols[g.tsCol].sqlType)
		}
		if g.method == MethodAdditive {
			for _, i := range g.cols {
				if !additiveOK(rt.cols[i].sqlType) {
					return nil, fmt.Errorf("conflict config: table %s: group %s: additive needs numeric columns; %q is %s",
						rt.name, g.name, rt.cols[i].name, rt.cols[i].sqlType)
				}
			}
		}
	}
	if o := tc.Ownership; o != nil {
		rt.owner = ex.owner
		for site, cols := range o.Columns {
			for _, c := range cols {
				i, ok := byName[c]
				if !ok {
					return nil, fmt.Errorf("conflict config: table %s: ownership.columns.%s: no column %q", rt.name, site, c)
				}
				rt.colOwner[i] = site
			}
		}
	}
	rt.buildSQL(e)
	e.tables[t.SchemaID] = rt
	return rt, nil
}

func (rt *tableRT) buildSQL(e *Engine) {
	q := rt.t.QualifiedName()
	n := len(rt.cols)
	sel := make([]string, 0, n+len(rt.groups)+1)
	canon := make([]string, 0, 2*n+1)
	ins := make([]string, 0, n)
	vals := make([]string, 0, n)
	for i, c := range rt.cols {
		qc := schemas.QuoteIdent(c.name)
		sel = append(sel, qc+"::text")
		canon = append(canon, "$"+strconv.Itoa(i+1)+"::text::"+c.sqlType+"::text")
		ins = append(ins, qc)
		vals = append(vals, "$"+strconv.Itoa(i+1)+"::text::"+c.sqlType)
	}
	for i, c := range rt.cols {
		canon = append(canon, "$"+strconv.Itoa(n+i+1)+"::text::"+c.sqlType+"::text")
	}
	rt.metaKeyArg = 2*n + 1
	canon = append(canon, rt.metaKeyExpr(2*n)+"::text")
	// The row's last commit time, for the fallback attribution of a table
	// without the group-times trigger (see change.attr).
	if rt.needTime {
		sel = append(sel, "pg_xact_commit_timestamp(xmin)")
	} else {
		sel = append(sel, "NULL::timestamptz")
	}
	sel = append(sel, rt.hashExprs()...)
	rt.selectSQL = "SELECT " + strings.Join(sel, ", ") + " FROM " + q + " WHERE " + rt.keyWhere(0) + " FOR UPDATE"
	rt.canonSQL = "SELECT " + strings.Join(canon, ", ")
	// A local write's time is its transaction's commit time, read from the
	// xid the trigger recorded (pg_xact_status is NULL for an xid too old
	// to know; the time is then unknown).
	ts := "commit_ts"
	if e.commitTS {
		ts = "coalesce(commit_ts, CASE WHEN xid IS NOT NULL AND pg_xact_status(xid) = 'committed' " +
			"THEN pg_xact_commit_timestamp(xid::xid) END)"
	}
	rt.metaSQL = "SELECT grp, site, " + ts + ", hash FROM " + e.meta + " WHERE table_name = $1 AND key = " +
		rt.metaKeyExpr(1) + "::text"
	rt.actionSQL = "SELECT action FROM " + e.actions + " WHERE table_name = $1 AND key = " + rt.actionKeyExpr(1) +
		" AND commit_lsn = $" + strconv.Itoa(len(rt.t.Key)+2) + "::text::pg_lsn"
	// A local transaction may insert the key after load found no row (FOR
	// UPDATE locks no row that is not there): the insert then waits for it
	// and inserts nothing, and insertRow has the change applied again.
	onConflict := ""
	if !rt.t.Unkeyed() {
		onConflict = " ON CONFLICT (" + rt.t.KeyList("") + ") DO NOTHING"
	}
	rt.insertSQL = "INSERT INTO " + q + " (" + strings.Join(ins, ", ") + ") VALUES (" + strings.Join(vals, ", ") + ")" +
		onConflict + " RETURNING " + strings.Join(rt.hashExprs(), ", ")
	rt.deleteSQL = "DELETE FROM " + q + " WHERE " + rt.keyWhere(0)
}

// metaKeyExpr is the row metadata key of the key parameters $offset+1...:
// the jsonb object of the key columns as typed values, which the
// group-times trigger computes the same way (jsonb_object_agg over
// to_jsonb(NEW)); compared as its text.
func (rt *tableRT) metaKeyExpr(offset int) string {
	parts := make([]string, 0, 2*len(rt.t.Key))
	for j, k := range rt.t.Key {
		c := rt.cols[k]
		parts = append(parts, quoteLiteral(c.name), "$"+strconv.Itoa(offset+j+1)+"::text::"+c.sqlType)
	}
	return "jsonb_build_object(" + strings.Join(parts, ", ") + ")"
}

// actionKeyExpr is a declared action's key, the jsonb object of the key
// columns' canonical texts (as tributary_conflicts.key and Record.Key), of
// the key parameters $offset+1...
func (rt *tableRT) actionKeyExpr(offset int) string {
	parts := make([]string, 0, 2*len(rt.t.Key))
	for j, k := range rt.t.Key {
		c := rt.cols[k]
		parts = append(parts, quoteLiteral(c.name), "$"+strconv.Itoa(offset+j+1)+"::text::"+c.sqlType+"::text")
	}
	return "jsonb_build_object(" + strings.Join(parts, ", ") + ")"
}

// hashExprs are md5(ROW(group columns)::text) per group, in group order.
func (rt *tableRT) hashExprs() []string {
	out := make([]string, len(rt.groups))
	for gi, g := range rt.groups {
		cs := make([]string, len(g.cols))
		for j, i := range g.cols {
			cs[j] = schemas.QuoteIdent(rt.cols[i].name)
		}
		out[gi] = "md5(ROW(" + strings.Join(cs, ", ") + ")::text)"
	}
	return out
}

func (rt *tableRT) keyWhere(offset int) string {
	parts := make([]string, len(rt.t.Key))
	for j, k := range rt.t.Key {
		c := rt.cols[k]
		parts[j] = schemas.QuoteIdent(c.name) + " = $" + strconv.Itoa(offset+j+1) + "::text::" + c.sqlType
	}
	return strings.Join(parts, " AND ")
}

// Session applies the changes of one target transaction. It is used by one
// goroutine.
type Session struct {
	e    *Engine
	recs []Record
}

// Begin starts the conflict handling of one target transaction.
func (e *Engine) Begin() *Session { return &Session{e: e} }

// Committed hands the session's records to OnRecord and the notifiers;
// call it after the target transaction committed.
func (s *Session) Committed() {
	for _, r := range s.recs {
		s.e.records.Add(1)
		if s.e.cfg.OnRecord != nil {
			s.e.cfg.OnRecord(r)
		}
		s.e.log.Info("conflict", "table", r.Table, "key", keyText(r.Key), "kind", r.Kind, "group", r.Group,
			"method", r.Method, "outcome", r.Outcome, "commit_lsn", r.CommitLSN)
	}
	s.e.disp.send(s.recs)
	if len(s.recs) > 0 && s.e.outbox != nil {
		s.e.outbox.poke()
	}
	s.recs = nil
}

func keyText(k Row) string {
	b, _ := json.Marshal(k)
	return string(b)
}

// change is one event being applied, with canonical texts.
type change struct {
	rt          *tableRT
	info        *tableInfo
	ev          *consumer.Event
	site        string // remote site
	ts          time.Time
	before      []*string // nil when absent
	after       []*string // nil when absent
	local       []*string // nil when the row is missing
	localTS     *time.Time
	localHash   []string
	meta        map[string]metaRow
	keyParams   []any
	metaKey     string
	unchangedOK map[int]bool // after values unknown (unchanged TOAST)
	act         Method       // the declared action for this change, "" when none
	fromOwner   bool         // the change's site owns the row (primary or owner)
}

// ownerDecides reports whether the change's site owns the row, or every
// column of group gi: its change then wins a conflict in the group.
func (ch *change) ownerDecides(gi int) bool {
	if ch.fromOwner {
		return true
	}
	if len(ch.rt.colOwner) == 0 {
		return false
	}
	for _, i := range ch.rt.groups[gi].cols {
		if ch.rt.colOwner[i] != ch.site {
			return false
		}
	}
	return true
}

// metaRow is a row of tributary_row_meta: who wrote a group's values and
// when (for a local write, its transaction's commit time), and, for rows the
// consumer wrote, an md5 of the values.
type metaRow struct {
	site string
	ts   *time.Time
	hash string
}

// Apply applies ev in tx, detecting and resolving conflicts with the
// target's current row, which it locks (SELECT ... FOR UPDATE). A conflict
// is recorded in tributary_conflicts in tx. An ownership violation is not
// applied and is recorded. A change whose table is not Handled must not be
// passed. Errors name the table, key and LSN.
func (s *Session) Apply(ctx context.Context, tx pgx.Tx, ev *consumer.Event) error {
	rt, err := s.e.table(ev.Table)
	if err != nil {
		return ev.Wrap(consumer.Permanent(err))
	}
	if ev.Op == schemas.OpTruncate {
		if _, err := tx.Exec(ctx, "TRUNCATE "+ev.Table.QualifiedName()); err != nil {
			return ev.Wrap(err)
		}
		if _, err := tx.Exec(ctx, "DELETE FROM "+s.e.meta+" WHERE table_name = $1", rt.name); err != nil {
			return ev.Wrap(err)
		}
		return nil
	}
	if err := s.e.inspect(ctx, tx.Conn(), rt.name, rt); err != nil {
		return ev.Wrap(err)
	}
	if s.e.outbox != nil {
		s.e.outbox.notePID(tx.Conn().PgConn().PID())
	}
	ch, err := s.e.load(ctx, tx, rt, ev)
	if err != nil {
		return err
	}
	ok, detail, foreign, err := s.e.owned(ch)
	switch {
	case err != nil:
		return ev.Wrap(consumer.Permanent(err))
	case !ok:
		return s.record(ctx, tx, ch, KindOwnership, "", MethodOwnership, OutcomeRejected, ch.local, detail)
	case len(foreign) > 0:
		// Vertical ownership: the columns the site does not own are not
		// applied (as if unchanged); the rest of the change is.
		for _, i := range foreign {
			ch.after[i], ch.unchangedOK[i] = ch.before[i], true
		}
		if err := s.record(ctx, tx, ch, KindOwnership, "", MethodOwnership, OutcomeRejected, nil, detail); err != nil {
			return err
		}
	}
	switch ev.Op {
	case schemas.OpInsert, schemas.OpRead:
		return s.insert(ctx, tx, ch)
	case schemas.OpUpdate:
		return s.update(ctx, tx, ch)
	case schemas.OpDelete:
		return s.delete(ctx, tx, ch)
	}
	return ev.Wrap(consumer.Permanent(fmt.Errorf("unknown op %q", ev.Op)))
}

// load reads the canonical texts of the change's images, the local row
// (locked), its row metadata and the declared action, in one round trip.
func (e *Engine) load(ctx context.Context, tx pgx.Tx, rt *tableRT, ev *consumer.Event) (*change, error) {
	ch := &change{rt: rt, info: e.infoOf(rt.name), ev: ev, site: e.SiteOf(ev.Txn), unchangedOK: map[int]bool{}}
	if ev.Txn != nil {
		ch.ts = ev.Txn.CommitTime.Truncate(time.Microsecond)
	}
	if ev.Op == schemas.OpUpdate && ev.Before == nil || ev.Op == schemas.OpDelete && ev.Before == nil {
		return nil, ev.Wrap(consumer.Permanent(fmt.Errorf("%s has no before-image: conflict detection needs REPLICA IDENTITY FULL "+
			"at the source (ALTER TABLE %s REPLICA IDENTITY FULL)", opWord(ev.Op), rt.t.QualifiedName())))
	}
	n := len(rt.cols)
	keyRow := ev.Before
	if keyRow == nil {
		keyRow = ev.After
	}
	kp, err := pgtarget.Values(ev, keyRow, rt.t.Key)
	if err != nil {
		return nil, err
	}
	ch.keyParams = kp
	params := make([]any, 2*n, 2*n+len(kp))
	for _, img := range []struct {
		row []any
		off int
	}{{ev.Before, 0}, {ev.After, n}} {
		if img.row == nil {
			continue
		}
		for i := range n {
			if img.row[i] == nil {
				continue
			}
			v, err := pgtarget.Encode(ev, i, img.row[i])
			if err != nil {
				return nil, err
			}
			params[img.off+i] = v
		}
	}
	params = append(params, kp...)
	for _, i := range ev.Unchanged {
		ch.unchangedOK[i] = true
	}

	var b pgx.Batch
	b.Queue(rt.canonSQL, params...)
	b.Queue(rt.selectSQL, kp...)
	b.Queue(rt.metaSQL, append([]any{rt.name}, kp...)...)
	readAction := rt.needAction && ev.Txn != nil
	if readAction {
		b.Queue(rt.actionSQL, append(append([]any{rt.name}, kp...), ev.Txn.CommitLSN.String())...)
	}
	br := tx.SendBatch(ctx, &b)
	defer br.Close()
	canon := make([]*string, 2*n)
	dst := make([]any, 0, 2*n+1)
	for i := range canon {
		dst = append(dst, &canon[i])
	}
	dst = append(dst, &ch.metaKey)
	if err := br.QueryRow().Scan(dst...); err != nil {
		return nil, ev.Wrap(fmt.Errorf("read the change's values as the target types: %w", err))
	}
	if ev.Before != nil {
		ch.before = canon[:n]
	}
	if ev.After != nil {
		ch.after = canon[n:]
		if ch.before != nil {
			for i := range ch.unchangedOK {
				ch.after[i] = ch.before[i]
			}
		}
	}
	local := make([]*string, n)
	hashes := make([]string, len(rt.groups))
	dst = make([]any, 0, n+1+len(rt.groups))
	for i := range local {
		dst = append(dst, &local[i])
	}
	dst = append(dst, &ch.localTS)
	for i := range hashes {
		dst = append(dst, &hashes[i])
	}
	switch err := br.QueryRow().Scan(dst...); {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return nil, ev.Wrap(fmt.Errorf("read and lock the local row: %w", err))
	default:
		ch.local, ch.localHash = local, hashes
	}
	rows, err := br.Query()
	if err != nil {
		return nil, ev.Wrap(fmt.Errorf("read %s: %w", e.meta, err))
	}
	ch.meta = map[string]metaRow{}
	for rows.Next() {
		var g string
		var m metaRow
		if err := rows.Scan(&g, &m.site, &m.ts, &m.hash); err != nil {
			rows.Close()
			return nil, ev.Wrap(err)
		}
		ch.meta[g] = m
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, ev.Wrap(err)
	}
	if readAction {
		var act string
		switch err := br.QueryRow().Scan(&act); {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return nil, ev.Wrap(fmt.Errorf("read %s: %w", e.actions, err))
		default:
			ch.act = Method(act)
		}
	}
	if err := br.Close(); err != nil {
		return nil, ev.Wrap(err)
	}
	return ch, nil
}

func opWord(op schemas.Op) string {
	switch op {
	case schemas.OpUpdate:
		return "update"
	case schemas.OpDelete:
		return "delete"
	}
	return "insert"
}

// attr is who last wrote group gi's current local values, and when.
//
// With the group-times trigger (tributary setup multisite), the row
// metadata says it: the trigger records each local write of a group (its
// transaction, whose commit time is read back), the consumer each of its
// own writes; a group without metadata has not been written since the
// trigger was installed, and its time is unknown. Without the trigger, the
// metadata is used while its hash matches the values (the consumer's write
// is the last one), else the group counts as written here at the row's last
// commit time, which moves with a write of any column of the row.
func (ch *change) attr(gi int, local string) attribution {
	g := ch.rt.groups[gi].name
	m, ok := ch.meta[g]
	if ch.info.groupTimes {
		if ok {
			return attribution{site: m.site, ts: m.ts}
		}
		return attribution{site: local}
	}
	if ok && ch.localHash != nil && m.hash == ch.localHash[gi] {
		return attribution{site: m.site, ts: m.ts}
	}
	return attribution{site: local, ts: ch.localTS}
}

// owned judges ownership on the before-image (the after-image of an insert):
// ok false rejects the whole change; foreign lists the columns of an update
// that the change's site may not change (vertical ownership), which are not
// to be applied.
func (e *Engine) owned(ch *change) (ok bool, detail string, foreign []int, err error) {
	o := ch.rt.cfg.Ownership
	if o == nil {
		return true, "", nil, nil
	}
	img := ch.before
	if img == nil {
		img = ch.after
	}
	if o.Primary != "" && ch.site != o.Primary {
		return false, fmt.Sprintf("table is owned by primary site %s; the change came from %s", o.Primary, ch.site), nil, nil
	}
	ch.fromOwner = o.Primary != ""
	if ch.rt.owner != nil {
		v, err := ch.rt.owner.eval(map[string]any{"row": celRow(ch.rt.cols, img), "site": ch.site})
		if err != nil {
			return false, "", nil, fmt.Errorf("table %s: ownership.owner: %w", ch.rt.name, err)
		}
		owners, err := siteNames(v)
		if err != nil {
			return false, "", nil, fmt.Errorf("table %s: ownership.owner: %w", ch.rt.name, err)
		}
		if !slices.Contains(owners, ch.site) {
			return false, fmt.Sprintf("row is owned by %s; the change came from %s", strings.Join(owners, ", "), ch.site), nil, nil
		}
		ch.fromOwner = true
	}
	if len(ch.rt.colOwner) == 0 || ch.ev.Op != schemas.OpUpdate {
		return true, "", nil, nil
	}
	var names []string
	for i := range ch.rt.cols {
		if site, ok := ch.rt.colOwner[i]; ok && site != ch.site && !eqText(ch.before[i], ch.after[i]) {
			foreign = append(foreign, i)
			names = append(names, fmt.Sprintf("%s (owned by %s)", ch.rt.cols[i].name, site))
		}
	}
	if len(foreign) > 0 {
		detail = fmt.Sprintf("the change came from %s, which may not change %s; those columns were not applied, "+
			"the change's other columns were", ch.site, strings.Join(names, ", "))
	}
	return true, detail, foreign, nil
}

func siteNames(v any) ([]string, error) {
	switch x := v.(type) {
	case types.String:
		return []string{string(x)}, nil
	case traits.Lister:
		if l, err := x.ConvertToNative(reflect.TypeOf([]string(nil))); err == nil {
			return l.([]string), nil
		}
	}
	return nil, fmt.Errorf("want a site name or a list of names, got %v", v)
}

// rowMap renders a row by column name; nil for a nil row.
func (rt *tableRT) rowMap(vals []*string) Row {
	if vals == nil {
		return nil
	}
	m := make(Row, len(vals))
	for i, c := range rt.cols {
		m[c.name] = vals[i]
	}
	return m
}

func (s *Session) insert(ctx context.Context, tx pgx.Tx, ch *change) error {
	if ch.local == nil {
		return s.insertRow(ctx, tx, ch)
	}
	all := make([]int, len(ch.rt.groups))
	for gi := range ch.rt.groups {
		all[gi] = gi
	}
	return s.resolve(ctx, tx, ch, KindInsertExists, all)
}

func (s *Session) insertRow(ctx context.Context, tx pgx.Tx, ch *change) error {
	args := make([]any, len(ch.rt.cols))
	for i, v := range ch.after {
		if v != nil {
			args[i] = *v
		}
	}
	hashes := make([]string, len(ch.rt.groups))
	dst := make([]any, len(hashes))
	for i := range hashes {
		dst[i] = &hashes[i]
	}
	if err := tx.QueryRow(ctx, ch.rt.insertSQL, args...).Scan(dst...); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			// The key is there now: applied again, the change meets the
			// row as the conflict it is.
			err = retry.Retryable(errors.New("a local transaction inserted the same key while the change was applied; applying it again"))
		}
		return ch.ev.Wrap(err)
	}
	attrs := make([]attribution, len(ch.rt.groups))
	for i := range attrs {
		attrs[i] = attribution{site: ch.site, ts: &ch.ts}
	}
	return s.e.writeMeta(ctx, tx, ch, attrs, hashes)
}

func (s *Session) update(ctx context.Context, tx pgx.Tx, ch *change) error {
	if ch.local == nil {
		switch ch.rt.cfg.Delete {
		case DeleteError:
			switch ch.act {
			case MethodKeepLocal:
				if err := s.useAction(ctx, tx, ch); err != nil {
					return err
				}
				return s.record(ctx, tx, ch, KindUpdateMissing, "", Method(DeleteError), OutcomeSkipped, nil, declaredDetail)
			case "":
				return s.stop(ch, KindUpdateMissing, "", Method(DeleteError), "update of a row that is missing at this site")
			}
			if err := s.useAction(ctx, tx, ch); err != nil {
				return err
			}
			if err := s.insertRow(ctx, tx, ch); err != nil {
				return err
			}
			return s.record(ctx, tx, ch, KindUpdateMissing, "", Method(DeleteError), OutcomeInserted, ch.after, declaredDetail)
		case UpdateWins:
			if len(ch.unchangedOK) > 0 {
				return s.record(ctx, tx, ch, KindUpdateMissing, "", Method(UpdateWins), OutcomeSkipped, nil,
					"the after-image lacks unchanged TOASTed values, so the row cannot be inserted")
			}
			if err := s.insertRow(ctx, tx, ch); err != nil {
				return err
			}
			return s.record(ctx, tx, ch, KindUpdateMissing, "", Method(UpdateWins), OutcomeInserted, ch.after, "")
		}
		return s.record(ctx, tx, ch, KindUpdateMissing, "", Method(DeleteWins), OutcomeSkipped, nil, "")
	}
	var touched []int
	for gi := range ch.rt.groups {
		if !groupEq(&ch.rt.groups[gi], ch.before, ch.after) {
			touched = append(touched, gi)
		}
	}
	return s.resolve(ctx, tx, ch, KindUpdateDiffers, touched)
}

func (s *Session) delete(ctx context.Context, tx pgx.Tx, ch *change) error {
	if ch.local == nil {
		return s.record(ctx, tx, ch, KindDeleteMissing, "", Method(ch.rt.cfg.Delete), OutcomeSkipped, nil, "")
	}
	same := true
	for gi := range ch.rt.groups {
		same = same && groupEq(&ch.rt.groups[gi], ch.before, ch.local)
	}
	policy, detail := Method(ch.rt.cfg.Delete), ""
	if !same {
		switch ch.rt.cfg.Delete {
		case DeleteError:
			if ch.act == "" {
				return s.stop(ch, KindDeleteDiffers, "", policy, "delete of a row that was changed at this site")
			}
			if err := s.useAction(ctx, tx, ch); err != nil {
				return err
			}
			if ch.act == MethodKeepLocal {
				return s.record(ctx, tx, ch, KindDeleteDiffers, "", policy, OutcomeLocal, ch.local, declaredDetail)
			}
			detail = declaredDetail
		case UpdateWins:
			return s.record(ctx, tx, ch, KindDeleteDiffers, "", policy, OutcomeLocal, ch.local, "")
		}
	}
	if _, err := tx.Exec(ctx, ch.rt.deleteSQL, ch.keyParams...); err != nil {
		return ch.ev.Wrap(err)
	}
	if _, err := tx.Exec(ctx, "DELETE FROM "+s.e.meta+" WHERE table_name = $1 AND key = $2", ch.rt.name, ch.metaKey); err != nil {
		return ch.ev.Wrap(err)
	}
	if !same {
		return s.record(ctx, tx, ch, KindDeleteDiffers, "", policy, OutcomeDeleted, nil, detail)
	}
	return nil
}

// resolve decides each group in gis (decide), then writes the resolved
// values and the row metadata, and records the conflicts, in tx. kind is
// KindInsertExists or KindUpdateDiffers.
func (s *Session) resolve(ctx context.Context, tx pgx.Tx, ch *change, kind Kind, gis []int) error {
	rt := ch.rt
	attrs := make([]attribution, len(rt.groups))
	for gi := range rt.groups {
		attrs[gi] = ch.attr(gi, s.e.cfg.Site)
	}
	remote := attribution{site: ch.site, ts: &ch.ts}
	type decided struct {
		gi int
		v  verdict
	}
	var sets []colSet
	var res []decided
	metaDirty, useAction := false, false
	for _, gi := range gis {
		g := &rt.groups[gi]
		v := decide(input{kind: kind, group: g, cols: rt.cols, local: ch.local, before: ch.before, after: ch.after,
			unknown: ch.unchangedOK, localAt: attrs[gi], remoteAt: remote, exact: ch.info.groupTimes, owner: ch.ownerDecides(gi), action: ch.act,
			priority: s.e.file.Priority})
		switch {
		case v.err != nil:
			return ch.ev.Wrap(consumer.Permanent(v.err))
		case v.stop:
			return s.stop(ch, kind, g.name, g.method, "column group "+g.name+" conflicts and its method is error")
		}
		sets = append(sets, v.sets...)
		if v.attrChanged {
			attrs[gi], metaDirty = v.attr, true
		}
		useAction = useAction || v.usedAction
		if v.conflict {
			res = append(res, decided{gi, v})
		}
	}
	if useAction {
		if err := s.useAction(ctx, tx, ch); err != nil {
			return err
		}
	}
	resolved, hashes := ch.local, ch.localHash
	if len(sets) > 0 {
		var err error
		if resolved, hashes, err = s.e.writeSets(ctx, tx, ch, sets); err != nil {
			return err
		}
	}
	if metaDirty {
		if hashes == nil { // a table whose hashes were not read (no row): cannot happen with a local row
			hashes = make([]string, len(rt.groups))
		}
		if err := s.e.writeMeta(ctx, tx, ch, attrs, hashes); err != nil {
			return err
		}
	}
	for _, d := range res {
		if err := s.recordAttr(ctx, tx, ch, kind, rt.groups[d.gi].name, d.v.method, d.v.outcome, resolved, d.v.detail, d.v.local); err != nil {
			return err
		}
	}
	return nil
}

func textArg(s *string) any {
	if s == nil {
		return nil
	}
	return *s
}

// sqlSet is how a decision's column write is made: the SQL of the new value,
// with %s for each of args in order.
func (ch *change) sqlSet(cs colSet) (expr string, args []any) {
	c := ch.rt.cols[cs.col]
	qc, t := schemas.QuoteIdent(c.name), c.sqlType
	after := textArg(ch.after[cs.col])
	switch cs.op {
	case colAdd:
		if ch.before == nil {
			return "coalesce(" + qc + ", 0) + coalesce(%s::text::" + t + ", 0)", []any{after}
		}
		return "coalesce(" + qc + ", 0) + (coalesce(%s::text::" + t + ", 0) - coalesce(%s::text::" + t + ", 0))",
			[]any{after, textArg(ch.before[cs.col])}
	case colLeast:
		return "LEAST(" + qc + ", %s::text::" + t + ")", []any{after}
	case colGreatest:
		return "GREATEST(" + qc + ", %s::text::" + t + ")", []any{after}
	case colValue:
		return "%s::text::" + t, []any{textArg(cs.value)}
	}
	return "%s::text::" + t, []any{after}
}

// writeSets updates the local row and returns its new values and group hashes.
func (e *Engine) writeSets(ctx context.Context, tx pgx.Tx, ch *change, sets []colSet) ([]*string, []string, error) {
	rt := ch.rt
	var parts []string
	var args []any
	for _, cs := range sets {
		expr, a := ch.sqlSet(cs)
		nums := make([]any, len(a))
		for j, x := range a {
			args = append(args, x)
			nums[j] = "$" + strconv.Itoa(len(args))
		}
		parts = append(parts, schemas.QuoteIdent(rt.cols[cs.col].name)+" = "+fmt.Sprintf(expr, nums...))
	}
	ret := make([]string, 0, len(rt.cols)+len(rt.groups))
	for _, c := range rt.cols {
		ret = append(ret, schemas.QuoteIdent(c.name)+"::text")
	}
	ret = append(ret, rt.hashExprs()...)
	sql := "UPDATE " + rt.t.QualifiedName() + " SET " + strings.Join(parts, ", ") + " WHERE " + rt.keyWhere(len(args)) +
		" RETURNING " + strings.Join(ret, ", ")
	args = append(args, ch.keyParams...)
	vals := make([]*string, len(rt.cols))
	hashes := make([]string, len(rt.groups))
	dst := make([]any, 0, len(vals)+len(hashes))
	for i := range vals {
		dst = append(dst, &vals[i])
	}
	for i := range hashes {
		dst = append(dst, &hashes[i])
	}
	if err := tx.QueryRow(ctx, sql, args...).Scan(dst...); err != nil {
		return nil, nil, ch.ev.Wrap(fmt.Errorf("write resolved row: %w", err))
	}
	return vals, hashes, nil
}

// writeMeta records who wrote each group's values (see change.attr); a
// local write's transaction id, once its time is known here, is replaced by
// the time.
func (e *Engine) writeMeta(ctx context.Context, tx pgx.Tx, ch *change, attrs []attribution, hashes []string) error {
	n := len(ch.rt.groups)
	grps, sites, tss := make([]string, n), make([]string, n), make([]*time.Time, n)
	for gi, g := range ch.rt.groups {
		grps[gi], sites[gi], tss[gi] = g.name, attrs[gi].site, attrs[gi].ts
	}
	_, err := tx.Exec(ctx, `INSERT INTO `+e.meta+` AS m (table_name, key, grp, site, commit_ts, hash)
SELECT $1, $2, u.g, u.s, u.t, u.h FROM unnest($3::text[], $4::text[], $5::timestamptz[], $6::text[]) AS u(g, s, t, h)
ON CONFLICT (table_name, key, grp) DO UPDATE SET site = EXCLUDED.site, commit_ts = EXCLUDED.commit_ts, hash = EXCLUDED.hash,
	xid = NULL`,
		ch.rt.name, ch.metaKey, grps, sites, tss, hashes)
	if err != nil {
		return ch.ev.Wrap(fmt.Errorf("write %s: %w", e.meta, err))
	}
	return nil
}

func (s *Session) newRecord(ch *change, kind Kind, grp string, m Method, o Outcome, resolved []*string, detail string) Record {
	r := Record{DetectedAt: time.Now().UTC(), Site: s.e.cfg.Site, RemoteSite: ch.site, Consumer: s.e.cfg.Consumer,
		Table: ch.rt.name, Kind: kind, Group: grp, Method: m, Outcome: o, Local: ch.rt.rowMap(ch.local),
		RemoteBefore: ch.rt.rowMap(ch.before), RemoteAfter: ch.rt.rowMap(ch.after), Resolved: ch.rt.rowMap(resolved),
		Detail: detail, Key: Row{}}
	keyRow := ch.before
	if keyRow == nil {
		keyRow = ch.after
	}
	for _, k := range ch.rt.t.Key {
		r.Key[ch.rt.cols[k].name] = keyRow[k]
	}
	if t := ch.ev.Txn; t != nil {
		r.CommitLSN, r.Xid, r.CommitTime = t.CommitLSN.String(), t.Xid, t.CommitTime.UTC()
	}
	return r
}

// record writes a conflict row in tx and keeps the record for Committed.
func (s *Session) record(ctx context.Context, tx pgx.Tx, ch *change, kind Kind, grp string, m Method, o Outcome,
	resolved []*string, detail string) error {
	return s.recordAttr(ctx, tx, ch, kind, grp, m, o, resolved, detail, attribution{})
}

// recordAttr is record with the attribution of the local values.
func (s *Session) recordAttr(ctx context.Context, tx pgx.Tx, ch *change, kind Kind, grp string, m Method, o Outcome,
	resolved []*string, detail string, local attribution) error {
	r := s.newRecord(ch, kind, grp, m, o, resolved, detail)
	r.LocalSite = local.site
	if local.ts != nil {
		r.LocalCommitTime = local.ts.UTC()
	}
	var lts any
	if local.ts != nil {
		lts = *local.ts
	}
	js := func(row Row) any {
		if row == nil {
			return nil
		}
		b, _ := json.Marshal(row)
		return string(b)
	}
	key, _ := json.Marshal(r.Key)
	var lsn any
	if r.CommitLSN != "" {
		lsn = r.CommitLSN
	}
	err := tx.QueryRow(ctx, `INSERT INTO `+s.e.conflicts+` (detected_at, site, remote_site, consumer, table_name, key, kind,
	column_group, method, outcome, local_row, remote_before, remote_after, resolved, commit_lsn, xid, remote_commit_ts, detail,
	local_site, local_commit_ts)
VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8, $9, $10, $11::text::jsonb, $12::text::jsonb, $13::text::jsonb,
	$14::text::jsonb, $15::text::pg_lsn, $16, $17, $18, nullif($19, ''), $20) RETURNING id`,
		r.DetectedAt, r.Site, r.RemoteSite, r.Consumer, r.Table, string(key), string(r.Kind), r.Group, string(r.Method),
		string(r.Outcome), js(r.Local), js(r.RemoteBefore), js(r.RemoteAfter), js(r.Resolved), lsn, int64(r.Xid),
		r.CommitTime, r.Detail, r.LocalSite, lts).Scan(&r.ID)
	if err != nil {
		return ch.ev.Wrap(fmt.Errorf("record conflict in %s: %w", s.e.conflicts, err))
	}
	s.recs = append(s.recs, r)
	return nil
}

// declaredDetail is the detail of a conflict resolved by a declared action.
const declaredDetail = "resolved by the action declared in tributary_conflict_actions"

// useAction deletes the declared action that decided ch's conflict, so
// that it is used once, when tx commits.
func (s *Session) useAction(ctx context.Context, tx pgx.Tx, ch *change) error {
	args := append(append([]any{ch.rt.name}, ch.keyParams...), ch.ev.Txn.CommitLSN.String())
	q := "DELETE FROM " + s.e.actions + " WHERE table_name = $1 AND key = " + ch.rt.actionKeyExpr(1) +
		" AND commit_lsn = $" + strconv.Itoa(len(ch.keyParams)+2) + "::text::pg_lsn"
	if _, err := tx.Exec(ctx, q, args...); err != nil {
		return ch.ev.Wrap(fmt.Errorf("use the declared action in %s: %w", s.e.actions, err))
	}
	return nil
}

// stop notifies at once (the transaction will roll back) and returns the
// permanent error that stops the consumer for a person. The error shows
// both versions and how to declare the resolution.
func (s *Session) stop(ch *change, kind Kind, grp string, m Method, what string) error {
	r := s.newRecord(ch, kind, grp, m, OutcomeStopped, nil, what)
	if s.e.cfg.OnRecord != nil {
		s.e.cfg.OnRecord(r)
	}
	if s.e.outbox != nil {
		s.e.outbox.recordStop(r)
	}
	s.e.disp.send([]Record{r})
	js := func(row Row) string {
		b, _ := json.Marshal(row)
		return string(b)
	}
	return ch.ev.Wrap(consumer.Permanent(fmt.Errorf("%w: %s (%s, site %s, change from %s); local row %s; remote before %s; "+
		"remote after %s; resolve it at this site: INSERT INTO %s (table_name, key, commit_lsn, action) VALUES "+
		"('%s', '%s', '%s', 'keep-local' or 'apply-remote'), or make the row equal to the remote before- or after-image; "+
		"then restart the consumer", ErrUnresolved, what, kind, s.e.cfg.Site, ch.site, js(r.Local), js(r.RemoteBefore),
		js(r.RemoteAfter), s.e.actions, r.Table, js(r.Key), r.CommitLSN)))
}

// ErrUnresolved is wrapped by the error of a conflict whose method is error.
var ErrUnresolved = errors.New("conflict needs a person")
