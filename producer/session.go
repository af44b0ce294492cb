package producer

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/linkedin/goavro/v2"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/internal/pgexport"
	"github.com/tributary-cdc/tributary/internal/retry"
	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog"
)

// HeartbeatPrefix is the logical decoding message prefix of the producer's
// heartbeats; they move the stream but are not published.
const HeartbeatPrefix = "tributary.heartbeat"

// session is one replication session: connections, Kafka client and the
// in-flight state. It is used by one goroutine.
type session struct {
	cfg        *Config
	log        *slog.Logger
	progressed bool // a Kafka transaction committed in this session

	db     *pgx.Conn
	repl   *pgconn.PgConn
	cat    *catalog
	kcl    *kgo.Client
	w      *kafkaWriter
	dbName string
	only   map[string]bool // schema.table filter; nil means every published table

	relations map[uint32]*relState
	frameID   int
	msgKeyID  int
	msgValID  int
	msgCodec  *goavro.Codec
	msgKey    *goavro.Codec
	msgTopic  topicInfo
	txTopic   string

	resumeAfter pglogrepl.LSN // source transactions committed at or below this are in Kafka already

	// The durable state (state.go) and what reconciling it needs.
	state        *producerState
	logTopics    map[string]bool  // data topics with stream records, when the state was built from the log
	stateUnknown bool             // the slot existed but no state or frame of it did: no table is known
	pubAll       bool             // the publication is FOR ALL TABLES
	online       *online          // online snapshots (online.go)
	nextPubCheck time.Time        // when the stream next lists the publication
	lastSeqs     map[string]int64 // sequence values last recorded (ddl.go)

	received    pglogrepl.LSN // write position: WAL processed
	pos         slotPosition  // the flush position: what is durable in Kafka (position.go)
	confirmedAt time.Time     // when the flush position sent last moved
	serverWAL   pglogrepl.LSN // pg_current_wal_lsn() at the last periodic status
	lastEnd     pglogrepl.LSN // end LSN of the last commit the stream decoded (the Debezium envelope's sequence[0])

	// The commit of the previous group, in flight while the stream goes on,
	// and the records that wait for it to end (overlap.go).
	inflight   *inflightCommit
	queue      []*kgo.Record
	queueBytes int
	queueStart time.Time
	wake       func() // interrupts a receive when a commit ends
	stopWatch  func() // ends the writer's stall watch (kafkaWriter.watch)

	tx          *txState
	groupEvents int
	groupTxns   int
	groupStart  time.Time

	// Reading a group's window at once (coalesce.go).
	sock      *replSocket // nil: every message is read as it comes
	lowWater  int         // the socket's SO_RCVLOWAT as last set
	consumed  int         // bytes of replication messages read
	draining  bool        // the open group fell due and reads what arrived
	drainFrom int         // consumed when it fell due
	probe     bool        // the next read only takes what a TLS layer holds
	probed    bool        // a probe found the TLS layer empty while draining

	prog progress // since the last progress line
}

// progress is what the stream committed since its last progress line.
type progress struct {
	since                 time.Time
	txns, events, commits int
}

type relState struct {
	ts      *schemas.TableSchema
	enc     *schemas.Encoder
	srcHead []byte                      // the table's encoded source head (schemas.EncoderSourceHead)
	dbzHead *schemas.DebeziumSourceHead // the same for the Debezium envelope; nil for Tributary's
	keyID   int
	valueID int
	topic   topicInfo
	name    string // schema.table
	skip    bool   // not among --tables
	pending bool   // an online snapshot of the table is active (HeaderSnapshot)
}

type tpKey struct {
	topic     string
	partition int32
}

// txState is the source transaction being streamed.
type txState struct {
	xid        uint32
	commitLSN  pglogrepl.LSN
	commitTime time.Time
	origin     string
	originLSN  pglogrepl.LSN // the commit's LSN on its origin
	skip       bool          // already in Kafka, or from an origin not forwarded
	pos        int64
	counts     map[tpKey]int64

	enc       *schemas.EncoderTx // built on the first event; see encoded
	commitHdr []byte             // order header values shared by the transaction's records
	xidHdr    []byte
	hdrDigits [30]byte // where they are written: 20 digits of a uint64, 10 of a uint32

	// What its frame also carries: a snapshot chunk (an online chunk is
	// written at its high watermark's transaction), or the start of an
	// online snapshot. forceFrame writes a frame even with no event.
	snapChunk  *schemas.SnapshotChunk
	request    *schemas.SnapshotRequest
	forceFrame bool
	// online are the tables under an online snapshot it changed.
	online []string

	// The Debezium envelope's sequence[0] (the previous transaction's end)
	// and transaction block orders: change events so far, in all and per
	// table.
	prevEnd  pglogrepl.LSN
	dbzTotal int64
	dbzColl  map[string]int64
}

// noteOnline records that the transaction changed table, which is under
// an online snapshot.
func (tx *txState) noteOnline(table string) {
	for _, t := range tx.online {
		if t == table {
			return
		}
	}
	tx.online = append(tx.online, table)
}

// encoded returns the encoded parts that every event of tx shares. It is
// built on first use, after any Origin message; a txState is used by one
// goroutine.
func (tx *txState) encoded() *schemas.EncoderTx {
	if tx.enc == nil {
		tx.enc = schemas.NewEncoderTx(tx.commitLSN, tx.xid, tx.commitTime, tx.origin).WithOriginLSN(tx.originLSN)
		tx.commitHdr = strconv.AppendUint(tx.hdrDigits[:0:20], uint64(tx.commitLSN), 10)
		tx.xidHdr = strconv.AppendUint(tx.hdrDigits[20:20:30], uint64(tx.xid), 10)
	}
	return tx.enc
}

func (s *session) close() {
	if s.online != nil {
		s.online.close()
	}
	if p := s.inflight; p != nil {
		<-p.done
	}
	if s.stopWatch != nil {
		s.stopWatch()
	}
	if s.w != nil && s.w.inTxn {
		s.w.abort()
	}
	if s.kcl != nil {
		s.kcl.Close()
	}
	if s.repl != nil {
		s.repl.Close(context.Background())
	}
	if s.db != nil {
		s.db.Close(context.Background())
	}
}

// setSessionParams sets the event contract's session settings
// (schemas.SessionParams) on a source connection's runtime parameters. An
// application_name that the DSN or PGAPPNAME sets is kept, as the
// consumer keeps its target's, so that operators can tell producers apart
// in pg_stat_activity.
func setSessionParams(rp map[string]string) {
	own := rp["application_name"]
	maps.Copy(rp, schemas.SessionParams())
	if own != "" {
		rp["application_name"] = own
	}
}

// connConfig is the source DSN's connection settings with the session
// settings; replication asks for a logical replication connection.
func connConfig(dsn string, replication bool) (*pgconn.Config, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	setSessionParams(cfg.RuntimeParams)
	if replication {
		cfg.RuntimeParams["replication"] = "database"
	}
	return cfg, nil
}

// connect opens an ordinary connection to the source with the session
// settings. Its own writes (publication, heartbeats, watermarks) commit
// with synchronous_commit = local: they must not wait for synchronous
// standbys, the producer among them.
func (s *session) connect(ctx context.Context) (*pgx.Conn, error) {
	pcfg, err := pgx.ParseConfig(s.cfg.SourceDSN)
	if err != nil {
		return nil, retry.Terminal(fmt.Errorf("source DSN: %w", err))
	}
	setSessionParams(pcfg.RuntimeParams)
	pcfg.RuntimeParams["synchronous_commit"] = "local"
	return pgx.ConnectConfig(ctx, pcfg)
}

