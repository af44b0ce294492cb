//go:build cgo

package verify

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"

	_ "github.com/duckdb/duckdb-go/v2" // the "duckdb" database/sql driver

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/duckdb"
	"github.com/tributary-cdc/tributary/schemas"
)

// duckTarget is the DuckDB warehouse sink's Target: its current-state
// tables (<schema>.<table>, one row per live key; docs/SINKS.md).
//
// DuckDB values are not PostgreSQL's text forms, so the DuckDB side of a
// comparison prints each value as a PostgreSQL literal in DuckDB SQL and has
// the source database hash it, cast to the source column's type (a
// RowHasher on the source): both sides are then hashed by the same
// PostgreSQL functions. Only the DuckDB rows of one batch are in memory.
//
// DuckDB lets one process write a database file, and no other process open
// it meanwhile: verify opens the file read-only, so the consumer must not
// hold it (run it with --until-caught-up, or stop it). While it does, the
// checkpoint reads as not there yet.
type duckTarget struct {
	path, name, sourceDSN string
}

// NewDuckDBTarget compares with the DuckDB file of a duckdb sink (--sink
// duckdb --duckdb-file path). consumer is the consumer's --name ("" when no
// consumer is waited for); sourceDSN is the source, whose database hashes
// the DuckDB rows.
func NewDuckDBTarget(ctx context.Context, path, consumer, sourceDSN string) (Target, error) {
	if path == "" {
		return nil, &InputError{errors.New("--sink duckdb needs --duckdb-file")}
	}
	t := &duckTarget{path: path, name: consumer, sourceDSN: sourceDSN}
	db, err := t.open()
	if err != nil {
		return nil, err
	}
	db.Close()
	return t, nil
}

func (d *duckTarget) Describe() string { return "duckdb " + d.path }

func (d *duckTarget) open() (*sql.DB, error) {
	db, err := sql.Open("duckdb", d.path+"?access_mode=READ_ONLY")
	if err == nil {
		err = db.Ping()
	}
	if err != nil {
		if db != nil {
			db.Close()
		}
		return nil, fmt.Errorf("open duckdb %s read-only: %w", d.path, err)
	}
	return db, nil
}

// Applied opens the file for each read, so that it holds it only briefly.
func (d *duckTarget) Applied(ctx context.Context) (Position, error) {
	db, err := d.open()
	if err != nil {
		if strings.Contains(err.Error(), "lock") {
			return Position{}, fmt.Errorf("%w: the file is in use (a running consumer holds it; verify reads it when the consumer "+
				"has stopped or runs --until-caught-up): %v", ErrNoCheckpoint, err)
		}
		return Position{}, err
	}
	defer db.Close()
	return duckPosition(ctx, db, d.name)
}

// duckPosition reads the transactional checkpoint of consumer name through
// the DuckDB sink's reader.
func duckPosition(ctx context.Context, q duckdb.Querier, name string) (Position, error) {
	rows, err := duckdb.ReadCheckpoints(ctx, q, name)
	if errors.Is(err, consumer.ErrNoCheckpointTable) {
		return Position{}, fmt.Errorf("%w: main.tributary_checkpoint does not exist yet", ErrNoCheckpoint)
	}
	if err != nil {
		return Position{}, err
	}
	return positionOf(rows, "main.tributary_checkpoint", name)
}

func (d *duckTarget) Snapshot(ctx context.Context) (Snapshot, error) {
	db, err := d.open()
	if err != nil {
		return nil, err
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("duckdb %s: %w", d.path, err)
	}
	s := &duckSnapshot{d: d, db: db, conn: conn, want: map[string]*TableDef{}}
	if _, err := conn.ExecContext(ctx, `BEGIN TRANSACTION`); err != nil {
		s.Close(ctx)
		return nil, fmt.Errorf("duckdb %s: begin: %w", d.path, err)
	}
	h, err := d.hasher(ctx)
	if err != nil {
		s.Close(ctx)
		return nil, err
	}
	s.h = h
	return s, nil
}

