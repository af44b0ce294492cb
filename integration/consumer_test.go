package integration

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/postgres"
	"github.com/tributary-cdc/tributary/schemas"
)

// bankSchema creates two account tables on the target, an ordinary trigger
// that must not fire during replay, and an ENABLE ALWAYS audit trigger that
// records every applied change.
const bankSchema = `
CREATE TABLE acc_a (id int PRIMARY KEY, balance bigint NOT NULL, note text);
CREATE TABLE acc_b (id int PRIMARY KEY, balance bigint NOT NULL, note text);
CREATE TABLE fired (n int);
CREATE TABLE audit (tbl text, id int, op text, balance bigint);
CREATE FUNCTION fire() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO fired VALUES (1); RETURN NULL; END $$;
CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
  INSERT INTO audit VALUES (TG_TABLE_NAME, coalesce(NEW.id, OLD.id), TG_OP, NEW.balance); RETURN NULL; END $$;
CREATE TRIGGER ordinary AFTER INSERT OR UPDATE OR DELETE ON acc_a FOR EACH ROW EXECUTE FUNCTION fire();
CREATE TRIGGER aud_a AFTER INSERT OR UPDATE OR DELETE ON acc_a FOR EACH ROW EXECUTE FUNCTION audit();
CREATE TRIGGER aud_b AFTER INSERT OR UPDATE OR DELETE ON acc_b FOR EACH ROW EXECUTE FUNCTION audit();
ALTER TABLE acc_a ENABLE ALWAYS TRIGGER aud_a;
ALTER TABLE acc_b ENABLE ALWAYS TRIGGER aud_b;
`

// bank is the source-side model of the transfer workload.
type bank struct {
	n      int
	a, b   []int64
	events int
	last   pglogrepl.LSN
}

func newBank(e *consumerEnv, n int) *bank {
	e.prod.addTable(accountTable("acc_a"), 3)
	e.prod.addTable(accountTable("acc_b"), 3)
	bk := &bank{n: n, a: make([]int64, n), b: make([]int64, n)}
	var chs []change
	for i := range n {
		bk.a[i], bk.b[i] = 100, 100
		chs = append(chs, change{table: "acc_a", op: schemas.OpInsert, after: acct(i, 100, "a")},
			change{table: "acc_b", op: schemas.OpInsert, after: acct(i, 100, "b")})
	}
	bk.last = e.prod.commit(chs)
	bk.events += len(chs)
	return bk
}

// transfer moves money between an account of acc_a and one of acc_b, in one
// source transaction with two changes in different tables and partitions.
func (bk *bank) transfer(e *consumerEnv, r *rand.Rand) {
	i, j := r.IntN(bk.n), r.IntN(bk.n)
	amt := int64(r.IntN(50) + 1)
	if r.IntN(2) == 0 {
		amt = -amt
	}
	bk.a[i] -= amt
	bk.b[j] += amt
	chs := []change{
		{table: "acc_a", op: schemas.OpUpdate, before: acct(i, 0, "")[:1:1], after: acct(i, bk.a[i], "a")},
		{table: "acc_b", op: schemas.OpUpdate, before: acct(j, 0, "")[:1:1], after: acct(j, bk.b[j], "b")},
	}
	// before images hold the key only, as with REPLICA IDENTITY DEFAULT.
	for k := range chs {
		chs[k].before = []any{chs[k].before[0], nil, nil}
	}
	bk.last = e.prod.commit(chs)
	bk.events += len(chs)
}

// waitApplied waits until the consumer's checkpoint reaches lsn.
func (e *consumerEnv) waitApplied(name string, lsn pglogrepl.LSN, errc <-chan error) {
	e.t.Helper()
	c := e.target.Conn(e.t)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-errc:
			e.t.Fatalf("consumer stopped: %v", err)
		default:
		}
		var ok bool
		err := c.QueryRow(context.Background(), `SELECT coalesce(max(commit_lsn) >= $2::text::pg_lsn, false)
			FROM tributary_checkpoint WHERE consumer = $1`, name, lsn.String()).Scan(&ok)
		if err == nil && ok {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Fatalf("consumer did not reach %s", lsn)
}

