package chaos

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/integration/harness"
	"github.com/tributary-cdc/tributary/schemas"
)

// negativeControl runs after a run whose end-of-run checks passed. It breaks
// each guarantee those checks guard, one at a time, and fails the test
// unless each check reports the breach: checks that cannot fail would prove
// nothing.
//
//   - a replica row deleted and a balance changed on the target: verify of
//     the replica and the money check must fail;
//   - a history row deleted: the history check and verify --sink history
//     --check-history must fail;
//   - a source transaction's records written to Kafka a second time: the
//     Kafka check must fail.
func (c *chaos) negativeControl() {
	t := c.t
	t.Log("negative control: breaking each guarantee; every check must report it")
	ctx := context.Background()
	var txlogID int64
	if err := c.queryRow(c.tgt.DSN, `SELECT max(id) FROM txlog`, nil, &txlogID); err != nil {
		t.Fatalf("negative control: %v", err)
	}
	c.mustExec(c.tgt.DSN, fmt.Sprintf(`DELETE FROM txlog WHERE id = %d`, txlogID))
	c.expectFailure(fmt.Sprintf("verify of the replica after deleting target txlog id %d", txlogID),
		func(fail func(string, ...any)) { c.checkVerify(fail, "--no-wait", "--rechecks", "0") }, fmt.Sprintf("missing   id=%d", txlogID))
	c.mustExec(c.tgt.DSN, `UPDATE accounts SET balance = balance + 1 WHERE id = (SELECT min(id) FROM accounts)`)
	c.expectFailure("money check after changing one target balance", c.checkMoney, "balances not explained")

	c.mustExec(c.histDSN, `DELETE FROM public.accounts_history WHERE ctid = (SELECT ctid FROM public.accounts_history
		WHERE version = 1 AND valid_to IS NOT NULL LIMIT 1)`)
	c.expectFailure("history check after deleting one history row", c.checkHistory, "history holds")
	c.expectFailure("verify --sink history --check-history after deleting one history row",
		func(fail func(string, ...any)) {
			c.checkVerify(fail, "--sink", "history", "--check-history", "--no-wait", "--rechecks", "0", "--tables", "public.accounts")
		}, "(a gap, a duplicate or out of order)")

	c.duplicateLastTxn(ctx)
	c.expectFailure("Kafka check after writing a transaction's records again", func(fail func(string, ...any)) {
		c.checkKafka(&failTB{TB: t, fail: fail}, fail)
	}, "duplicate or out of order")
}

// expectFailure runs check and fails the test unless it reports a failure
// whose text contains want.
func (c *chaos) expectFailure(what string, check func(fail func(string, ...any)), want string) {
	var msgs []string
	untilStopped(func() {
		check(func(format string, args ...any) { msgs = append(msgs, fmt.Sprintf(format, args...)) })
	})
	all := strings.Join(msgs, "\n")
	switch {
	case len(msgs) == 0:
		c.t.Errorf("negative control: %s: the check passed", what)
	case !strings.Contains(all, want):
		c.t.Errorf("negative control: %s: the check failed, but without %q:\n%s", what, want, all)
	default:
		c.t.Logf("negative control: %s: reported: %s", what, lastLines(msgs[0], 3))
	}
}

// errStopped ends a check that called failTB.Fatal.
var errStopped = fmt.Errorf("check stopped")

// untilStopped runs check; a failTB.Fatal inside it ends check, not the test.
func untilStopped(check func()) {
	defer func() {
		if r := recover(); r != nil && r != errStopped {
			panic(r)
		}
	}()
	check()
}

// failTB turns a check's test failures into fail calls; Fatal stops the
// check (expectFailure recovers).
type failTB struct {
	testing.TB
	fail func(string, ...any)
}

func (f *failTB) Helper()                           {}
func (f *failTB) Error(args ...any)                 { f.fail("%s", fmt.Sprint(args...)) }
func (f *failTB) Errorf(format string, args ...any) { f.fail(format, args...) }
func (f *failTB) Fatal(args ...any)                 { f.Error(args...); panic(errStopped) }
func (f *failTB) Fatalf(format string, args ...any) { f.fail(format, args...); panic(errStopped) }
func (f *failTB) FailNow()                          { f.fail("FailNow"); panic(errStopped) }

func (c *chaos) mustExec(dsn, sql string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		c.t.Fatalf("negative control: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		c.t.Fatalf("negative control: %s: %v", sql, err)
	}
}

// duplicateLastTxn writes the data records and the frame of the last source
// transaction with data again, as a producer that deduplicated nothing would.
func (c *chaos) duplicateLastTxn(ctx context.Context) {
	t := c.t
	cl := c.kafka.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	fetch := func(topic string, part int32, off int64) *kgo.Record {
		rc := c.kafka.Client(t, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {part: kgo.NewOffset().At(off)}}),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()))
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		for {
			fs := rc.PollFetches(ctx)
			if ctx.Err() != nil {
				t.Fatalf("negative control: read %s[%d]@%d: %v", topic, part, off, ctx.Err())
			}
			var got *kgo.Record
			fs.EachRecord(func(r *kgo.Record) {
				if r.Offset == off {
					got = r
				}
			})
			if got != nil {
				return got
			}
		}
	}
	log := harness.ReadLog(t, c.kafka, c.reg, c.prefix)
	for i := len(log.Txns) - 1; i >= 0; i-- {
		tx := log.Txns[i]
		if len(tx.Events) == 0 {
			continue
		}
		var recs []*kgo.Record
		for _, ev := range tx.Events {
			recs = append(recs, fetch(ev.Topic, ev.Partition, ev.Offset))
		}
		recs = append(recs, fetch(schemas.TransactionsTopic(c.prefix), 0, tx.Offset))
		for _, r := range recs {
			dup := &kgo.Record{Topic: r.Topic, Partition: r.Partition, Key: r.Key, Value: r.Value, Headers: r.Headers}
			if err := cl.ProduceSync(ctx, dup).FirstErr(); err != nil {
				t.Fatalf("negative control: produce a duplicate to %s: %v", r.Topic, err)
			}
		}
		t.Logf("negative control: wrote %s (%d records) again", tx, len(recs))
		return
	}
	t.Fatal("negative control: no transaction with data in Kafka")
}
