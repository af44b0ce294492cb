// Package embedded runs Tributary's development stack in process: a Kafka
// broker (franz-go's kfake) and a Confluent-API schema registry (franz-go's
// srfake). It backs `tributary dev`, `make demo` and the fast test lane.
//
// With a data directory, both survive a restart: kfake persists topics and
// records itself, and the registry's subjects, versions and schema IDs are
// written to registry.json after every change and seeded back on start, so a
// schema ID that a record carries resolves to the same schema afterwards.
// The registry's compatibility endpoint approves everything; producers check
// compatibility themselves (schemas.CheckFullCompatible).
package embedded

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
)

// Config configures a Stack. The zero value runs in memory on free ports.
type Config struct {
	// DataDir persists the broker and the registry; empty means in memory.
	DataDir string
	// KafkaAddr is the broker's listen address, "127.0.0.1:0" for a free port.
	KafkaAddr string
	// Advertise, when set, is the loopback host:port that the broker's
	// metadata gives clients instead of its listen address, as Apache
	// Kafka's advertised.listeners does: clients bootstrap from any address
	// that reaches the broker and then connect to Advertise. It puts a TCP
	// proxy (for fault injection) between every client and the broker.
	Advertise string
	// RegistryAddr is the registry's listen address, "127.0.0.1:0" for a free port.
	RegistryAddr string
	// Partitions is the default partition count of auto-created topics (3).
	Partitions int
	// KafkaTLS, when set, serves the broker over TLS.
	KafkaTLS *tls.Config
	// SASLUsers enables SASL; each entry is mechanism ("SCRAM-SHA-256",
	// "SCRAM-SHA-512" or "PLAIN"), user and password. The first is the superuser.
	SASLUsers [][3]string
	// RegistryTLS, when set, serves the registry over HTTPS.
	RegistryTLS *tls.Config
	// RegistryBasicAuth, as "user:password", makes the registry require HTTP
	// basic authentication.
	RegistryBasicAuth string
	// Log receives the stack's own messages; nil discards them.
	Log *slog.Logger
}

// Stack is a running broker and registry.
type Stack struct {
	Cluster     *kfake.Cluster
	Registry    *srfake.Registry
	KafkaAddr   string // host:port the broker listens on
	Advertised  string // host:port the broker advertises (KafkaAddr unless Config.Advertise)
	RegistryURL string // http://host:port of the registry

	srv     *http.Server
	regFile string
	auth    string // Authorization header the registry requires, if any
	saveMu  sync.Mutex
}

// Start starts the broker and the registry and returns when both accept
// connections.
func Start(cfg Config) (*Stack, error) {
	if cfg.KafkaAddr == "" {
		cfg.KafkaAddr = "127.0.0.1:0"
	}
	if cfg.RegistryAddr == "" {
		cfg.RegistryAddr = "127.0.0.1:0"
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = 3
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	host, portStr, err := net.SplitHostPort(cfg.KafkaAddr)
	if err != nil {
		return nil, fmt.Errorf("kafka address %q: %w", cfg.KafkaAddr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("kafka address %q: the embedded broker listens on loopback only", cfg.KafkaAddr)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("kafka address %q: bad port: %w", cfg.KafkaAddr, err)
	}
	var adv net.Addr
	if cfg.Advertise != "" {
		if adv, err = loopbackTCPAddr(cfg.Advertise); err != nil {
			return nil, fmt.Errorf("advertised kafka address %q: %w", cfg.Advertise, err)
		}
	}
	var listenAddr string
	listen := func(network, address string) (net.Listener, error) {
		ln, err := net.Listen(network, address)
		if err != nil {
			return nil, err
		}
		listenAddr = ln.Addr().String()
		if adv != nil {
			return &advertisedListener{Listener: ln, addr: adv}, nil
		}
		return ln, nil
	}
	opts := []kfake.Opt{
		kfake.ListenFn(listen),
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.ClusterID("tributary-dev"),
		kfake.DefaultNumPartitions(cfg.Partitions),
		kfake.AllowAutoTopicCreation(), // as Apache Kafka does by default
		kfake.BrokerConfigs(map[string]string{"transaction.max.timeout.ms": strconv.Itoa(int((30 * time.Minute).Milliseconds()))}),
	}
	if cfg.KafkaTLS != nil {
		opts = append(opts, kfake.TLS(cfg.KafkaTLS))
	}
	if len(cfg.SASLUsers) > 0 {
		opts = append(opts, kfake.EnableSASL())
		for i, u := range cfg.SASLUsers {
			if i == 0 {
				opts = append(opts, kfake.Superuser(u[0], u[1], u[2]))
			} else {
				opts = append(opts, kfake.User(u[0], u[1], u[2]))
			}
		}
	}
	var regFile string
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
		opts = append(opts, kfake.DataDir(filepath.Join(cfg.DataDir, "kafka")))
		regFile = filepath.Join(cfg.DataDir, "registry.json")
	}
	cluster, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start embedded kafka on %s: %w", cfg.KafkaAddr, err)
	}
	s := &Stack{Cluster: cluster, KafkaAddr: listenAddr, Advertised: cluster.ListenAddrs()[0], regFile: regFile}
	if cfg.RegistryBasicAuth != "" {
		s.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(cfg.RegistryBasicAuth))
	}

	var regOpts []srfake.Option
	if cfg.RegistryBasicAuth != "" {
		regOpts = append(regOpts, srfake.WithAuth("Basic "+base64.StdEncoding.EncodeToString([]byte(cfg.RegistryBasicAuth))))
	}
	s.Registry = srfake.NewRegistry(regOpts...)
	if err := s.loadRegistry(); err != nil {
		cluster.Close()
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.RegistryAddr)
	if err != nil {
		cluster.Close()
		return nil, fmt.Errorf("start embedded registry on %s: %w", cfg.RegistryAddr, err)
	}
	s.RegistryURL = "http://" + ln.Addr().String()
	if cfg.RegistryTLS != nil {
		ln = tls.NewListener(ln, cfg.RegistryTLS)
		s.RegistryURL = "https://" + ln.Addr().String()
	}
	s.srv = &http.Server{Handler: s.persisting(s.Registry.Handler(), cfg.Log), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cfg.Log.Error("embedded registry stopped", "err", err)
		}
	}()
	return s, nil
}