func (e *consumerEnv) checkBank(bk *bank) {
	e.t.Helper()
	c := e.target.Conn(e.t)
	for _, tb := range []struct {
		name string
		want []int64
	}{{"acc_a", bk.a}, {"acc_b", bk.b}} {
		rows, err := c.Query(context.Background(), "SELECT id, balance FROM "+tb.name+" ORDER BY id")
		must(e.t, err)
		n := 0
		for rows.Next() {
			var id int
			var bal int64
			must(e.t, rows.Scan(&id, &bal))
			if bal != tb.want[id] {
				e.t.Errorf("%s id %d: balance %d, source has %d", tb.name, id, bal, tb.want[id])
			}
			n++
		}
		must(e.t, rows.Err())
		if n != len(tb.want) {
			e.t.Errorf("%s: %d rows, source has %d", tb.name, n, len(tb.want))
		}
	}
	if got := e.queryInt(c, "SELECT count(*) FROM audit"); got != int64(bk.events) {
		e.t.Errorf("audit trigger saw %d changes; the source made %d (each must be applied exactly once)", got, bk.events)
	}
	if got := e.queryInt(c, "SELECT count(*) FROM fired"); got != 0 {
		e.t.Errorf("an ordinary target trigger fired %d times during replay", got)
	}
}

// TestConsumerCrossPartitionAtomicity runs transfers between two tables (three
// partitions each) while a poller checks that the total never changes, then
// checks target equals source, every change was applied once (ALWAYS audit
// trigger), and an ordinary trigger never fired.
func TestConsumerCrossPartitionAtomicity(t *testing.T) {
	e := newConsumerEnv(t)
	e.target.Exec(t, bankSchema)
	bk := newBank(e, 20)
	const total = 2 * 20 * 100

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := e.consumer("atomic", func(cc *consumer.Config, _ *postgres.Config) { cc.GroupMaxTxns = 7 })
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()

	var polls, broken atomic.Int64
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		pc := e.target.Conn(t)
		for ctx.Err() == nil {
			var n, sum int64
			err := pc.QueryRow(ctx, `SELECT (SELECT count(*) FROM acc_a) + (SELECT count(*) FROM acc_b),
				coalesce((SELECT sum(balance) FROM acc_a), 0) + coalesce((SELECT sum(balance) FROM acc_b), 0)`).Scan(&n, &sum)
			if err != nil {
				return
			}
			polls.Add(1)
			if !(n == 0 && sum == 0) && !(n == 40 && sum == total) {
				broken.Add(1)
				t.Errorf("poll saw a state the source never had: %d rows, total %d", n, sum)
			}
		}
	}()

	r := rand.New(rand.NewPCG(1, 2))
	for range 400 {
		bk.transfer(e, r)
	}
	e.waitApplied("atomic", bk.last, errc)
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	<-pollDone
	t.Logf("%d polls, %d broken", polls.Load(), broken.Load())
	if polls.Load() < 10 {
		t.Errorf("only %d polls ran", polls.Load())
	}
	e.checkBank(bk)
}

// TestConsumerRestartExactlyOnce stops the consumer at random points (mid
// apply included) while the workload runs, restarts it each time, and checks
// that every source change was applied exactly once.
func TestConsumerRestartExactlyOnce(t *testing.T) {
	e := newConsumerEnv(t)
	e.target.Exec(t, bankSchema)
	bk := newBank(e, 10)

	var wg sync.WaitGroup
	stopProd := make(chan struct{})
	wg.Go(func() {
		r := rand.New(rand.NewPCG(3, 4))
		for range 600 {
			bk.transfer(e, r)
			time.Sleep(2 * time.Millisecond)
		}
		close(stopProd)
	})
	r := rand.New(rand.NewPCG(5, 6))
	restarts := 0
	produced := func() bool {
		select {
		case <-stopProd:
			return true
		default:
			return false
		}
	}
	for !produced() || restarts < 8 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(50+r.IntN(400))*time.Millisecond)
		c := e.consumer("restart", func(cc *consumer.Config, _ *postgres.Config) { cc.GroupMaxTxns = 1 + r.IntN(10) })
		if err := c.Run(ctx); err != nil {
			t.Fatalf("Run %d: %v", restarts, err)
		}
		cancel()
		restarts++
	}
	wg.Wait()
	if restarts < 5 {
		t.Fatalf("only %d restarts", restarts)
	}
	must(t, e.catchUp("restart", nil))
	t.Logf("%d restarts", restarts)
	e.checkBank(bk)
}

