package main

import (
	"context"
	"fmt"

	"github.com/tributary-cdc/tributary/cmd/tributary/internal/flagconf"
	"github.com/tributary-cdc/tributary/deploy/embedded"
)

func runDev(ctx context.Context, args []string, e env) error {
	fs := flagconf.New("tributary dev", e.stdout, flagconf.Info{
		Description: "Runs an embedded Kafka broker (franz-go kfake) and a Confluent-API schema registry\n" +
			"(franz-go srfake) in one process, for development, demos and tests. With --data-dir,\n" +
			"topics, records and schema IDs survive a restart. It prints the addresses when ready\n" +
			"and runs until SIGINT or SIGTERM. Loopback addresses only.",
		Examples: "  tributary dev --data-dir /tmp/trib\n" +
			"  tributary dev --data-dir /tmp/trib --kafka-addr 127.0.0.1:19092 --registry-addr 127.0.0.1:18081",
	})
	dataDir := fs.String("data-dir", "", "`directory` that persists the broker and the registry")
	kafkaAddr := fs.String("kafka-addr", "127.0.0.1:9092", "broker listen `address`")
	advertise := fs.String("advertise", "", "broker `address` that metadata gives clients instead of --kafka-addr "+
		"(as Kafka's advertised.listeners), e.g. a TCP proxy in front of the broker; loopback only")
	registryAddr := fs.String("registry-addr", "127.0.0.1:8081", "registry listen `address`")
	partitions := fs.Int("partitions", 3, "default partition `count` of auto-created topics")
	logFormat := fs.String("log-format", "auto", "log `format`: text, json or auto")
	fs.Require("data-dir")
	if err := parse(fs, args, e); err != nil {
		return err
	}
	log, err := newLogger(e.stderr, *logFormat, "info")
	if err != nil {
		return err
	}
	st, err := embedded.Start(embedded.Config{DataDir: *dataDir, KafkaAddr: *kafkaAddr, Advertise: *advertise, RegistryAddr: *registryAddr, Partitions: *partitions, Log: log})
	if err != nil {
		return err
	}
	defer st.Close()
	fmt.Fprintf(e.stdout, "kafka: %s\n", st.KafkaAddr)
	if st.Advertised != st.KafkaAddr {
		fmt.Fprintf(e.stdout, "kafka advertised: %s\n", st.Advertised)
	}
	fmt.Fprintf(e.stdout, "registry: %s\ndata-dir: %s\nready\n", st.RegistryURL, *dataDir)
	log.Info("dev stack ready", "kafka", st.KafkaAddr, "advertised", st.Advertised, "registry", st.RegistryURL, "data_dir", *dataDir)
	<-ctx.Done()
	log.Info("dev stack stopping")
	return nil
}
