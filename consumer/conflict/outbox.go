package conflict

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/postgres/pgtarget"
	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog"
)

// The outbox: tributary_conflicts is written in the apply transaction, so
// it holds each conflict exactly when the resolution committed. The
// publisher copies its rows to the conflicts topic, exactly once:
//
//   - Order. Rows are published in (xact, id) order, xact being the
//     recording transaction (a column defaulting to pg_current_xact_id()).
//     A row is published only once no transaction that could still insert
//     a row before it is running: every transaction id below the
//     watermark (the lowest id the snapshot reports in progress, leaving
//     out sessions that are not this consumer's apply sessions) is
//     finished, and later rows get later ids.
//   - Durability. A row is published only after the target's WAL is
//     flushed past it (the apply commits with synchronous_commit off): a
//     crash of the target can lose an apply and its rows, never a row
//     already in Kafka, so a change applied again after the crash records
//     and publishes its conflicts once.
//   - Kafka. Each batch is one Kafka transaction of a transactional
//     producer whose ID is the consumer's; starting it fences any earlier
//     process of the same consumer (aborting its open transaction). Each
//     record carries its writer and position (HeaderWriter,
//     HeaderPosition). On start, and after any error, the publisher reads
//     the topic's committed records from the offsets it last noted in
//     tributary_conflicts_sent (written after each Kafka commit, so at
//     most a crash's worth behind) to its end, and resumes after the
//     highest position of its own.

// OutboxConfig configures the publisher of an Engine's conflicts.
type OutboxConfig struct {
	// Target is the DSN of the target, as the sink's.
	Target string
	// Topic is the conflicts topic, ConflictsTopic(prefix).
	Topic string
	// Kafka holds the client options that reach the brokers.
	Kafka []kgo.Opt
	// Registry registers the key and value schemas.
	Registry *schemas.Registry
	// Poll is how often the outbox is read when no commit nudges it
	// (default 1 s).
	Poll time.Duration
}

// outbox publishes an Engine's rows of tributary_conflicts (see above).
type outbox struct {
	e     *Engine
	cfg   OutboxConfig
	log   *slog.Logger
	nudge chan struct{}
	sent  string // quoted schema.tributary_conflicts_sent

	mu   sync.Mutex
	pids map[uint32]bool // the backends of this consumer's sessions that record conflicts
}

// position is a row's place in the outbox order.
type position struct {
	xact uint64
	id   int64
}

func (p position) less(q position) bool { return p.xact < q.xact || p.xact == q.xact && p.id < q.id }

func (p position) String() string {
	return strconv.FormatUint(p.xact, 10) + ":" + strconv.FormatInt(p.id, 10)
}

func parsePosition(s string) (position, bool) {
	x, i, ok := strings.Cut(s, ":")
	if !ok {
		return position{}, false
	}
	xact, err1 := strconv.ParseUint(x, 10, 64)
	id, err2 := strconv.ParseInt(i, 10, 64)
	return position{xact, id}, err1 == nil && err2 == nil
}

func newOutbox(e *Engine, cfg OutboxConfig) (*outbox, error) {
	var errs []error
	if cfg.Target == "" {
		errs = append(errs, errors.New("Outbox.Target: required"))
	}
	if cfg.Topic == "" {
		errs = append(errs, errors.New("Outbox.Topic: required"))
	}
	if len(cfg.Kafka) == 0 {
		errs = append(errs, errors.New("Outbox.Kafka: no client options (brokers)"))
	}
	if cfg.Registry == nil {
		errs = append(errs, errors.New("Outbox.Registry: required"))
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	return &outbox{e: e, cfg: cfg, log: e.log.With("topic", cfg.Topic), nudge: make(chan struct{}, 1),
		sent: schemas.QuoteIdent(e.file.Schema) + ".tributary_conflicts_sent", pids: map[uint32]bool{}}, errors.Join(errs...)
}

// notePID notes the backend of a session that records this consumer's
// conflicts (Session.Apply, recordStop).
func (o *outbox) notePID(pid uint32) {
	o.mu.Lock()
	o.pids[pid] = true
	o.mu.Unlock()
}

func (o *outbox) ownPIDs() []uint32 {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]uint32, 0, len(o.pids))
	for p := range o.pids {
		out = append(out, p)
	}
	return out
}

