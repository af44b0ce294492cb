package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/tributary-cdc/tributary/schemas"
	"github.com/tributary-cdc/tributary/txlog"
)

// PG is one throw-away cluster started by deploy/local/postgres.sh.
type PG struct {
	Name string
	Dir  string
	Port int
	DSN  string
	root string
}

func startPG(ctx context.Context, root, name, dir string) (*PG, error) {
	p := &PG{Name: name, Dir: dir, Port: freePort(), root: root}
	_ = os.RemoveAll(dir)
	out, err := run(ctx, root, nil, filepath.Join(root, "deploy/local/postgres.sh"), "start", dir, strconv.Itoa(p.Port))
	if err != nil {
		return nil, err
	}
	p.DSN = strings.TrimSpace(lastLine(out))
	// Fewer checkpoints during the backlog; everything else stays at postgres.sh's settings.
	if err := p.Exec(ctx, `ALTER SYSTEM SET max_wal_size = '8GB'`, `SELECT pg_reload_conf()`); err != nil {
		return nil, err
	}
	return p, nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func (p *PG) Stop(ctx context.Context) {
	_, _ = run(ctx, p.root, nil, filepath.Join(p.root, "deploy/local/postgres.sh"), "stop", p.Dir, strconv.Itoa(p.Port), "immediate")
	_ = os.RemoveAll(p.Dir)
}

func (p *PG) Conn(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(p.DSN)
	if err != nil {
		return nil, err
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	return pgx.ConnectConfig(ctx, cfg)
}

func (p *PG) Exec(ctx context.Context, sql ...string) error {
	c, err := p.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	for _, s := range sql {
		if _, err := c.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %s: %w", p.Name, oneLine(s), err)
		}
	}
	return nil
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 120 {
		s = s[:120] + "..."
	}
	return s
}

func (p *PG) QueryVal(ctx context.Context, sql string, args ...any) (string, error) {
	c, err := p.Conn(ctx)
	if err != nil {
		return "", err
	}
	defer c.Close(ctx)
	var v *string
	if err := c.QueryRow(ctx, sql, args...).Scan(&v); err != nil {
		return "", fmt.Errorf("%s: %s: %w", p.Name, oneLine(sql), err)
	}
	if v == nil {
		return "", nil
	}
	return *v, nil
}

// ConnString is the key=value form for pg_recvlogical and CREATE SUBSCRIPTION.
func (p *PG) ConnString() string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres", p.Port)
}

// Kafka is the broker everything writes to.
type Kafka struct {
	Brokers string
	Kind    string // "Apache Kafka 3.9.1 (deploy/local/kafka.sh)" or "embedded kfake"
	stop    func()
	pid     func() int // the broker's process, for its CPU; nil when unknown
}

func startKafka(ctx context.Context, root, bin, cache string) (*Kafka, error) {
	dir := filepath.Join(cache, "kafka")
	script := filepath.Join(root, "deploy/local/kafka.sh")
	if _, err := run(ctx, root, nil, script, "fetch", dir); err != nil {
		logf("kafka fetch failed, falling back to the embedded broker: %v", err)
		return startEmbeddedKafka(root, bin, cache, err)
	}
	out, err := run(ctx, root, nil, script, "start", dir)
	if err != nil {
		logf("kafka start failed, falling back to the embedded broker: %v", err)
		return startEmbeddedKafka(root, bin, cache, err)
	}
	v, _ := os.ReadFile(filepath.Join(dir, "lib/.version"))
	return &Kafka{Brokers: strings.TrimSpace(lastLine(out)),
		Kind: "Apache Kafka " + strings.TrimSpace(string(v)) + " (KRaft, one node, deploy/local/kafka.sh, -Xmx512m)",
		stop: func() { _, _ = run(context.Background(), root, nil, script, "stop", dir) }, pid: kafkaPID(dir)}, nil
}

func startEmbeddedKafka(root, bin, cache string, why error) (*Kafka, error) {
	port := freePort()
	p, err := startProc("kfake", root, filepath.Join(cache, "kfake.log"), nil, bin, "dev",
		"--data-dir", filepath.Join(cache, "kfake"), "--kafka-addr", fmt.Sprintf("127.0.0.1:%d", port),
		"--registry-addr", fmt.Sprintf("127.0.0.1:%d", freePort()))
	if err != nil {
		return nil, err
	}
	time.Sleep(2 * time.Second)
	return &Kafka{Brokers: fmt.Sprintf("127.0.0.1:%d", port),
		Kind: fmt.Sprintf("embedded kfake (real Kafka failed: %s)", oneLine(why.Error())), stop: p.Stop, pid: p.Pid}, nil
}

