package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/conflict"
	"github.com/tributary-cdc/tributary/consumer/postgres"
	"github.com/tributary-cdc/tributary/integration/harness"
	"github.com/tributary-cdc/tributary/producer"
	"github.com/tributary-cdc/tributary/schemas"
)

// msSite is one site of a multi-site test: its database and its producer's
// prefix, on a broker that every site shares.
type msSite struct {
	name string
	env  *env
	c    *pgx.Conn // the test goroutine's connection; see conn
}

// conn is one connection per site for the test goroutine's queries.
func (s *msSite) conn(t *testing.T) *pgx.Conn {
	if s.c == nil {
		s.c = s.env.pg.Conn(t)
	}
	return s.c
}

// dump is table's rows as text, in key order.
func (s *msSite) dump(t *testing.T, table string) string {
	t.Helper()
	rows, err := s.conn(t).Query(context.Background(), fmt.Sprintf(`SELECT t::text FROM %s t ORDER BY 1`, table))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return fmt.Sprint(out)
}

// newSites starts one PostgreSQL per name, all on one broker and registry,
// each with the DDL applied and a publication "pub" of tables.
func newSites(t *testing.T, tables string, ddl []string, names ...string) []*msSite {
	t.Helper()
	base := newEnv(t)
	out := make([]*msSite, len(names))
	for i, n := range names {
		e := &env{pg: base.pg, kafka: base.kafka, reg: base.reg, prefix: base.prefix + "_" + strings.ToLower(n)}
		if i > 0 {
			e.pg = harness.StartPostgres(t)
		}
		e.pg.Exec(t, ddl...)
		e.pg.Exec(t, "CREATE PUBLICATION pub FOR TABLE "+tables)
		out[i] = &msSite{name: n, env: e}
	}
	return out
}

// newSetupSites is newSites with `tributary setup multisite` run at every
// site for the configuration yml, and each site's producer running; it
// returns the sites and the configuration's file.
func newSetupSites(t *testing.T, tables, yml string, ddl []string, names ...string) ([]*msSite, string) {
	t.Helper()
	sites := newSites(t, tables, ddl, names...)
	cfg := conflictsFile(t, yml)
	for _, s := range sites {
		s.setupMultisite(t, cfg)
		s.produce(t)
	}
	return sites, cfg
}

// produce runs the site's producer; forward is --forward-origins.
func (s *msSite) produce(t *testing.T, forward ...string) {
	t.Helper()
	cfg := s.env.producerConfig(t)
	cfg.Slot = "slot_" + strings.ToLower(s.name)
	cfg.ForwardOrigins = forward
	cfg.Snapshot = producer.SnapshotNever
	s.env.runProducer(t, cfg)
}

// consume runs, in process, a consumer at s of from's prefix, under the
// origin tributary_<from>, with the conflict configuration yml; it returns
// the engine. It stops when the test ends, and fails the test as soon as it
// stops by itself.
func (s *msSite) consume(t *testing.T, from *msSite, yml string) *conflict.Engine {
	t.Helper()
	r := s.startConsumer(t, from, yml)
	go func() {
		select {
		case err := <-r.done:
			if r.ctx.Err() == nil {
				t.Errorf("%s stopped: %v", r.name, err)
			}
			r.done <- err
		case <-r.ctx.Done():
		}
	}()
	return r.eng
}

// query returns the first column of sql's single row at s.
func (s *msSite) query(t *testing.T, sql string, args ...any) string {
	t.Helper()
	var v *string
	err := s.conn(t).QueryRow(context.Background(), sql, args...).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return "<no row>"
	}
	if err != nil {
		t.Fatalf("%s at %s: %v", sql, s.name, err)
	}
	if v == nil {
		return "NULL"
	}
	return *v
}

