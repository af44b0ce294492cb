package reseed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tributary-cdc/tributary/consumer/conflict"
	"github.com/tributary-cdc/tributary/schemas"
)

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

// publishedTables lists the donor publication's tables, as q sees them.
func (r *run) publishedTables(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) ([]pubTable, error) {
	pub := r.cfg.Publication
	rows, err := q.Query(ctx, `SELECT schemaname, tablename, attnames, coalesce(rowfilter, '')
		FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2`, pub)
	if err != nil {
		return nil, fmt.Errorf("list the tables of publication %s on the donor: %w", pub, err)
	}
	defer rows.Close()
	var out []pubTable
	for rows.Next() {
		var t pubTable
		var cols []string
		if err := rows.Scan(&t.schema, &t.name, &cols, &t.filter); err != nil {
			return nil, fmt.Errorf("list the tables of publication %s: %w", pub, err)
		}
		t.cols = cols
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, refuse("publication %s on the donor has no tables (or does not exist)", pub)
	}
	return out, nil
}

// checkTargetTables checks that every table exists at the target and,
// without Force, is empty.
func (r *run) checkTargetTables(ctx context.Context, tgt *pgx.Conn, tables []pubTable) error {
	for _, t := range tables {
		var exists bool
		if err := tgt.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, t.qualified()).Scan(&exists); err != nil {
			return fmt.Errorf("look for table %s on the target: %w", t, err)
		}
		if !exists {
			return refuse("table %s does not exist on the target: create the schema first "+
				"(pg_dump --schema-only of the donor, without its publications and subscriptions)", t)
		}
		if r.cfg.Force {
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
func (r *run) copyTable(ctx context.Context, stx, ttx pgx.Tx, t pubTable) (int64, error) {
	sel := "SELECT " + t.selectList() + " FROM " + t.qualified()
	if t.filter != "" {
		sel += " WHERE " + t.filter
	}
	if t.query != "" {
		sel = t.query
	}
	start := time.Now()
	pr, pw := io.Pipe()
	cr := &countingReader{r: pr, out: r.cfg.Progress, table: t.String(), next: time.Now().Add(2 * time.Second)}
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

// copyRowMeta copies the donor's tributary_row_meta (who last wrote each
// column group of a row the donor's consumers applied, and when) over the
// target's, so that latest and earliest judge the copied rows as the donor
// does. A donor without the table has nothing to copy; a target without it
// gets a warning (pg_dump --schema-only of the donor creates it).
func (r *run) copyRowMeta(ctx context.Context, stx, ttx pgx.Tx) error {
	t := pubTable{schema: r.cfg.MetaSchema, name: "tributary_row_meta", cols: conflict.RowMetaCopyColumns,
		query: conflict.RowMetaCopyQuery(r.cfg.MetaSchema)}
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
