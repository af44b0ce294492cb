package producer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/internal/retry"
	"github.com/tributary-cdc/tributary/schemas"
)

// SnapshotMode says whether the producer copies the published tables before it
// streams changes.
type SnapshotMode string

// Snapshot modes.
const (
	SnapshotInitial SnapshotMode = "initial" // when the slot is created, copy the tables, then stream
	SnapshotNever   SnapshotMode = "never"   // stream changes only
	SnapshotOnly    SnapshotMode = "only"    // copy the tables, then exit
)

// Config configures a Producer. Zero durations and counts take the defaults
// named on each field.
type Config struct {
	SourceDSN   string      // PostgreSQL connection string; the password may come from PGPASSWORD or a passfile
	Publication string      // created FOR the Tables (or FOR ALL TABLES) when missing
	Slot        string      // logical replication slot, created with pgoutput when missing
	Tables      []TableSpec // tables to publish when creating the publication; checked when it exists
	Prefix      string      // topic prefix

	KafkaOpts []kgo.Opt // seed brokers, TLS, SASL; the producer adds its transactional settings
	// KafkaHooks are added to the session's transactional client only, not
	// to the short-lived clients that read the state (kprom metrics serve
	// one client at a time).
	KafkaHooks []kgo.Hook
	Registry   *schemas.Registry // schema registry client
	Version    string            // written into each event's source.version

	Partitions int32 // partitions of the data topics it creates (3)
	// Compression of the record batches it writes: "none" (the default:
	// every Kafka client reads it, and it costs no CPU), "gzip", "snappy",
	// "lz4" or "zstd" (which some clients read only with an extra codec,
	// kafkajs among them).
	Compression string
	// MaxEventBytes bounds one event: its key, value and headers (8 MiB).
	// An event beyond it stops the producer with ErrEventTooLarge, naming
	// its table, key and LSN, before its transaction is written: a restart
	// with a larger MaxEventBytes writes it. The Kafka client buffers at
	// least one such event, its record batches hold up to MaxEventBytes
	// plus batchOverhead, and its topics allow them (max.message.bytes:
	// set on the topics it creates, raised on those that exist with less).
	MaxEventBytes int
	// TopicConfig is given to the topics the producer creates
	// (retention.ms, segment.bytes...); cleanup.policy only to the data
	// topics, whose records are keyed (the transactions topic's frames are
	// not, and the state topic is always compacted).
	TopicConfig       map[string]string
	Snapshot          SnapshotMode  // SnapshotInitial
	SnapshotChunkRows int           // rows per snapshot chunk (50,000)
	SnapshotWorkers   int           // tables read in parallel by the snapshot (2)
	GroupMaxEvents    int           // events per Kafka transaction before it is committed at the next source commit (20,000)
	GroupMaxDelay     time.Duration // age of a Kafka transaction before it is committed at the next source commit (20ms): bounds the latency grouping adds
	KafkaTxnTimeout   time.Duration // Kafka transaction timeout; bounds the time one source transaction may take to stream (10m)
	StatusInterval    time.Duration // standby status update interval (10s)
	HeartbeatInterval time.Duration // pg_logical_emit_message heartbeat interval; negative disables (30s)
	// UnsupportedTypes is the policy for base types unknown to
	// schemas/TYPES.md: UnsupportedAsText (the zero value) or UnsupportedFail.
	UnsupportedTypes schemas.UnsupportedPolicy
	SchemaChange     schemas.SchemaChangePolicy
	ForwardOrigins   []string      // origins whose transactions are published: nil or ["none"] none, ["all"] all, or names
	RetryMaxElapsed  time.Duration // give up after transient errors for this long without progress (30m)
	// KafkaCommitTimeout bounds one Kafka commit: the flush of its records
	// and EndTxn (1m). Past it the session ends, and a new one with a new
	// client resumes from the durable state, so a client that stopped
	// delivering (a broker restart can leave one stuck) cannot stall the
	// stream.
	KafkaCommitTimeout time.Duration
	// ProgressInterval is how often the stream logs a progress line (1m);
	// negative disables.
	ProgressInterval time.Duration
	// Synchronous commits and confirms each source transaction as soon as
	// it is decoded, instead of grouping, so that a source that lists
	// StandbyName in synchronous_standby_names returns from COMMIT only
	// once the transaction is committed in Kafka (seed 001, real-time
	// propagation). While the producer is down such commits wait.
	Synchronous bool
	// AdoptSource lets the producer go on when the source is another
	// PostgreSQL cluster (another system identifier) than the one the
	// position Kafka holds was read from, as pg_upgrade makes: it streams
	// the new cluster's commits after that position and, without the slot,
	// reads the captured tables again (an online snapshot). It still stops
	// when the source's WAL ends below the position, or when the slot is
	// there and confirmed below it.
	AdoptSource bool
	// StandbyName is the replication connection's application_name, as
	// pg_stat_replication and synchronous_standby_names see it
	// ("tributary_<slot>").
	StandbyName string

	// Envelope is the shape of data records' values: schemas.EnvelopeTributary
	// (the default) or schemas.EnvelopeDebezium (docs/CONSUMING.md,
	// "Debezium envelope"). The commit frames are the same with both.
	Envelope schemas.Envelope
	// Tombstones writes, after each delete, a record with the delete's key
	// and a null value (Debezium's tombstones.on.delete), counted in the
	// frame. Debezium envelope only.
	Tombstones bool
	// ToastPlaceholder is what an unchanged TOASTed value of a text-like,
	// bytea or text-array column holds in a Debezium envelope's after image
	// (Debezium's unavailable.value.placeholder, whose default
	// "__debezium_unavailable_value" applies when empty).
	ToastPlaceholder string
	// EnvelopeSkipTruncate leaves truncates out of the Debezium envelope's
	// records, as Debezium does by default (skipped.operations=t): a reader
	// never learns of them.
	EnvelopeSkipTruncate bool

	Log      *slog.Logger
	Observer Observer // metrics and health; NopObserver when nil
}

