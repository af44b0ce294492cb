package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/plugin/kslog"

	"github.com/tributary-cdc/tributary/cmd/tributary/internal/flagconf"
	"github.com/tributary-cdc/tributary/schemas"
)

// kafkaFlags are the connection settings every Kafka-facing command shares.
type kafkaFlags struct {
	brokers      *[]string
	registry     *string
	prefix       *string
	tls          *bool
	caFile       *string
	certFile     *string
	keyFile      *string
	saslMech     *string
	saslUser     *string
	saslPassword *string
	regUser      *string
	regPassword  *string
	regCAFile    *string
	logFormat    *string
	logLevel     *string
}

// declareKafka declares the Kafka and registry settings on fs, required or
// not; every command declares the same names, so one --config file serves all.
func declareKafka(fs *flagconf.Set, required bool) *kafkaFlags {
	k := &kafkaFlags{
		brokers:      fs.StringList("brokers", nil, "Kafka seed brokers, `host:port,...`"),
		registry:     fs.String("registry", "", "schema registry `URL` (Confluent API)"),
		prefix:       fs.String("prefix", "", "topic `prefix`: data topics are <prefix>.<schema>.<table>"),
		tls:          fs.Bool("kafka-tls", false, "connect to Kafka with TLS"),
		caFile:       fs.String("kafka-ca-file", "", "PEM `file` of CAs that sign the brokers' certificates (implies --kafka-tls)"),
		certFile:     fs.String("kafka-cert-file", "", "client certificate PEM `file` for mutual TLS"),
		keyFile:      fs.String("kafka-key-file", "", "client key PEM `file` for mutual TLS"),
		saslMech:     fs.String("kafka-sasl-mechanism", "", "SASL `mechanism`: SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN"),
		saslUser:     fs.String("kafka-sasl-user", "", "SASL `user`"),
		saslPassword: fs.Secret("kafka-sasl-password", "SASL password"),
		regUser:      fs.String("registry-user", "", "schema registry basic-auth `user`"),
		regPassword:  fs.Secret("registry-password", "schema registry basic-auth password"),
		regCAFile:    fs.String("registry-ca-file", "", "PEM `file` of CAs for an https registry"),
		logFormat:    fs.String("log-format", "auto", "log `format`: text, json, or auto (text on a terminal, JSON otherwise)"),
		logLevel:     fs.String("log-level", "info", "log `level`: debug, info, warn, error; with debug, producer, consumer and reseed also log the Kafka client's own messages (component=kafka-client)"),
	}
	if required {
		fs.Require("brokers", "registry", "prefix")
	}
	return k
}

// parse runs fs.Parse and turns its errors into usage errors.
func parse(fs *flagconf.Set, args []string, e env) error {
	err := fs.Parse(args, e.lookup)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return usageError{err}
}

// logger is the command's logger, as --log-format and --log-level say.
func (k *kafkaFlags) logger(e env) (*slog.Logger, error) {
	return newLogger(e.stderr, *k.logFormat, *k.logLevel)
}

// parse parses fs (parse) and returns the command's logger (logger).
func (k *kafkaFlags) parse(fs *flagconf.Set, args []string, e env) (*slog.Logger, error) {
	if err := parse(fs, args, e); err != nil {
		return nil, err
	}
	return k.logger(e)
}

// parseRuntime is parse, then the runtime settings of rt (declareRuntime):
// the memory budget and the CPU profile; stop writes the profile out.
func (k *kafkaFlags) parseRuntime(fs *flagconf.Set, args []string, e env, rt runtimeFlags) (log *slog.Logger, stop func(), err error) {
	log, err = k.parse(fs, args, e)
	if err != nil {
		return nil, nil, err
	}
	stop, err = rt.start(log)
	if err != nil {
		return nil, nil, err
	}
	return log, stop, nil
}

// dispatch runs the subcommand of a command with subcommands (setup, slot,
// snapshot): cmds[args[0]], with the arguments after it. With no arguments
// it prints usage to stderr and exits 2, with -h, --help or help it prints
// usage to stdout; an unknown subcommand is a usage error that lists want.
func dispatch(args []string, e env, usage, want string, cmds map[string]func(args []string) error) error {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usage)
		return exitCode(2)
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(e.stdout, usage)
		return nil
	}
	if run, ok := cmds[args[0]]; ok {
		return run(args[1:])
	}
	return usageError{fmt.Errorf("unknown subcommand %q: want %s", args[0], want)}
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level %q: %v", level, err)}
	}
	opts := &slog.HandlerOptions{Level: lv, ReplaceAttr: readableAttr}
	switch format {
	case "auto":
		if f, ok := w.(*os.File); ok && isTerminal(f) {
			return slog.New(slog.NewTextHandler(w, opts)), nil
		}
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageError{fmt.Errorf("--log-format %q: want text, json or auto", format)}
}

// readableAttr writes LSNs as PostgreSQL does ("0/3E8746A8") and durations
// as "1.5s" in both log formats; the JSON handler would print both as
// integers.
func readableAttr(_ []string, a slog.Attr) slog.Attr {
	switch v := a.Value.Any().(type) {
	case pglogrepl.LSN:
		a.Value = slog.StringValue(v.String())
	case time.Duration:
		a.Value = slog.StringValue(v.String())
	}
	return a
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func loadCAs(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificates", file)
	}
	return pool, nil
}

