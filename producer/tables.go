package producer

import (
	"context"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog"
)

// initialSnapshotID names the snapshot taken when the slot is created.
const initialSnapshotID = "initial"

// querier is what listing needs of a connection or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// pubTable is one table of the publication, as pg_publication_tables shows
// it: the publication's column list and row filter.
type pubTable struct {
	oid      uint32
	schema   string
	name     string
	attnames []string
	filter   string
	estimate int64  // rows: see tableEstimateSQL
	ident    string // relreplident
	relkind  string // relkind: r, or p for a partitioned table
}

func (t pubTable) fullName() string { return t.schema + "." + t.name }

// tableEstimateSQL estimates the rows of table c for snapshot progress and
// planning: pg_class.reltuples, or, for a table never analyzed (reltuples
// -1), the statistics system's live-tuple count; for a partitioned table, the
// sum over its leaf partitions (a partitioned table itself has no rows).
const tableEstimateSQL = `(CASE WHEN c.relkind = 'p' THEN (
			SELECT sum(CASE WHEN l.reltuples >= 0 THEN l.reltuples ELSE COALESCE(pg_catalog.pg_stat_get_live_tuples(l.oid), 0) END)
			FROM pg_catalog.pg_partition_tree(c.oid) t JOIN pg_catalog.pg_class l ON l.oid = t.relid WHERE t.isleaf)
		WHEN c.reltuples >= 0 THEN c.reltuples
		ELSE pg_catalog.pg_stat_get_live_tuples(c.oid) END)::bigint`