// poke wakes the publisher (after a commit that recorded conflicts).
func (o *outbox) poke() {
	select {
	case o.nudge <- struct{}{}:
	default:
	}
}

// RunOutbox publishes the engine's conflicts to Config.Outbox.Topic until
// ctx ends, then publishes what is committed by then (for at most ten
// seconds) and returns nil. It returns nil at once without an outbox. An
// error it cannot retry (another process of the same consumer fenced it, a
// schema the registry refuses, a DSN that does not parse) ends it;
// transient errors (the target or the brokers away) are retried.
func (e *Engine) RunOutbox(ctx context.Context) error {
	o := e.outbox
	if o == nil {
		return nil
	}
	backoff := time.Second
	for {
		err := o.run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if consumer.IsPermanent(err) {
			return err
		}
		o.log.Warn("conflict notifications: retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// run opens the publisher's connection and publishes (session) until an
// error or ctx's end.
func (o *outbox) run(ctx context.Context) error {
	pool, err := pgtarget.OpenPool(ctx, o.cfg.Target, 1, func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Exec(ctx, tablesSQL(o.e.file.Schema), pgx.QueryExecModeSimpleProtocol)
		return err
	})
	if err != nil {
		return err
	}
	defer pool.Close()
	return o.session(ctx, pool)
}

// kafkaTxnTimeout bounds a publisher's Kafka transaction.
const kafkaTxnTimeout = 30 * time.Second

// session is one run of the publisher with its own transactional client:
// fence, resume from the topic, then publish until ctx ends or an error.
func (o *outbox) session(ctx context.Context, pool *pgxpool.Pool) error {
	pc, err := pgtarget.Acquire(ctx, pool)
	if err != nil {
		return err
	}
	defer pgtarget.Release(pc, nil)
	c := pc.Conn()
	var sysid string
	if err := c.QueryRow(ctx, `SELECT system_identifier::text FROM pg_control_system()`).Scan(&sysid); err != nil {
		return fmt.Errorf("system identifier: %w", err)
	}
	writer := o.e.cfg.Site + "/" + o.e.cfg.Consumer + "/" + sysid
	reg := o.cfg.Registry
	keyID, err := reg.Register(ctx, schemas.KeySubject(o.cfg.Topic), ConflictKeySchema, schemas.SchemaChangeFail)
	if err != nil {
		return permanentUnlessTransient(fmt.Errorf("register the conflicts key schema: %w", err))
	}
	valID, err := reg.Register(ctx, schemas.ValueSubject(o.cfg.Topic), ConflictSchema, schemas.SchemaChangeFail)
	if err != nil {
		return permanentUnlessTransient(fmt.Errorf("register the conflicts value schema: %w", err))
	}
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, o.cfg.Kafka...),
		kgo.TransactionalID("tributary-conflicts-"+o.cfg.Topic+"-"+o.e.cfg.Site+"-"+o.e.cfg.Consumer),
		kgo.TransactionTimeout(kafkaTxnTimeout), kgo.ProducerLinger(0))...)
	if err != nil {
		return consumer.Permanent(fmt.Errorf("kafka client: %w", err))
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 1, -1, nil, o.cfg.Topic); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create %s: %w", o.cfg.Topic, err)
	}
	// Fence any earlier process of this consumer: its open transaction is
	// aborted, so what the topic holds no longer changes under the resume.
	if _, _, err := cl.ProducerID(ctx); err != nil {
		return fenced(fmt.Errorf("initialize the conflicts producer: %w", err))
	}
	pos, offsets, err := o.resume(ctx, c, adm, writer)
	if err != nil {
		return err
	}
	o.log.Info("publishing conflicts", "writer", writer, "after", pos.String())
	tick := time.NewTicker(o.cfg.Poll)
	defer tick.Stop()
	for {
		// At the end, publish what is committed by then.
		pctx := ctx
		if ctx.Err() != nil {
			var cancel context.CancelFunc
			pctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
		}
		for {
			n, err := o.publish(pctx, c, cl, writer, keyID, valID, &pos, offsets)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			if n == 0 {
				break
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		select {
		case <-ctx.Done():
		case <-o.nudge:
		case <-tick.C:
		}
	}
}

// fenced makes err permanent when another producer with the same
// transactional ID took over: another process of this consumer runs.
func fenced(err error) error {
	if errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) ||
		errors.Is(err, kerr.TransactionalIDAuthorizationFailed) {
		return consumer.Permanent(fmt.Errorf("%w (is another process of this consumer running?)", err))
	}
	return err
}

