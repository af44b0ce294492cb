package consumer

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/schemas"
)

// Mode is how a consumer orders its apply.
type Mode string

// The apply modes.
const (
	// ModeTransactional applies whole source transactions in commit order
	// across every table and partition (G3). The default.
	ModeTransactional Mode = "transactional"
	// ModePerKey applies partitions in parallel; order holds per key only,
	// and a target transaction may hold part of a source transaction.
	ModePerKey Mode = "per-key"
)

// ParseMode parses --mode.
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case "", ModeTransactional:
		return ModeTransactional, nil
	case ModePerKey:
		return ModePerKey, nil
	}
	return "", fmt.Errorf("unknown mode %q (want transactional or per-key)", s)
}

// OnError is what a consumer does with a source transaction it cannot apply.
type OnError string

// The error policies.
const (
	// OnErrorStop makes Run return the error; the next Run resumes at the
	// same transaction. The default.
	OnErrorStop OnError = "stop"
	// OnErrorDeadLetter writes the transaction's raw records, with the
	// reason, to <prefix>.dlq.<name> and goes on.
	OnErrorDeadLetter OnError = "dead-letter"
)

// ParseOnError parses --on-error.
func ParseOnError(s string) (OnError, error) {
	switch OnError(s) {
	case "", OnErrorStop:
		return OnErrorStop, nil
	case OnErrorDeadLetter:
		return OnErrorDeadLetter, nil
	}
	return "", fmt.Errorf("unknown error policy %q (want stop or dead-letter)", s)
}

// Config configures a Consumer. Its fields map one to one to the flags of
// `tributary consumer`; the zero value of every optional field is its default.
type Config struct {
	// Kafka holds the client options that reach the brokers: at least
	// kgo.SeedBrokers (--brokers), plus TLS or SASL. The consumer adds its
	// own consuming options; do not pass consumer or group options.
	Kafka []kgo.Opt
	// KafkaHooks are added to the transactional reader's client (Kafka
	// client metrics); per-key workers' clients do not get them.
	KafkaHooks []kgo.Hook
	// Registry decodes the events (--registry). Required.
	Registry *schemas.Registry
	// Prefix is the producer's topic prefix (--prefix). Required.
	Prefix string
	// Name identifies the consumer (--name): its checkpoint, its Kafka group
	// "tributary-<name>" and its dead-letter topic. Required.
	Name string
	// Sink receives the events (--sink, --target). Required.
	Sink Sink
	// Transform, when set, rewrites each decoded event before the sink sees
	// it (--transforms); see Transformer.
	Transform Transformer
	// Tables limits the apply to these tables, "schema.table" or "table"
	// (public), (--tables). Empty means every table.
	Tables []string
	// Mode is --mode; ModeTransactional by default.
	Mode Mode
	// OnError is --on-error; OnErrorStop by default.
	OnError OnError
	// UntilCaughtUp makes Run apply everything committed to the
	// transactions topic when it starts, then return nil (--until-caught-up).
	UntilCaughtUp bool
	// FromSnapshot, when set, is the ID of an online snapshot (or
	// "latest") that a consumer with no usable checkpoint starts from
	// (--from-snapshot): a new consumer, or one whose checkpoint retention
	// has passed. It starts at the frame where the snapshot was requested,
	// and its target catches up through the snapshot's reads. A consumer
	// with a usable checkpoint ignores it.
	FromSnapshot string
	// Interval, when positive, makes Run catch up, sleep Interval, and catch
	// up again until its context ends (--interval).
	Interval time.Duration
	// GroupMaxTxns and GroupMaxEvents bound how many source transactions,
	// and events, one target transaction groups (defaults 1000 and 20000).
	// A source transaction is never split, so a single large one may exceed
	// GroupMaxEvents. Transactions are grouped only while more are already
	// read; a quiet stream applies each one at once.
	GroupMaxTxns   int
	GroupMaxEvents int
	// GroupLinger is how long a group waits for more source transactions
	// when none is read yet and it is not full (default 0: apply at once).
	// Sinks that load in micro-batches (duckdb --flush-interval) set it.
	GroupLinger time.Duration
	// PartitionBuffer is how many records each partition may read ahead
	// before it is paused (default 4096), and PartitionBufferBytes how many
	// bytes of record keys and values (default 8 MiB): whichever is reached
	// first pauses it, so that memory does not grow with row size. A
	// partition resumes when it has drained to half of both.
	PartitionBuffer      int
	PartitionBufferBytes int
	// ReadAhead and ReadAheadBytes bound the read-ahead of all partitions
	// together (defaults 16384 records and 32 MiB): while either is reached,
	// a partition that receives records is paused until it has nothing
	// buffered or the total has drained to half. Memory then grows with the
	// number of partitions by at most one fetch (256 KiB) each, not by a
	// partition's whole read-ahead.
	ReadAhead      int
	ReadAheadBytes int
	// RetryMaxElapsed is how long Run retries transient errors, counted
	// since the last successful apply, before returning the last one
	// (default 10 minutes).
	RetryMaxElapsed time.Duration
	// Logger receives structured logs; nil means slog.Default().
	Logger *slog.Logger
	// Observer receives metrics and health events; nil means NopObserver.
	Observer Observer
}