// listPublished lists the publication's tables in name order, and whether it
// is FOR ALL TABLES.
func listPublished(ctx context.Context, q querier, publication string) ([]pubTable, bool, error) {
	var all bool
	if err := q.QueryRow(ctx, `SELECT puballtables FROM pg_catalog.pg_publication WHERE pubname = $1`, publication).Scan(&all); err != nil {
		return nil, false, fmt.Errorf("publication %s: %w", publication, err)
	}
	rows, err := q.Query(ctx, `
		SELECT c.oid, pt.schemaname, pt.tablename, pt.attnames, COALESCE(pt.rowfilter, ''),
		       COALESCE(`+tableEstimateSQL+`, 0), c.relreplident::text, c.relkind::text
		FROM pg_catalog.pg_publication_tables pt
		JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
		JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
		WHERE pt.pubname = $1 ORDER BY 2, 3`, publication)
	if err != nil {
		return nil, false, fmt.Errorf("tables of publication %s: %w", publication, err)
	}
	var out []pubTable
	for rows.Next() {
		var t pubTable
		if err := rows.Scan(&t.oid, &t.schema, &t.name, &t.attnames, &t.filter, &t.estimate, &t.ident, &t.relkind); err != nil {
			rows.Close()
			return nil, false, err
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("tables of publication %s: %w", publication, err)
	}
	return out, all, nil
}

// reconcile brings the state's tables in line with the publication. With
// cp set (the session created the slot), every published table is captured
// from cp and, unless --snapshot never, read by the initial snapshot.
// Otherwise tables new to the producer join (see join), an initial snapshot
// that an earlier session left unfinished continues online, and tables that
// left the publication are marked removed. at is the source position the
// decision is made at.
func (s *session) reconcile(pub []pubTable, allTables bool, cp, at pglogrepl.LSN) {
	st := s.state
	seen := map[string]bool{}
	for _, t := range pub {
		name := t.fullName()
		seen[name] = true
		cur := st.table(name)
		if s.excluded(t.schema, name) {
			if cur == nil || cur.Status != txlog.TableExcluded || cur.OID != t.oid {
				st.set(&txlog.TableState{Schema: t.schema, Table: t.name, OID: t.oid, Status: txlog.TableExcluded})
			}
			continue
		}
		if cp != 0 {
			ts := &txlog.TableState{Schema: t.schema, Table: t.name, OID: t.oid, Status: txlog.TableCaptured, CapturedFrom: cp}
			if s.cfg.Snapshot != SnapshotNever {
				ts.Snapshot = &txlog.Snapshot{ID: initialSnapshotID, Kind: txlog.SnapshotInitial, Status: txlog.SnapshotRunning,
					ConsistentPoint: cp, Ranges: []txlog.KeyRange{{}}, Estimate: max(t.estimate, 0), Requested: now()}
			}
			st.set(ts)
			continue
		}
		if cur != nil && cur.Status == txlog.TableCaptured && (cur.OID == t.oid || cur.OID == 0) {
			if cur.OID == 0 {
				cur.OID = t.oid
				st.changed(cur)
			}
			if sn := cur.Snapshot; sn != nil && sn.Kind == txlog.SnapshotInitial && sn.Status.Active() {
				// The exported snapshot died with the session that
				// took it: the rest of the table is read online.
				sn.Kind = txlog.SnapshotOnline
				sn.Reason = "resuming the interrupted initial snapshot"
				st.changed(cur)
				s.log.Info("resuming the interrupted initial snapshot online", "table", name, "chunks_done", sn.Chunks, "rows_done", sn.Rows)
			}
			continue
		}
		s.join(t.oid, t.schema, t.name, allTables, at, t.estimate)
	}
	for name, cur := range st.st.Tables {
		if seen[name] || cur.Status == txlog.TableRemoved {
			continue
		}
		cur.Status = txlog.TableRemoved
		if sn := cur.Snapshot; sn != nil && sn.Status.Active() {
			sn.Status, sn.Reason, sn.Finished = txlog.SnapshotCancelled, "the table left the publication", now()
		}
		st.changed(cur)
		s.log.Info("table left the publication", "table", name)
	}
	s.logTopics = nil
}

// excluded reports whether the producer leaves out a published table: not
// among --tables, or one of DDL capture's own (InternalSchema).
func (s *session) excluded(schema, name string) bool {
	return schema == InternalSchema || s.only != nil && !s.only[name]
}

// join records a table that is new to the producer: published now, and
// unknown to the state, or known as another table (its OID changed), as
// excluded by --tables, or as removed. Its changes are captured from at.
// Whether its earlier rows are in the stream decides whether it needs a
// snapshot:
//   - under a FOR ALL TABLES publication, a table the state did not know
//     was created after the producer last listed the publication (every
//     listing is recorded before anything else is written), so all of its
//     rows are in the stream;
//   - a table whose topic already holds stream records (a state built from
//     a transactions topic of an older producer) is captured;
//   - otherwise the table existed unpublished, and it gets an online
//     snapshot (unless --snapshot never).
func (s *session) join(oid uint32, schema, name string, allTables bool, at pglogrepl.LSN, estimate int64) {
	st := s.state
	full := schema + "." + name
	cur := st.table(full)
	ts := &txlog.TableState{Schema: schema, Table: name, OID: oid, Status: txlog.TableCaptured, CapturedFrom: at}
	fresh := cur == nil || cur.OID != oid && cur.Status != txlog.TableExcluded
	switch {
	case s.logTopics[schemas.TopicName(s.cfg.Prefix, schema, name)]:
		s.log.Info("table known from its stream records in Kafka", "table", full)
	case allTables && fresh && !s.stateUnknown && s.logTopics == nil:
		s.log.Info("table joined the publication after the producer last listed it: its rows are all in the stream, no snapshot",
			"table", full, "captured_from", at)
	case s.cfg.Snapshot == SnapshotNever:
		s.log.Info("table joined the publication; --snapshot never: only its changes from now on are captured", "table", full, "captured_from", at)
	default:
		reason := "joined the publication"
		if s.stateUnknown {
			reason = "no snapshot of it is recorded"
		}
		ts.Snapshot = &txlog.Snapshot{ID: fmt.Sprintf("join-%s", at), Kind: txlog.SnapshotOnline, Status: txlog.SnapshotPending,
			Reason: reason, Estimate: max(estimate, 0), Requested: now()}
		s.log.Info("table joined the publication: taking an online snapshot", "table", full, "captured_from", at, "reason", reason)
	}
	st.set(ts)
}
