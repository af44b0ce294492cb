package verify

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/postgres/pgtarget"
	"github.com/tributary-cdc/tributary/schemas"
)

// ErrNoCheckpoint is returned (wrapped) by Target.Applied while the consumer
// has not written a checkpoint.
var ErrNoCheckpoint = errors.New("no checkpoint")

// sessionParams make both sides print values identically, and as the
// producer prints them (schemas.SessionParams): with --transforms, source
// rows are parsed by the contract's own conversion (schemas), which reads
// intervals in the iso_8601 style the producer sets.
func sessionParams() map[string]string {
	p := schemas.SessionParams()
	p["application_name"] = "tributary-verify"
	return p
}

// connect opens one connection with the comparison's session settings.
func connect(ctx context.Context, dsn, role string) (*pgx.Conn, string, error) {
	cc, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, "", &InputError{fmt.Errorf("%s DSN: %w", role, err)}
	}
	desc := fmt.Sprintf("%s@%s:%d/%s", cc.User, cc.Host, cc.Port, cc.Database)
	for k, v := range sessionParams() {
		cc.RuntimeParams[k] = v
	}
	c, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, desc, fmt.Errorf("connect %s %s: %w", role, desc, err)
	}
	return c, desc, nil
}

// pgSnapshot is a REPEATABLE READ, READ ONLY transaction on PostgreSQL.
type pgSnapshot struct {
	conn *pgx.Conn
	tx   pgx.Tx
	role string // "source" or "target"
	cps  string // schema of the checkpoint table; "" on the source
	name string // consumer name
	// hist, when set, makes the snapshot read history tables: a table
	// resolves to its history table, of which only the current versions
	// are compared (see historyTarget).
	hist *historyLayout
}

func beginSnapshot(ctx context.Context, c *pgx.Conn, role string) (*pgSnapshot, error) {
	tx, err := c.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("%s: begin repeatable read: %w", role, err)
	}
	return &pgSnapshot{conn: c, tx: tx, role: role}, nil
}

// Close ends the transaction and closes the connection.
func (s *pgSnapshot) Close(ctx context.Context) error {
	_ = s.tx.Rollback(ctx)
	return s.conn.Close(ctx)
}

// Applied reads the checkpoint inside the snapshot.
func (s *pgSnapshot) Applied(ctx context.Context) (Position, error) {
	if s.cps == "" {
		return Position{}, nil
	}
	return readPosition(ctx, s.tx, s.cps, s.name)
}

// readPosition reads the transactional-mode checkpoint of consumer name in
// the checkpoint table of schema, through the PostgreSQL sinks' reader.
func readPosition(ctx context.Context, q pgtarget.Querier, schema, name string) (Position, error) {
	rows, _, err := pgtarget.ReadCheckpoints(ctx, q, schema, name)
	if errors.Is(err, consumer.ErrNoCheckpointTable) {
		return Position{}, fmt.Errorf("%w: table %s does not exist yet", ErrNoCheckpoint, pgtarget.CheckpointTable(schema))
	}
	if err != nil {
		return Position{}, err
	}
	return positionOf(rows, pgtarget.CheckpointTable(schema), name)
}

// positionOf is the transactional-mode position of consumer name in its
// checkpoint rows (of table, for messages): the highest commit LSN of its
// transactions-topic rows, and the latest commit time among them.
func positionOf(rows []consumer.CheckpointRow, table, name string) (Position, error) {
	if len(rows) == 0 {
		return Position{}, fmt.Errorf("%w: %s has no rows for consumer %q", ErrNoCheckpoint, table, name)
	}
	var kinds []string
	p := Position{}
	for _, r := range rows {
		if !slices.Contains(kinds, string(r.Stream.Kind)) {
			kinds = append(kinds, string(r.Stream.Kind))
		}
		if r.Stream.Kind != consumer.StreamTransactions || r.CommitLSN == 0 {
			continue
		}
		p.Known = true
		p.CommitLSN = max(p.CommitLSN, r.CommitLSN)
		if r.CommitTime.After(p.CommitTime) {
			p.CommitTime = r.CommitTime
		}
	}
	if !p.Known {
		slices.Sort(kinds)
		return Position{}, fmt.Errorf("consumer %q has checkpoint rows of kind %s but none of kind 'transactions': "+
			"verify needs a consumer in transactional mode (per-key mode has no single applied LSN)", name, strings.Join(kinds, ", "))
	}
	return p, nil
}

