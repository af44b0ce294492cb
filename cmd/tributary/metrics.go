package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"

	"github.com/jackc/pglogrepl"

	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/conflict"
	"github.com/tributary-cdc/tributary/producer"
)

// health serves /metrics, /healthz (the process is up) and /readyz (it is
// connected and doing its work) on --metrics-addr.
type health struct {
	reg   *prometheus.Registry
	ready atomic.Bool
	srv   *http.Server
}

// startHealth listens on addr; an empty addr serves nothing but still
// collects, so callers need no special case.
func startHealth(addr string, log *slog.Logger) (*health, error) {
	h := &health{reg: prometheus.NewRegistry()}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tributary_build_info",
		Help: "Always 1; the labels name the binary's version and Go version."}, []string{"version", "goversion"})
	buildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	ready := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tributary_ready",
		Help: "1 while /readyz answers 200: the producer streaming, the consumer applying."}, func() float64 {
		if h.ready.Load() {
			return 1
		}
		return 0
	})
	h.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildInfo, ready)
	if addr == "" {
		return h, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, usageError{fmt.Errorf("--metrics-addr %s: %w", addr, err)}
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(h.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !h.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	h.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := h.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics endpoint stopped", "addr", addr, "err", err)
		}
	}()
	log.Info("serving metrics and health", "addr", ln.Addr().String())
	return h, nil
}

func (h *health) close() {
	if h.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = h.srv.Shutdown(ctx) // the process is exiting; nothing to do on error
	}
}

// kafkaMetrics are the Kafka client metrics (franz-go's kprom plugin) of a
// process's main client: the producer's transactional client, the
// transactional consumer's reader. Other clients (admin, per-key workers)
// are not hooked: kprom serves one client at a time.
func (h *health) kafkaMetrics() kgo.Hook {
	return kprom.NewMetrics("tributary", kprom.Subsystem("kafka"), kprom.Registerer(h.reg),
		kprom.FetchAndProduceDetail(kprom.ByNode, kprom.ByTopic, kprom.Records, kprom.UncompressedBytes, kprom.CompressedBytes, kprom.ConsistentNaming))
}

// producerMetrics is the producer's Observer: Prometheus metrics, readiness
// and, on a terminal, the snapshot progress line.
type producerMetrics struct {
	h            *health
	progress     func(producer.SnapshotProgress)
	slotLag      prometheus.Gauge
	serverWAL    prometheus.Gauge
	confirmed    prometheus.Gauge
	confirmedAt  prometheus.Gauge
	events       prometheus.Counter
	txns         prometheus.Counter
	kafkaCommit  prometheus.Histogram
	snapRows     *prometheus.CounterVec
	snapChunks   *prometheus.CounterVec
	snapEstimate *prometheus.GaugeVec
	snapActive   *prometheus.GaugeVec
	snapDone     *prometheus.GaugeVec
	retries      prometheus.Counter
}