// Close stops the registry and the broker. Persisted state stays in DataDir.
func (s *Stack) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	s.Cluster.Close()
	return err
}

// persisting saves the registry after every request that may change it.
func (s *Stack) persisting(h http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		if s.regFile == "" || r.Method == http.MethodGet || r.Method == http.MethodHead {
			return
		}
		if err := s.saveRegistry(); err != nil {
			// The response is already written; a failed save would lose IDs on
			// restart, so make it loud.
			log.Error("embedded registry: persisting registrations failed", "file", s.regFile, "err", err)
		}
	})
}

type savedSchema struct {
	Subject string `json:"subject"`
	Version int    `json:"version"`
	ID      int    `json:"id"`
	Schema  string `json:"schema"`
	Type    string `json:"schemaType,omitempty"`
}

// saveRegistry reads every subject and version back through the registry's
// own API and writes them atomically.
func (s *Stack) saveRegistry() error {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	var subjects []string
	if err := s.get("/subjects", &subjects); err != nil {
		return err
	}
	sort.Strings(subjects)
	var all []savedSchema
	for _, subj := range subjects {
		var versions []int
		if err := s.get("/subjects/"+url.PathEscape(subj)+"/versions", &versions); err != nil {
			return err
		}
		for _, v := range versions {
			var ss savedSchema
			if err := s.get(fmt.Sprintf("/subjects/%s/versions/%d", url.PathEscape(subj), v), &ss); err != nil {
				return err
			}
			all = append(all, ss)
		}
	}
	b, err := json.MarshalIndent(all, "", " ")
	if err != nil {
		return err
	}
	tmp := s.regFile + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, s.regFile)
}

func (s *Stack) get(path string, into any) error {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	if s.auth != "" {
		req.Header.Set("Authorization", s.auth)
	}
	s.Registry.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		return fmt.Errorf("registry GET %s: %d %s", path, rec.Code, bytes.TrimSpace(rec.Body.Bytes()))
	}
	return json.Unmarshal(rec.Body.Bytes(), into)
}

// loadRegistry seeds the registry from registry.json with the saved IDs.
func (s *Stack) loadRegistry() error {
	if s.regFile == "" {
		return nil
	}
	b, err := os.ReadFile(s.regFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("registry state: %w", err)
	}
	var all []savedSchema
	if err := json.Unmarshal(b, &all); err != nil {
		return fmt.Errorf("registry state %s: %w", s.regFile, err)
	}
	seen := map[int]bool{}
	for _, ss := range all {
		sch := sr.Schema{Schema: ss.Schema, Type: sr.TypeAvro}
		if ss.Type != "" {
			if err := sch.Type.UnmarshalText([]byte(ss.Type)); err != nil {
				return fmt.Errorf("registry state %s: %s v%d: %w", s.regFile, ss.Subject, ss.Version, err)
			}
		}
		if !seen[ss.ID] {
			s.Registry.SeedSchema(ss.Subject, ss.Version, ss.ID, sch)
			seen[ss.ID] = true
			continue
		}
		// The same schema under a second subject shares its ID.
		id, _, err := s.Registry.RegisterSchema(ss.Subject, sch)
		if err != nil || id != ss.ID {
			return fmt.Errorf("registry state %s: %s v%d: restored id %d, want %d (%v)", s.regFile, ss.Subject, ss.Version, id, ss.ID, err)
		}
	}
	return nil
}

// advertisedListener is the broker's listener with the address kfake puts
// in metadata responses replaced (kfake advertises its listener's Addr).
type advertisedListener struct {
	net.Listener
	addr net.Addr
}

func (l *advertisedListener) Addr() net.Addr { return l.addr }

// loopbackTCPAddr parses a loopback host:port with a non-zero port.
func loopbackTCPAddr(hostport string) (*net.TCPAddr, error) {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, errors.New("loopback addresses only")
	}
	a, err := net.ResolveTCPAddr("tcp", hostport)
	if err != nil {
		return nil, err
	}
	if a.Port == 0 {
		return nil, errors.New("needs a port")
	}
	return a, nil
}