func (c *Config) validate() error {
	var errs []string
	need := func(v, name string) {
		if v == "" {
			errs = append(errs, "missing "+name)
		}
	}
	need(c.SourceDSN, "SourceDSN (--source)")
	need(c.Publication, "Publication (--publication)")
	need(c.Slot, "Slot (--slot)")
	need(c.Prefix, "Prefix (--prefix)")
	if c.Registry == nil {
		errs = append(errs, "missing Registry (--registry)")
	}
	if _, err := pgconn.ParseConfig(c.SourceDSN); c.SourceDSN != "" && err != nil {
		errs = append(errs, fmt.Sprintf("SourceDSN (--source): %v", err))
	}
	if c.Slot != "" && !validSlotName(c.Slot) {
		errs = append(errs, fmt.Sprintf("Slot (--slot) %q: use lower-case letters, digits and underscores", c.Slot))
	}
	if strings.ContainsAny(c.Prefix, " /\\:") {
		errs = append(errs, fmt.Sprintf("Prefix (--prefix) %q: not a valid topic prefix", c.Prefix))
	}
	if c.MaxEventBytes < 0 || c.MaxEventBytes > maxEventLimit {
		errs = append(errs, fmt.Sprintf("MaxEventBytes (--max-event-bytes) %d: want at most %d (1 GiB less the batch overhead)", c.MaxEventBytes, maxEventLimit))
	}
	if _, err := compressionCodec(c.Compression); err != nil {
		errs = append(errs, "Compression (--compression): "+err.Error())
	}
	switch c.Snapshot {
	case "":
		c.Snapshot = SnapshotInitial
	case SnapshotInitial, SnapshotNever, SnapshotOnly:
	default:
		errs = append(errs, fmt.Sprintf("Snapshot (--snapshot) %q: want initial, never or only", c.Snapshot))
	}
	if env, err := schemas.ParseEnvelope(string(c.Envelope)); err != nil {
		errs = append(errs, "Envelope (--envelope): "+err.Error())
	} else {
		c.Envelope = env
	}
	if c.Envelope != schemas.EnvelopeDebezium {
		if c.Tombstones {
			errs = append(errs, "Tombstones (--tombstones): only with the debezium envelope")
		}
		if c.ToastPlaceholder != "" {
			errs = append(errs, "ToastPlaceholder (--toast-placeholder): only with the debezium envelope")
		}
		if c.EnvelopeSkipTruncate {
			errs = append(errs, "EnvelopeSkipTruncate (--envelope-skip-truncate): only with the debezium envelope")
		}
	} else if c.ToastPlaceholder == "" {
		c.ToastPlaceholder = schemas.DebeziumToastPlaceholder
	}
	if len(errs) > 0 {
		return errors.New("producer config: " + strings.Join(errs, "; "))
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	defInt := func(d *int, v int) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.Partitions <= 0 {
		c.Partitions = 3
	}
	defInt(&c.MaxEventBytes, 8<<20)
	defInt(&c.SnapshotChunkRows, 50000)
	defInt(&c.SnapshotWorkers, 2)
	defInt(&c.GroupMaxEvents, 20000)
	def(&c.GroupMaxDelay, 20*time.Millisecond)
	def(&c.KafkaTxnTimeout, 10*time.Minute)
	def(&c.KafkaCommitTimeout, time.Minute)
	def(&c.ProgressInterval, time.Minute)
	def(&c.StatusInterval, 10*time.Second)
	def(&c.HeartbeatInterval, 30*time.Second)
	def(&c.RetryMaxElapsed, 30*time.Minute)
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Observer == nil {
		c.Observer = NopObserver{}
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.StandbyName == "" {
		c.StandbyName = "tributary_" + c.Slot
	}
	return nil
}

func validSlotName(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return s != "" && len(s) <= 63
}

// Producer streams one slot of one database into Kafka.
type Producer struct {
	cfg Config
}

// New validates cfg once and returns a Producer.
func New(cfg Config) (*Producer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Producer{cfg: cfg}, nil
}

// Run replicates until ctx is cancelled (and returns nil), a terminal error
// occurs (retry.IsTerminal: bad configuration or input, a fenced producer, a
// slot another process holds, ...), or other errors persist for
// RetryMaxElapsed. Each replication
// session resumes from the durable state: the slot's confirmed position and
// the last frame in Kafka. With SnapshotOnly it returns after the snapshot.
func (p *Producer) Run(ctx context.Context) error {
	// Every line names the slot: several producers may share one log (one
	// per site, or in-process in tests) and their LSNs may look alike.
	log := p.cfg.Log.With("slot", p.cfg.Slot)
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 500 * time.Millisecond
	bo.MaxInterval = 30 * time.Second
	bo.MaxElapsedTime = p.cfg.RetryMaxElapsed
	for {
		s := &session{cfg: &p.cfg, log: log}
		err := s.run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			return nil
		}
		if retry.IsTerminal(err) {
			return err
		}
		if s.progressed {
			bo.Reset()
		}
		wait := bo.NextBackOff()
		if wait == backoff.Stop {
			return fmt.Errorf("giving up after %s of transient errors: %w", p.cfg.RetryMaxElapsed, err)
		}
		log.Warn("replication session failed; retrying", "err", err, "retry_in", wait.Round(time.Millisecond))
		p.cfg.Observer.Retrying(err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// ErrStreamEnded is the source ending the replication stream by itself, as
// a server shutting down does; the session reconnects.
var ErrStreamEnded = errors.New("the source ended the replication stream (shutting down?)")

// compressionCodec is the franz-go codec of a Compression setting.
func compressionCodec(name string) (kgo.CompressionCodec, error) {
	switch name {
	case "", "none":
		return kgo.NoCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "zstd":
		return kgo.ZstdCompression(), nil
	}
	return kgo.CompressionCodec{}, fmt.Errorf("%q: want none, gzip, snappy, lz4 or zstd", name)
}
