package reseed

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog/txlogtest"
)

func row(name, topic string, kind consumer.StreamKind, part int32, next int64, lsn pglogrepl.LSN) consumer.CheckpointRow {
	return consumer.CheckpointRow{Consumer: name, Stream: consumer.Stream{Kind: kind, Topic: topic, Partition: part},
		Next: next, CommitLSN: lsn, CommitTime: time.Unix(int64(lsn), 0)}
}

// The donor at site A: from_b reads the target B's stream, from_c the third
// site C's, from_a_oddly the donor's own prefix.
var donorRows = []consumer.CheckpointRow{
	row("from_a_oddly", "a.transactions", consumer.StreamTransactions, 0, 3, 0x10),
	row("from_b", "b.transactions", consumer.StreamTransactions, 0, 40, 0x400),
	row("from_b", "b.public.t", consumer.StreamData, 0, 41, 0x400),
	row("from_c", "c.public.t", consumer.StreamData, 0, 7, 0x70),
	row("from_c", "c.public.t", consumer.StreamData, 1, 9, 0x90),
	row("from_c", "c.transactions", consumer.StreamTransactions, 0, 12, 0x90),
	row("pk_c", "c.public.u", consumer.StreamPerKey, 2, 5, 0x50),
}

func TestThirdSite(t *testing.T) {
	base := Config{Prefix: "a", SitePrefix: "b", Consumer: "from_a"}
	cTx := consumer.Stream{Kind: consumer.StreamTransactions, Topic: "c.transactions"}
	for _, c := range []struct {
		name    string
		cfg     func(Config) Config
		want    map[string]int // consumer -> streams
		lsn     map[string]pglogrepl.LSN
		refused string
	}{
		{name: "every consumer of a third site, under its own name",
			cfg:  func(c Config) Config { return c },
			want: map[string]int{"from_c": 3, "pk_c": 1}, lsn: map[string]pglogrepl.LSN{"from_c": 0x90, "pk_c": 0x50}},
		{name: "none",
			cfg:  func(c Config) Config { c.NoThird = true; return c },
			want: map[string]int{}},
		{name: "renamed, only those named",
			cfg:  func(c Config) Config { c.Rename = map[string]string{"from_c": "c_to_b"}; return c },
			want: map[string]int{"c_to_b": 3}, lsn: map[string]pglogrepl.LSN{"c_to_b": 0x90}},
		{name: "a named consumer that reads the target is copied as asked",
			cfg:  func(c Config) Config { c.Rename = map[string]string{"from_b": "x"}; return c },
			want: map[string]int{"x": 2}},
		{name: "copied as the donor stream's consumer",
			cfg:     func(c Config) Config { c.Rename = map[string]string{"from_c": "from_a"}; return c },
			refused: "the consumer of the donor's own stream"},
		{name: "unknown donor consumer",
			cfg:     func(c Config) Config { c.Rename = map[string]string{"nobody": "x"}; return c },
			refused: "no checkpoint of consumer nobody"},
	} {
		got, err := thirdSite(donorRows, c.cfg(base))
		if c.refused != "" {
			var re *RefusalError
			if !errors.As(err, &re) || !strings.Contains(err.Error(), c.refused) {
				t.Errorf("%s: got %v, want a refusal naming %q", c.name, err, c.refused)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if len(got) != len(c.want) {
			t.Errorf("%s: consumers %v, want %v", c.name, got, c.want)
		}
		for name, n := range c.want {
			if len(got[name].Next) != n {
				t.Errorf("%s: %s has %d streams, want %d: %v", c.name, name, len(got[name].Next), n, got[name].Next)
			}
			if want, ok := c.lsn[name]; ok && got[name].CommitLSN != want {
				t.Errorf("%s: %s commit LSN %s, want %s", c.name, name, got[name].CommitLSN, want)
			}
		}
		if cp, ok := got["from_c"]; ok && (cp.Next[cTx] != 12 || !cp.CommitTime.Equal(time.Unix(0x90, 0))) {
			t.Errorf("%s: from_c %+v", c.name, cp)
		}
	}
}

func TestStreamReaders(t *testing.T) {
	got := streamReaders(donorRows, "b.transactions")
	if len(got) != 1 || got[0].Consumer != "from_b" || got[0].Next != 40 {
		t.Fatalf("readers of b.transactions: %+v", got)
	}
	if got := streamReaders(donorRows, "z.transactions"); len(got) != 0 {
		t.Fatalf("readers of a topic nobody reads: %+v", got)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (&Config{}).validate(); err == nil || !strings.Contains(err.Error(), "DonorDSN is required") {
		t.Fatalf("empty config: %v", err)
	}
	c := Config{DonorDSN: "d", TargetDSN: "t", Publication: "p", Prefix: "a", SitePrefix: "a", Consumer: "c", Origin: "o"}
	if err := c.validate(); err == nil || !strings.Contains(err.Error(), "SitePrefix") {
		t.Fatalf("own stream: %v", err)
	}
}

// positionEnv is a donor stream in an embedded broker: a frame per commit
// LSN given, each with one record of a one-partition table topic, in one
// Kafka transaction each.
type positionEnv struct {
	l   *txlogtest.Log
	r   *run
	tbl string
}

func newPositionEnv(t *testing.T, lsns ...uint64) *positionEnv {
	l := txlogtest.Start(t)
	txTopic, tbl := schemas.TransactionsTopic("a"), schemas.TopicName("a", "public", "t")
	l.CreateTopic(txTopic)
	l.CreateTopic(tbl)
	id, err := l.Reg.Register(l.Ctx(), schemas.ValueSubject(txTopic), schemas.FrameSchema(), schemas.SchemaChangeFail)
	if err != nil {
		t.Fatal(err)
	}
	for _, lsn := range lsns {
		f := schemas.Frame{Xid: uint32(lsn), CommitLSN: pglogrepl.LSN(lsn), EndLSN: pglogrepl.LSN(lsn + 1), CommitTime: time.Unix(int64(lsn), 0)}
		l.Txn(true,
			&kgo.Record{Topic: tbl, Partition: 0, Value: []byte("row"),
				Headers: []kgo.RecordHeader{{Key: schemas.HeaderCommitLSN, Value: []byte(strconv.FormatUint(lsn, 10))}}},
			txlogtest.Frame(txTopic, id, &f))
	}
	cfg := Config{DonorDSN: "d", TargetDSN: "t", Publication: "p", Prefix: "a", SitePrefix: "b", Consumer: "from_a", Origin: "o",
		Kafka: l.Opts, Registry: l.Reg, Timeout: time.Second}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	return &positionEnv{l: l, r: &run{cfg: cfg, log: cfg.Log}, tbl: tbl}
}

// TestPositionBefore checks where the donor stream's consumer starts after
// a reseed at consistent point cp: exactly at the first transaction at or
// past cp, in the transactions topic and in every data partition, with the
// commit of the last transaction below cp.
func TestPositionBefore(t *testing.T) {
	e := newPositionEnv(t, 10, 20, 30)
	tx := consumer.Stream{Kind: consumer.StreamTransactions, Topic: "a.transactions"}
	data := consumer.Stream{Kind: consumer.StreamData, Topic: e.tbl}
	// Each transaction holds a frame (or a record) and a commit marker:
	// offsets 0, 2 and 4.
	for _, c := range []struct {
		cp         pglogrepl.LSN
		next       int64
		commit     pglogrepl.LSN
		dataAtHead bool // the data partition is read from its start: no entry
	}{
		{cp: 25, next: 4, commit: 20},
		{cp: 20, next: 2, commit: 10},
		{cp: 21, next: 4, commit: 20},
		{cp: 5, next: 0, commit: 0, dataAtHead: true},
	} {
		got, err := e.r.positionBefore(e.l.Ctx(), []string{e.tbl, schemas.MessagesTopic("a")}, c.cp)
		if err != nil {
			t.Fatalf("cp %s: %v", c.cp, err)
		}
		if got.Next[tx] != c.next || got.CommitLSN != c.commit {
			t.Errorf("cp %s: transactions at %d commit %s, want %d commit %s", c.cp, got.Next[tx], got.CommitLSN, c.next, c.commit)
		}
		if c.commit != 0 && !got.CommitTime.Equal(time.Unix(int64(c.commit), 0)) {
			t.Errorf("cp %s: commit time %v", c.cp, got.CommitTime)
		}
		n, ok := got.Next[data]
		if c.dataAtHead {
			if ok {
				t.Errorf("cp %s: data partition at %d, want no entry (read from its start)", c.cp, n)
			}
		} else if n != c.next {
			t.Errorf("cp %s: data partition at %d, want %d", c.cp, n, c.next)
		}
		if len(got.Next) > 2 {
			t.Errorf("cp %s: entries for topics that do not exist: %v", c.cp, got.Next)
		}
	}
}

// A consistent point past every frame waits for the donor's producer, and
// says so when it does not publish in time.
func TestPositionBeforeWaitsForTheProducer(t *testing.T) {
	e := newPositionEnv(t, 10)
	start := time.Now()
	_, err := e.r.positionBefore(e.l.Ctx(), []string{e.tbl}, 50)
	if err == nil || !strings.Contains(err.Error(), "did not publish past the snapshot") {
		t.Fatalf("got %v, want the donor's producer named", err)
	}
	if waited := time.Since(start); waited < time.Second {
		t.Fatalf("gave up after %s, before the 1s timeout", waited)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.r.positionBefore(ctx, []string{e.tbl}, 50); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}
