package integration

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/linkedin/goavro/v2"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/postgres"
	"github.com/tributary-cdc/tributary/integration/harness"
	"github.com/tributary-cdc/tributary/schemas"
)

// fakeProducer writes records and frames exactly as the event contract says,
// with a transactional client, standing in for the producer in consumer tests.
type fakeProducer struct {
	t       testing.TB
	prefix  string
	cl      *kgo.Client
	reg     *schemas.Registry
	tables  map[string]*fakeTable
	lsn     pglogrepl.LSN
	xid     uint32
	frameID int
	mu      sync.Mutex
}

type fakeTable struct {
	ts      *schemas.TableSchema
	keyID   int
	valueID int
}

// change is one row change for fakeProducer.commit.
type change struct {
	table  string
	op     schemas.Op
	before []any // column order; nil when absent
	after  []any
	toast  []string
	// raw, when set, replaces the value bytes (garbage input tests).
	raw []byte
}

func newFakeProducer(t testing.TB, k *harness.Kafka, prefix string, reg *schemas.Registry) *fakeProducer {
	t.Helper()
	ctx := context.Background()
	cl := k.Client(t, kgo.TransactionalID("fake-"+prefix), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.TransactionTimeout(time.Minute))
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 1, -1, nil, schemas.TransactionsTopic(prefix)); err != nil {
		t.Fatal(err)
	}
	fid, err := reg.Register(ctx, schemas.ValueSubject(schemas.TransactionsTopic(prefix)), schemas.FrameSchema(), schemas.SchemaChangeFail)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeProducer{t: t, prefix: prefix, cl: cl, reg: reg, tables: map[string]*fakeTable{}, lsn: 0x1000000, xid: 1000, frameID: fid}
}

var (
	pgInt4 = schemas.PGType{OID: 23, Name: "int4", Kind: schemas.KindBase}
	pgInt8 = schemas.PGType{OID: 20, Name: "int8", Kind: schemas.KindBase}
	pgText = schemas.PGType{OID: 25, Name: "text", Kind: schemas.KindBase}
)

// accountTable is public.<name>(id int4 key, balance int8, note text).
func accountTable(name string) schemas.Table {
	return schemas.Table{Schema: "public", Name: name, Columns: []schemas.Column{
		{Name: "id", Type: pgInt4, Typmod: -1, SQLType: "integer", Key: true},
		{Name: "balance", Type: pgInt8, Typmod: -1, SQLType: "bigint"},
		{Name: "note", Type: pgText, Typmod: -1, SQLType: "text"},
	}}
}

// addTable registers t's schemas and creates its topic with parts partitions.
func (p *fakeProducer) addTable(t schemas.Table, parts int32) {
	p.t.Helper()
	p.register(t, func(topic string) {
		if _, err := kadm.NewClient(p.cl).CreateTopic(context.Background(), parts, -1, nil, topic); err != nil {
			p.t.Fatal(err)
		}
	})
}

// alterTable registers a new version of the schemas of t, a table that
// addTable added, as the producer does after a schema change; commit then
// writes t's changes with it.
func (p *fakeProducer) alterTable(t schemas.Table) {
	p.t.Helper()
	p.register(t, func(string) {})
}

// register registers t's key and value schemas, after calling before with
// its topic, and makes them the ones commit writes t's changes with.
func (p *fakeProducer) register(t schemas.Table, before func(topic string)) {
	p.t.Helper()
	ctx := context.Background()
	ts, err := schemas.BuildTableSchema(p.prefix, t, schemas.UnsupportedFail)
	if err != nil {
		p.t.Fatal(err)
	}
	before(ts.Topic)
	kid, err := p.reg.Register(ctx, schemas.KeySubject(ts.Topic), ts.KeySchema, schemas.SchemaChangeFail)
	if err != nil {
		p.t.Fatal(err)
	}
	vid, err := p.reg.Register(ctx, schemas.ValueSubject(ts.Topic), ts.ValueSchema, schemas.SchemaChangeFail)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.tables[t.Name] = &fakeTable{ts: ts, keyID: kid, valueID: vid}
	p.mu.Unlock()
}

func (ft *fakeTable) row(vals []any) any {
	if vals == nil {
		return nil
	}
	m := map[string]any{}
	for i, f := range ft.ts.Fields {
		m[f] = ft.ts.Union(i, vals[i])
	}
	return goavro.Union(ft.ts.RowName, m)
}

// frameOpts lets a test corrupt a frame.
type frameOpts struct {
	countDelta int64 // added to the first partition's count
}

