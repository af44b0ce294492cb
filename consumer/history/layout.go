package history

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/postgres/pgtarget"
	"github.com/tributary-cdc/tributary/schemas"
)

// MetaColumns are the columns the sink adds after the source columns of a
// history table, in order.
var metaColumns = []string{"version", "op", "commit_lsn", "commit_ts", "xid", "position", "valid_from", "valid_to"}

// maxIdent is PostgreSQL's identifier length (NAMEDATALEN - 1).
const maxIdent = 63

// layout is the history table of one value schema: its names and the SQL
// statements the writer sends. It is immutable.
type layout struct {
	t      *consumer.Table
	schema string
	name   string // history table name, unquoted
	qname  string // quoted schema.name
	ddl    []string
	insert string // appends rows and closes the versions they replace; params ord, op, lsn, ts, xid, pos, unch, columns...
	carry  string // insert that also carries unchanged values forward
	trunc  string // records a truncate; params lsn, ts, xid, pos
	nonKey []int
}

func newLayout(t *consumer.Table, schema string) (*layout, error) {
	if schema == "" {
		schema = t.Schema
	}
	l := &layout{t: t, schema: schema, name: t.Name + "_history"}
	for _, n := range []string{l.name, t.Name + "_as_of_lsn", t.Name + "_versions"} {
		if len(n) > maxIdent {
			return nil, fmt.Errorf("history table of %s: name %q is longer than %d bytes; rename the table or use another schema", t, n, maxIdent)
		}
	}
	for _, c := range t.Columns {
		for _, m := range metaColumns {
			if c.Name == m {
				return nil, fmt.Errorf("history table of %s: source column %q has the name of a history column (%s); "+
					"rename it at the source or with a transform", t, c.Name, strings.Join(metaColumns, ", "))
			}
		}
	}
	l.nonKey = t.NonKey()
	l.qname = schemas.QuoteIdent(schema) + "." + schemas.QuoteIdent(l.name)
	l.ddl = l.buildDDL()
	l.insert = l.buildInsert(false)
	l.carry = l.buildInsert(true)
	l.trunc = l.buildTruncate()
	return l, nil
}

func (l *layout) fn(suffix string) string {
	return schemas.QuoteIdent(l.schema) + "." + schemas.QuoteIdent(l.t.Name+suffix)
}

func q(s string) string { return schemas.QuoteIdent(s) }

func (l *layout) col(i int) string { return q(l.t.Columns[i].Name) }

func (l *layout) buildDDL() []string {
	h := fnv.New32a()
	h.Write([]byte(l.schema + "." + l.name))
	brin := q(fmt.Sprintf("tributary_h%08x_valid_from", h.Sum32()))
	stmts := pgtarget.EnsureColumns(l.t, l.schema, l.name,
		"version bigint NOT NULL", "op text NOT NULL", "commit_lsn pg_lsn NOT NULL", "commit_ts timestamptz NOT NULL",
		"xid bigint NOT NULL", "position bigint NOT NULL", "valid_from timestamptz NOT NULL", "valid_to timestamptz",
		"UNIQUE ("+l.t.KeyList("")+", commit_lsn, position)")
	// Room on each page for the update that closes a version, so that it is HOT.
	for i, s := range stmts {
		if strings.HasPrefix(s, "CREATE TABLE ") {
			stmts[i] += " WITH (fillfactor = 90)"
		}
	}
	stmts = append(stmts, "CREATE INDEX IF NOT EXISTS "+brin+" ON "+l.qname+" USING brin (valid_from)")
	hist := l.qname
	stmts = append(stmts,
		"CREATE OR REPLACE FUNCTION "+l.fn("_as_of")+"(at timestamptz) RETURNS SETOF "+hist+
			" LANGUAGE sql STABLE AS $tributary$ SELECT * FROM "+hist+
			" WHERE valid_from <= $1 AND (valid_to IS NULL OR valid_to > $1) AND op NOT IN ('d', 't') $tributary$",
		"COMMENT ON FUNCTION "+l.fn("_as_of")+"(timestamptz) IS "+
			quoteLit("the rows of "+l.t.String()+" as they were at the given time, with their version columns (tributary)"),
		"CREATE OR REPLACE FUNCTION "+l.fn("_as_of_lsn")+"(at pg_lsn) RETURNS SETOF "+hist+
			" LANGUAGE sql STABLE AS $tributary$ SELECT * FROM (SELECT DISTINCT ON ("+l.t.KeyList("")+") * FROM "+hist+
			" WHERE commit_lsn <= $1 ORDER BY "+l.t.KeyList("")+", commit_lsn DESC, position DESC) v WHERE op NOT IN ('d', 't') $tributary$",
		"COMMENT ON FUNCTION "+l.fn("_as_of_lsn")+"(pg_lsn) IS "+
			quoteLit("the rows of "+l.t.String()+" as they were after the source transaction that committed at the given LSN (tributary)"))
	args := make([]string, len(l.t.Key))
	where := make([]string, len(l.t.Key))
	for i, k := range l.t.Key {
		args[i] = l.t.Columns[k].SQLType
		where[i] = l.col(k) + " = $" + strconv.Itoa(i+1)
	}
	stmts = append(stmts,
		"CREATE OR REPLACE FUNCTION "+l.fn("_versions")+"("+strings.Join(args, ", ")+") RETURNS SETOF "+hist+
			" LANGUAGE sql STABLE AS $tributary$ SELECT * FROM "+hist+" WHERE "+strings.Join(where, " AND ")+
			" ORDER BY version $tributary$",
		"COMMENT ON FUNCTION "+l.fn("_versions")+"("+strings.Join(args, ", ")+") IS "+
			quoteLit("every version of one key of "+l.t.String()+", oldest first (tributary)"))
	return stmts
}