func (s *session) run(ctx context.Context) error {
	defer s.close()
	cfg := s.cfg
	var err error
	if s.db, err = s.connect(ctx); err != nil {
		return fmt.Errorf("connect to source: %w", err)
	}
	s.dbName = s.db.PgConn().ParameterStatus("database")
	if s.dbName == "" {
		s.dbName = s.db.Config().Database
	}
	s.cat = newCatalog(s.db)
	if _, err := ensurePublication(ctx, s.db, cfg.Publication, cfg.Tables, s.log); err != nil {
		return err
	}
	if len(cfg.Tables) > 0 {
		s.only = map[string]bool{}
		for _, t := range cfg.Tables {
			s.only[t.Schema+"."+t.Name] = true
		}
	}
	slot, err := readSlot(ctx, s.db, cfg.Slot)
	if err != nil {
		return err
	}
	if slot.exists {
		if slot.plugin != "pgoutput" {
			return retry.Terminal(fmt.Errorf("slot %s uses plugin %s, not pgoutput; choose another --slot", cfg.Slot, slot.plugin))
		}
		if slot.database != s.dbName {
			return retry.Terminal(fmt.Errorf("slot %s belongs to database %s, not %s", cfg.Slot, slot.database, s.dbName))
		}
		if err := s.startFlush(slot.confirmed); err != nil {
			return err
		}
		// A producer killed a moment ago may still hold the slot until its
		// walsender notices the closed connection: give that one a few
		// seconds; a live producer keeps it.
		for wait := time.Now().Add(activeSlotGrace); slot.active && time.Now().Before(wait); {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
			if slot, err = readSlot(ctx, s.db, cfg.Slot); err != nil {
				return err
			}
		}
		if slot.active {
			pid := int32(0)
			if slot.activePID != nil {
				pid = *slot.activePID
			}
			return retry.Terminal(fmt.Errorf("slot %s is in use by another process (pid %d): only one producer may run per slot; "+
				"stop the other producer, or give this one its own --slot and --prefix", cfg.Slot, pid))
		}
	}

	if err := s.openKafka(ctx); err != nil {
		return err
	}

	rcfg, err := connConfig(cfg.SourceDSN, true)
	if err != nil {
		return retry.Terminal(fmt.Errorf("source DSN: %w", err))
	}
	// The standby name in pg_stat_replication, and what
	// synchronous_standby_names lists for the synchronous mode.
	rcfg.RuntimeParams["application_name"] = cfg.StandbyName
	if s.repl, err = pgconn.ConnectConfig(ctx, rcfg); err != nil {
		return fmt.Errorf("replication connection: %w", err)
	}
	s.relations = map[uint32]*relState{}
	if err := s.checkSource(ctx, slot); err != nil {
		return err
	}

	if !slot.exists {
		if err := s.newSlotPending(ctx); err != nil {
			return err
		}
		slot, err := pgexport.CreateSlot(ctx, s.repl, cfg.Slot, pgexport.Options{Export: cfg.Snapshot != SnapshotNever})
		if err != nil {
			return err
		}
		cp := slot.ConsistentPoint
		s.pos.floor(cp)
		s.log.Info("created replication slot", "consistent_point", cp.String(), "snapshot", slot.Snapshot)
		if cfg.Snapshot != SnapshotNever {
			if err := s.snapshot(ctx, slot.Snapshot, cp); err != nil {
				return err
			}
		} else if err := s.checkPublication(ctx, cp, cp); err != nil {
			return err
		}
	} else {
		// With no state and no frame of a slot that exists, nothing is
		// known of its tables: each one gets an online snapshot.
		s.stateUnknown = s.state.st.Empty()
		if s.stateUnknown && cfg.Snapshot != SnapshotNever {
			s.log.Warn("the slot exists but no state of it is in Kafka: every published table gets an online snapshot",
				"state_topic", s.state.topic)
		}
		if err := s.checkPublication(ctx, 0, s.state.st.Position.CommitLSN); err != nil {
			return err
		}
	}
	// Every table's state is in Kafka before anything else of the stream.
	if err := s.flushState(ctx); err != nil {
		return err
	}
	if cfg.Snapshot == SnapshotOnly && len(s.state.activeSnapshots()) == 0 {
		return nil
	}
	return s.stream(ctx)
}

// checkPublication lists the publication and reconciles the state with it
// (see reconcile); cp is the consistent point of a slot this session
// created, and at the source position of the decision.
func (s *session) checkPublication(ctx context.Context, cp, at pglogrepl.LSN) error {
	pub, all, err := listPublished(ctx, s.db, s.cfg.Publication)
	if err != nil {
		return err
	}
	s.pubAll = all
	s.reconcile(pub, all, cp, at)
	for _, t := range s.state.st.Tables {
		s.setPending(t)
	}
	if s.online != nil {
		clear(s.online.pubs)
	}
	return nil
}

// newSlotPending records, before a slot is made anew for a state that
// Kafka holds (the slot was dropped, or lost), that every table it captured
// needs the new slot's initial snapshot: the changes made while no slot
// kept them are in no stream. A session that stops after creating the slot
// and before it has recorded that snapshot (a kill, a registry error, an
// incompatible schema) leaves this behind, and the next one, which finds
// the slot, reads those tables online (reconcile) instead of streaming as
// if nothing had been missed.
func (s *session) newSlotPending(ctx context.Context) error {
	if s.cfg.Snapshot == SnapshotNever || s.state.st.Empty() {
		return nil
	}
	for _, t := range s.state.st.Tables {
		if t.Status != txlog.TableCaptured {
			continue
		}
		t.Snapshot = &txlog.Snapshot{ID: initialSnapshotID, Kind: txlog.SnapshotInitial, Status: txlog.SnapshotRunning,
			Ranges: []txlog.KeyRange{{}}, Requested: now(), Reason: "the slot was made anew"}
		s.state.changed(t)
	}
	return s.flushState(ctx)
}

// flushState writes the state changes that wait, in a Kafka transaction of
// their own unless one is open (it then goes with that one's commit).
func (s *session) flushState(ctx context.Context) error {
	if !s.state.pending() {
		return nil
	}
	if err := s.beginGroup(); err != nil {
		return err
	}
	return s.commitGroup(ctx)
}

// activeSlotGrace is how long a session waits for its slot to be released
// by a previous reader before it takes the slot for another producer's.
const activeSlotGrace = 5 * time.Second

// concurrentTxnBackoff is how soon the transactional client retries a
// request that Kafka answered with CONCURRENT_TRANSACTIONS. Kafka answers so
// to the AddPartitionsToTxn of a transaction begun while it still writes the
// markers of the one before, which EndTxn does not wait for: the first record
// of a group that follows a commit at once meets it. franz-go's default of
// 20 ms held each such group back that long, while the markers took about
// 1 ms against Apache Kafka 3.9.1 here, so a --group-max-delay under 20 ms
// could not shorten the groups (bench/ANALYSIS.md, "Latency: the retry after
// CONCURRENT_TRANSACTIONS"). franz-go still lengthens the backoff when a
// transaction stays busy for longer than a second.
const concurrentTxnBackoff = 2 * time.Millisecond