func permanentUnlessTransient(err error) error {
	if schemas.IsUnknownSchema(err) || errors.Is(err, schemas.ErrIncompatibleSchema) {
		return consumer.Permanent(err)
	}
	return err
}

// resume finds where publishing goes on: the position and offsets noted in
// tributary_conflicts_sent, then the highest position of writer among the
// committed records from those offsets to the topic's end.
func (o *outbox) resume(ctx context.Context, c *pgx.Conn, adm *kadm.Client, writer string) (position, map[int32]int64, error) {
	var pos position
	offsets := map[int32]int64{}
	var xact string
	var raw []byte
	err := c.QueryRow(ctx, "SELECT xact::text, id, offsets FROM "+o.sent+" WHERE consumer = $1 AND topic = $2",
		o.e.cfg.Consumer, o.cfg.Topic).Scan(&xact, &pos.id, &raw)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return pos, nil, fmt.Errorf("read %s: %w", o.sent, err)
	default:
		pos.xact, _ = strconv.ParseUint(xact, 10, 64)
		var m map[string]int64
		if err := json.Unmarshal(raw, &m); err != nil {
			return pos, nil, consumer.Permanent(fmt.Errorf("%s.offsets: %w", o.sent, err))
		}
		for p, off := range m {
			n, _ := strconv.Atoi(p)
			offsets[int32(n)] = off
		}
	}
	ends, err := adm.ListEndOffsets(ctx, o.cfg.Topic)
	if err != nil {
		return pos, nil, fmt.Errorf("end of %s: %w", o.cfg.Topic, err)
	}
	var scanErr error
	ends.Each(func(e kadm.ListedOffset) {
		if scanErr != nil {
			return
		}
		if e.Err != nil {
			scanErr = fmt.Errorf("end of %s partition %d: %w", e.Topic, e.Partition, e.Err)
			return
		}
		// Read committed records up to the end seen now: wait until no open
		// transaction (another site's publisher) holds the stable end below it.
		var b txlog.Bounds
		for {
			if b, scanErr = txlog.PartitionBounds(ctx, adm, o.cfg.Topic, e.Partition); scanErr != nil || b.End >= e.Offset {
				break
			}
			select {
			case <-ctx.Done():
				scanErr = ctx.Err()
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
		if scanErr != nil {
			return
		}
		from := max(offsets[e.Partition], b.Start)
		scanErr = txlog.ReadRange(ctx, o.cfg.Kafka, o.cfg.Topic, e.Partition, from, e.Offset, func(r *kgo.Record) error {
			var w, p string
			for _, h := range r.Headers {
				switch h.Key {
				case HeaderWriter:
					w = string(h.Value)
				case HeaderPosition:
					p = string(h.Value)
				}
			}
			if w != writer {
				return nil
			}
			if rp, ok := parsePosition(p); ok && pos.less(rp) {
				pos = rp
			}
			offsets[e.Partition] = r.Offset + 1
			return nil
		})
	})
	return pos, offsets, scanErr
}

// outboxBatch bounds the rows of one Kafka transaction.
const outboxBatch = 500

// publish publishes, in one Kafka transaction, the next rows after pos
// that are final and durable, then notes the new position; it returns how
// many it published.
func (o *outbox) publish(ctx context.Context, c *pgx.Conn, cl *kgo.Client, writer string, keyID, valID int,
	pos *position, offsets map[int32]int64) (int, error) {
	rows, err := c.Query(ctx, `WITH snap AS (SELECT pg_current_snapshot() AS s),
w AS (SELECT coalesce((SELECT x FROM pg_snapshot_xip(snap.s) x
		WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.backend_xid IS NOT NULL AND a.pid <> ALL ($4::int[])
			AND a.backend_xid::text::bigint = x::text::bigint % 4294967296)
		ORDER BY x LIMIT 1), pg_snapshot_xmax(snap.s)) AS w FROM snap)
SELECT c.id, c.xact::text, c.detected_at, c.site, c.remote_site, c.consumer, c.table_name, c.key, c.kind, c.column_group,
	c.method, c.outcome, c.local_row, c.remote_before, c.remote_after, c.resolved, c.commit_lsn::text, c.xid,
	c.remote_commit_ts, c.local_site, c.local_commit_ts, c.detail, pg_current_wal_insert_lsn()::text
FROM `+o.e.conflicts+` c, w
WHERE c.consumer = $1 AND c.xact IS NOT NULL AND c.xact < w.w AND (c.xact, c.id) > ($2::text::xid8, $3)
ORDER BY c.xact, c.id LIMIT `+strconv.Itoa(outboxBatch),
		o.e.cfg.Consumer, strconv.FormatUint(pos.xact, 10), pos.id, o.ownPIDs())
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", o.e.conflicts, err)
	}
	var recs []*kgo.Record
	var last position
	var walAt string
	for rows.Next() {
		var r Record
		var xact string
		var key, local, before, after, resolved []byte
		var lsn, localSite, detail *string
		var xid *int64
		var remoteTS, localTS *time.Time
		if err := rows.Scan(&r.ID, &xact, &r.DetectedAt, &r.Site, &r.RemoteSite, &r.Consumer, &r.Table, &key, &r.Kind, &r.Group,
			&r.Method, &r.Outcome, &local, &before, &after, &resolved, &lsn, &xid, &remoteTS, &localSite, &localTS, &detail,
			&walAt); err != nil {
			rows.Close()
			return 0, err
		}
		var perr error
		for _, x := range []struct {
			dst *Row
			b   []byte
		}{{&r.Key, key}, {&r.Local, local}, {&r.RemoteBefore, before}, {&r.RemoteAfter, after}, {&r.Resolved, resolved}} {
			if *x.dst, perr = rowFromJSON(x.b); perr != nil {
				break
			}
		}
		if perr != nil {
			rows.Close()
			return 0, consumer.Permanent(fmt.Errorf("%s row %d: %w", o.e.conflicts, r.ID, perr))
		}
		r.CommitLSN, r.LocalSite, r.Detail = deref(lsn), deref(localSite), deref(detail)
		if xid != nil {
			r.Xid = uint32(*xid)
		}
		if remoteTS != nil {
			r.CommitTime = remoteTS.UTC()
		}
		if localTS != nil {
			r.LocalCommitTime = localTS.UTC()
		}
		last.xact, _ = strconv.ParseUint(xact, 10, 64)
		last.id = r.ID
		k, err := encodeKey(r)
		if err == nil {
			var v []byte
			if v, err = encodeValue(r); err == nil {
				recs = append(recs, &kgo.Record{Topic: o.cfg.Topic, Key: append(schemas.AppendHeader(nil, keyID), k...),
					Value: append(schemas.AppendHeader(nil, valID), v...), Headers: []kgo.RecordHeader{
						{Key: HeaderWriter, Value: []byte(writer)}, {Key: HeaderPosition, Value: []byte(last.String())}}})
			}
		}
		if err != nil {
			rows.Close()
			return 0, consumer.Permanent(fmt.Errorf("encode %s row %d: %w", o.e.conflicts, r.ID, err))
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if len(recs) == 0 {
		return 0, nil
	}
	// Durable first: the applies that recorded these rows may have
	// committed asynchronously.
	for {
		var flushed bool
		if err := c.QueryRow(ctx, `SELECT pg_current_wal_flush_lsn() >= $1::pg_lsn`, walAt).Scan(&flushed); err != nil {
			return 0, err
		}
		if flushed {
			break
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := cl.BeginTransaction(); err != nil {
		return 0, fmt.Errorf("begin kafka transaction: %w", err)
	}
	res := cl.ProduceSync(ctx, recs...)
	if err := res.FirstErr(); err != nil {
		abort(cl)
		return 0, fenced(fmt.Errorf("produce to %s: %w", o.cfg.Topic, err))
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		abort(cl)
		return 0, fenced(fmt.Errorf("commit kafka transaction: %w", err))
	}
	*pos = last
	for _, r := range res {
		offsets[r.Record.Partition] = max(offsets[r.Record.Partition], r.Record.Offset+1)
	}
	m := map[string]int64{}
	for _, p := range sortedKeys(offsets) {
		m[strconv.Itoa(int(p))] = offsets[p]
	}
	raw, _ := json.Marshal(m)
	// Noted after the Kafka commit: a crash in between is found by resume.
	if _, err := c.Exec(ctx, `INSERT INTO `+o.sent+` (consumer, topic, xact, id, offsets) VALUES ($1, $2, $3::text::xid8, $4, $5)
ON CONFLICT (consumer, topic) DO UPDATE SET xact = EXCLUDED.xact, id = EXCLUDED.id, offsets = EXCLUDED.offsets, sent_at = now()`,
		o.e.cfg.Consumer, o.cfg.Topic, strconv.FormatUint(last.xact, 10), last.id, string(raw)); err != nil {
		return 0, fmt.Errorf("write %s: %w", o.sent, err)
	}
	return len(recs), nil
}

func abort(cl *kgo.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = cl.AbortBufferedRecords(ctx)
	_ = cl.EndTransaction(ctx, kgo.TryAbort)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// recordStop records, in its own transaction, the stop of method error
// (the apply transaction rolls back), so that it is published once; a stop
// already recorded for the same change and group is not recorded again.
func (o *outbox) recordStop(r Record) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, o.cfg.Target)
	if err != nil {
		o.log.Warn("could not record the stop in tributary_conflicts; it is not published", "table", r.Table, "err", err)
		return
	}
	defer c.Close(context.Background())
	o.notePID(c.PgConn().PID())
	key, _ := json.Marshal(r.Key)
	js := func(row Row) any {
		if row == nil {
			return nil
		}
		b, _ := json.Marshal(row)
		return string(b)
	}
	var lsn any
	if r.CommitLSN != "" {
		lsn = r.CommitLSN
	}
	_, err = c.Exec(ctx, `INSERT INTO `+o.e.conflicts+` (detected_at, site, remote_site, consumer, table_name, key, kind,
	column_group, method, outcome, local_row, remote_before, remote_after, commit_lsn, xid, remote_commit_ts, detail)
SELECT $1, $2, $3, $4, $5, $6::text::jsonb, $7, $8, $9, $10, $11::text::jsonb, $12::text::jsonb, $13::text::jsonb,
	$14::text::pg_lsn, $15, $16, $17
WHERE NOT EXISTS (SELECT 1 FROM `+o.e.conflicts+` WHERE consumer = $4 AND table_name = $5 AND key = $6::text::jsonb
	AND commit_lsn IS NOT DISTINCT FROM $14::text::pg_lsn AND column_group = $8 AND outcome = $10)`,
		r.DetectedAt, r.Site, r.RemoteSite, r.Consumer, r.Table, string(key), string(r.Kind), r.Group, string(r.Method),
		string(r.Outcome), js(r.Local), js(r.RemoteBefore), js(r.RemoteAfter), lsn, int64(r.Xid), r.CommitTime, r.Detail)
	if err != nil {
		o.log.Warn("could not record the stop in tributary_conflicts; it is not published", "table", r.Table, "err", err)
		return
	}
	o.poke()
}
