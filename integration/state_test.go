package integration

import (
	"context"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/tributary-cdc/tributary/integration/harness"
	"github.com/tributary-cdc/tributary/producer"
	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog"
)

// These tests try to break the producer's durable state (G1, G2): restarts
// while tables join the publication and while snapshots run, retention
// deleting the log under producers and consumers, and snapshot rows that
// reach sinks which already hold them.

// stateEnv is a source, a target and the arguments of their producer and
// consumer subprocesses.
type stateEnv struct {
	*env
	target *harness.Postgres
}

func newStateEnv(t *testing.T) *stateEnv {
	return &stateEnv{env: newEnv(t), target: harness.StartPostgres(t)}
}

func (e *stateEnv) consumerArgs(name string, extra ...string) []string {
	return append([]string{"--brokers", e.kafka.Brokers[0], "--registry", e.kafka.RegistryURL, "--prefix", e.prefix,
		"--name", name, "--target", e.target.DSN, "--create-tables", "--log-format", "json"}, extra...)
}

// restart stops proc (SIGTERM, or SIGKILL with kill) and starts the producer
// again with args.
func restart(t *testing.T, proc *harness.Proc, kill bool, args []string) *harness.Proc {
	t.Helper()
	if kill {
		proc.Kill()
	} else if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer exit after SIGTERM: %v\n%s", err, lastLines(proc.Output(), 15))
	}
	return harness.StartTributary(t, nil, args...)
}

// TestTableCreatedLaterIsStreamedOnce is the first observation of the state
// issue: under FOR ALL TABLES, a table created after the slot is in the
// stream from its first row, so no restart copies it, and dedupe holds
// across restarts of the producer and an immediate stop of the source.
func TestTableCreatedLaterIsStreamedOnce(t *testing.T) {
	e := newStateEnv(t)
	e.pg.Exec(t,
		`CREATE TABLE a (id int PRIMARY KEY, v int)`,
		`CREATE TABLE ledger (id bigint PRIMARY KEY, w int)`,
		`INSERT INTO a SELECT g, 0 FROM generate_series(1, 200) g`,
		`CREATE PUBLICATION pub FOR ALL TABLES`)
	args := e.producerArgs()
	proc := harness.StartTributary(t, nil, args...)
	e.waitSlotActive(t, "slot", proc)
	load := startLedgerLoad(t, e.pg, 2, 200, "a")
	e.waitFrameCount(t, 20)

	e.pg.Exec(t, `CREATE TABLE b (id int PRIMARY KEY, v int)`, `INSERT INTO b VALUES (1, 1), (2, 2), (3, 3)`)
	load.end()
	load = startLedgerLoad(t, e.pg, 2, 200, "a", "b")
	proc = restart(t, proc, false, args)
	e.waitSlotActive(t, "slot", proc)
	e.pg.Stop(t, "immediate")
	time.Sleep(time.Second)
	e.pg.Start(t)
	proc = restart(t, proc, true, args)
	e.waitSlotActive(t, "slot", proc)
	time.Sleep(time.Second)
	load.end()
	e.waitConfirmed(t, "slot", proc)
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer exit after SIGTERM: %v\n%s", err, lastLines(proc.Output(), 15))
	}

	log := harness.ReadLog(t, e.kafka, e.reg, e.prefix)
	load.requireLedgerOnce(t, e.pg, log, e.prefix)
	if reads := snapshotReads(log, e.prefix, "b"); len(reads) > 0 {
		t.Fatalf("table b, created after the slot, was read by a snapshot (%d keys): its rows are all in the stream", len(reads))
	}
	requireReadOncePerSnapshot(t, log, e.prefix, "a", "ledger")
	st := e.producerState(t)
	if b := st.Tables["public.b"]; b == nil || b.Status != txlog.TableCaptured || b.Snapshot != nil {
		t.Fatalf("state of public.b = %+v, want captured without a snapshot", b)
	}
	catchUp(t, e.consumerArgs("replica")...)
	requireEqualTables(t, e.pg, e.target, "a", "b", "ledger")
	t.Logf("%d source transactions through 2 producer restarts and a source crash: each in Kafka once; b streamed, never copied", load.n.Load())
}

