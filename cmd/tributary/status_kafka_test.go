package main

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog"
	"github.com/tributary-cdc/tributary/txlog/txlogtest"
)

// TestStatusKafkaLag measures consumers against a transactions topic on the
// embedded broker: the lag in transactions and bytes, a lower bound past the
// scan limit, an ERROR for a consumer behind the log start, and an ERROR for
// a transactions topic that does not exist.
func TestStatusKafkaLag(t *testing.T) {
	l := txlogtest.Start(t)
	ctx, opts, adm := l.Ctx(), l.Opts, l.Adm
	const topic = "app.transactions"
	l.CreateTopic(topic)
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	// Frames of commits 1..10, one Kafka transaction each: frame i is at
	// offset 2(i-1), its commit marker after it.
	for i := 1; i <= 10; i++ {
		l.Txn(true, txlogtest.Frame(topic, 1, &schemas.Frame{Xid: uint32(i), CommitLSN: pglogrepl.LSN(i << 8),
			EndLSN: pglogrepl.LSN(i<<8 + 1), CommitTime: at.Add(time.Duration(i) * time.Second)}))
	}
	del := kadm.Offsets{}
	del.AddOffset(topic, 0, 4, -1) // frames 1 and 2 deleted
	if _, err := adm.DeleteRecords(ctx, del); err != nil {
		t.Fatal(err)
	}
	consumer := func(name string, next int64, commit int) consumerStatus {
		ct := at.Add(time.Duration(commit) * time.Second)
		return consumerStatus{Name: name, Prefix: "app", Mode: "transactional", CommitLSN: pglogrepl.LSN(commit << 8).String(),
			CommitTime: &ct, NextFrameOffset: &next}
	}
	dec := txlog.NewBuiltinFrameDecoder()
	r := &statusReport{Checks: []check{}, Consumers: []consumerStatus{
		consumer("caught_up", 19, 10), consumer("four", 7, 4), consumer("deleted", 1, 1)}}
	r.kafkaLag(ctx, txlog.NewFrames(opts, adm, dec, topic), "app", 100000)
	if len(r.Kafka) != 1 || r.Kafka[0].Error != "" || r.Kafka[0].EndOffset != 20 || r.Kafka[0].LastCommitLSN != pglogrepl.LSN(10<<8).String() {
		t.Fatalf("kafka %+v", r.Kafka)
	}
	for i, want := range []consumerLag{{}, {Transactions: 6, Bytes: 6 << 8}, {Transactions: 8, AtLeast: true, Bytes: 9 << 8}} {
		got := r.Consumers[i].Behind
		if got == nil || got.Transactions != want.Transactions || got.AtLeast != want.AtLeast || got.Bytes != want.Bytes {
			t.Errorf("consumer %s: lag %+v, want %+v", r.Consumers[i].Name, got, want)
		}
	}
	if len(r.Checks) != 1 || r.Checks[0].Level != levelError || r.Checks[0].Subject != "consumer deleted" ||
		!strings.Contains(r.Checks[0].Message, "offset 1 is below the log start offset 4") {
		t.Fatalf("checks %+v, want one ERROR for the consumer behind the log start", r.Checks)
	}

	// A scan limit: the far consumer's lag is a lower bound.
	r = &statusReport{Checks: []check{}, Consumers: []consumerStatus{consumer("four", 7, 4)}}
	r.kafkaLag(ctx, txlog.NewFrames(opts, adm, dec, topic), "app", 6)
	if b := r.Consumers[0].Behind; b == nil || b.Transactions != 3 || !b.AtLeast || len(r.Checks) != 0 {
		t.Fatalf("limited scan: lag %+v, checks %+v", b, r.Checks)
	}

	// A transactions topic that does not exist is an ERROR.
	r = &statusReport{Checks: []check{}}
	r.kafkaLag(ctx, txlog.NewFrames(opts, adm, dec, "nope.transactions"), "nope", 100000)
	if len(r.Checks) != 1 || r.Checks[0].Subject != "nope.transactions" || !strings.Contains(r.Checks[0].Message, "UNKNOWN_TOPIC_OR_PARTITION") {
		t.Fatalf("missing topic: checks %+v", r.Checks)
	}
}
