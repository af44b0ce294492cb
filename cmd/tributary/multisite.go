package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/cmd/tributary/internal/flagconf"
	"github.com/tributary-cdc/tributary/consumer"
	"github.com/tributary-cdc/tributary/consumer/conflict"
	"github.com/tributary-cdc/tributary/schemas"
)

// multisiteFlags are the consumer's multi-site settings (docs/MULTISITE.md).
type multisiteFlags struct {
	site, remoteSite, conflicts, originName, webhook *string
}

func declareMultisite(fs *flagconf.Set) *multisiteFlags {
	return &multisiteFlags{
		site: fs.String("site", "", "multi-site: this target's site `name`; turns on loop prevention and conflict handling"),
		remoteSite: fs.String("remote-site", "", "multi-site: the `site` whose producer --prefix is "+
			"(forwarded transactions name their own site through their replication origin)"),
		conflicts: fs.String("conflicts", "", "multi-site: YAML `file` of column groups, resolution methods, site priority "+
			"and ownership rules (docs/MULTISITE.md)"),
		originName: fs.String("origin-name", "", "replication origin `name` the consumer applies under, so that "+
			"this site's producer does not publish the changes again (default tributary_<remote-site> with --site)"),
		webhook: fs.String("conflict-webhook", "", "multi-site: POST every recorded conflict as JSON to this `URL` (best effort, "+
			"at most once; <prefix>.conflicts has every one exactly once)"),
	}
}

// multisite is what the flags build: the sink's origin and conflict engine.
type multisite struct {
	origin string
	engine *conflict.Engine
	close  func()
}

// build validates the flags and creates the conflict engine, which
// publishes the conflicts it records to <prefix>.conflicts (see run); with
// no --site it returns only the origin (possibly empty). onRecord sees
// every recorded conflict (for the metrics counter).
func (m *multisiteFlags) build(sink, mode, prefix, name, target string, opts []kgo.Opt, reg *schemas.Registry, log *slog.Logger,
	onRecord func(conflict.Record)) (*multisite, error) {
	out := &multisite{origin: *m.originName, close: func() {}}
	if *m.site == "" {
		if *m.remoteSite != "" || *m.conflicts != "" || *m.webhook != "" {
			return nil, usageError{errors.New("--remote-site, --conflicts and --conflict-webhook need --site")}
		}
		if out.origin != "" && sink != "postgres" {
			return nil, usageError{errors.New("--origin-name needs --sink postgres")}
		}
		return out, nil
	}
	if sink != "postgres" {
		return nil, usageError{fmt.Errorf("--site needs --sink postgres, not --sink %s", sink)}
	}
	if *m.remoteSite == "" {
		return nil, usageError{errors.New("--site needs --remote-site, the site whose producer --prefix is")}
	}
	if out.origin == "" {
		out.origin = conflict.OriginPrefix + *m.remoteSite
	}
	var file *conflict.File
	if *m.conflicts != "" {
		f, err := conflict.LoadFile(*m.conflicts)
		if err != nil {
			return nil, usageError{err}
		}
		file = f
	}
	var ns []conflict.Notifier
	if *m.webhook != "" {
		ns = append(ns, &conflict.WebhookNotifier{URL: *m.webhook})
	}
	topic := conflict.ConflictsTopic(prefix)
	e, err := conflict.New(conflict.Config{File: file, Site: *m.site, RemoteSite: *m.remoteSite, Consumer: name,
		Notifiers: ns, OnRecord: onRecord, Logger: log,
		Outbox: &conflict.OutboxConfig{Target: target, Topic: topic, Kafka: opts, Registry: reg}})
	if err != nil {
		return nil, usageError{err}
	}
	out.engine = e
	out.close = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.Close(ctx)
	}
	if mode == string(consumer.ModePerKey) {
		log.Warn("multi-site in per-key mode: a target transaction holds changes of several source transactions, and " +
			"this site's producer, if it forwards origins (a hub), publishes them with the commit time of the last; " +
			"run a hub's consumers in transactional mode (docs/MULTISITE.md)")
	}
	log.Info("multi-site apply", "site", *m.site, "remote_site", *m.remoteSite, "origin", out.origin,
		"conflicts", *m.conflicts, "conflicts_topic", topic)
	return out, nil
}

// groupMaxTxns is the consumer's GroupMaxTxns given --group-max-txns
// (requested, 0 for the default): with --site, one source transaction per
// target transaction, so that a hub's producer forwards each with its own
// source commit time (the replication origin's timestamp), which latest
// compares at the other sites; a larger request with --site is refused.
func (m *multisite) groupMaxTxns(requested int) (int, error) {
	if m.engine == nil {
		return requested, nil
	}
	if requested > 1 {
		return 0, errorf("--group-max-txns %d with --site: a multi-site consumer applies one source transaction per target transaction", requested)
	}
	return 1, nil
}

// run runs consume, and beside it the publisher of the conflicts topic,
// which outlives consume by its final publication. An error that stops the
// publisher for good (another process of this consumer took over) stops
// consume too, and is returned.
func (m *multisite) run(ctx context.Context, consume func(context.Context) error) error {
	if m.engine == nil {
		return consume(ctx)
	}
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	octx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	done := make(chan error, 1)
	go func() {
		err := m.engine.RunOutbox(octx)
		if err != nil {
			cancel(err)
		}
		done <- err
	}()
	err := consume(cctx)
	stop()
	if oerr := <-done; oerr != nil {
		return fmt.Errorf("conflicts topic: %w", oerr)
	}
	return err
}