// kafkaClientOpts are the options of the producer's transactional client.
func kafkaClientOpts(cfg *Config) []kgo.Opt {
	opts := append([]kgo.Opt{}, cfg.KafkaOpts...)
	opts = append(opts,
		kgo.TransactionalID("tributary-"+cfg.Prefix+"-"+cfg.Slot),
		kgo.TransactionTimeout(cfg.KafkaTxnTimeout),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		// Bounded buffering is what keeps memory independent of transaction
		// size (G6): Produce blocks, and so does decoding, when it is full.
		// The buffer holds at least one largest event.
		kgo.MaxBufferedBytes(max(8<<20, cfg.MaxEventBytes)),
		kgo.ProducerBatchMaxBytes(int32(cfg.MaxEventBytes+batchOverhead)),
		kgo.MaxBufferedRecords(10000),
		// A group's records need to be at the broker only when it commits,
		// and the commit's Flush sends what lingers: lingering as long as a
		// group may last sends a group in fewer, larger produce requests.
		// A full buffer ends the linger (franz-go), so a backlog does not
		// wait for it.
		kgo.ProducerLinger(cfg.GroupMaxDelay),
		kgo.RecordDeliveryTimeout(5*time.Minute),
		// A topic the producer has just created can fail a first produce or
		// AddPartitionsToTxn until every broker knows it; franz-go then
		// reloads metadata no sooner than this (default 5 s, which every new
		// table would pay). The Java client retries such errors after
		// retry.backoff.ms (100 ms) too.
		kgo.MetadataMinAge(250*time.Millisecond),
		kgo.ConcurrentTransactionsBackoff(concurrentTxnBackoff),
	)
	codec, _ := compressionCodec(cfg.Compression) // checked by validate
	opts = append(opts, kgo.ProducerBatchCompression(codec))
	if len(cfg.KafkaHooks) > 0 {
		opts = append(opts, kgo.WithHooks(cfg.KafkaHooks...))
	}
	return opts
}

// openKafka creates the transactional client, fences any previous session
// with the same transactional ID (which completes its open transaction), and
// reads where the previous sessions stopped.
func (s *session) openKafka(ctx context.Context) error {
	cfg := s.cfg
	var err error
	if s.kcl, err = kgo.NewClient(kafkaClientOpts(cfg)...); err != nil {
		return retry.Terminal(fmt.Errorf("kafka client: %w", err))
	}
	if _, _, err := s.kcl.ProducerID(ctx); err != nil {
		return fmt.Errorf("kafka: initialize transactional producer: %w", err)
	}
	s.w = newKafkaWriter(s.kcl, cfg.Partitions, cfg.MaxEventBytes+batchOverhead, cfg.KafkaCommitTimeout, s.log)
	s.stopWatch = s.w.watch(ctx)
	s.txTopic = schemas.TransactionsTopic(cfg.Prefix)
	if _, err := s.w.ensureTopic(ctx, s.txTopic, 1, s.topicConfig(false)...); err != nil {
		return err
	}
	if _, err := s.w.ensureTopic(ctx, schemas.StateTopic(cfg.Prefix), 1, "cleanup.policy", "compact"); err != nil {
		return err
	}
	if s.msgTopic, err = s.w.ensureTopic(ctx, schemas.MessagesTopic(cfg.Prefix), 0, s.topicConfig(false)...); err != nil {
		return err
	}
	if s.msgCodec, err = goavro.NewCodec(schemas.MessageSchema()); err != nil {
		return retry.Terminal(err)
	}
	if s.msgKey, err = goavro.NewCodec(schemas.MessageKeySchema); err != nil {
		return retry.Terminal(err)
	}
	if s.frameID, err = s.register(ctx, schemas.ValueSubject(s.txTopic), schemas.FrameSchema()); err != nil {
		return err
	}
	mt := schemas.MessagesTopic(cfg.Prefix)
	if s.msgKeyID, err = s.register(ctx, schemas.KeySubject(mt), schemas.MessageKeySchema); err != nil {
		return err
	}
	if s.msgValID, err = s.register(ctx, schemas.ValueSubject(mt), schemas.MessageSchema()); err != nil {
		return err
	}
	return s.loadState(ctx)
}

// register registers schema under subject. A schema change that
// Config.SchemaChange refuses (schemas.ErrIncompatibleSchema) is terminal:
// the producer stops before the change, and a restart with another policy
// picks it up; the registry's own errors are judged by retry.IsTerminal.
func (s *session) register(ctx context.Context, subject, schema string) (int, error) {
	id, err := s.cfg.Registry.Register(ctx, subject, schema, s.cfg.SchemaChange)
	if errors.Is(err, schemas.ErrIncompatibleSchema) {
		return 0, retry.Terminal(err)
	}
	return id, err
}

// topicConfig is Config.TopicConfig as ensureTopic's pairs, for a data topic
// or for the transactions and messages topics, whose records compaction
// would lose (frames have no key; messages share theirs): cleanup.policy is
// for data topics only.
func (s *session) topicConfig(data bool) []string {
	var out []string
	for k, v := range s.cfg.TopicConfig {
		if k != "cleanup.policy" || data {
			out = append(out, k, v)
		}
	}
	return out
}