// transactionalConsumers are the consumers of rows with a transactional
// checkpoint, sorted.
func transactionalConsumers(rows []consumer.CheckpointRow) []string {
	var names []string
	for _, r := range rows {
		if r.Stream.Kind == consumer.StreamTransactions && !slices.Contains(names, r.Consumer) {
			names = append(names, r.Consumer)
		}
	}
	slices.Sort(names)
	return names
}

// Table resolves want on this side.
func (s *pgSnapshot) Table(ctx context.Context, want *TableDef) (*TableDef, error) {
	schema, name := want.Schema, want.Name
	if s.hist != nil {
		schema, name = s.hist.table(schema, name)
	}
	cols, err := s.columns(ctx, schema, name)
	if err != nil {
		return nil, err
	}
	if cols == nil {
		return nil, nil
	}
	byName := map[string]Column{}
	for _, c := range cols {
		byName[c.Name] = c
	}
	t := &TableDef{Schema: schema, Name: name}
	var missing []string
	for _, c := range want.Columns {
		got, ok := byName[c.Name]
		if !ok {
			missing = append(missing, c.Name)
			continue
		}
		t.Columns = append(t.Columns, got)
	}
	if len(missing) > 0 {
		return nil, &SchemaError{Table: want.String(), Reason: "the target lacks column(s) " + strings.Join(missing, ", ")}
	}
	for _, k := range want.Key {
		got := byName[k.Name]
		if got.Collation != k.Collation {
			got.CompareCollation = "C"
		}
		t.Key = append(t.Key, got)
	}
	return t, nil
}

