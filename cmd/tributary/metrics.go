package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

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
	h.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
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

// producerMetrics is the producer's Observer: Prometheus metrics, readiness
// and, on a terminal, the snapshot progress line.
type producerMetrics struct {
	h            *health
	progress     func(producer.SnapshotProgress)
	slotLag      prometheus.Gauge
	serverWAL    prometheus.Gauge
	confirmed    prometheus.Gauge
	confirmedAt  atomic.Int64 // unix nanoseconds
	events       prometheus.Counter
	txns         prometheus.Counter
	kafkaCommit  prometheus.Histogram
	snapRows     *prometheus.GaugeVec
	snapEstimate *prometheus.GaugeVec
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
		snapRows: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tributary_producer_snapshot_rows",
			Help: "Rows of a table written by the initial snapshot in this process."}, []string{"table"}),
		snapEstimate: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tributary_producer_snapshot_rows_estimate",
			Help: "Estimated rows of a table being snapshotted (pg_class.reltuples)."}, []string{"table"}),
	}
	sinceConfirm := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tributary_producer_seconds_since_confirm",
		Help: "Seconds since the slot's confirmed position last moved."}, func() float64 {
		at := m.confirmedAt.Load()
		if at == 0 {
			return 0
		}
		return time.Since(time.Unix(0, at)).Seconds()
	})
	h.reg.MustRegister(m.slotLag, m.serverWAL, m.confirmed, m.events, m.txns, m.kafkaCommit, m.snapRows, m.snapEstimate, sinceConfirm)
	return m
}

// Streaming implements producer.Observer.
func (m *producerMetrics) Streaming(active bool) { m.h.ready.Store(active) }

// Positions implements producer.Observer.
func (m *producerMetrics) Positions(p producer.Positions) {
	m.slotLag.Set(float64(p.LagBytes()))
	m.serverWAL.Set(float64(p.ServerWAL))
	m.confirmed.Set(float64(p.Confirmed))
	m.confirmedAt.Store(p.ConfirmedAt.UnixNano())
}

// KafkaCommitted implements producer.Observer.
func (m *producerMetrics) KafkaCommitted(sourceTxns, events int, took time.Duration) {
	m.txns.Add(float64(sourceTxns))
	m.events.Add(float64(events))
	m.kafkaCommit.Observe(took.Seconds())
}

// SnapshotProgress implements producer.Observer.
func (m *producerMetrics) SnapshotProgress(p producer.SnapshotProgress) {
	m.snapRows.WithLabelValues(p.Table).Set(float64(p.Rows))
	m.snapEstimate.WithLabelValues(p.Table).Set(float64(p.Estimate))
	if m.progress != nil {
		m.progress(p)
	}
}