// waitEqual waits until table holds the same rows at every site.
func waitEqual(t *testing.T, table string, sites ...*msSite) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		first := sites[0].dump(t, table)
		same := true
		var diff string
		for _, s := range sites[1:] {
			if d := s.dump(t, table); d != first {
				same, diff = false, fmt.Sprintf("%s: %s\n%s: %s", sites[0].name, first, s.name, d)
			}
		}
		if same {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not converge in 90s:\n%s", table, diff)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitValue waits until sql returns want at s.
func waitValue(t *testing.T, s *msSite, want, sql string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := s.query(t, sql, args...)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("at %s, %s (arguments %v) = %s after 60s, want %s", s.name, sql, args, got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readConflictTopic reads every committed record of a conflicts topic so
// far, decoding each with the schema the registry has for its ID.
func readConflictTopic(t *testing.T, k *harness.Kafka, reg *schemas.Registry, topic string) []conflict.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := k.Admin(t).ListCommittedOffsets(ctx, topic)
	if err != nil {
		return nil
	}
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil && o.Offset > 0 {
			want[o.Partition] = o.Offset
		}
	})
	if len(want) == 0 {
		return nil
	}
	cl := k.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	var out []conflict.Record
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s: %v", topic, ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			end, ok := want[r.Partition]
			if !ok || r.Offset >= end {
				return
			}
			if r.Offset >= end-1 {
				delete(want, r.Partition)
			}
			if r.Attrs.IsControl() {
				return // a transaction marker
			}
			rec, err := conflict.DecodeRecord(ctx, reg, r.Value)
			if err != nil {
				t.Fatalf("%s offset %d: %v", topic, r.Offset, err)
			}
			out = append(out, rec)
		})
	}
	return out
}

// produceProc runs the site's producer as a subprocess (slot "slot", no
// initial snapshot), so that a test can kill it like a crashed process.
func (s *msSite) produceProc(t *testing.T) *harness.Proc {
	t.Helper()
	p := harness.StartTributary(t, nil, s.env.producerArgs("--snapshot", "never")...)
	s.env.waitSlotActive(t, "slot", p)
	return p
}

// consumeStoppable is startConsumer for a test that takes the site down
// and brings it back: stop cancels the consumer and waits for it, failing
// the test if it had stopped with an error before.
func (s *msSite) consumeStoppable(t *testing.T, from *msSite, yml string) (*conflict.Engine, func()) {
	t.Helper()
	r := s.startConsumer(t, from, yml)
	return r.eng, func() { r.stop(t) }
}

// msRun is a consumer that a test stops, expects to stop, and restarts.
type msRun struct {
	name    string // "consumer at <site> of <from>", for messages
	eng     *conflict.Engine
	done    chan error // Run's result, once
	ctx     context.Context
	cancel  context.CancelFunc
	ended   bool // the test saw it stop by itself (stopped)
	stopRan bool // stop ran: a second stop (the test's end) does nothing
}