// TestConsumerCountMismatch: a frame that counts more records than a partition
// holds, and one that counts fewer, each stop the consumer with an error that
// names the frame and the partition; earlier transactions stay applied.
func TestConsumerCountMismatch(t *testing.T) {
	for _, tc := range []struct {
		name  string
		delta int64
	}{{"more", 1}, {"fewer", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newConsumerEnv(t)
			e.target.Exec(t, bankSchema)
			e.prod.addTable(accountTable("acc_a"), 1)
			e.prod.commit([]change{{table: "acc_a", op: schemas.OpInsert, after: acct(1, 10, "")}})
			bad := e.prod.commit([]change{
				{table: "acc_a", op: schemas.OpInsert, after: acct(2, 10, "")},
				{table: "acc_a", op: schemas.OpInsert, after: acct(3, 10, "")},
			}, frameOpts{countDelta: tc.delta})
			e.prod.commit([]change{{table: "acc_a", op: schemas.OpInsert, after: acct(4, 10, "")}})
			err := e.catchUp("mismatch", nil)
			if err == nil {
				t.Fatal("Run returned nil for a frame whose counts do not match")
			}
			t.Logf("error: %v", err)
			if !errors.Is(err, consumer.ErrMismatch) {
				t.Errorf("error does not wrap ErrMismatch: %v", err)
			}
			topic := schemas.TopicName(e.prefix, "public", "acc_a")
			for _, want := range []string{topic, "partition 0", "offset"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not name %q: %v", want, err)
				}
			}
			if tc.delta > 0 && !strings.Contains(err.Error(), bad.String()) {
				t.Errorf("error does not name the commit LSN %s: %v", bad, err)
			}
			if n := e.queryInt(e.target.Conn(t), "SELECT count(*) FROM acc_a"); n != 1 && tc.delta > 0 {
				t.Errorf("target has %d rows; want the 1 of the transaction before the bad frame", n)
			}
		})
	}
}

// TestConsumerGarbageRecord: bytes that are not an event stop the consumer
// with an error naming the topic, partition and offset.
func TestConsumerGarbageRecord(t *testing.T) {
	e := newConsumerEnv(t)
	e.target.Exec(t, bankSchema)
	e.prod.addTable(accountTable("acc_a"), 1)
	e.prod.commit([]change{{table: "acc_a", op: schemas.OpInsert, after: acct(1, 10, "")}})
	e.prod.commit([]change{{table: "acc_a", op: schemas.OpInsert, after: acct(2, 10, ""), raw: []byte("garbage!")}})
	err := e.catchUp("garbage", nil)
	if err == nil {
		t.Fatal("Run returned nil for garbage input")
	}
	t.Logf("error: %v", err)
	var ee *consumer.EventError
	if !errors.As(err, &ee) {
		t.Fatalf("error is not an EventError: %v", err)
	}
	topic := schemas.TopicName(e.prefix, "public", "acc_a")
	if ee.Topic != topic || ee.Partition != 0 || ee.Offset < 1 {
		t.Errorf("error names %s/%d/%d; want %s/0/offset of the second record", ee.Topic, ee.Partition, ee.Offset, topic)
	}
	if !errors.Is(err, schemas.ErrNotWireFormat) || !consumer.IsPermanent(err) {
		t.Errorf("want a permanent error wrapping ErrNotWireFormat: %v", err)
	}
	if n := e.queryInt(e.target.Conn(t), "SELECT count(*) FROM acc_a"); n != 1 {
		t.Errorf("target has %d rows; want 1", n)
	}
}

// checkViolationStream commits: insert id 1, an update that breaks the
// target's CHECK, then an insert of id 2. It returns the bad commit LSN.
func checkViolationStream(e *consumerEnv) pglogrepl.LSN {
	e.target.Exec(e.t, bankSchema, `ALTER TABLE acc_a ADD CONSTRAINT nonneg CHECK (balance >= 0)`)
	e.prod.addTable(accountTable("acc_a"), 3)
	e.prod.commit([]change{{table: "acc_a", op: schemas.OpInsert, after: acct(1, 100, "")}})
	bad := e.prod.commit([]change{{table: "acc_a", op: schemas.OpUpdate, before: []any{int32(1), nil, nil}, after: acct(1, -5, "")}})
	e.prod.commit([]change{{table: "acc_a", op: schemas.OpInsert, after: acct(2, 50, "")}})
	return bad
}

// TestConsumerCheckViolationResume: a target CHECK constraint rejects a row;
// the error names table, key and LSN; after the fix the consumer resumes at
// the same transaction and the target equals the source.
func TestConsumerCheckViolationResume(t *testing.T) {
	e := newConsumerEnv(t)
	bad := checkViolationStream(e)
	err := e.catchUp("check", nil)
	if err == nil {
		t.Fatal("Run returned nil for a CHECK violation")
	}
	t.Logf("error: %v", err)
	for _, want := range []string{"public.acc_a", "(id)=(1)", bad.String(), "nonneg", "offset"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %q: %v", want, err)
		}
	}
	c := e.target.Conn(t)
	if got := e.queryInt(c, "SELECT coalesce(sum(balance), 0) FROM acc_a"); got != 100 {
		t.Errorf("target total %d before the fix; want 100", got)
	}
	// Again: it stops at the same place.
	if err2 := e.catchUp("check", nil); err2 == nil || !strings.Contains(err2.Error(), bad.String()) {
		t.Errorf("second run: %v", err2)
	}
	e.target.Exec(t, `ALTER TABLE acc_a DROP CONSTRAINT nonneg`)
	must(t, e.catchUp("check", nil))
	if got := e.queryInt(c, "SELECT balance FROM acc_a WHERE id = 1"); got != -5 {
		t.Errorf("id 1 balance %d; want -5", got)
	}
	if got := e.queryInt(c, "SELECT balance FROM acc_a WHERE id = 2"); got != 50 {
		t.Errorf("id 2 balance %d; want 50", got)
	}
	if got := e.queryInt(c, "SELECT count(*) FROM audit"); got != 3 {
		t.Errorf("audit saw %d changes; want 3", got)
	}
}