// TestTableAddedToPublicationGetsOnlineSnapshot adds an existing table,
// under load, to a publication: the producer reads it online while the
// stream goes on, a consumer with the strict default conflict policy
// applies the changes that arrive before their rows, and the target ends
// equal to the source.
func TestTableAddedToPublicationGetsOnlineSnapshot(t *testing.T) {
	e := newStateEnv(t)
	e.pg.Exec(t,
		`CREATE TABLE a (id int PRIMARY KEY, v int)`,
		`CREATE TABLE b (id int PRIMARY KEY, v int)`,
		`CREATE TABLE ledger (id bigint PRIMARY KEY, w int)`,
		`INSERT INTO a SELECT g, 0 FROM generate_series(1, 500) g`,
		`INSERT INTO b SELECT g, 0 FROM generate_series(1, 20000) g`,
		`CREATE PUBLICATION pub FOR TABLE a, ledger`)
	args := e.producerArgs("--snapshot-chunk-rows", "1500")
	proc := harness.StartTributary(t, nil, args...)
	e.waitSlotActive(t, "slot", proc)
	load := startLedgerLoad(t, e.pg, 3, 20000, "a", "b")
	e.waitFrameCount(t, 20)
	e.pg.Exec(t, `ALTER PUBLICATION pub ADD TABLE b`)
	st := e.waitSnapshotsDone(t, proc, "public.b")
	load.end()
	e.waitConfirmed(t, "slot", proc)
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer exit after SIGTERM: %v\n%s", err, lastLines(proc.Output(), 15))
	}
	sn := st.Tables["public.b"].Snapshot
	if sn.Kind != txlog.SnapshotOnline || sn.Chunks < 5 {
		t.Fatalf("snapshot of public.b = %+v, want an online snapshot of several chunks", sn)
	}
	log := harness.ReadLog(t, e.kafka, e.reg, e.prefix)
	load.requireLedgerOnce(t, e.pg, log, e.prefix)
	requireReadOncePerSnapshot(t, log, e.prefix, "a", "b", "ledger")
	for k, by := range snapshotReads(log, e.prefix, "a") {
		if by["initial"] != 1 || len(by) != 1 {
			t.Fatalf("table a key %s: reads %v, want one by the initial snapshot only", k, by)
		}
	}
	out := catchUp(t, e.consumerArgs("replica")...)
	requireEqualTables(t, e.pg, e.target, "a", "b", "ledger")
	t.Logf("b read online in %d chunks (%d rows) under %d source transactions; target equal\n%s", sn.Chunks, sn.Rows, load.n.Load(),
		lastLines(out, 2))
}