// stream runs the replication protocol until ctx ends or an error occurs.
func (s *session) stream(ctx context.Context) error {
	cfg := s.cfg
	err := pglogrepl.StartReplication(ctx, s.repl, cfg.Slot, 0, pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication,
		PluginArgs: []string{
			"proto_version '1'",
			// pgoutput parses an identifier list: quote the name inside the literal.
			"publication_names " + quoteLiteral(quoteIdent(cfg.Publication)),
			"messages 'true'",
		},
	})
	if err != nil {
		return fmt.Errorf("start replication on slot %s: %w", cfg.Slot, err)
	}
	s.log.Info("streaming", "publication", cfg.Publication, "resume_after", s.resumeAfter)
	cfg.Observer.Streaming(true)
	defer cfg.Observer.Streaming(false)
	nextStatus := time.Now()
	nextHeartbeat := time.Now().Add(cfg.HeartbeatInterval)
	nextProgress := time.Now().Add(cfg.ProgressInterval)
	s.prog = progress{since: time.Now()}
	// Messages are received without a context: pgconn watches a context
	// with a goroutine per call, which cost about a tenth of the CPU on
	// single-row transactions. The status, heartbeat and group deadlines
	// are the connection's read deadline instead, and a cancel of ctx
	// moves that deadline to now. A read timeout leaves the connection
	// usable (pgconn closes it on other errors only).
	conn := s.repl.Conn()
	var readDeadline time.Time                  // the read deadline last set; zero when unknown
	s.sock, s.lowWater = newReplSocket(conn), 1 // the connection is not read after stream returns
	stopInterrupt := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer stopInterrupt()
	s.wake = func() { _ = conn.SetReadDeadline(time.Now()) }
	defer func() {
		s.wake = nil
		_ = conn.SetReadDeadline(time.Time{})
	}()
	s.online = newOnline(s, s.wake)
	if err := s.online.schedule(ctx); err != nil {
		return err
	}
	s.nextPubCheck = time.Now().Add(publicationCheckInterval)
	for {
		now := time.Now()
		if ctx.Err() != nil {
			return s.shutdown()
		}
		if err := s.online.err(); err != nil {
			return err
		}
		if s.inflight != nil && s.inflight.finished.Load() {
			if err := s.awaitCommit(ctx); err != nil {
				return err
			}
			nextStatus = now
		}
		if s.tx == nil && !now.Before(s.nextPubCheck) {
			// A table added to the publication and not yet changed has
			// sent nothing to the stream: list the publication.
			if err := s.checkPublication(ctx, 0, s.received); err != nil {
				return err
			}
			if err := s.online.schedule(ctx); err != nil {
				return err
			}
			s.nextPubCheck = now.Add(publicationCheckInterval)
		}
		if s.tx == nil && s.inflight == nil && !s.groupOpen() && s.state.pending() {
			// State changes with no frame to go with (a table joined, a
			// snapshot paused) are committed like a group.
			if err := s.beginGroup(); err != nil {
				return err
			}
		}
		if cfg.Snapshot == SnapshotOnly && s.tx == nil && !s.groupOpen() && len(s.state.activeSnapshots()) == 0 {
			s.log.Info("--snapshot only: every snapshot is done")
			return s.shutdown()
		}
		// While a commit is in flight, the next group waits in the queue
		// for it (its end wakes the receive) or until the queue is full.
		// A group that fell due by its delay first reads what arrived.
		if s.inflight == nil && s.tx == nil && s.groupOpen() {
			full := s.groupEvents >= cfg.GroupMaxEvents
			if full || !now.Before(s.groupDeadline()) {
				more := false
				if !full {
					var err error
					if more, err = s.arrivedUnread(); err != nil {
						return err
					}
				}
				if !more {
					if err := s.commitGroupAsync(ctx); err != nil {
						return err
					}
				}
			}
		}
		if !now.Before(nextStatus) {
			if err := s.readServerWAL(ctx); err != nil {
				return err
			}
			if err := s.sendStatus(ctx, false); err != nil {
				return err
			}
			nextStatus = now.Add(cfg.StatusInterval)
		}
		if cfg.ProgressInterval > 0 && !now.Before(nextProgress) {
			if err := s.logProgress(ctx, now); err != nil {
				return err
			}
			nextProgress = now.Add(cfg.ProgressInterval)
		}
		if cfg.HeartbeatInterval > 0 && !now.Before(nextHeartbeat) {
			if _, err := s.db.Exec(ctx, `SELECT pg_logical_emit_message(false, $1, now()::text)`, HeartbeatPrefix); err != nil {
				return fmt.Errorf("heartbeat: %w", err)
			}
			if err := s.recordSequences(ctx); err != nil {
				return err
			}
			nextHeartbeat = now.Add(cfg.HeartbeatInterval)
		}
		if err := s.coalesce(now); err != nil {
			return err
		}
		deadline := s.wakeAt(now, nextStatus, nextHeartbeat, nextProgress)
		if s.probe {
			// A deadline already past: the read returns what the TLS layer
			// holds, or times out without waiting for the socket.
			deadline = now
		}
		if !deadline.Equal(readDeadline) {
			if err := conn.SetReadDeadline(deadline); err != nil {
				return fmt.Errorf("receive from slot %s: set read deadline: %w", cfg.Slot, err)
			}
			readDeadline = deadline
			// A cancel, a commit's end or a worker's failure after this
			// check moves the deadline set here to now.
			if ctx.Err() != nil || s.inflight != nil && s.inflight.finished.Load() || len(s.online.errc) > 0 {
				continue
			}
		}
		msg, err := s.repl.ReceiveMessage(context.Background())
		if s.probe {
			s.probe, s.probed = false, err != nil
		}
		if err != nil {
			if pgconn.Timeout(err) || ctx.Err() != nil {
				readDeadline = time.Time{}
				continue
			}
			return fmt.Errorf("receive from slot %s: %w", cfg.Slot, err)
		}
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			s.consumed += 5 + len(m.Data) // the message's type and length, then its body
			if err := s.handleCopyData(ctx, m.Data); err != nil {
				return err
			}
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("slot %s: %w", cfg.Slot, pgconn.ErrorResponseToPgError(m))
		case *pgproto3.CopyDone, *pgproto3.CommandComplete:
			// The walsender ends the stream when the server shuts down
			// (a fast shutdown sends CommandComplete): reconnect.
			return fmt.Errorf("slot %s: %w (%T)", cfg.Slot, ErrStreamEnded, msg)
		default:
			return fmt.Errorf("slot %s: unexpected message %T", cfg.Slot, msg)
		}
	}
}

// publicationCheckInterval is how often the stream lists the publication for
// tables that joined or left it.
const publicationCheckInterval = 30 * time.Second

// wakeAt is when the stream must stop waiting for the next message to do
// its timed work: the first of the next status, heartbeat and progress line,
// the end of an open group's delay and the next publication check, each
// only when the stream would do it then. A time it would not act on would
// end every wait at once: the stream would spin until it could. A group's
// delay still ahead ends a wait inside a source transaction too, since the
// wait may be for bytes below the socket's low-water mark (coalesce.go);
// once it has passed, the stream commits or reads what arrived.
func (s *session) wakeAt(now, nextStatus, nextHeartbeat, nextProgress time.Time) time.Time {
	cfg := s.cfg
	deadline := nextStatus
	if s.inflight == nil && s.groupOpen() {
		if d := s.groupDeadline(); d.After(now) && d.Before(deadline) {
			deadline = d
		}
	}
	if cfg.HeartbeatInterval > 0 && nextHeartbeat.Before(deadline) {
		deadline = nextHeartbeat
	}
	if cfg.ProgressInterval > 0 && nextProgress.Before(deadline) {
		deadline = nextProgress
	}
	// The publication is listed between source transactions only.
	if s.tx == nil && s.nextPubCheck.Before(deadline) {
		deadline = s.nextPubCheck
	}
	return deadline
}

// readServerWAL reads the source's current WAL position into serverWAL.
func (s *session) readServerWAL(ctx context.Context) error {
	if err := s.db.QueryRow(ctx, `SELECT pg_current_wal_lsn()`).Scan(&s.serverWAL); err != nil {
		return fmt.Errorf("read the source's WAL position: %w", err)
	}
	return nil
}

// logProgress logs what the stream committed since the last progress line,
// the position the slot was last confirmed at and how far the source's WAL
// is beyond it, and a Kafka commit in flight for a second or more: a stream
// that stalls says so. The stream's own goroutine logs it, so a wait that
// blocks the stream (bounded by --kafka-commit-timeout) shows as a gap.
func (s *session) logProgress(ctx context.Context, now time.Time) error {
	if err := s.readServerWAL(ctx); err != nil {
		return err
	}
	attrs := []any{"period", now.Sub(s.prog.since).Round(100 * time.Millisecond), "source_txns", s.prog.txns, "events", s.prog.events,
		"kafka_commits", s.prog.commits, "confirmed_lsn", s.pos.sent, "source_wal_lsn", s.serverWAL}
	if s.serverWAL > s.pos.sent {
		attrs = append(attrs, "lag_bytes", uint64(s.serverWAL-s.pos.sent))
	}
	if p := s.inflight; p != nil && !p.finished.Load() && now.Sub(p.start) >= time.Second {
		attrs = append(attrs, "kafka_commit_in_flight_for", now.Sub(p.start).Round(time.Millisecond))
	}
	s.log.Info("streaming progress", attrs...)
	s.prog = progress{since: now}
	return nil
}

// shutdown ends a session on cancel: an open Kafka transaction is committed
// when it holds only whole source transactions, otherwise aborted; then the
// final position is confirmed.
func (s *session) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.awaitCommit(ctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if s.w.inTxn {
		if s.tx == nil {
			if err := s.commitGroup(ctx); err != nil {
				return fmt.Errorf("shutdown: %w", err)
			}
		} else {
			s.w.abort()
		}
	}
	if err := s.sendStatus(ctx, false); err != nil {
		return fmt.Errorf("shutdown: final status: %w", err)
	}
	s.log.Info("stopped", "confirmed_lsn", s.pos.sent)
	return nil
}

func (s *session) handleCopyData(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return retry.Terminal(fmt.Errorf("keepalive: %w", err))
		}
		s.pos.keepalive(ka.ServerWALEnd)
		if ka.ServerWALEnd > s.received {
			s.received = ka.ServerWALEnd
		}
		// A synchronous source's commits wait for the flush position:
		// confirm at once whatever the keepalive lets pass.
		if ka.ReplyRequested || s.cfg.Synchronous && s.pos.flush() > s.pos.sent {
			return s.sendStatus(ctx, false)
		}
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return retry.Terminal(fmt.Errorf("xlogdata: %w", err))
		}
		msg, err := parsePgoutput(xld.WALData)
		if err != nil {
			return retry.Terminal(fmt.Errorf("decode pgoutput at %s: %w", xld.WALStart, err))
		}
		if err := s.handle(ctx, xld.WALStart, msg); err != nil {
			return err
		}
		if xld.WALStart > s.received {
			s.received = xld.WALStart
		}
	}
	return nil
}