// columns lists a table's columns with types and effective collations; nil
// when the table does not exist.
func (s *pgSnapshot) columns(ctx context.Context, schema, table string) ([]Column, error) {
	rows, err := s.tx.Query(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod),
	CASE WHEN a.attcollation = 0 THEN ''
	     WHEN co.collname = 'default' THEN (SELECT datcollate FROM pg_database WHERE datname = current_database())
	     ELSE co.collname END
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum`, schema, table)
	if err != nil {
		return nil, fmt.Errorf("%s: columns of %s.%s: %w", s.role, schema, table, err)
	}
	var cols []Column
	for rows.Next() {
		var c Column
		if err := rows.Scan(&c.Name, &c.Type, &c.Collation); err != nil {
			return nil, fmt.Errorf("%s: columns of %s.%s: %w", s.role, schema, table, err)
		}
		cols = append(cols, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: columns of %s.%s: %w", s.role, schema, table, err)
	}
	return cols, nil
}

// sourceTable reads a source table with its replication key: the primary
// key, else the replica identity index.
func (s *pgSnapshot) sourceTable(ctx context.Context, schema, table string) (*TableDef, error) {
	cols, err := s.columns(ctx, schema, table)
	if err != nil {
		return nil, err
	}
	if cols == nil {
		return nil, &InputError{fmt.Errorf("source table %s.%s does not exist", schema, table)}
	}
	t := &TableDef{Schema: schema, Name: table, Columns: cols}
	rows, err := s.tx.Query(ctx, `SELECT a.attname
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
WHERE n.nspname = $1 AND c.relname = $2
  AND i.indexrelid = (SELECT i2.indexrelid FROM pg_index i2 WHERE i2.indrelid = c.oid AND (i2.indisprimary OR i2.indisreplident)
                      ORDER BY i2.indisprimary DESC LIMIT 1)
ORDER BY k.ord`, schema, table)
	if err != nil {
		return nil, fmt.Errorf("source: key of %s.%s: %w", schema, table, err)
	}
	byName := map[string]Column{}
	for _, c := range cols {
		byName[c.Name] = c
	}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, fmt.Errorf("source: key of %s.%s: %w", schema, table, err)
		}
		t.Key = append(t.Key, byName[name])
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("source: key of %s.%s: %w", schema, table, err)
	}
	if len(t.Key) == 0 {
		return nil, &InputError{fmt.Errorf("source table %s.%s has no primary key or replica identity index; "+
			"add one (ALTER TABLE ... ADD PRIMARY KEY, or REPLICA IDENTITY USING INDEX) so rows can be matched", schema, table)}
	}
	return t, nil
}

// sql helpers

func qualified(t *TableDef) string {
	return schemas.QuoteIdent(t.Schema) + "." + schemas.QuoteIdent(t.Name)
}

// from is the FROM item of t, aliased t: the table itself, or the current
// versions of a history table.
func (s *pgSnapshot) from(t *TableDef) string {
	if s.hist != nil {
		return "(SELECT * FROM " + qualified(t) + " h WHERE " + s.hist.current("h") + ") t"
	}
	return qualified(t) + " t"
}

func keyExpr(c Column) string {
	e := "t." + schemas.QuoteIdent(c.Name)
	if c.CompareCollation != "" {
		e += " COLLATE " + schemas.QuoteIdent(c.CompareCollation)
	}
	return e
}

// keyList is the key as a row, for ORDER BY and row comparisons.
func keyList(t *TableDef) string {
	parts := make([]string, len(t.Key))
	for i, c := range t.Key {
		parts[i] = keyExpr(c)
	}
	return strings.Join(parts, ", ")
}

// keyText selects the key columns as text.
func keyText(t *TableDef) string {
	parts := make([]string, len(t.Key))
	for i, c := range t.Key {
		parts[i] = "t." + schemas.QuoteIdent(c.Name) + "::text"
	}
	return strings.Join(parts, ", ")
}

// rowHash is the signed 64-bit row hash, as SQL.
func rowHash(t *TableDef) string {
	parts := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		parts[i] = "t." + schemas.QuoteIdent(c.Name)
	}
	return hashOf(parts)
}

// hashOf is the signed 64-bit hash of the row of the text forms of exprs.
func hashOf(exprs []string) string {
	parts := make([]string, len(exprs))
	for i, e := range exprs {
		parts[i] = e + "::text"
	}
	return "('x' || substr(md5(ROW(" + strings.Join(parts, ", ") + ")::text), 1, 16))::bit(64)::bigint"
}

// keyRange renders r as a predicate on a key: above r.Lo and at or below
// r.Hi, "true" when r has no bound. bound is the dialect's part: the key
// compared with vals, as rows in key order, by op (">" or "<="), and the
// parameters that takes; it is called for r.Lo first.
func keyRange(r Range, bound func(op string, vals []string) (string, []any)) (string, []any) {
	var conds []string
	var args []any
	for _, b := range []struct {
		op   string
		vals []string
	}{{">", r.Lo}, {"<=", r.Hi}} {
		if b.vals == nil {
			continue
		}
		c, a := bound(b.op, b.vals)
		conds = append(conds, c)
		args = append(args, a...)
	}
	if len(conds) == 0 {
		return "true", nil
	}
	return strings.Join(conds, " AND "), args
}

// where renders r as a predicate, with a row comparison; its parameters
// start at $n.
func where(t *TableDef, r Range, n int) (string, []any) {
	return keyRange(r, func(op string, vals []string) (string, []any) {
		ps := make([]string, len(t.Key))
		var args []any
		for i, c := range t.Key {
			p := fmt.Sprintf("$%d::%s", n, c.Type)
			if c.CompareCollation != "" {
				p += " COLLATE " + schemas.QuoteIdent(c.CompareCollation)
			}
			ps[i] = p
			args = append(args, vals[i])
			n++
		}
		return "(" + keyList(t) + ") " + op + " (" + strings.Join(ps, ", ") + ")", args
	})
}

// Checksum aggregates r on the server.
func (s *pgSnapshot) Checksum(ctx context.Context, t *TableDef, r Range) (Sum, error) {
	w, args := where(t, r, 1)
	q := "SELECT count(*), coalesce(sum(" + rowHash(t) + "::numeric), 0)::text FROM " + s.from(t) + " WHERE " + w
	var sum Sum
	if err := s.tx.QueryRow(ctx, q, args...).Scan(&sum.Rows, &sum.Hash); err != nil {
		return Sum{}, fmt.Errorf("%s: checksum of %s: %w", s.role, t, err)
	}
	return sum, nil
}

// Rows streams key and row hash in key order.
func (s *pgSnapshot) Rows(ctx context.Context, t *TableDef, r Range, fn func([]string, string) error) error {
	w, args := where(t, r, 1)
	q := "SELECT " + keyText(t) + ", " + rowHash(t) + "::text FROM " + s.from(t) + " WHERE " + w + " ORDER BY " + keyList(t)
	rows, err := s.tx.Query(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("%s: rows of %s: %w", s.role, t, err)
	}
	defer rows.Close()
	n := len(t.Key)
	for rows.Next() {
		vals := make([]string, n+1)
		ptrs := make([]any, n+1)
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return fmt.Errorf("%s: rows of %s: %w", s.role, t, err)
		}
		if err := fn(vals[:n], vals[n]); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("%s: rows of %s: %w", s.role, t, err)
	}
	return nil
}

// Boundaries picks split keys in one ordered pass over r.
func (s *pgSnapshot) Boundaries(ctx context.Context, t *TableDef, r Range, rows int64, n int) ([][]string, error) {
	step := (rows + int64(n) - 1) / int64(n)
	if step < 1 {
		step = 1
	}
	w, args := where(t, r, 2)
	cols := make([]string, len(t.Key))
	for i := range t.Key {
		cols[i] = fmt.Sprintf("s.k%d", i)
	}
	inner := make([]string, len(t.Key))
	for i, c := range t.Key {
		inner[i] = fmt.Sprintf("t.%s::text AS k%d", schemas.QuoteIdent(c.Name), i)
	}
	q := "SELECT " + strings.Join(cols, ", ") + " FROM (SELECT " + strings.Join(inner, ", ") +
		", row_number() OVER (ORDER BY " + keyList(t) + ") AS rn FROM " + s.from(t) + " WHERE " + w +
		") s WHERE s.rn % $1 = 0 AND s.rn < " + fmt.Sprint(rows) + " ORDER BY s.rn"
	res, err := s.tx.Query(ctx, q, append([]any{step}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("%s: key boundaries of %s: %w", s.role, t, err)
	}
	defer res.Close()
	var out [][]string
	for res.Next() {
		vals := make([]string, len(t.Key))
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := res.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("%s: key boundaries of %s: %w", s.role, t, err)
		}
		out = append(out, vals)
	}
	if err := res.Err(); err != nil {
		return nil, fmt.Errorf("%s: key boundaries of %s: %w", s.role, t, err)
	}
	return out, nil
}

// postgresTarget is the PostgreSQL sink's Target.
type postgresTarget struct {
	dsn  string
	desc string
	name string
	cps  string         // schema of the checkpoint table
	conn *pgx.Conn      // for polling the checkpoint
	hist *historyLayout // set for a history sink
}

// NewPostgresTarget connects to a PostgreSQL sink's database. consumer is
// the consumer's --name ("" when no consumer is waited for) and
// checkpointSchema the schema of its tributary_checkpoint table.
func NewPostgresTarget(ctx context.Context, dsn, consumer, checkpointSchema string) (Target, error) {
	if checkpointSchema == "" {
		checkpointSchema = "public"
	}
	c, desc, err := connect(ctx, dsn, "target")
	if err != nil {
		return nil, err
	}
	return &postgresTarget{dsn: dsn, desc: desc, name: consumer, conn: c, cps: checkpointSchema}, nil
}

func (p *postgresTarget) Describe() string { return p.desc }

func (p *postgresTarget) Applied(ctx context.Context) (Position, error) {
	return readPosition(ctx, p.conn, p.cps, p.name)
}

func (p *postgresTarget) Snapshot(ctx context.Context) (Snapshot, error) {
	c, _, err := connect(ctx, p.dsn, "target")
	if err != nil {
		return nil, err
	}
	s, err := beginSnapshot(ctx, c, "target")
	if err != nil {
		c.Close(ctx)
		return nil, err
	}
	if p.name != "" {
		s.cps, s.name = p.cps, p.name
	}
	s.hist = p.hist
	return s, nil
}

// Hasher opens a connection of its own to the target database.
func (p *postgresTarget) Hasher(ctx context.Context) (RowHasher, error) {
	c, _, err := connect(ctx, p.dsn, "target")
	if err != nil {
		return nil, err
	}
	return &pgHasher{conn: c}, nil
}

// pgHasher computes row hashes of text literals in a PostgreSQL target.
type pgHasher struct {
	conn *pgx.Conn
}

// Hash casts each value to its column's type in t, then hashes and prints
// the key as the target's Checksum and Rows do.
func (h *pgHasher) Hash(ctx context.Context, t *TableDef, rows [][]any, fn func(key []string, hash int64) error) error {
	if len(rows) == 0 {
		return nil
	}
	n := len(t.Columns)
	cols := make([][]*string, n)
	for i := range cols {
		cols[i] = make([]*string, len(rows))
	}
	for r, row := range rows {
		for i, v := range row {
			if s, ok := v.(string); ok {
				cols[i][r] = &s
			}
		}
	}
	typed := make([]string, n)
	params := make([]string, n)
	names := make([]string, n)
	byName := map[string]int{}
	args := make([]any, n)
	for i, c := range t.Columns {
		typed[i] = fmt.Sprintf("v.c%d::%s", i, c.Type)
		params[i] = fmt.Sprintf("$%d::text[]", i+1)
		names[i] = fmt.Sprintf("c%d", i)
		byName[c.Name] = i
		args[i] = cols[i]
	}
	keys := make([]string, len(t.Key))
	for i, k := range t.Key {
		keys[i] = "(" + typed[byName[k.Name]] + ")::text"
	}
	q := "SELECT " + strings.Join(keys, ", ") + ", " + hashOf(typed) + " FROM unnest(" + strings.Join(params, ", ") +
		") WITH ORDINALITY AS v(" + strings.Join(names, ", ") + ", ord) ORDER BY v.ord"
	res, err := h.conn.Query(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("target: hash transformed rows of %s: %w", t, err)
	}
	defer res.Close()
	for res.Next() {
		key := make([]string, len(t.Key))
		var hash int64
		ptrs := make([]any, len(key)+1)
		for i := range key {
			ptrs[i] = &key[i]
		}
		ptrs[len(key)] = &hash
		if err := res.Scan(ptrs...); err != nil {
			return fmt.Errorf("target: hash transformed rows of %s: %w", t, err)
		}
		if err := fn(key, hash); err != nil {
			return err
		}
	}
	if err := res.Err(); err != nil {
		return fmt.Errorf("target: hash transformed rows of %s: %w", t, err)
	}
	return nil
}

func (h *pgHasher) Close(ctx context.Context) error { return h.conn.Close(ctx) }

func (p *postgresTarget) Close(ctx context.Context) error { return p.conn.Close(ctx) }

// Consumers lists the consumer names with a transactional checkpoint in the
// target's checkpoint table; nil when the table does not exist.
func Consumers(ctx context.Context, t Target) ([]string, error) {
	if l, ok := t.(interface {
		consumers(context.Context) ([]string, error)
	}); ok {
		return l.consumers(ctx)
	}
	return nil, nil
}

func (p *postgresTarget) consumers(ctx context.Context) ([]string, error) {
	rows, _, err := pgtarget.ReadCheckpoints(ctx, p.conn, p.cps, "")
	if errors.Is(err, consumer.ErrNoCheckpointTable) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list consumers: %w", err)
	}
	return transactionalConsumers(rows), nil
}

// CheckDSN parses a PostgreSQL DSN without connecting; role ("source" or
// "target") names it in the error, which never holds the password.
func CheckDSN(dsn, role string) error {
	if _, err := pgx.ParseConfig(dsn); err != nil {
		return &InputError{fmt.Errorf("%s DSN: %w", role, err)}
	}
	return nil
}
