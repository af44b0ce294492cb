package producer

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/schemas"
)

// TestKafkaClientGroupTiming: the client the producer builds retries
// CONCURRENT_TRANSACTIONS sooner than franz-go's default, which held back
// the first record of every group that followed a commit, and lingers as
// long as a group may last, so that a group goes to the broker in few
// produce requests (bench/ANALYSIS.md). What either pays is a measurement
// (make bench), not a timed test.
func TestKafkaClientGroupTiming(t *testing.T) {
	cfg := &Config{Prefix: "p", Slot: "s", MaxEventBytes: 1 << 20, Compression: "none", GroupMaxDelay: 35 * time.Millisecond,
		KafkaOpts: []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}}
	cl, err := kgo.NewClient(kafkaClientOpts(cfg)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	def, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	defer def.Close()
	got := cl.OptValue(kgo.ConcurrentTransactionsBackoff).(time.Duration)
	franz := def.OptValue(kgo.ConcurrentTransactionsBackoff).(time.Duration)
	if got >= franz || got <= 0 {
		t.Errorf("CONCURRENT_TRANSACTIONS backoff %v; want above 0 and under franz-go's default %v", got, franz)
	}
	if l := cl.OptValue(kgo.ProducerLinger); l != cfg.GroupMaxDelay {
		t.Errorf("linger %v, want the group delay %v", l, cfg.GroupMaxDelay)
	}
	if id := cl.OptValue(kgo.TransactionalID); id != "tributary-p-s" {
		t.Errorf("transactional id %v, want tributary-p-s", id)
	}
}

// TestConnConfigKeepsApplicationName: the source connections carry the
// contract's session settings, and the application_name a DSN sets is
// kept (operators tell producers apart by it); without one it is the
// contract's.
func TestConnConfigKeepsApplicationName(t *testing.T) {
	t.Setenv("PGAPPNAME", "")
	want := schemas.SessionParams()
	for _, c := range []struct{ dsn, app string }{
		{"postgres://u@127.0.0.1:5432/db", want["application_name"]},
		{"postgres://u@127.0.0.1:5432/db?application_name=orders_cdc", "orders_cdc"},
		{"host=127.0.0.1 user=u application_name=orders_cdc", "orders_cdc"},
	} {
		for _, repl := range []bool{false, true} {
			cfg, err := connConfig(c.dsn, repl)
			if err != nil {
				t.Fatalf("%s: %v", c.dsn, err)
			}
			for k, v := range want {
				if k == "application_name" {
					v = c.app
				}
				if got := cfg.RuntimeParams[k]; got != v {
					t.Errorf("%s (replication %v): %s = %q, want %q", c.dsn, repl, k, got, v)
				}
			}
			if got := cfg.RuntimeParams["replication"]; (got == "database") != repl {
				t.Errorf("%s (replication %v): replication = %q", c.dsn, repl, got)
			}
		}
	}
}

// TestWakeAtOnlyWhatTheStreamDoes: the stream's wait for the next message
// ends at a time that is due only for work the stream does at that point.
// A publication check falls due between source transactions only, and a
// group's delay only with no commit in flight and while it lies ahead: a
// due time it would not act on would end every wait at once, and the
// stream would spin on timeouts in the middle of a source transaction
// whose rest the walsender has not sent yet, or while a group that fell
// due reads what arrived. A delay ahead ends a wait inside a source
// transaction too, since the wait may be for bytes below the socket's
// low-water mark.
func TestWakeAtOnlyWhatTheStreamDoes(t *testing.T) {
	now := time.Now()
	past, soon, later := now.Add(-time.Second), now.Add(time.Second), now.Add(time.Hour)
	cfg := &Config{GroupMaxDelay: 20 * time.Millisecond, HeartbeatInterval: time.Minute, ProgressInterval: time.Minute}
	recent := now.Add(-5 * time.Millisecond)
	for _, c := range []struct {
		name      string
		tx        bool
		group     bool // a Kafka transaction is open
		inflight  bool // a commit is in flight
		pubCheck  time.Time
		groupFrom time.Time
		want      time.Time
	}{
		{name: "publication check due inside a source transaction", tx: true, pubCheck: past, want: soon},
		{name: "publication check due between source transactions", pubCheck: past, want: past},
		{name: "group delay ahead, no commit in flight", group: true, pubCheck: later, groupFrom: recent, want: recent.Add(cfg.GroupMaxDelay)},
		{name: "group delay ahead inside a source transaction", tx: true, group: true, pubCheck: later, groupFrom: recent, want: recent.Add(cfg.GroupMaxDelay)},
		{name: "group delay ahead, a commit in flight", group: true, inflight: true, pubCheck: later, groupFrom: recent, want: soon},
		{name: "group delay over, no commit in flight", group: true, pubCheck: later, groupFrom: past, want: soon},
		{name: "group delay over, a commit in flight", group: true, inflight: true, pubCheck: later, groupFrom: past, want: soon},
		{name: "group delay over inside a source transaction", tx: true, group: true, pubCheck: later, groupFrom: past, want: soon},
	} {
		s := &session{cfg: cfg, w: &kafkaWriter{inTxn: c.group}, nextPubCheck: c.pubCheck, groupStart: c.groupFrom}
		if c.tx {
			s.tx = &txState{}
		}
		if c.inflight {
			s.inflight = &inflightCommit{}
		}
		if got := s.wakeAt(now, soon, later, later); !got.Equal(c.want) {
			t.Errorf("%s: wake at %s, want %s (now %s)", c.name, got.Format(time.StampMilli), c.want.Format(time.StampMilli), now.Format(time.StampMilli))
		}
	}
}