// startFlush makes the slot's confirmed position (pg_replication_slots, as
// text; NULL for a slot never confirmed) the floor of what the session
// confirms. A session that has committed nothing to Kafka yet would
// otherwise send a flush position of 0, which pglogrepl replaces with the
// write position: the slot would pass everything received (G5).
func (s *session) startFlush(confirmed *string) error {
	if confirmed == nil {
		return nil
	}
	lsn, err := pglogrepl.ParseLSN(*confirmed)
	if err != nil {
		return fmt.Errorf("slot %s: confirmed_flush_lsn %q: %w", s.cfg.Slot, *confirmed, err)
	}
	s.pos.floor(lsn)
	return nil
}

func (s *session) sendStatus(ctx context.Context, reply bool) error {
	flush := s.pos.flush()
	write := s.received
	if write < flush {
		write = flush
	}
	ssu := pglogrepl.StandbyStatusUpdate{WALWritePosition: write, WALFlushPosition: flush, WALApplyPosition: flush, ReplyRequested: reply}
	if flush == 0 {
		// Nothing is safe to confirm, not even the slot's own position
		// (unknown): pglogrepl sends the write position in place of a zero
		// flush or apply position, so report no position at all.
		ssu.WALWritePosition = 0
	}
	err := pglogrepl.SendStandbyStatusUpdate(ctx, s.repl, ssu)
	if err != nil {
		return fmt.Errorf("standby status update: %w", err)
	}
	if flush > s.pos.sent || s.confirmedAt.IsZero() {
		s.log.Debug("confirmed", "flush_lsn", flush, "write_lsn", write)
		s.confirmedAt = time.Now()
	}
	s.pos.sentFlush(flush)
	serverWAL := s.serverWAL
	if serverWAL < write {
		serverWAL = write
	}
	s.cfg.Observer.Positions(Positions{ServerWAL: serverWAL, Received: write, Confirmed: flush, ConfirmedAt: s.confirmedAt})
	return nil
}

// commitGroup commits the open Kafka transaction and moves the confirmed
// position to the end of its last source transaction. A commit in flight
// and the records queued behind it are committed first.
func (s *session) commitGroup(ctx context.Context) error {
	if err := s.commitGroupAsync(ctx); err != nil {
		return err
	}
	return s.awaitCommit(ctx)
}

// beginGroup opens a Kafka transaction for the next events if none is open.
func (s *session) beginGroup() error {
	if s.w.inTxn {
		return nil
	}
	if err := s.w.begin(); err != nil {
		return err
	}
	s.groupStart = time.Now()
	return nil
}

func (s *session) handle(ctx context.Context, walStart pglogrepl.LSN, msg pglogrepl.Message) error {
	switch m := msg.(type) {
	case *pglogrepl.BeginMessage:
		s.tx = &txState{xid: m.Xid, commitLSN: m.FinalLSN, commitTime: m.CommitTime, counts: map[tpKey]int64{}}
		s.tx.prevEnd = s.lastEnd
		if s.tx.prevEnd == 0 {
			// The first transaction since the session started: the
			// slot's confirmed position ends the last one in Kafka.
			s.tx.prevEnd = s.pos.sent
		}
		s.tx.skip = m.FinalLSN <= s.resumeAfter
		if !s.tx.skip {
			s.pos.begin(m.FinalLSN)
		}
	case *pglogrepl.OriginMessage:
		if s.tx != nil {
			s.tx.origin, s.tx.originLSN = m.Name, m.CommitLSN
			s.tx.enc = nil
			if !s.forwardOrigin(m.Name) {
				s.tx.skip = true
			}
		}
	case *pglogrepl.RelationMessage:
		if err := s.relation(ctx, m); err != nil {
			return err
		}
		return s.noteRelation(ctx, m)
	case *pglogrepl.TypeMessage:
		// Types are read from the catalog when a Relation message uses
		// them; the name is kept for a type dropped since (catalog.pgType).
		s.cat.noteType(m.DataType, m.Namespace, m.Name)
	case *pglogrepl.InsertMessage:
		return s.change(ctx, m.RelationID, walStart, schemas.OpInsert, nil, m.Tuple)
	case *pglogrepl.UpdateMessage:
		return s.change(ctx, m.RelationID, walStart, schemas.OpUpdate, m.OldTuple, m.NewTuple)
	case *pglogrepl.DeleteMessage:
		return s.change(ctx, m.RelationID, walStart, schemas.OpDelete, m.OldTuple, nil)
	case *pglogrepl.TruncateMessage:
		return s.truncate(ctx, walStart, m)
	case *pglogrepl.LogicalDecodingMessage:
		return s.message(ctx, m)
	case *pglogrepl.CommitMessage:
		return s.commit(ctx, m)
	}
	return nil
}

// heartbeatTime is the source's clock in a heartbeat (now()::text under the
// session's ISO DateStyle), or the producer's when it cannot be read.
func heartbeatTime(content []byte) time.Time {
	if t, err := time.Parse("2006-01-02 15:04:05.999999-07", string(content)); err == nil {
		return t.UTC()
	}
	return time.Now().UTC()
}

func (s *session) forwardOrigin(name string) bool {
	for _, o := range s.cfg.ForwardOrigins {
		if o == "all" || o == name {
			return true
		}
	}
	return false
}

// relation registers a table version's schemas when its columns change.
func (s *session) relation(ctx context.Context, m *pglogrepl.RelationMessage) error {
	t, err := s.cat.table(ctx, m)
	if err != nil {
		return err
	}
	rs := &relState{name: t.Schema + "." + t.Name}
	if s.excluded(t.Schema, rs.name) {
		rs.skip = true
		s.relations[m.RelationID] = rs
		return nil
	}
	if old := s.relations[m.RelationID]; old != nil && old.ts != nil && sameColumns(old.ts.Table, t) {
		return nil
	}
	if st := s.state.table(rs.name); st != nil && st.OID == m.RelationID {
		rs.pending = st.Snapshot != nil && st.Snapshot.Kind == txlog.SnapshotOnline && st.Snapshot.Status.Active()
	}
	ts, err := schemas.BuildTableSchemaEnvelope(s.cfg.Prefix, t, s.cfg.UnsupportedTypes, s.cfg.Envelope)
	if err != nil {
		return retry.Terminal(err)
	}
	rs.ts = ts
	rs.enc = schemas.NewEncoder(ts)
	rs.srcHead = schemas.EncoderSourceHead(s.cfg.Version, s.cfg.Prefix, s.dbName, t.Schema, t.Name)
	if ts.Envelope == schemas.EnvelopeDebezium {
		rs.enc = rs.enc.WithToastPlaceholder(s.cfg.ToastPlaceholder)
		rs.dbzHead = schemas.NewDebeziumSourceHead(s.cfg.Version, s.cfg.Prefix, s.dbName, t.Schema, t.Name)
	}
	if rs.topic, err = s.w.ensureTopic(ctx, ts.Topic, 0, s.topicConfig(true)...); err != nil {
		return err
	}
	if rs.keyID, err = s.register(ctx, schemas.KeySubject(ts.Topic), ts.KeySchema); err != nil {
		return fmt.Errorf("table %s: %w", t, err)
	}
	if rs.valueID, err = s.register(ctx, schemas.ValueSubject(ts.Topic), ts.ValueSchema); err != nil {
		return fmt.Errorf("table %s: %w", t, err)
	}
	s.relations[m.RelationID] = rs
	s.log.Info("table schema", "table", t.String(), "topic", ts.Topic, "columns", len(t.Columns), "value_schema_id", rs.valueID)
	return nil
}