// startConsumer runs, in process, a consumer at s of from's prefix as
// consume does (in mode, transactional by default), but hands its end to
// the test: wait for an error it stops with, or stop it. The test's end
// stops it too.
func (s *msSite) startConsumer(t *testing.T, from *msSite, yml string, mode ...consumer.Mode) *msRun {
	t.Helper()
	var file *conflict.File
	if yml != "" {
		f, err := conflict.ParseFile([]byte(yml), t.Name())
		if err != nil {
			t.Fatal(err)
		}
		file = f
	}
	name := "from_" + from.name
	eng, err := conflict.New(conflict.Config{File: file, Site: s.name, RemoteSite: from.name, Consumer: name, Logger: testLog(t),
		Outbox: &conflict.OutboxConfig{Target: s.env.pg.DSN, Topic: conflict.ConflictsTopic(from.env.prefix), Kafka: s.env.kafka.Opts(),
			Registry: s.env.reg}})
	if err != nil {
		t.Fatal(err)
	}
	sink, err := postgres.New(postgres.Config{DSN: s.env.pg.DSN, Consumer: name, Origin: conflict.OriginPrefix + from.name,
		Conflicts: eng, Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := consumer.Config{Kafka: s.env.kafka.Opts(), Registry: s.env.reg, Prefix: from.env.prefix,
		Name: name, Sink: sink, Logger: testLog(t), GroupMaxTxns: 1} // as the binary with --site
	if len(mode) > 0 {
		cfg.Mode = mode[0]
	}
	c, err := consumer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &msRun{name: fmt.Sprintf("consumer at %s of %s", s.name, from.name), eng: eng, done: make(chan error, 1), ctx: ctx, cancel: cancel}
	go func() {
		// The conflicts topic's publisher runs beside the consumer and
		// outlives it by its final publication, as the binary's.
		octx, stop := context.WithCancel(context.Background())
		odone := make(chan error, 1)
		go func() { odone <- eng.RunOutbox(octx) }()
		err := c.Run(ctx)
		stop()
		if oerr := <-odone; oerr != nil && err == nil {
			err = fmt.Errorf("conflicts topic: %w", oerr)
		}
		eng.Close(context.Background())
		r.done <- err
	}()
	t.Cleanup(func() { r.stop(t) })
	// The sink creates the conflict tables when it opens.
	waitValue(t, s, "true", `SELECT (to_regclass('tributary_conflict_actions') IS NOT NULL)::text`)
	return r
}

// stopped waits for the consumer to stop by itself and returns why.
func (r *msRun) stopped(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err
		r.ended = true
		return err
	case <-time.After(60 * time.Second):
		t.Fatal("the consumer did not stop within 60 s")
		return nil
	}
}

// stop cancels the consumer and waits for it; an error other than the
// cancellation fails the test. Only the first call does anything, so that
// the test's end does not report again what an earlier stop reported.
func (r *msRun) stop(t *testing.T) {
	t.Helper()
	if r.stopRan {
		return
	}
	r.stopRan = true
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err
		if err != nil && !r.ended && !errors.Is(err, context.Canceled) {
			t.Errorf("%s stopped with: %v", r.name, err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("%s did not stop within 30 s of cancel", r.name)
	}
}

// waitPublished waits until s's producer has confirmed its slot past
// everything written at s so far, so that its log in Kafka holds every
// transaction committed there before the call.
func (s *msSite) waitPublished(t *testing.T) {
	t.Helper()
	target := s.query(t, `SELECT pg_current_wal_lsn()::text`)
	waitValue(t, s, "true", `SELECT (confirmed_flush_lsn >= $1::pg_lsn)::text FROM pg_replication_slots WHERE slot_name = $2`,
		target, "slot_"+strings.ToLower(s.name))
}

// conflictsFile writes yml where the binary's --conflicts reads it.
func conflictsFile(t *testing.T, yml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "conflicts.yaml")
	if err := os.WriteFile(p, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// setupMultisite runs `tributary setup multisite --apply` at s.
func (s *msSite) setupMultisite(t *testing.T, cfgFile string, extra ...string) {
	t.Helper()
	out, err := exec.Command(harness.Binary(t), append([]string{"setup", "multisite", "--apply", "--target", s.env.pg.DSN, "--site", s.name,
		"--conflicts", cfgFile}, extra...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("setup multisite at %s: %v\n%s", s.name, err, out)
	}
}

// consumeProc starts the binary's consumer at s of from's prefix, named
// from_<from>, with --site, --remote-site and --conflicts cfgFile.
func (s *msSite) consumeProc(t *testing.T, from *msSite, cfgFile string, extra ...string) *harness.Proc {
	t.Helper()
	return harness.StartTributary(t, nil, append([]string{"consumer", "--brokers", strings.Join(s.env.kafka.Brokers, ","),
		"--registry", s.env.kafka.RegistryURL, "--prefix", from.env.prefix, "--name", "from_" + from.name,
		"--target", s.env.pg.DSN, "--site", s.name, "--remote-site", from.name, "--conflicts", cfgFile,
		"--log-format", "json"}, extra...)...)
}

// checkConflictsOnce waits until the conflicts topic of from's prefix holds
// every conflict that s's consumer of from recorded in tributary_conflicts,
// and fails the test if it holds one twice, or one that is not there.
func checkConflictsOnce(t *testing.T, s, from *msSite) int {
	t.Helper()
	topic := conflict.ConflictsTopic(from.env.prefix)
	name := "from_" + from.name
	deadline := time.Now().Add(90 * time.Second)
	for {
		want := map[int64]bool{}
		rows, err := s.conn(t).Query(context.Background(), `SELECT id FROM tributary_conflicts WHERE consumer = $1 AND xact IS NOT NULL`, name)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			want[id] = true
		}
		got := map[int64]int{}
		for _, r := range readConflictTopic(t, s.env.kafka, s.env.reg, topic) {
			if r.Site != s.name || r.Consumer != name {
				continue
			}
			got[r.ID]++
			if got[r.ID] > 1 {
				t.Fatalf("%s holds conflict %d of %s at %s twice", topic, r.ID, name, s.name)
			}
			if !want[r.ID] {
				t.Fatalf("%s holds conflict %d of %s at %s, which tributary_conflicts does not", topic, r.ID, name, s.name)
			}
		}
		if len(got) == len(want) {
			return len(got)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %d of the %d conflicts %s recorded at %s", topic, len(got), len(want), name, s.name)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// waitFor waits until cond holds, for at most 90 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 90 s for: %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