// TestProducerKilledAtStartUnderLoad is the second observation: four
// writers on four tables (two empty at the start), and the producer killed
// with SIGKILL at each step of its start: once the slot exists, once its
// state is in Kafka, and once the first snapshot chunk is. No table's
// snapshot is repeated, every source transaction is in Kafka once, and the
// target equals the source.
func TestProducerKilledAtStartUnderLoad(t *testing.T) {
	e := newStateEnv(t)
	e.pg.Exec(t,
		`CREATE TABLE t1 (id int PRIMARY KEY, v int)`, `CREATE TABLE t2 (id int PRIMARY KEY, v int)`,
		`CREATE TABLE t3 (id int PRIMARY KEY, v int)`, `CREATE TABLE t4 (id int PRIMARY KEY, v int)`,
		`CREATE TABLE ledger (id bigint PRIMARY KEY, w int)`,
		`INSERT INTO t1 SELECT g, 0 FROM generate_series(1, 4000) g`,
		`INSERT INTO t2 SELECT g, 0 FROM generate_series(1, 4000) g`,
		`CREATE PUBLICATION pub FOR ALL TABLES`)
	load := startLedgerLoad(t, e.pg, 4, 4000, "t1", "t2", "t3", "t4")
	args := e.producerArgs("--snapshot-chunk-rows", "500")
	c := e.pg.Conn(t)
	waitFor := func(proc *harness.Proc, what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for !ok() {
			if exited, err := proc.Exited(); exited {
				t.Fatalf("producer exited (%v) before %s:\n%s", err, what, lastLines(proc.Output(), 15))
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %s after 2 minutes:\n%s", what, lastLines(proc.Output(), 15))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	proc := harness.StartTributary(t, nil, args...)
	waitFor(proc, "slot", func() bool {
		var n int
		_ = c.QueryRow(context.Background(), `SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'slot'`).Scan(&n)
		return n == 1
	})
	proc.Kill()
	proc = harness.StartTributary(t, nil, args...)
	adm := kadm.NewClient(e.kafka.Client(t))
	waitFor(proc, "state", func() bool {
		b, err := txlog.PartitionBounds(context.Background(), adm, schemas.StateTopic(e.prefix), 0)
		return err == nil && !b.Empty()
	})
	proc.Kill()
	proc = harness.StartTributary(t, nil, args...)
	waitFor(proc, "snapshot chunk", func() bool {
		st := e.producerState(t)
		for _, tb := range st.Tables {
			if tb.Snapshot != nil && tb.Snapshot.Chunks > 0 {
				return true
			}
		}
		return false
	})
	proc.Kill()
	proc = harness.StartTributary(t, nil, args...)
	e.waitSnapshotsDone(t, proc)
	load.end()
	e.waitConfirmed(t, "slot", proc)
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer exit after SIGTERM: %v\n%s", err, lastLines(proc.Output(), 15))
	}
	log := harness.ReadLog(t, e.kafka, e.reg, e.prefix)
	load.requireLedgerOnce(t, e.pg, log, e.prefix)
	tables := []string{"t1", "t2", "t3", "t4", "ledger"}
	requireReadOncePerSnapshot(t, log, e.prefix, tables...)
	for _, tb := range tables {
		ids := map[string]bool{}
		for _, by := range snapshotReads(log, e.prefix, tb) {
			for id := range by {
				ids[id] = true
			}
		}
		if len(ids) > 1 {
			t.Fatalf("table %s was read by %d snapshots %v: a snapshot was repeated", tb, len(ids), ids)
		}
	}
	catchUp(t, e.consumerArgs("replica")...)
	requireEqualTables(t, e.pg, e.target, tables...)
	t.Logf("3 kills at start under %d source transactions: each once, no snapshot repeated, target equal", load.n.Load())
}

// deleteRecords deletes the records of every partition of the prefix's
// transactions and data topics below the offset cut returns for its bounds,
// as retention would.
func (e *stateEnv) deleteRecords(t *testing.T, tables []string, cut func(txlog.Bounds) int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	adm := kadm.NewClient(e.kafka.Client(t))
	topics := []string{schemas.TransactionsTopic(e.prefix), schemas.MessagesTopic(e.prefix)}
	for _, tb := range tables {
		topics = append(topics, schemas.TopicName(e.prefix, "public", tb))
	}
	md, err := adm.ListTopics(ctx, topics...)
	if err != nil {
		t.Fatal(err)
	}
	del := kadm.Offsets{}
	for _, td := range md.Sorted() {
		for _, p := range td.Partitions.Sorted() {
			b, err := txlog.PartitionBounds(ctx, adm, td.Topic, p.Partition)
			if err != nil {
				t.Fatal(err)
			}
			if o := cut(b); o > b.Start {
				del.AddOffset(td.Topic, p.Partition, o, -1)
			}
		}
	}
	resp, err := adm.DeleteRecords(ctx, del)
	if err != nil {
		t.Fatal(err)
	}
	if err := resp.Error(); err != nil {
		t.Fatalf("delete records: %v", err)
	}
}

// TestRetention is the third observation: retention deletes the first half
// of every partition of the prefix, then everything. A restarted producer
// copies nothing again and streams on; a consumer whose checkpoint retention
// passed stops, naming where; the documented recovery (an online snapshot
// and --from-snapshot) ends with a target equal to the source.
func TestRetention(t *testing.T) {
	e := newStateEnv(t)
	tables := []string{"a", "b", "ledger"}
	e.pg.Exec(t,
		`CREATE TABLE a (id int PRIMARY KEY, v int)`, `CREATE TABLE b (id int PRIMARY KEY, v int)`,
		`CREATE TABLE ledger (id bigint PRIMARY KEY, w int)`,
		`INSERT INTO a SELECT g, 0 FROM generate_series(1, 2000) g`,
		`INSERT INTO b SELECT g, 0 FROM generate_series(1, 2000) g`,
		`CREATE PUBLICATION pub FOR ALL TABLES`)
	args := e.producerArgs("--snapshot-chunk-rows", "500")
	proc := harness.StartTributary(t, nil, args...)
	e.waitSlotActive(t, "slot", proc)
	load := startLedgerLoad(t, e.pg, 2, 2000, "a", "b")
	e.waitFrameCount(t, 50)
	catchUp(t, e.consumerArgs("replica")...) // its checkpoint is here
	e.waitFrameCount(t, 150)

	e.deleteRecords(t, tables, func(b txlog.Bounds) int64 { return (b.Start + b.End) / 2 })
	proc = restart(t, proc, true, args)
	e.waitSlotActive(t, "slot", proc)
	before := harness.CountFrames(t, e.kafka, e.prefix)
	e.waitFrameCount(t, before+30)
	e.deleteRecords(t, tables, func(b txlog.Bounds) int64 { return b.End })
	proc = restart(t, proc, false, args)
	mustWaitOutput(t, proc, `"msg":"streaming"`, time.Minute)
	e.waitFrameCount(t, 10)
	load.end()
	e.waitConfirmed(t, "slot", proc)
	for _, line := range strings.Split(proc.Output(), "\n") {
		if strings.Contains(line, "snapshot") && !strings.Contains(line, `"kafka_commits"`) {
			t.Fatalf("a producer restarted after retention took a snapshot:\n%s", line)
		}
	}
	st := e.producerState(t)
	for _, tb := range st.SortedTables() {
		if sn := tb.Snapshot; sn != nil && sn.ID != "initial" {
			t.Fatalf("table %s has snapshot %+v after the restarts: retention made the producer copy it again", tb.Name(), sn)
		}
	}

	// The consumer's checkpoint is below the log start now.
	out, code := runConsumerOnce(t, e.consumerArgs("replica")...)
	below := regexp.MustCompile(`partition \d+: the consumer's checkpoint \(next offset \d+\) is below the log start offset \d+`)
	if code == 0 || !below.MatchString(out) || !strings.Contains(out, e.prefix+".") || !strings.Contains(out, "--from-snapshot") {
		t.Fatalf("a consumer behind retention: exit %d, want a stop naming the topic, partition, checkpoint, log start and the recovery:\n%s",
			code, lastLines(out, 10))
	}

	// The recovery: an online snapshot, then --from-snapshot.
	load = startLedgerLoad(t, e.pg, 2, 2000, "a", "b")
	snap := harness.StartTributary(t, nil, "snapshot", "start", "--source", e.pg.DSN, "--slot", "slot", "--id", "recover-1")
	select {
	case <-waitExit(snap):
	case <-time.After(time.Minute):
		t.Fatalf("tributary snapshot start did not return:\n%s", snap.Output())
	}
	if _, err := snap.Exited(); err != nil || !strings.Contains(snap.Output(), "recover-1") {
		t.Fatalf("tributary snapshot start: %v\n%s", err, snap.Output())
	}
	e.waitSnapshotsDone(t, proc, "public.a", "public.b", "public.ledger")
	load.end()
	e.waitConfirmed(t, "slot", proc)
	catchUp(t, e.consumerArgs("replica", "--from-snapshot", "recover-1")...)
	requireEqualTables(t, e.pg, e.target, tables...)
	// A new consumer after retention bootstraps the same way, into its own
	// target.
	fresh := harness.StartPostgres(t)
	e2 := &stateEnv{env: e.env, target: fresh}
	if out, code := runConsumerOnce(t, e2.consumerArgs("fresh")...); code == 0 || !strings.Contains(out, "has no checkpoint") {
		t.Fatalf("a new consumer after retention without --from-snapshot: exit %d\n%s", code, lastLines(out, 5))
	}
	catchUp(t, e2.consumerArgs("fresh", "--from-snapshot", "latest")...)
	requireEqualTables(t, e.pg, fresh, tables...)
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer exit after SIGTERM: %v\n%s", err, lastLines(proc.Output(), 15))
	}
}

// TestOnlineSnapshotKilledAtRandomChunks kills the producer with SIGKILL
// after a seeded random number of chunks of the initial snapshot and then
// of a requested online snapshot, under load: every source transaction is
// in Kafka once, no key is read twice by one snapshot, and replaying Kafka
// into a target with the strict conflict policy ends equal to the source.
func TestOnlineSnapshotKilledAtRandomChunks(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, seed))
	t.Logf("seed %d", seed)
	e := newStateEnv(t)
	e.pg.Exec(t,
		`CREATE TABLE big (id int PRIMARY KEY, v int)`,
		`CREATE TABLE ledger (id bigint PRIMARY KEY, w int)`,
		`INSERT INTO big SELECT g, 0 FROM generate_series(1, 30000) g`,
		`CREATE PUBLICATION pub FOR ALL TABLES`)
	args := e.producerArgs("--snapshot-chunk-rows", "1000", "--snapshot-workers", "2")
	load := startLedgerLoad(t, e.pg, 2, 30000, "big")
	// chunks is how many chunks of big's snapshot are recorded, and
	// whether it is done.
	chunks := func() (int64, bool) {
		if tb := e.producerState(t).Tables["public.big"]; tb != nil && tb.Snapshot != nil {
			return tb.Snapshot.Chunks, tb.Snapshot.Status == txlog.SnapshotDone
		}
		return 0, false
	}
	// killAfter kills the producer once n chunks are recorded, or once the
	// snapshot is done: a target past its last chunk is never reached.
	killAfter := func(proc *harness.Proc, n int64) *harness.Proc {
		t.Helper()
		deadline := time.Now().Add(3 * time.Minute)
		for {
			if c, done := chunks(); c >= n || done {
				break
			}
			if exited, err := proc.Exited(); exited {
				t.Fatalf("producer exited (%v):\n%s", err, lastLines(proc.Output(), 15))
			}
			if time.Now().After(deadline) {
				t.Fatalf("fewer than %d chunks after 3 minutes:\n%s", n, lastLines(proc.Output(), 15))
			}
			time.Sleep(20 * time.Millisecond)
		}
		c, done := chunks()
		t.Logf("kill -9 after %d chunks (done: %v)", c, done)
		return restart(t, proc, true, args)
	}
	proc := harness.StartTributary(t, nil, args...)
	proc = killAfter(proc, 1+rng.Int64N(10))
	e.waitSnapshotsDone(t, proc, "public.big")

	req := harness.StartTributary(t, nil, "snapshot", "start", "--source", e.pg.DSN, "--slot", "slot", "--tables", "big", "--id", "again")
	<-waitExit(req)
	if _, err := req.Exited(); err != nil {
		t.Fatalf("tributary snapshot start: %v\n%s", err, req.Output())
	}
	deadline := time.Now().Add(time.Minute)
	for {
		if tb := e.producerState(t).Tables["public.big"]; tb != nil && tb.Snapshot != nil && tb.Snapshot.ID == "again" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the snapshot request was not taken:\n%s", lastLines(proc.Output(), 15))
		}
		time.Sleep(50 * time.Millisecond)
	}
	proc = killAfter(proc, 1+rng.Int64N(8))
	c, _ := chunks()
	proc = killAfter(proc, c+1+rng.Int64N(8))
	e.waitSnapshotsDone(t, proc, "public.big")
	load.end()
	e.waitConfirmed(t, "slot", proc)
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer exit after SIGTERM: %v\n%s", err, lastLines(proc.Output(), 15))
	}
	log := harness.ReadLog(t, e.kafka, e.reg, e.prefix)
	load.requireLedgerOnce(t, e.pg, log, e.prefix)
	requireReadOncePerSnapshot(t, log, e.prefix, "big", "ledger")
	catchUp(t, e.consumerArgs("replica")...)
	requireEqualTables(t, e.pg, e.target, "big", "ledger")
	t.Logf("seed %d: 3 kills in two snapshots under %d source transactions: each once, target equal", seed, load.n.Load())
}