// hasher is a connection to the source, which hashes the DuckDB rows.
func (d *duckTarget) hasher(ctx context.Context) (*pgHasher, error) {
	c, _, err := connect(ctx, d.sourceDSN, "source")
	if err != nil {
		return nil, err
	}
	return &pgHasher{conn: c}, nil
}

// Hasher hashes transformed source rows in the source database, as the
// DuckDB rows are hashed (see hashDef).
func (d *duckTarget) Hasher(ctx context.Context) (RowHasher, error) {
	return d.hasher(ctx)
}

func (d *duckTarget) Close(context.Context) error { return nil }

// duckSnapshot is one read-only DuckDB transaction.
type duckSnapshot struct {
	d    *duckTarget
	db   *sql.DB
	conn *sql.Conn
	h    *pgHasher
	want map[string]*TableDef // the source's definition of each resolved table
}

func (s *duckSnapshot) Close(ctx context.Context) error {
	if s.h != nil {
		s.h.Close(ctx)
	}
	s.conn.Close()
	return s.db.Close()
}

func (s *duckSnapshot) Applied(ctx context.Context) (Position, error) {
	if s.d.name == "" {
		return Position{}, nil
	}
	return duckPosition(ctx, s.conn, s.d.name)
}

// Table resolves want; the columns keep the source's types (the DuckDB
// rows are cast to them), text keys compare in byte order as DuckDB's do.
func (s *duckSnapshot) Table(ctx context.Context, want *TableDef) (*TableDef, error) {
	rows, err := s.conn.QueryContext(ctx, `SELECT column_name, data_type FROM duckdb_columns()
		WHERE database_name = current_database() AND schema_name = ? AND table_name = ? ORDER BY column_index`, want.Schema, want.Name)
	if err != nil {
		return nil, fmt.Errorf("duckdb %s: columns of %s: %w", s.d.path, want, err)
	}
	defer rows.Close()
	duckType := map[string]string{}
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			return nil, fmt.Errorf("duckdb %s: columns of %s: %w", s.d.path, want, err)
		}
		duckType[name] = typ
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("duckdb %s: columns of %s: %w", s.d.path, want, err)
	}
	if len(duckType) == 0 {
		return nil, nil
	}
	t := &TableDef{Schema: want.Schema, Name: want.Name}
	var missing []string
	for _, c := range want.Columns {
		typ, ok := duckType[c.Name]
		if !ok {
			missing = append(missing, c.Name)
		}
		t.Columns = append(t.Columns, Column{Name: c.Name, Type: typ})
	}
	if len(missing) > 0 {
		return nil, &SchemaError{Table: want.String(), Reason: "the DuckDB table lacks column(s) " + strings.Join(missing, ", ")}
	}
	for _, k := range want.Key {
		c := Column{Name: k.Name, Type: duckType[k.Name], Collation: "C"}
		if k.Collation != "" && k.Collation != "C" && k.Collation != "POSIX" {
			c.CompareCollation = "C" // DuckDB orders text by bytes
		}
		t.Key = append(t.Key, c)
	}
	s.want[t.String()] = want
	return t, nil
}

// hashDef is the definition t's rows are hashed with: the table the source
// side wants (PostgreSQL types), since the source database hashes them.
func (s *duckSnapshot) hashDef(t *TableDef) *TableDef {
	if w := s.want[t.String()]; w != nil {
		return w
	}
	return t
}

// pgLiteral prints DuckDB expression x of DuckDB type typ as the text of a
// PostgreSQL literal of the same value.
func pgLiteral(x, typ string) string {
	switch {
	case typ == "BLOB":
		return `'\x' || lower(hex(` + x + `))`
	case strings.HasSuffix(typ, "[]"):
		el := `CASE WHEN e IS NULL THEN 'NULL' ELSE '"' || replace(replace(CAST(e AS VARCHAR), '\', '\\'), '"', '\"') || '"' END`
		return `'{' || coalesce(list_aggregate(list_transform(` + x + `, e -> ` + el + `), 'string_agg', ','), '') || '}'`
	}
	return "CAST(" + x + " AS VARCHAR)"
}