// commit writes one source transaction: its records, then its frame, in one
// Kafka transaction. It returns the commit LSN.
func (p *fakeProducer) commit(changes []change, fo ...frameOpts) pglogrepl.LSN {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	ctx := context.Background()
	p.lsn += 0x100
	p.xid++
	commit, xid := p.lsn, p.xid
	now := time.Now().UTC().Truncate(time.Microsecond)
	if err := p.cl.BeginTransaction(); err != nil {
		p.t.Fatal(err)
	}
	var recs []*kgo.Record
	for pos, ch := range changes {
		ft := p.tables[ch.table]
		ts := ft.ts
		keyVals := ch.after
		if keyVals == nil {
			keyVals = ch.before
		}
		var key []byte
		{
			km := map[string]any{}
			for _, ki := range ts.KeyColumns {
				km[ts.Fields[ki]] = keyVals[ki]
			}
			kb, err := ts.KeyCodec.BinaryFromNative(nil, km)
			if err != nil {
				p.t.Fatal(err)
			}
			key = append(schemas.AppendHeader(nil, ft.keyID), kb...)
		}
		src := schemas.Source{Version: "test", Prefix: p.prefix, DB: "src", Schema: ts.Table.Schema, Table: ts.Table.Name,
			LSN: commit - 0x50 + pglogrepl.LSN(pos), CommitLSN: commit, Xid: xid, CommitTime: now}
		toast := make([]any, len(ch.toast))
		for i, s := range ch.toast {
			toast[i] = s
		}
		env := map[string]any{"op": string(ch.op), "before": ft.row(ch.before), "after": ft.row(ch.after),
			"source": src.Native(), "tx": map[string]any{"id": schemas.TxID(xid, commit), "position": int64(pos)},
			"unchanged_toast": toast}
		value := ch.raw
		if value == nil {
			vb, err := ts.ValueCodec.BinaryFromNative(nil, env)
			if err != nil {
				p.t.Fatal(err)
			}
			value = append(schemas.AppendHeader(nil, ft.valueID), vb...)
		}
		headers := []kgo.RecordHeader{
			{Key: schemas.HeaderCommitLSN, Value: []byte(strconv.FormatUint(uint64(commit), 10))},
			{Key: schemas.HeaderPosition, Value: []byte(strconv.Itoa(pos))},
		}
		recs = append(recs, &kgo.Record{Topic: ts.Topic, Key: key, Value: value, Headers: headers})
	}
	res := p.cl.ProduceSync(ctx, recs...)
	if err := res.FirstErr(); err != nil {
		p.t.Fatal(err)
	}
	counts := map[[2]any]int64{}
	var order [][2]any
	for _, r := range res {
		k := [2]any{r.Record.Topic, r.Record.Partition}
		if _, ok := counts[k]; !ok {
			order = append(order, k)
		}
		counts[k]++
	}
	f := schemas.Frame{Xid: xid, CommitLSN: commit, EndLSN: commit + 0x10, CommitTime: now, Events: int64(len(recs))}
	for i, k := range order {
		c := counts[k]
		if i == 0 && len(fo) > 0 {
			c += fo[0].countDelta
		}
		f.Partitions = append(f.Partitions, schemas.PartitionCount{Topic: k[0].(string), Partition: k[1].(int32), Count: c})
	}
	fcodec, err := p.reg.Codec(ctx, p.frameID)
	if err != nil {
		p.t.Fatal(err)
	}
	fb, err := fcodec.BinaryFromNative(nil, f.Native())
	if err != nil {
		p.t.Fatal(err)
	}
	fr := &kgo.Record{Topic: schemas.TransactionsTopic(p.prefix), Partition: 0, Value: append(schemas.AppendHeader(nil, p.frameID), fb...)}
	if err := p.cl.ProduceSync(ctx, fr).FirstErr(); err != nil {
		p.t.Fatal(err)
	}
	if err := p.cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		p.t.Fatal(err)
	}
	return commit
}

// consumerEnv is a target database, a broker and a registry.
type consumerEnv struct {
	t      testing.TB
	k      *harness.Kafka
	target *harness.Postgres
	reg    *schemas.Registry
	prefix string
	prod   *fakeProducer
	log    *slog.Logger
	sink   *postgres.Sink // the sink of the last consumer built
}

func newConsumerEnv(t *testing.T) *consumerEnv {
	t.Helper()
	k := harness.StartKafka(t, "")
	target := harness.StartPostgres(t)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	reg, err := schemas.NewRegistry([]string{k.RegistryURL}, log)
	if err != nil {
		t.Fatal(err)
	}
	prefix := harness.Prefix(t)
	e := &consumerEnv{t: t, k: k, target: target, reg: reg, prefix: prefix, log: log}
	e.prod = newFakeProducer(t, k, prefix, reg)
	return e
}

// consumer builds a consumer with the PostgreSQL sink; mod adjusts both configs.
func (e *consumerEnv) consumer(name string, mod func(*consumer.Config, *postgres.Config)) *consumer.Consumer {
	e.t.Helper()
	pc := postgres.Config{DSN: e.target.DSN, Consumer: name, Logger: e.log}
	cc := consumer.Config{Kafka: []kgo.Opt{kgo.SeedBrokers(e.k.Brokers...)}, Registry: e.reg, Prefix: e.prefix,
		Name: name, Logger: e.log, RetryMaxElapsed: 20 * time.Second}
	if mod != nil {
		mod(&cc, &pc)
	}
	sink, err := postgres.New(pc)
	if err != nil {
		e.t.Fatal(err)
	}
	cc.Sink = sink
	e.sink = sink
	c, err := consumer.New(cc)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// catchUp runs a consumer with UntilCaughtUp and returns Run's error.
func (e *consumerEnv) catchUp(name string, mod func(*consumer.Config, *postgres.Config)) error {
	e.t.Helper()
	c := e.consumer(name, func(cc *consumer.Config, pc *postgres.Config) {
		cc.UntilCaughtUp = true
		if mod != nil {
			mod(cc, pc)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return c.Run(ctx)
}

func (e *consumerEnv) queryInt(c *pgx.Conn, sql string, args ...any) int64 {
	e.t.Helper()
	var n int64
	if err := c.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func acct(id int, bal int64, note string) []any { return []any{int32(id), bal, note} }

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