// noteRelation records a table that the stream describes for the first
// time and the state does not know as captured: it joined the publication
// (see join), at the current transaction's position.
func (s *session) noteRelation(ctx context.Context, m *pglogrepl.RelationMessage) error {
	rs := s.relations[m.RelationID]
	cur := s.state.table(rs.name)
	if rs.skip {
		if cur == nil || cur.Status != txlog.TableExcluded || cur.OID != m.RelationID {
			s.state.set(&txlog.TableState{Schema: m.Namespace, Table: m.RelationName, OID: m.RelationID, Status: txlog.TableExcluded})
		}
		return nil
	}
	if cur != nil && cur.Status == txlog.TableCaptured && (cur.OID == m.RelationID || cur.OID == 0) {
		return nil
	}
	at := s.received
	if s.tx != nil {
		at = s.tx.commitLSN
	}
	s.join(m.RelationID, m.Namespace, m.RelationName, s.pubAll, at, -1)
	s.setPending(s.state.table(rs.name))
	return s.online.schedule(ctx)
}

func sameColumns(a, b schemas.Table) bool {
	if a.Schema != b.Schema || a.Name != b.Name || len(a.Columns) != len(b.Columns) {
		return false
	}
	for i := range a.Columns {
		x, y := a.Columns[i], b.Columns[i]
		if x.Name != y.Name || x.Type.OID != y.Type.OID || x.Typmod != y.Typmod || x.Key != y.Key {
			return false
		}
	}
	return true
}

// eventError names everything an operator needs to find a bad event.
func (s *session) eventError(rs *relState, lsn pglogrepl.LSN, key string, err error) error {
	xid := uint32(0)
	commit := pglogrepl.LSN(0)
	if s.tx != nil {
		xid, commit = s.tx.xid, s.tx.commitLSN
	}
	return retry.Terminal(fmt.Errorf("table %s key %s lsn %s (xid %d, commit %s): %w", rs.ts.Table, key, lsn, xid, commit, err))
}

func (s *session) change(ctx context.Context, relID uint32, lsn pglogrepl.LSN, op schemas.Op, oldT, newT *pglogrepl.TupleData) error {
	if s.tx == nil {
		return retry.Terminal(fmt.Errorf("change at %s outside a transaction", lsn))
	}
	rs, ok := s.relations[relID]
	if !ok {
		if s.tx.skip {
			return nil
		}
		return retry.Terminal(fmt.Errorf("change at %s for relation %d before its Relation message", lsn, relID))
	}
	if rs.skip {
		return nil
	}
	if s.tx.skip {
		// Not written (from an origin not forwarded), but a chunk read
		// while it happened must not bring back the row as it was.
		if rs.pending {
			s.tx.noteOnline(rs.name)
		}
		if s.online != nil && len(s.online.windows[rs.name]) > 0 {
			for _, t := range []*pglogrepl.TupleData{oldT, newT} {
				if t != nil {
					if key, err := s.encodeKey(rs, t); err == nil {
						s.online.noteKey(rs.name, key)
					}
				}
			}
		}
		return nil
	}
	keyT := newT
	if op == schemas.OpDelete {
		keyT = oldT
	}
	key, err := s.encodeKey(rs, keyT)
	if err != nil {
		return s.eventError(rs, lsn, rs.enc.KeyText(keyT), err)
	}
	if op == schemas.OpUpdate && oldT != nil {
		oldKey, err := s.encodeKey(rs, oldT)
		if err != nil {
			return s.eventError(rs, lsn, rs.enc.KeyText(oldT), err)
		}
		if !bytes.Equal(oldKey, key) {
			// A key change is a delete of the old key and an insert of the
			// new one, so that each key's events stay on its own partition.
			if err := s.emitChange(ctx, rs, lsn, schemas.OpDelete, oldKey, oldT, oldT, nil); err != nil {
				return err
			}
			carryUnchanged(newT, oldT)
			return s.emitChange(ctx, rs, lsn, schemas.OpInsert, key, newT, nil, newT)
		}
	}
	return s.emitChange(ctx, rs, lsn, op, key, keyT, oldT, newT)
}

// carryUnchanged fills in the new row of a key change the values that
// pgoutput did not send because they did not change (unchanged TOAST),
// from the old row where it holds them: under REPLICA IDENTITY FULL the
// old row is logged whole, its TOASTed values included. The insert of the
// new key then carries every value, as a reader that applies it needs: the
// old key's row is deleted. Under the other identities the old row holds
// the key only, and the values stay unsent (see docs/CONSUMING.md).
func carryUnchanged(newT, oldT *pglogrepl.TupleData) {
	for i, c := range newT.Columns {
		if c.DataType != pglogrepl.TupleDataTypeToast || i >= len(oldT.Columns) {
			continue
		}
		if o := oldT.Columns[i]; o.DataType == pglogrepl.TupleDataTypeText || o.DataType == pglogrepl.TupleDataTypeBinary {
			newT.Columns[i] = o
		}
	}
}

// emitChange writes one change; keyT is the row image the key comes from.
// The key is noted in the open windows of online snapshot chunks of the
// table, and the record marked pending while such a snapshot is active.
func (s *session) emitChange(ctx context.Context, rs *relState, lsn pglogrepl.LSN, op schemas.Op, key []byte, keyT, before, after *pglogrepl.TupleData) error {
	if rs.pending {
		s.tx.noteOnline(rs.name)
	}
	if s.online != nil && len(s.online.windows) > 0 {
		s.online.noteKey(rs.name, key)
	}
	r, err := s.encodeChange(rs, rs.topic.part, s.tx, s.tx.pos, lsn, op, key, before, after)
	if err != nil {
		return s.eventError(rs, lsn, rs.enc.KeyText(keyT), err)
	}
	if rs.pending {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: schemas.HeaderSnapshot, Value: pendingHeader})
	}
	partition := r.Partition
	if err := s.produce(ctx, r); err != nil {
		return err
	}
	if op != schemas.OpDelete || !s.cfg.Tombstones {
		return nil
	}
	// The tombstone: the delete's key, a null value, the next position,
	// counted in the frame like any record of the transaction.
	tomb := newRecord(s.tx, s.tx.pos, rs.ts.Topic, key, nil)
	tomb.Partition = partition
	return s.produce(ctx, tomb)
}

// debeziumEvent is the Debezium envelope's part of a change of rs in tx;
// nil for the Tributary envelope. A change from the stream (not a snapshot
// read) takes the next transaction block orders, which only the session's
// goroutine does: snapshot workers encode reads only.
func debeziumEvent(rs *relState, tx *txState, op schemas.Op) *schemas.DebeziumEvent {
	if rs.dbzHead == nil {
		return nil
	}
	d := &schemas.DebeziumEvent{Head: rs.dbzHead, Snapshot: schemas.DebeziumSnapshotFalse, LastCommit: tx.prevEnd, Now: time.Now()}
	switch {
	case op == schemas.OpRead && tx.xid == 0:
		d.Snapshot = schemas.DebeziumSnapshotTrue // the initial snapshot
	case op == schemas.OpRead:
		d.Snapshot = schemas.DebeziumSnapshotIncremental // an online chunk, inside a watermark transaction
	default:
		if tx.dbzColl == nil {
			tx.dbzColl = map[string]int64{}
		}
		tx.dbzTotal++
		tx.dbzColl[rs.name]++
		d.TotalOrder, d.CollectionOrder = tx.dbzTotal, tx.dbzColl[rs.name]
	}
	return d
}