func newProducerMetrics(h *health, progress func(producer.SnapshotProgress)) *producerMetrics {
	m := &producerMetrics{
		h:        h,
		progress: progress,
		slotLag: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tributary_producer_slot_lag_bytes",
			Help: "WAL the slot holds back: the source's current WAL position minus the confirmed flush position."}),
		serverWAL: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tributary_producer_source_wal_lsn_bytes",
			Help: "The source's current WAL position, as a byte offset."}),
		confirmed: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tributary_producer_confirmed_lsn_bytes",
			Help: "The slot's confirmed flush position (durable in Kafka), as a byte offset."}),
		events: prometheus.NewCounter(prometheus.CounterOpts{Name: "tributary_producer_events_total",
			Help: "Events committed to Kafka."}),
		txns: prometheus.NewCounter(prometheus.CounterOpts{Name: "tributary_producer_transactions_total",
			Help: "Source transactions (and snapshot chunks) committed to Kafka."}),
		kafkaCommit: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tributary_producer_kafka_commit_seconds",
			Help: "Time to flush and commit one Kafka transaction.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		confirmedAt: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tributary_producer_confirmed_timestamp_seconds",
			Help: "When the slot's confirmed position last moved, Unix seconds (alert on time() minus it)."}),
		snapRows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tributary_producer_snapshot_rows_total",
			Help: "Rows of a table written by its snapshots (initial or online) in this process."}, []string{"table"}),
		snapChunks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tributary_producer_snapshot_chunks_total",
			Help: "Snapshot chunks of a table written in this process."}, []string{"table"}),
		snapEstimate: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tributary_producer_snapshot_rows_estimate",
			Help: "Estimated rows of a table being snapshotted (pg_class.reltuples, or from its size when never analyzed)."}, []string{"table"}),
		snapActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tributary_producer_snapshot_active",
			Help: "1 while a table's snapshot in this process has chunks left to write, 0 once it is done."}, []string{"table"}),
		snapDone: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tributary_producer_snapshot_progress_rows",
			Help: "Rows of a table's current snapshot written so far, before producer restarts included (compare with the estimate)."}, []string{"table"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{Name: "tributary_producer_retries_total",
			Help: "Transient errors after which the producer started a new replication session."}),
	}
	h.reg.MustRegister(m.slotLag, m.serverWAL, m.confirmed, m.confirmedAt, m.events, m.txns, m.kafkaCommit, m.snapRows, m.snapChunks,
		m.snapDone, m.snapEstimate, m.snapActive, m.retries)
	return m
}

// Streaming implements producer.Observer.
func (m *producerMetrics) Streaming(active bool) { m.h.ready.Store(active) }

// Positions implements producer.Observer.
func (m *producerMetrics) Positions(p producer.Positions) {
	m.slotLag.Set(float64(p.LagBytes()))
	m.serverWAL.Set(float64(p.ServerWAL))
	m.confirmed.Set(float64(p.Confirmed))
	if !p.ConfirmedAt.IsZero() {
		m.confirmedAt.Set(float64(p.ConfirmedAt.UnixMicro()) / 1e6)
	}
}

// KafkaCommitted implements producer.Observer.
func (m *producerMetrics) KafkaCommitted(sourceTxns, events int, took time.Duration) {
	m.txns.Add(float64(sourceTxns))
	m.events.Add(float64(events))
	m.kafkaCommit.Observe(took.Seconds())
}

// Retrying implements producer.Observer.
func (m *producerMetrics) Retrying(error) { m.retries.Inc() }

// SnapshotProgress implements producer.Observer.
func (m *producerMetrics) SnapshotProgress(p producer.SnapshotProgress) {
	m.snapRows.WithLabelValues(p.Table).Add(float64(p.Chunk))
	m.snapChunks.WithLabelValues(p.Table).Inc()
	m.snapDone.WithLabelValues(p.Table).Set(float64(p.Rows))
	m.snapEstimate.WithLabelValues(p.Table).Set(float64(p.Estimate))
	active := 1.0
	if p.Done {
		active = 0
	}
	m.snapActive.WithLabelValues(p.Table).Set(active)
	if m.progress != nil {
		m.progress(p)
	}
}

// consumerMetrics is the consumer's Observer: Prometheus metrics and readiness.
type consumerMetrics struct {
	h                *health
	applyTime        prometheus.Histogram
	rows             *prometheus.CounterVec
	txns             prometheus.Counter
	behind           prometheus.Gauge
	readAheadRecords prometheus.Gauge // consumer.ReadAhead.Records
	readAheadBytes   prometheus.Gauge // consumer.ReadAhead.Bytes
	pausedPartitions prometheus.Gauge // consumer.ReadAhead.Paused
	lagSeconds       prometheus.Gauge
	appliedTS        prometheus.Gauge
	dead             prometheus.Counter
	retries          prometheus.Counter
	conflicts        *prometheus.CounterVec
	ready            atomic.Int32 // sessions (per-key: workers) that are ready
}