// TestSnapshotRowsAreIdempotentInEverySink is the fourth observation: an
// online snapshot of tables that a PostgreSQL, a history and a DuckDB
// consumer already hold. The PostgreSQL target upserts the rows, and the
// history and the warehouse record no new version of an unchanged row.
func TestSnapshotRowsAreIdempotentInEverySink(t *testing.T) {
	e := newStateEnv(t)
	e.pg.Exec(t,
		`CREATE TABLE a (id int PRIMARY KEY, v int, note text)`,
		`INSERT INTO a SELECT g, g, 'n' || g FROM generate_series(1, 3000) g`,
		`CREATE PUBLICATION pub FOR ALL TABLES`)
	proc := harness.StartTributary(t, nil, e.producerArgs("--snapshot-chunk-rows", "700")...)
	e.waitSlotActive(t, "slot", proc)
	e.pg.Exec(t, `UPDATE a SET v = v + 1 WHERE id % 10 = 0`, `DELETE FROM a WHERE id % 7 = 0`, `INSERT INTO a VALUES (5000, 1, 'new')`)
	e.waitConfirmed(t, "slot", proc)
	e.target.Exec(t, `CREATE DATABASE hist`)
	histDSN := strings.Replace(e.target.DSN, "/postgres?", "/hist?", 1)
	duck := t.TempDir() + "/w.duckdb"
	histArgs := append(e.consumerArgs("hist"), "--sink", "history", "--target", histDSN)
	duckArgs := []string{"--brokers", e.kafka.Brokers[0], "--registry", e.kafka.RegistryURL, "--prefix", e.prefix,
		"--name", "duck", "--sink", "duckdb", "--duckdb-file", duck, "--log-format", "json"}
	catchUp(t, e.consumerArgs("replica")...)
	catchUp(t, histArgs...)
	catchUp(t, duckArgs...)
	count := func(dsn, sql string) int64 {
		t.Helper()
		c, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		var n int64
		if err := c.QueryRow(context.Background(), sql).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	histBefore := count(histDSN, `SELECT count(*) FROM a_history`)
	duckBefore := duckCount(t, duck, `SELECT count(*) FROM public.a_history`)

	req := harness.StartTributary(t, nil, "snapshot", "start", "--source", e.pg.DSN, "--slot", "slot", "--id", "again")
	<-waitExit(req)
	e.waitSnapshotsDone(t, proc)
	if tb := e.producerState(t).Tables["public.a"]; tb.Snapshot == nil || tb.Snapshot.ID != "again" || tb.Snapshot.Rows == 0 {
		t.Fatalf("snapshot of a = %+v", tb.Snapshot)
	}
	e.waitConfirmed(t, "slot", proc)
	catchUp(t, e.consumerArgs("replica")...)
	catchUp(t, histArgs...)
	catchUp(t, duckArgs...)
	requireEqualTables(t, e.pg, e.target, "a")
	if n := count(histDSN, `SELECT count(*) FROM a_history`); n != histBefore {
		t.Fatalf("the history holds %d rows after a snapshot of unchanged rows, %d before", n, histBefore)
	}
	if n := duckCount(t, duck, `SELECT count(*) FROM public.a_history`); n != duckBefore {
		t.Fatalf("the warehouse history holds %d rows after a snapshot of unchanged rows, %d before", n, duckBefore)
	}
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer exit after SIGTERM: %v\n%s", err, lastLines(proc.Output(), 15))
	}
	t.Logf("a snapshot of %d unchanged rows: target equal, history %d rows and warehouse %d rows unchanged",
		e.producerState(t).Tables["public.a"].Snapshot.Rows, histBefore, duckBefore)
}