// encodeKey encodes the key columns of row image t as the Kafka key, in the
// Confluent wire format.
func (s *session) encodeKey(rs *relState, t *pglogrepl.TupleData) ([]byte, error) {
	return rs.enc.AppendKey(schemas.AppendHeader(make([]byte, 0, 32), rs.keyID), t)
}

// encodeChange builds the record of one change at position pos of source
// transaction tx: the envelope, its partition and its order headers. It only
// reads shared state, so snapshot workers call it concurrently, each with its
// own partitioner and txState.
func (s *session) encodeChange(rs *relState, part kgo.TopicPartitioner, tx *txState, pos int64, lsn pglogrepl.LSN, op schemas.Op, key []byte, before, after *pglogrepl.TupleData) (*kgo.Record, error) {
	ts := rs.ts
	if key == nil {
		return nil, errors.New("keyless change")
	}
	ev := schemas.EncoderEvent{Op: op, Before: before, After: after, SourceHead: rs.srcHead, LSN: lsn,
		Tx: tx.encoded(), Snapshot: op == schemas.OpRead, Position: pos, Debezium: debeziumEvent(rs, tx, op)}
	buf := schemas.AppendHeader(make([]byte, 0, valueSizeHint(rs, before, after)), rs.valueID)
	var val []byte
	var err error
	if ev.Debezium != nil {
		val, err = rs.enc.AppendDebeziumValue(buf, &ev)
	} else {
		val, err = rs.enc.AppendValue(buf, &ev)
	}
	if err != nil {
		return nil, fmt.Errorf("encode value: %w", err)
	}
	r := newRecord(tx, pos, ts.Topic, key, val)
	if ev.Debezium != nil {
		if h := rs.enc.UnchangedToastHeader(after); h != nil {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: schemas.HeaderUnchangedToast, Value: h})
		}
	}
	if err := checkEventSize(r, s.cfg.MaxEventBytes); err != nil {
		return nil, err
	}
	r.Partition = int32(part.Partition(r, int(rs.topic.n)))
	return r, nil
}

// valueSizeHint is a capacity for an envelope's bytes that is rarely
// exceeded: the text sizes bound the binary ones of most types.
func valueSizeHint(rs *relState, rows ...*pglogrepl.TupleData) int {
	n := 96 + len(rs.srcHead)
	if rs.dbzHead != nil {
		n += 160 + len(rs.srcHead) // the Debezium source block and timestamps
	}
	for _, t := range rows {
		if t == nil {
			continue
		}
		for _, c := range t.Columns {
			n += 2 + len(c.Data)
		}
	}
	return n
}

// orderedRecord is a record with its order headers, the headers that let
// readers check order without decoding, and the position's digits: one
// allocation instead of three, for what the producer makes once per change.
type orderedRecord struct {
	kgo.Record
	hdrs [3]kgo.RecordHeader
	pos  [20]byte // the position header's decimal digits
}

// newRecord is a record at position pos of source transaction tx, with its
// order headers. A header appended to it goes into a new slice.
func newRecord(tx *txState, pos int64, topic string, key, value []byte) *kgo.Record {
	tx.encoded()
	o := &orderedRecord{}
	o.hdrs = [3]kgo.RecordHeader{
		{Key: schemas.HeaderCommitLSN, Value: tx.commitHdr},
		{Key: schemas.HeaderPosition, Value: strconv.AppendUint(o.pos[:0], uint64(pos), 10)},
		{Key: schemas.HeaderXID, Value: tx.xidHdr},
	}
	o.Record = kgo.Record{Topic: topic, Key: key, Value: value, Headers: o.hdrs[:]}
	return &o.Record
}

// produce sends r, whose partition and headers are set, in the open Kafka
// transaction and counts it in the current source transaction.
func (s *session) produce(ctx context.Context, r *kgo.Record) error {
	// The client owns r once it has it (it sets r.Partition again when it
	// buffers the record): read it before.
	tp := tpKey{r.Topic, r.Partition}
	if err := s.send(ctx, r); err != nil {
		return err
	}
	s.tx.pos++
	s.tx.counts[tp]++
	s.groupEvents++
	if err := s.w.stalled(); err != nil {
		return err
	}
	return ctx.Err()
}

func clip(b []byte) string {
	if len(b) > 64 {
		return string(b[:61]) + "..."
	}
	return string(b)
}

// truncate produces one truncate event per partition of each table, so that
// per-key readers of every partition see it in order.
func (s *session) truncate(ctx context.Context, lsn pglogrepl.LSN, m *pglogrepl.TruncateMessage) error {
	if s.tx == nil || s.tx.skip {
		return nil
	}
	var options []string
	if m.Option&pglogrepl.TruncateOptionRestartIdentity != 0 {
		options = append(options, "restart_identity")
	}
	if m.Option&pglogrepl.TruncateOptionCascade != 0 {
		options = append(options, "cascade")
	}
	opts := []byte(strings.Join(options, ","))
	if s.cfg.Envelope == schemas.EnvelopeDebezium && s.cfg.EnvelopeSkipTruncate {
		return nil // as Debezium's skipped.operations=t: not written at all
	}
	for _, id := range m.RelationIDs {
		rs, ok := s.relations[id]
		if !ok {
			return retry.Terminal(fmt.Errorf("truncate at %s of relation %d before its Relation message", lsn, id))
		}
		if rs.skip {
			continue
		}
		ts := rs.ts
		if t := s.state.table(rs.name); t != nil && t.Snapshot != nil && t.Snapshot.Kind == txlog.SnapshotOnline && t.Snapshot.Status.Active() {
			// Every row the snapshot had left to read is gone; rows
			// written from now on are in the stream.
			t.Snapshot.Status, t.Snapshot.Reason, t.Snapshot.Finished = txlog.SnapshotDone, "truncated while the snapshot ran", now()
			s.state.changed(t)
			s.online.dropTable(rs.name)
			s.log.Info("online snapshot done: the table was truncated", "table", rs.name, "snapshot", t.Snapshot.ID)
		}
		// One Debezium truncate event per table: its copies on every
		// partition share the transaction block's orders.
		dbz := debeziumEvent(rs, s.tx, schemas.OpTruncate)
		for p := int32(0); p < rs.topic.n; p++ {
			ev := schemas.EncoderEvent{Op: schemas.OpTruncate, SourceHead: rs.srcHead, LSN: lsn, Tx: s.tx.encoded(), Position: s.tx.pos, Debezium: dbz}
			var val []byte
			var err error
			if dbz != nil {
				val, err = rs.enc.AppendDebeziumValue(schemas.AppendHeader(nil, rs.valueID), &ev)
			} else {
				val, err = rs.enc.AppendValue(schemas.AppendHeader(nil, rs.valueID), &ev)
			}
			if err != nil {
				return s.eventError(rs, lsn, "(truncate)", err)
			}
			r := newRecord(s.tx, s.tx.pos, ts.Topic, nil, val)
			r.Partition = p
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: schemas.HeaderTruncate, Value: opts})
			if err := s.produce(ctx, r); err != nil {
				return err
			}
		}
	}
	return nil
}