func newConsumerMetrics(h *health) *consumerMetrics {
	m := &consumerMetrics{
		h: h,
		applyTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tributary_consumer_apply_seconds",
			Help:    "Time to apply one target transaction (a group of whole source transactions), reading included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tributary_consumer_rows_total",
			Help: "Events applied, by table."}, []string{"table"}),
		txns: prometheus.NewCounter(prometheus.CounterOpts{Name: "tributary_consumer_transactions_total",
			Help: "Source transactions applied (transactional mode)."}),
		behind: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tributary_consumer_lag_offsets",
			Help: "Offsets of the transactions topic committed in Kafka but not applied: frames plus transaction markers."}),
		readAheadRecords: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tributary_consumer_read_ahead_records",
			Help: "Records read from the data partitions and not yet applied (transactional mode)."}),
		readAheadBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tributary_consumer_read_ahead_bytes",
			Help: "Bytes of the keys and values of those records."}),
		pausedPartitions: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tributary_consumer_paused_partitions",
			Help: "Data partitions whose fetching the read-ahead bounds paused."}),
		lagSeconds: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tributary_consumer_lag_seconds",
			Help: "Seconds between the source commit of the last applied transaction and its apply."}),
		appliedTS: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tributary_consumer_applied_commit_timestamp_seconds",
			Help: "Source commit time of the last applied transaction, Unix seconds."}),
		dead: prometheus.NewCounter(prometheus.CounterOpts{Name: "tributary_consumer_dead_lettered_total",
			Help: "Source transactions sent to the dead-letter topic."}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{Name: "tributary_consumer_retries_total",
			Help: "Transient errors after which the consumer resumed from its checkpoint."}),
		conflicts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tributary_conflicts_total",
			Help: "Update conflicts and ownership violations detected, by table, kind, method and outcome."},
			[]string{"table", "kind", "method", "outcome"}),
	}
	h.reg.MustRegister(m.applyTime, m.rows, m.txns, m.behind, m.readAheadRecords, m.readAheadBytes, m.pausedPartitions,
		m.lagSeconds, m.appliedTS, m.dead, m.retries, m.conflicts)
	return m
}

// Ready implements consumer.Observer.
func (m *consumerMetrics) Ready(ready bool) {
	if ready {
		m.h.ready.Store(m.ready.Add(1) > 0)
	} else {
		m.h.ready.Store(m.ready.Add(-1) > 0)
	}
}

// Applied implements consumer.Observer.
func (m *consumerMetrics) Applied(a consumer.Applied) {
	m.applyTime.Observe(a.Took.Seconds())
	m.txns.Add(float64(a.SourceTxns))
	for t, n := range a.Rows {
		m.rows.WithLabelValues(t).Add(float64(n))
	}
	if !a.CommitTime.IsZero() {
		m.appliedTS.Set(float64(a.CommitTime.UnixMicro()) / 1e6)
		m.lagSeconds.Set(time.Since(a.CommitTime).Seconds())
	}
}

// Behind implements consumer.Observer.
func (m *consumerMetrics) Behind(offsets int64) { m.behind.Set(float64(offsets)) }

// ReadAhead implements consumer.Observer.
func (m *consumerMetrics) ReadAhead(ra consumer.ReadAhead) {
	m.readAheadRecords.Set(float64(ra.Records))
	m.readAheadBytes.Set(float64(ra.Bytes))
	m.pausedPartitions.Set(float64(ra.Paused))
}

// DeadLettered implements consumer.Observer.
func (m *consumerMetrics) DeadLettered(pglogrepl.LSN) { m.dead.Inc() }

// Retrying implements consumer.Observer.
func (m *consumerMetrics) Retrying(error) { m.retries.Inc() }

// conflict counts one recorded conflict (multi-site consumers).
func (m *consumerMetrics) conflict(r conflict.Record) {
	m.conflicts.WithLabelValues(r.Table, string(r.Kind), string(r.Method), string(r.Outcome)).Inc()
}