func quoteLit(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// buildInsert: the INSERT ... SELECT that numbers a chunk's rows per key,
// after the key's latest recorded version, and sets their validity. With
// carry, a column flagged unchanged in unch takes the key's last known value.
// The same statement closes each key's open version at the valid_from of the
// key's first new row (a data-modifying CTE, so the key's latest version is
// looked up once for both): both parts see the table as it was before the
// statement, and the UPDATE touches only rows the INSERT does not add.
func (l *layout) buildInsert(carry bool) string {
	n := len(l.t.Columns)
	var b strings.Builder
	cast := make([]string, n)
	names := make([]string, n)
	types := make([]string, n)
	for i, c := range l.t.Columns {
		names[i] = "c" + strconv.Itoa(i)
		types[i] = "$" + strconv.Itoa(8+i) + "::text[]"
		cast[i] = "u.c" + strconv.Itoa(i) + "::" + c.SQLType + " AS " + l.col(i)
	}
	b.WriteString("WITH u AS (SELECT u._trb_ord, u.op, u._trb_lsn::pg_lsn AS _trb_lsn, u._trb_ts, u.xid, u._trb_pos, u._trb_unch, ")
	b.WriteString(strings.Join(cast, ", "))
	b.WriteString(" FROM unnest($1::int4[], $2::text[], $3::text[], $4::timestamptz[], $5::int8[], $6::int8[], $7::text[], ")
	b.WriteString(strings.Join(types, ", "))
	b.WriteString(") AS u(_trb_ord, op, _trb_lsn, _trb_ts, xid, _trb_pos, _trb_unch, " + strings.Join(names, ", ") + ")), ")
	// With carry, the values of the key's latest version.
	var pcols []string
	if carry {
		for _, i := range l.nonKey {
			pcols = append(pcols, "p."+l.col(i)+" AS "+q("_trb_p"+strconv.Itoa(i)))
		}
	}
	extra := ""
	if len(pcols) > 0 {
		extra = ", " + strings.Join(pcols, ", ")
	}
	// Each row with its key's latest recorded version (looked up per row: an
	// index probe is cheaper than collecting the chunk's distinct keys), and
	// only rows after that version's change (a replay is skipped).
	b.WriteString("n AS (SELECT u.*, p.version AS _trb_pv, p.valid_from AS _trb_pfrom, p.commit_lsn AS _trb_plsn, " +
		"p.position AS _trb_ppos, p.valid_to AS _trb_pto" + extra + " FROM u LEFT JOIN LATERAL (SELECT * FROM " + l.qname +
		" h WHERE " + l.t.KeyJoin("h", "u") + " ORDER BY commit_lsn DESC, position DESC LIMIT 1) p ON true" +
		" WHERE (p.commit_lsn IS NULL OR (u._trb_lsn, u._trb_pos) > (p.commit_lsn, p.position))" +
		// A snapshot read of a row equal to its current version is no new
		// version (the writer flushes before reads, so p is the key's
		// latest version). Values compare as text: every type has one.
		" AND NOT (u.op = 'r' AND p.op IS NOT NULL AND p.op NOT IN ('d', 't') AND ROW(" + l.t.ColumnList("p.", "::text") + ") IS NOT DISTINCT FROM ROW(" +
		l.t.ColumnList("u.", "::text") + "))), ")
	win := "(PARTITION BY " + l.t.KeyList("") + " ORDER BY _trb_ord)"
	// valid_from is the running maximum commit time (never before the
	// previous version's); valid_to is the next row's valid_from, which is
	// the same maximum taken one row further, so that one window pass
	// computes both.
	vfrom := "greatest(max(_trb_ts) OVER " + win + ", _trb_pfrom)"
	b.WriteString("w AS (SELECT n.*, coalesce(_trb_pv, 0) + row_number() OVER " + win + " AS version, " +
		vfrom + " AS _trb_vfrom, CASE WHEN op IN ('d', 't') THEN " + vfrom + " WHEN lead(_trb_ts) OVER " + win +
		" IS NOT NULL THEN greatest(max(_trb_ts) OVER " + win + ", lead(_trb_ts) OVER " + win + ", _trb_pfrom) END AS _trb_vto")
	if carry {
		for _, i := range l.nonKey {
			b.WriteString(", count(*) FILTER (WHERE substr(_trb_unch, " + strconv.Itoa(i+1) + ", 1) <> '1') OVER " + win +
				" AS " + q("_trb_g"+strconv.Itoa(i)))
		}
	}
	b.WriteString(" FROM n), ")
	b.WriteString("x AS (SELECT w.*")
	if carry {
		for _, i := range l.nonKey {
			g := q("_trb_g" + strconv.Itoa(i))
			b.WriteString(", first_value(" + l.col(i) + ") OVER (PARTITION BY " + l.t.KeyList("") + ", " + g + " ORDER BY _trb_ord) AS " +
				q("_trb_f"+strconv.Itoa(i)))
		}
	}
	b.WriteString(" FROM w), ")
	// Close the version the key's first new row replaces, when it is open.
	b.WriteString("c AS (UPDATE " + l.qname + " h SET valid_to = x._trb_vfrom FROM x WHERE " + l.t.KeyJoin("h", "x") +
		" AND x.version = x._trb_pv + 1 AND x._trb_pto IS NULL AND h.commit_lsn = x._trb_plsn AND h.position = x._trb_ppos) ")
	b.WriteString("INSERT INTO " + l.qname + " (" + l.t.ColumnList("", "") + ", version, op, commit_lsn, commit_ts, xid, position, valid_from, valid_to) SELECT ")
	sel := make([]string, n)
	for i := range l.t.Columns {
		sel[i] = l.col(i)
	}
	if carry {
		for _, i := range l.nonKey {
			s := strconv.Itoa(i)
			sel[i] = "CASE WHEN substr(_trb_unch, " + strconv.Itoa(i+1) + ", 1) <> '1' THEN " + l.col(i) +
				" WHEN " + q("_trb_g"+s) + " > 0 THEN " + q("_trb_f"+s) +
				" WHEN _trb_pv IS NOT NULL THEN " + q("_trb_p"+s) + " ELSE " + l.col(i) + " END"
		}
	}
	b.WriteString(strings.Join(sel, ", "))
	b.WriteString(", version, op, _trb_lsn, _trb_ts, xid, _trb_pos, _trb_vfrom, _trb_vto FROM x ORDER BY _trb_ord")
	return b.String()
}

// buildTruncate: one op-t row per current version, which it closes.
func (l *layout) buildTruncate() string {
	return "WITH c AS (UPDATE " + l.qname + " SET valid_to = greatest($2::timestamptz, valid_from) WHERE valid_to IS NULL " +
		"AND (commit_lsn, position) < ($1::text::pg_lsn, $4::int8) RETURNING *) " +
		"INSERT INTO " + l.qname + " (" + l.t.ColumnList("", "") + ", version, op, commit_lsn, commit_ts, xid, position, valid_from, valid_to) " +
		"SELECT " + l.t.ColumnList("", "") + ", version + 1, 't', $1::text::pg_lsn, $2::timestamptz, $3::int8, $4::int8, " +
		"greatest($2::timestamptz, valid_from), greatest($2::timestamptz, valid_from) FROM c"
}