// message passes a logical decoding message through. A transactional one is
// part of its transaction; a non-transactional one is framed on its own.
func (s *session) message(ctx context.Context, m *pglogrepl.LogicalDecodingMessage) error {
	switch m.Prefix {
	case HeartbeatPrefix:
		// A frame of its own, with no event: consumers of an idle source
		// apply it, so their freshness keeps moving.
		commit, end := standaloneLSNs(m)
		if m.Transactional || s.tx != nil || commit <= s.resumeAfter {
			return nil
		}
		s.tx = &txState{commitLSN: commit, commitTime: heartbeatTime(m.Content), counts: map[tpKey]int64{}, forceFrame: true}
		s.pos.begin(commit)
		return s.finishTx(ctx, end)
	case WatermarkPrefix, SignalPrefix:
		if !m.Transactional || s.tx == nil || s.tx.skip {
			return nil
		}
		if m.Prefix == SignalPrefix {
			return s.signal(ctx, m)
		}
		return s.online.watermarkMessage(ctx, m)
	}
	standalone := !m.Transactional || s.tx == nil
	commit, end := standaloneLSNs(m)
	if standalone {
		if commit <= s.resumeAfter {
			return nil
		}
		s.tx = &txState{commitLSN: commit, commitTime: time.Now(), counts: map[tpKey]int64{}}
		s.pos.begin(commit)
	} else if s.tx.skip {
		return nil
	}
	src := schemas.Source{Version: s.cfg.Version, Prefix: s.cfg.Prefix, DB: s.dbName, LSN: m.LSN,
		CommitLSN: s.tx.commitLSN, Xid: s.tx.xid, CommitTime: s.tx.commitTime, Origin: s.tx.origin}
	val, err := s.msgCodec.BinaryFromNative(schemas.AppendHeader(nil, s.msgValID), map[string]any{
		"prefix": m.Prefix, "content": m.Content, "transactional": m.Transactional, "source": src.Native(),
		"tx": map[string]any{"id": schemas.TxID(s.tx.xid, s.tx.commitLSN), "position": s.tx.pos},
	})
	if err != nil {
		return retry.Terminal(fmt.Errorf("message %q at %s: %w", m.Prefix, m.LSN, err))
	}
	key, err := s.msgKey.BinaryFromNative(schemas.AppendHeader(nil, s.msgKeyID), map[string]any{"prefix": m.Prefix})
	if err != nil {
		return retry.Terminal(fmt.Errorf("message %q at %s: %w", m.Prefix, m.LSN, err))
	}
	r := newRecord(s.tx, s.tx.pos, schemas.MessagesTopic(s.cfg.Prefix), key, val)
	if err := checkEventSize(r, s.cfg.MaxEventBytes); err != nil {
		return retry.Terminal(fmt.Errorf("message %q at %s (xid %d, commit %s): %w", m.Prefix, m.LSN, s.tx.xid, s.tx.commitLSN, err))
	}
	r.Partition = s.w.partitionFor(s.msgTopic, r)
	if err := s.produce(ctx, r); err != nil {
		return err
	}
	if standalone {
		return s.finishTx(ctx, end)
	}
	return nil
}

// standaloneLSNs are the commit and end LSN of the frame of a
// non-transactional logical decoding message. PostgreSQL reports such a
// message at the end of its WAL record (decode.c's logicalmsg_decode queues
// it at buf->endptr), which is where the next record starts: the commit
// record of the next transaction can have that very LSN as its commit LSN.
// The frame's commit LSN is one below (inside the message's own record, so
// above every earlier commit), which keeps commit LSNs unique and
// increasing along the log, and the resume point ("every commit up to X is
// in Kafka") never covers the transaction that follows. Its end LSN, to
// which the slot is confirmed, is the record's end: a restart decodes no
// record that starts before it, so the message is not sent again.
func standaloneLSNs(m *pglogrepl.LogicalDecodingMessage) (commit, end pglogrepl.LSN) {
	return framedBelow(m.LSN)
}

// framedBelow are the commit and end LSN of a frame that is no source
// transaction's and covers the stream up to at, where the next record
// starts: a non-transactional message (standaloneLSNs) or a chunk of the
// initial snapshot, read as of the slot's consistent point. A transaction
// that the snapshot does not hold can commit with that very LSN (its
// commit record the first after the consistent point, which PostgreSQL
// decodes), so the frame's commit LSN is one below: the resume point never
// covers that transaction, and its changes order after the snapshot's reads.
func framedBelow(at pglogrepl.LSN) (commit, end pglogrepl.LSN) {
	return at - 1, at
}

func (s *session) commit(ctx context.Context, m *pglogrepl.CommitMessage) error {
	if s.tx == nil {
		return retry.Terminal(fmt.Errorf("commit at %s without begin", m.CommitLSN))
	}
	s.lastEnd = m.TransactionEndLSN
	if len(s.tx.online) > 0 && s.online != nil {
		s.online.noteTxn(s.tx.xid, s.tx.online)
	}
	if s.tx.skip || s.tx.pos == 0 && !s.tx.forceFrame {
		// Already in Kafka, from an origin that is not forwarded, or with no
		// published change: no frame. The position moves past it once
		// earlier transactions are durable (slotPosition.skipped). A
		// synchronous source's commit waits for that.
		s.pos.skipped(s.tx.commitLSN, m.TransactionEndLSN, s.groupOpen())
		s.tx = nil
		if s.cfg.Synchronous && s.pos.flush() > s.pos.sent {
			return s.sendStatus(ctx, false)
		}
		return nil
	}
	return s.finishTx(ctx, m.TransactionEndLSN)
}

// finishTx writes the frame of the current source transaction and commits the
// Kafka transaction when the group is full.
func (s *session) finishTx(ctx context.Context, end pglogrepl.LSN) error {
	tx := s.tx
	f, r := s.frameRecord(tx, end)
	if err := s.send(ctx, r); err != nil {
		return err
	}
	s.state.noteFrame(f)
	s.groupTxns++
	s.pos.framed(end)
	s.tx = nil
	if s.cfg.Synchronous {
		// The source commit waits for this confirmation: commit and confirm
		// at once rather than batching.
		if err := s.commitGroup(ctx); err != nil {
			return err
		}
		return s.sendStatus(ctx, false)
	}
	if s.groupEvents >= s.cfg.GroupMaxEvents {
		return s.commitGroupAsync(ctx)
	}
	return nil
}

// frameRecord is the frame of source transaction tx, which ends at end, and
// its record on the transactions topic, made in one allocation as newRecord
// makes a change's record with its headers.
func (s *session) frameRecord(tx *txState, end pglogrepl.LSN) (*schemas.Frame, *kgo.Record) {
	fr := &struct {
		f schemas.Frame
		r kgo.Record
	}{f: schemas.Frame{Xid: tx.xid, CommitLSN: tx.commitLSN, EndLSN: end, CommitTime: tx.commitTime,
		Origin: tx.origin, Events: tx.pos, Snapshot: tx.snapChunk, Request: tx.request}}
	f := &fr.f
	size := 96 + len(tx.origin) // the header, the fixed fields and the unions' indexes
	if len(tx.counts) > 0 {
		f.Partitions = make([]schemas.PartitionCount, 0, len(tx.counts))
		for k, n := range tx.counts {
			f.Partitions = append(f.Partitions, schemas.PartitionCount{Topic: k.topic, Partition: k.partition, Count: n})
			size += len(k.topic) + 2*binary.MaxVarintLen64
		}
	}
	sortCounts(f.Partitions)
	val := schemas.EncoderAppendFrame(schemas.AppendHeader(make([]byte, 0, size), s.frameID), f)
	fr.r = kgo.Record{Topic: s.txTopic, Partition: 0, Value: val}
	return f, &fr.r
}

func sortCounts(p []schemas.PartitionCount) {
	slices.SortFunc(p, func(a, b schemas.PartitionCount) int {
		if c := strings.Compare(a.Topic, b.Topic); c != 0 {
			return c
		}
		return cmp.Compare(a.Partition, b.Partition)
	})
}