// TestConsumerDeadLetter: under --on-error dead-letter the failing transaction
// goes to <prefix>.dlq.<name> with the reason, and the rest is applied.
func TestConsumerDeadLetter(t *testing.T) {
	e := newConsumerEnv(t)
	bad := checkViolationStream(e)
	must(t, e.catchUp("dlq", func(cc *consumer.Config, _ *postgres.Config) { cc.OnError = consumer.OnErrorDeadLetter }))
	c := e.target.Conn(t)
	if got := e.queryInt(c, "SELECT balance FROM acc_a WHERE id = 1"); got != 100 {
		t.Errorf("id 1 balance %d; want 100 (the bad update dead-lettered)", got)
	}
	if got := e.queryInt(c, "SELECT balance FROM acc_a WHERE id = 2"); got != 50 {
		t.Errorf("id 2 balance %d; want 50 (applied after the dead-lettered transaction)", got)
	}
	dlq := schemas.DeadLetterTopic(e.prefix, "dlq")
	cl := e.k.Client(t, kgo.ConsumeTopics(dlq), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < 2 && ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		recs = append(recs, fs.Records()...)
	}
	if len(recs) != 2 {
		t.Fatalf("dead-letter topic has %d records; want the update and its frame", len(recs))
	}
	for _, r := range recs {
		var reason string
		for _, h := range r.Headers {
			if h.Key == consumer.HeaderDLQReason {
				reason = string(h.Value)
			}
		}
		if !strings.Contains(reason, "nonneg") || !strings.Contains(reason, bad.String()) {
			t.Errorf("record %d: reason %q does not name the constraint and LSN", r.Offset, reason)
		}
	}
	// The checkpoint moved past it: a second run applies nothing and succeeds.
	must(t, e.catchUp("dlq", func(cc *consumer.Config, _ *postgres.Config) { cc.OnError = consumer.OnErrorDeadLetter }))
}

// TestConsumerUpsertCreateTables: --create-tables makes the target table from
// the value schema; --on-conflict upsert converts a duplicate insert and an
// update of a missing row, ignores a delete of a missing row, and an update
// with an unchanged TOASTed column leaves that column as it is.
func TestConsumerUpsertCreateTables(t *testing.T) {
	e := newConsumerEnv(t)
	e.prod.addTable(accountTable("acc_c"), 3)
	e.prod.commit([]change{
		{table: "acc_c", op: schemas.OpInsert, after: acct(1, 10, "big toasted text")},
		{table: "acc_c", op: schemas.OpInsert, after: acct(1, 11, "big toasted text")},
		{table: "acc_c", op: schemas.OpUpdate, before: []any{int32(2), nil, nil}, after: acct(2, 20, "two")},
		{table: "acc_c", op: schemas.OpDelete, before: []any{int32(3), nil, nil}},
	})
	e.prod.commit([]change{
		{table: "acc_c", op: schemas.OpUpdate, before: []any{int32(1), nil, nil}, after: []any{int32(1), int64(12), nil}, toast: []string{"note"}},
	})
	mod := func(_ *consumer.Config, pc *postgres.Config) {
		pc.CreateTables, pc.OnConflict = true, postgres.OnConflictUpsert
	}
	must(t, e.catchUp("upsert", mod))
	c := e.target.Conn(t)
	var bal int64
	var note string
	must(t, c.QueryRow(context.Background(), "SELECT balance, note FROM acc_c WHERE id = 1").Scan(&bal, &note))
	if bal != 12 || note != "big toasted text" {
		t.Errorf("id 1 = (%d, %q); want (12, big toasted text)", bal, note)
	}
	if got := e.queryInt(c, "SELECT balance FROM acc_c WHERE id = 2"); got != 20 {
		t.Errorf("id 2 balance %d; want 20", got)
	}
	// In error mode the same stream stops at the duplicate insert.
	err := e.catchUp("strict", func(_ *consumer.Config, pc *postgres.Config) { pc.CreateTables = true })
	if err == nil || !strings.Contains(err.Error(), "(id)=(1)") {
		t.Errorf("strict consumer: want a duplicate key error naming (id)=(1), got %v", err)
	}
}