// TestProducerBuildsStateFromAnOlderPrefix: a prefix written before the
// state topic existed (simulated by deleting the state topic) gets its
// state built once from the transactions topic; nothing is copied again and
// every source transaction stays in Kafka once.
func TestProducerBuildsStateFromAnOlderPrefix(t *testing.T) {
	e := newStateEnv(t)
	e.pg.Exec(t,
		`CREATE TABLE a (id int PRIMARY KEY, v int)`, `CREATE TABLE ledger (id bigint PRIMARY KEY, w int)`,
		`INSERT INTO a SELECT g, 0 FROM generate_series(1, 3000) g`,
		`CREATE PUBLICATION pub FOR ALL TABLES`)
	args := e.producerArgs("--snapshot-chunk-rows", "1000")
	proc := harness.StartTributary(t, nil, args...)
	e.waitSlotActive(t, "slot", proc)
	load := startLedgerLoad(t, e.pg, 2, 3000, "a")
	e.waitFrameCount(t, 30)
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer exit after SIGTERM: %v\n%s", err, lastLines(proc.Output(), 15))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	adm := kadm.NewClient(e.kafka.Client(t))
	if _, err := adm.DeleteTopic(ctx, schemas.StateTopic(e.prefix)); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); ; {
		if md, err := adm.ListTopics(ctx, schemas.StateTopic(e.prefix)); err == nil && !md.Has(schemas.StateTopic(e.prefix)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the state topic is still there a minute after its deletion")
		}
		time.Sleep(100 * time.Millisecond)
	}
	proc = harness.StartTributary(t, nil, args...)
	mustWaitOutput(t, proc, "built it once from the transactions topic", time.Minute)
	e.waitFrameCount(t, harness.CountFrames(t, e.kafka, e.prefix)+20)
	load.end()
	e.waitConfirmed(t, "slot", proc)
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer exit after SIGTERM: %v\n%s", err, lastLines(proc.Output(), 15))
	}
	st := e.producerState(t)
	if tb := st.Tables["public.a"]; tb == nil || tb.Snapshot == nil || tb.Snapshot.ID != "initial" || tb.Snapshot.Status != txlog.SnapshotDone {
		t.Fatalf("state of public.a built from the log = %+v", tb)
	}
	log := harness.ReadLog(t, e.kafka, e.reg, e.prefix)
	load.requireLedgerOnce(t, e.pg, log, e.prefix)
	requireReadOncePerSnapshot(t, log, e.prefix, "a", "ledger")
	catchUp(t, e.consumerArgs("replica")...)
	requireEqualTables(t, e.pg, e.target, "a", "ledger")
}