// WarmUp has the broker create its internal topics, as any broker that has
// served a transactional producer and a consumer group has them: one
// transaction and one group offset commit on a topic of its own, which it
// then deletes. Without it the first peer to use Kafka in a run waits for
// the 50 partitions of __transaction_state (seconds on a new broker), and
// only in its first repetition.
func (k *Kafka) WarmUp(ctx context.Context) error {
	const topic, id = "tribench_warmup", "tribench-warmup"
	if err := k.CreateTopic(ctx, topic, 1); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("warm-up topic: %w", err)
	}
	cl, err := k.Client(kgo.TransactionalID(id), kgo.DefaultProduceTopic(topic))
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := cl.BeginTransaction(); err != nil {
		return fmt.Errorf("warm-up transaction: %w", err)
	}
	if err := cl.ProduceSync(ctx, kgo.StringRecord("warm-up")).FirstErr(); err != nil {
		return fmt.Errorf("warm-up record: %w", err)
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		return fmt.Errorf("warm-up commit: %w", err)
	}
	adm := kadm.NewClient(cl)
	var offs kadm.Offsets
	offs.AddOffset(topic, 0, 1, -1)
	if err := adm.CommitAllOffsets(ctx, id, offs); err != nil {
		return fmt.Errorf("warm-up group offset commit: %w", err)
	}
	if _, err := adm.DeleteTopics(ctx, topic); err != nil {
		return fmt.Errorf("delete the warm-up topic: %w", err)
	}
	return nil
}

func (k *Kafka) Client(opts ...kgo.Opt) (*kgo.Client, error) {
	return kgo.NewClient(k.opts(opts...)...)
}

// opts are the options that reach the broker, then extra.
func (k *Kafka) opts(extra ...kgo.Opt) []kgo.Opt {
	return append([]kgo.Opt{kgo.SeedBrokers(strings.Split(k.Brokers, ",")...)}, extra...)
}

// EndOffsets sums the high watermarks (or, committed, the last stable offsets) of a topic.
func (k *Kafka) EndOffsets(ctx context.Context, topic string, committed bool) (map[int32]int64, int64, error) {
	cl, err := k.Client()
	if err != nil {
		return nil, 0, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var lo kadm.ListedOffsets
	if committed {
		lo, err = adm.ListCommittedOffsets(ctx, topic)
	} else {
		lo, err = adm.ListEndOffsets(ctx, topic)
	}
	if err != nil {
		return nil, 0, err
	}
	out := map[int32]int64{}
	var sum int64
	lo.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			out[o.Partition] = o.Offset
			sum += o.Offset
		}
	})
	return out, sum, nil
}

func (k *Kafka) CreateTopic(ctx context.Context, topic string, partitions int32) error {
	cl, err := k.Client()
	if err != nil {
		return err
	}
	defer cl.Close()
	r, err := kadm.NewClient(cl).CreateTopics(ctx, partitions, 1, nil, topic)
	if err != nil {
		return err
	}
	return r.Error()
}

func (k *Kafka) DeletePrefix(ctx context.Context, prefix string) {
	cl, err := k.Client()
	if err != nil {
		return
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ts, err := adm.ListTopics(ctx)
	if err != nil {
		return
	}
	var del []string
	for _, t := range ts.Names() {
		if strings.HasPrefix(t, prefix) {
			del = append(del, t)
		}
	}
	if len(del) > 0 {
		_, _ = adm.DeleteTopics(ctx, del...)
	}
}

// Frames reads topic, a transactions topic, through txlog, decoding with the
// built-in frame schema (the runner reads no registry); opts are added to
// the broker's. Call done when finished with it.
func (k *Kafka) Frames(topic string, opts ...kgo.Opt) (fr *txlog.Frames, done func(), err error) {
	cl, err := k.Client()
	if err != nil {
		return nil, nil, err
	}
	return txlog.NewFrames(k.opts(opts...), kadm.NewClient(cl), txlog.NewBuiltinFrameDecoder(), topic), cl.Close, nil
}

// LastFrame returns the last committed frame of the transactions topic (nil when empty).
func (k *Kafka) LastFrame(ctx context.Context, topic string) (*schemas.Frame, error) {
	fr, done, err := k.Frames(topic)
	if err != nil {
		return nil, err
	}
	defer done()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	b, err := fr.Bounds(ctx)
	if err != nil || b.Empty() {
		return nil, err
	}
	_, f, err := fr.Last(ctx, b, b.End)
	return f, err
}

// startRegistry serves an in-memory Confluent-API registry (franz-go srfake).
func startRegistry() (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	reg := srfake.NewRegistry()
	srv := &http.Server{Handler: reg.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logf("registry: %v", err)
		}
	}()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close() }, nil
}