func (c *Config) validate() error {
	var errs []error
	if len(c.Kafka) == 0 {
		errs = append(errs, errors.New("Kafka: no client options (brokers)"))
	}
	if c.Registry == nil {
		errs = append(errs, errors.New("Registry: required"))
	}
	if c.Prefix == "" {
		errs = append(errs, errors.New("Prefix: required"))
	}
	if c.Name == "" {
		errs = append(errs, errors.New("Name: required"))
	} else if strings.ContainsAny(c.Name, " /\\") {
		errs = append(errs, fmt.Errorf("Name %q: must not contain spaces or slashes", c.Name))
	}
	if c.Sink == nil {
		errs = append(errs, errors.New("Sink: required"))
	}
	var err error
	if c.Mode, err = ParseMode(string(c.Mode)); err != nil {
		errs = append(errs, fmt.Errorf("Mode: %w", err))
	}
	if c.OnError, err = ParseOnError(string(c.OnError)); err != nil {
		errs = append(errs, fmt.Errorf("OnError: %w", err))
	}
	if c.Mode == ModePerKey && c.OnError == OnErrorDeadLetter {
		// A per-key worker applies changes, not whole source transactions,
		// and stops at the one it cannot apply.
		errs = append(errs, errors.New("OnError dead-letter: per-key mode has no dead letters (it sets aside whole source "+
			"transactions, which per-key workers do not apply as one); use --on-error stop, or --mode transactional"))
	}
	if c.Interval < 0 {
		errs = append(errs, fmt.Errorf("Interval %v: must not be negative", c.Interval))
	}
	if c.GroupMaxTxns < 0 || c.GroupMaxEvents < 0 || c.PartitionBuffer < 0 || c.PartitionBufferBytes < 0 || c.ReadAhead < 0 || c.ReadAheadBytes < 0 || c.RetryMaxElapsed < 0 {
		errs = append(errs, errors.New("GroupMaxTxns, GroupMaxEvents, PartitionBuffer, PartitionBufferBytes, ReadAhead, ReadAheadBytes, RetryMaxElapsed: must not be negative"))
	}
	for _, t := range c.Tables {
		if strings.TrimSpace(t) == "" || strings.Count(t, ".") > 1 {
			errs = append(errs, fmt.Errorf("Tables: %q is not schema.table", t))
		}
	}
	if c.GroupMaxTxns == 0 {
		c.GroupMaxTxns = 1000
	}
	if c.GroupMaxEvents == 0 {
		c.GroupMaxEvents = 20000
	}
	if c.PartitionBuffer == 0 {
		c.PartitionBuffer = 4096
	}
	if c.PartitionBufferBytes == 0 {
		c.PartitionBufferBytes = 8 << 20
	}
	if c.ReadAhead == 0 {
		c.ReadAhead = 16384
	}
	if c.ReadAheadBytes == 0 {
		c.ReadAheadBytes = 32 << 20
	}
	if c.RetryMaxElapsed == 0 {
		c.RetryMaxElapsed = 10 * time.Minute
	}
	if c.Observer == nil {
		c.Observer = NopObserver{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return errors.Join(errs...)
}

// tableTopics maps Tables to the data topics they select; nil selects all.
func (c *Config) tableTopics() map[string]bool {
	if len(c.Tables) == 0 {
		return nil
	}
	m := make(map[string]bool, len(c.Tables))
	for _, t := range c.Tables {
		s, n, ok := strings.Cut(strings.TrimSpace(t), ".")
		if !ok {
			s, n = "public", s
		}
		m[schemas.TopicName(c.Prefix, s, n)] = true
	}
	return m
}
