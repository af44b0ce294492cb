package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/cmd/tributary/internal/flagconf"
	"github.com/tributary-cdc/tributary/consumer/conflict"
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
		webhook: fs.String("conflict-webhook", "", "multi-site: POST every recorded conflict as JSON to this `URL`"),
	}
}

// multisite is what the flags build: the sink's origin and conflict engine.
type multisite struct {
	origin string
	engine *conflict.Engine
	close  func()
}

// build validates the flags and creates the conflict engine; with no --site
// it returns only the origin (possibly empty).
// onRecord sees every recorded conflict (for the metrics counter).
func (m *multisiteFlags) build(ctx context.Context, sink, _, prefix, name string, opts []kgo.Opt, log *slog.Logger, onRecord func(conflict.Record)) (*multisite, error) {
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
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, opts...), kgo.ProducerLinger(0))...)
	if err != nil {
		return nil, err
	}
	topic := prefix + ".conflicts"
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err = kadm.NewClient(cl).CreateTopic(cctx, 1, -1, nil, topic)
	cancel()
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		log.Warn("could not create the conflicts topic; notifications to it may fail", "topic", topic, "err", err)
	}
	ns := []conflict.Notifier{&conflict.KafkaNotifier{Client: cl, Topic: topic}}
	if *m.webhook != "" {
		ns = append(ns, &conflict.WebhookNotifier{URL: *m.webhook})
	}
	e, err := conflict.New(conflict.Config{File: file, Site: *m.site, RemoteSite: *m.remoteSite, Consumer: name,
		Notifiers: ns, OnRecord: onRecord, Logger: log})
	if err != nil {
		cl.Close()
		return nil, usageError{err}
	}
	out.engine = e
	out.close = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.Close(ctx)
		cl.Close()
	}
	log.Info("multi-site apply", "site", *m.site, "remote_site", *m.remoteSite, "origin", out.origin,
		"conflicts", *m.conflicts, "conflicts_topic", topic)
	return out, nil
}