// TestOnlineSnapshotPauseResumeCancel drives an online snapshot through
// signals (producer.SendSignal, and tributary snapshot resume): paused, it
// reads no chunk beyond those in flight while the stream goes on; resumed,
// it completes; a cancelled one ends and its table's changes stop carrying
// the pending header.
func TestOnlineSnapshotPauseResumeCancel(t *testing.T) {
	e := newStateEnv(t)
	e.pg.Exec(t,
		`CREATE TABLE big (id int PRIMARY KEY, v int)`, `CREATE TABLE ledger (id bigint PRIMARY KEY, w int)`,
		// Row 40001 is beyond the keys the load below writes, so the load
		// cannot delete the row the update after the cancel changes.
		`INSERT INTO big SELECT g, 0 FROM generate_series(1, 40001) g`,
		`CREATE PUBLICATION pub FOR ALL TABLES`)
	proc := harness.StartTributary(t, nil, e.producerArgs("--snapshot-chunk-rows", "500", "--snapshot-workers", "1")...)
	e.waitSnapshotsDone(t, proc, "public.big")
	signal := func(args ...string) {
		t.Helper()
		p := harness.StartTributary(t, nil, append([]string{"snapshot"}, append(args, "--source", e.pg.DSN, "--slot", "slot")...)...)
		<-waitExit(p)
		if _, err := p.Exited(); err != nil {
			t.Fatalf("tributary snapshot %v: %v\n%s", args, err, p.Output())
		}
	}
	waitStatus := func(want txlog.SnapshotStatus) *txlog.Snapshot {
		t.Helper()
		for deadline := time.Now().Add(2 * time.Minute); ; {
			if sn := e.producerState(t).Tables["public.big"].Snapshot; sn != nil && sn.ID != "initial" && sn.Status == want {
				return sn
			}
			if time.Now().After(deadline) {
				t.Fatalf("snapshot of big not %s after 2 minutes: %+v\n%s", want, e.producerState(t).Tables["public.big"].Snapshot,
					lastLines(proc.Output(), 10))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// A request and its pause, or its cancel, in one source transaction:
	// the producer acts on both before the snapshot can end, however fast
	// it would read.
	signals := func(sigs ...producer.Signal) {
		t.Helper()
		ctx := context.Background()
		c := e.pg.Conn(t)
		tx, err := c.Begin(ctx)
		must(t, err)
		for _, sig := range sigs {
			sig.Slot = "slot"
			if _, err := producer.SendSignal(ctx, c, sig); err != nil {
				t.Fatal(err)
			}
		}
		must(t, tx.Commit(ctx))
	}
	signals(producer.Signal{ID: "p1", Action: producer.SignalSnapshot, Tables: []string{"big"}},
		producer.Signal{ID: "p1-pause", Action: producer.SignalPause, Tables: []string{"big"}})
	paused := waitStatus(txlog.SnapshotPaused)
	// The stream goes on: 50 transactions reach Kafka.
	before := harness.CountFrames(t, e.kafka, e.prefix)
	load := startLedgerLoad(t, e.pg, 1, 40000, "big")
	e.waitFrameCount(t, before+50)
	load.end()
	e.waitConfirmed(t, "slot", proc)
	if sn := e.producerState(t).Tables["public.big"].Snapshot; sn.Status != txlog.SnapshotPaused || sn.Chunks > paused.Chunks+1 {
		t.Fatalf("paused at %d chunks, then %+v while the stream went on", paused.Chunks, sn)
	}
	signal("resume", "--tables", "big")
	done := e.waitSnapshotsDone(t, proc, "public.big").Tables["public.big"].Snapshot
	if done.ID != "p1" || done.Rows == 0 {
		t.Fatalf("resumed snapshot ended as %+v", done)
	}
	signals(producer.Signal{ID: "c1", Action: producer.SignalSnapshot, Tables: []string{"big"}},
		producer.Signal{ID: "c1-cancel", Action: producer.SignalCancel})
	cancelled := waitStatus(txlog.SnapshotCancelled)
	if cancelled.ID != "c1" {
		t.Fatalf("cancelled snapshot %+v", cancelled)
	}
	e.pg.Exec(t, `UPDATE big SET v = -1 WHERE id = 40001`)
	e.waitConfirmed(t, "slot", proc)
	if err := proc.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer exit after SIGTERM: %v\n%s", err, lastLines(proc.Output(), 15))
	}
	// Changes made while a snapshot is active say so; the one after the
	// cancel does not.
	var pending, after int
	for _, tx := range harness.ReadLog(t, e.kafka, e.reg, e.prefix).Txns {
		for _, ev := range tx.Events {
			switch {
			case ev.Op == schemas.OpUpdate && ev.After["v"] == int32(-1):
				after++
				if ev.Pending {
					t.Fatalf("the update after the cancel carries the pending header")
				}
			case ev.Pending:
				pending++
			}
		}
	}
	if after != 1 || pending == 0 {
		t.Fatalf("the update after the cancel is in Kafka %d times; %d changes made during the snapshots carry the pending header", after, pending)
	}
	catchUp(t, e.consumerArgs("replica")...)
	requireEqualTables(t, e.pg, e.target, "big", "ledger")
}