// kgoOpts builds the Kafka client options shared by every Kafka client of a command.
func (k *kafkaFlags) kgoOpts() ([]kgo.Opt, error) {
	for _, b := range *k.brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return nil, usageError{fmt.Errorf("--brokers %q: want host:port", b)}
		}
	}
	opts := []kgo.Opt{kgo.SeedBrokers(*k.brokers...)}
	if *k.tls || *k.caFile != "" || *k.certFile != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if *k.caFile != "" {
			pool, err := loadCAs(*k.caFile)
			if err != nil {
				return nil, usageError{fmt.Errorf("--kafka-ca-file: %w", err)}
			}
			tc.RootCAs = pool
		}
		if *k.certFile != "" || *k.keyFile != "" {
			cert, err := tls.LoadX509KeyPair(*k.certFile, *k.keyFile)
			if err != nil {
				return nil, usageError{fmt.Errorf("--kafka-cert-file/--kafka-key-file: %w", err)}
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	switch m := strings.ToUpper(*k.saslMech); m {
	case "":
	case "SCRAM-SHA-256", "SCRAM-SHA-512":
		a := scram.Auth{User: *k.saslUser, Pass: *k.saslPassword}
		if m == "SCRAM-SHA-256" {
			opts = append(opts, kgo.SASL(a.AsSha256Mechanism()))
		} else {
			opts = append(opts, kgo.SASL(a.AsSha512Mechanism()))
		}
	case "PLAIN":
		opts = append(opts, kgo.SASL(plain.Auth{User: *k.saslUser, Pass: *k.saslPassword}.AsMechanism()))
	default:
		return nil, usageError{fmt.Errorf("--kafka-sasl-mechanism %q: want SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN", *k.saslMech)}
	}
	return opts, nil
}

// checkBrokers fails fast, with one line, when no broker answers.
func (k *kafkaFlags) checkBrokers(ctx context.Context, opts []kgo.Opt) error {
	brokers := *k.brokers
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := cl.Ping(ctx); err != nil {
		if *k.saslMech != "" {
			// A broker that rejects SASL credentials often just closes the
			// connection, which looks like any other connection failure.
			return fmt.Errorf("cannot reach Kafka at %s, or it refused %s authentication as user %q: %v",
				strings.Join(brokers, ","), strings.ToUpper(*k.saslMech), *k.saslUser, err)
		}
		return fmt.Errorf("cannot reach Kafka at %s: %v", strings.Join(brokers, ","), err)
	}
	return nil
}

// connect makes the Kafka and registry clients (clients) and serves
// /metrics, /healthz and /readyz on metricsAddr (startHealth): the start of
// the producer and the consumer once their settings are checked.
func (k *kafkaFlags) connect(metricsAddr string, log *slog.Logger) ([]kgo.Opt, *schemas.Registry, *health, error) {
	opts, reg, err := k.clients(log)
	if err != nil {
		return nil, nil, nil, err
	}
	h, err := startHealth(metricsAddr, log)
	if err != nil {
		return nil, nil, nil, err
	}
	return opts, reg, h, nil
}

// clients builds the Kafka client options and the registry client.
func (k *kafkaFlags) clients(log *slog.Logger) ([]kgo.Opt, *schemas.Registry, error) {
	opts, err := k.kgoOpts()
	if err != nil {
		return nil, nil, err
	}
	// The Kafka client's own log (connections, metadata, transaction
	// retries) is on with --log-level debug only: the client logs every
	// metadata refresh and retry.
	if log.Enabled(context.Background(), slog.LevelDebug) {
		opts = append(opts, kgo.WithLogger(kslog.New(log.With("component", "kafka-client"))))
	}
	reg, err := k.registryClient(log)
	if err != nil {
		return nil, nil, err
	}
	return opts, reg, nil
}

func (k *kafkaFlags) registryClient(log *slog.Logger) (*schemas.Registry, error) {
	var opts []sr.ClientOpt
	if *k.regUser != "" {
		opts = append(opts, sr.BasicAuth(*k.regUser, *k.regPassword))
	}
	if *k.regCAFile != "" {
		pool, err := loadCAs(*k.regCAFile)
		if err != nil {
			return nil, usageError{fmt.Errorf("--registry-ca-file: %w", err)}
		}
		opts = append(opts, sr.DialTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
	}
	return schemas.NewRegistry([]string{*k.registry}, log, opts...)
}

func errorf(format string, a ...any) error { return fmt.Errorf(format, a...) }

// checkSinkTarget checks that --sink names a sink and that the setting it
// writes to (--target or --duckdb-file) is given: consumer and verify take
// the same sinks, so that verify reads the consumer's config file.
func checkSinkTarget(sink, target, duckFile string) error {
	switch sink {
	case "postgres", "history":
		if target == "" {
			return usageError{fmt.Errorf("--sink %s needs --target", sink)}
		}
	case "duckdb":
		if duckFile == "" {
			return usageError{errors.New("--sink duckdb needs --duckdb-file")}
		}
	default:
		return usageError{fmt.Errorf("--sink %q: want postgres, history or duckdb", sink)}
	}
	return nil
}