// scan streams the rows of r in key order to the source for hashing.
func (s *duckSnapshot) scan(ctx context.Context, t *TableDef, r Range, fn func([]string, int64) error) error {
	want := s.want[t.String()]
	if want == nil {
		return fmt.Errorf("duckdb: table %s was not resolved", t)
	}
	cols := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		cols[i] = pgLiteral("t."+schemas.QuoteIdent(c.Name), c.Type)
	}
	keys := make([]string, len(t.Key))
	for i, k := range t.Key {
		keys[i] = "t." + schemas.QuoteIdent(k.Name)
	}
	w, args := duckWhere(t, r)
	q := "SELECT " + strings.Join(cols, ", ") + " FROM " + qualified(t) + " t WHERE " + w + " ORDER BY " + strings.Join(keys, ", ")
	rows, err := s.conn.QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("duckdb %s: rows of %s: %w", s.d.path, t, err)
	}
	defer rows.Close()
	var batch [][]any
	flush := func() error {
		err := s.h.Hash(ctx, want, batch, fn)
		batch = batch[:0]
		return err
	}
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return fmt.Errorf("duckdb %s: rows of %s: %w", s.d.path, t, err)
		}
		row := make([]any, len(vals))
		for i, v := range vals {
			if v.Valid {
				row[i] = v.String
			}
		}
		batch = append(batch, row)
		if len(batch) >= hashBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("duckdb %s: rows of %s: %w", s.d.path, t, err)
	}
	if len(batch) > 0 {
		return flush()
	}
	return nil
}

// duckWhere renders r as a DuckDB predicate on the key, lexicographically,
// with the row comparison spelt out.
func duckWhere(t *TableDef, r Range) (string, []any) {
	return keyRange(r, func(op string, vals []string) (string, []any) {
		// (k1 op v1) OR (k1 = v1 AND k2 op v2) ..., op strict but the
		// last, which is op itself (> or <=).
		var ors []string
		var args []any
		for i := range t.Key {
			var ands []string
			for j := 0; j < i; j++ {
				ands = append(ands, fmt.Sprintf("t.%s = CAST(? AS %s)", schemas.QuoteIdent(t.Key[j].Name), t.Key[j].Type))
				args = append(args, vals[j])
			}
			o := op
			if i < len(t.Key)-1 {
				o = strings.TrimSuffix(op, "=")
			}
			ands = append(ands, fmt.Sprintf("t.%s %s CAST(? AS %s)", schemas.QuoteIdent(t.Key[i].Name), o, t.Key[i].Type))
			args = append(args, vals[i])
			ors = append(ors, "("+strings.Join(ands, " AND ")+")")
		}
		return "(" + strings.Join(ors, " OR ") + ")", args
	})
}

func (s *duckSnapshot) Checksum(ctx context.Context, t *TableDef, r Range) (Sum, error) {
	var acc hashSum
	err := s.scan(ctx, t, r, func(_ []string, h int64) error { acc.add(h); return nil })
	if err != nil {
		return Sum{}, err
	}
	return acc.sum(), nil
}

func (s *duckSnapshot) Rows(ctx context.Context, t *TableDef, r Range, fn func([]string, string) error) error {
	return s.scan(ctx, t, r, func(key []string, h int64) error { return fn(key, strconv.FormatInt(h, 10)) })
}

func (s *duckSnapshot) Boundaries(context.Context, *TableDef, Range, int64, int) ([][]string, error) {
	return nil, errors.New("duckdb: key boundaries are taken on the source")
}

// consumers lists the consumers with a transactional checkpoint in the file.
func (d *duckTarget) consumers(ctx context.Context) ([]string, error) {
	db, err := d.open()
	if err != nil {
		return nil, err
	}
	defer db.Close()
	rows, err := duckdb.ReadCheckpoints(ctx, db, "")
	if errors.Is(err, consumer.ErrNoCheckpointTable) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("duckdb %s: list consumers: %w", d.path, err)
	}
	return transactionalConsumers(rows), nil
}
