// Package txlogtest gives tests of the transaction log's readers (package
// txlog and the programs that read through it) a broker and a schema
// registry in process (deploy/embedded) and a transactional writer, so that
// they can write frames in committed and aborted Kafka transactions.
package txlogtest

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/deploy/embedded"
	"github.com/tributary-cdc/tributary/schemas"
)

// Log is an embedded broker and registry with one transactional writer.
// Everything is closed when the test ends. It is used by one goroutine.
type Log struct {
	Addr string    // the broker's host:port
	Opts []kgo.Opt // reach the broker
	Adm  *kadm.Client
	Reg  *schemas.Registry

	t testing.TB
	w *kgo.Client
}

// Start starts the broker (topics get one partition by default) and the
// registry, failing the test when it cannot.
func Start(t testing.TB) *Log {
	t.Helper()
	st, err := embedded.Start(embedded.Config{Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	l := &Log{t: t, Addr: st.KafkaAddr, Opts: []kgo.Opt{kgo.SeedBrokers(st.KafkaAddr)}}
	cl, err := kgo.NewClient(l.Opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	l.Adm = kadm.NewClient(cl)
	if l.Reg, err = schemas.NewRegistry([]string{st.RegistryURL}, nil); err != nil {
		t.Fatal(err)
	}
	l.w, err = kgo.NewClient(append(l.Opts, kgo.TransactionalID("txlog-test"), kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.w.Close)
	return l
}

// Ctx is a context that ends after 30 seconds, or with the test.
func (l *Log) Ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	l.t.Cleanup(cancel)
	return ctx
}

// CreateTopic creates topic with one partition.
func (l *Log) CreateTopic(topic string) {
	l.t.Helper()
	if _, err := l.Adm.CreateTopic(l.Ctx(), 1, 1, nil, topic); err != nil {
		l.t.Fatal(err)
	}
}

// Txn writes recs, in order, in one Kafka transaction that it commits, or
// aborts when commit is false.
func (l *Log) Txn(commit bool, recs ...*kgo.Record) {
	l.t.Helper()
	ctx := l.Ctx()
	if err := l.w.BeginTransaction(); err != nil {
		l.t.Fatal(err)
	}
	for _, r := range recs {
		if err := l.w.ProduceSync(ctx, r).FirstErr(); err != nil {
			l.t.Fatal(err)
		}
	}
	if err := l.w.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
		l.t.Fatal(err)
	}
}

// Frame is a record of topic's partition 0 holding f in the wire format,
// under schema ID id.
func Frame(topic string, id int, f *schemas.Frame) *kgo.Record {
	return &kgo.Record{Topic: topic, Partition: 0, Value: schemas.EncoderAppendFrame(schemas.AppendHeader(nil, id), f)}
}
