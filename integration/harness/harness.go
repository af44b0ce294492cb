// Package harness starts the real services that Tributary's integration tests,
// chaos suite and benchmarks run against: throw-away PostgreSQL 15 clusters
// (through deploy/local/postgres.sh, the same script users run), and a Kafka
// broker plus schema registry: the in-process embedded stack by default, or
// the real Kafka named by TRIBUTARY_TEST_BROKERS.
//
// Nothing here skips: a service that cannot start fails the test with the
// reason, because a skipped integration test proves nothing.
package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-cdc/tributary/deploy/embedded"
)

// RepoRoot is the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// FreePort returns a free TCP port on 127.0.0.1.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Postgres is a throw-away PostgreSQL cluster.
type Postgres struct {
	Dir  string
	Port int
	DSN  string // postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable
}

// StartPostgres starts a PostgreSQL 15 cluster with wal_level=logical on a free
// loopback port; it is stopped and removed when the test ends.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	p := newPostgres(t)
	if out, err := p.script("start"); err != nil {
		t.Fatalf("start postgres: %v\n%s", err, out)
	}
	return p
}

// newPostgres is a cluster directory and a free port, not started; the
// cluster is stopped and removed when the test ends.
func newPostgres(t testing.TB) *Postgres {
	t.Helper()
	dir, err := os.MkdirTemp("", "trib-pg-")
	if err != nil {
		t.Fatal(err)
	}
	p := &Postgres{Dir: dir, Port: FreePort(t)}
	p.DSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.Port)
	t.Cleanup(func() {
		if out, err := p.script("stop", "immediate"); err != nil {
			t.Logf("stop postgres: %v\n%s", err, out)
		}
		os.RemoveAll(dir)
	})
	return p
}

func (p *Postgres) script(verb string, extra ...string) ([]byte, error) {
	args := append([]string{verb, p.Dir, strconv.Itoa(p.Port)}, extra...)
	cmd := exec.Command(filepath.Join(RepoRoot(), "deploy", "local", "postgres.sh"), args...)
	return cmd.CombinedOutput()
}

// Stop stops the cluster with mode "fast" or "immediate".
func (p *Postgres) Stop(t testing.TB, mode string) {
	t.Helper()
	if out, err := p.script("stop", mode); err != nil {
		t.Fatalf("stop postgres: %v\n%s", err, out)
	}
}

// Start starts a stopped cluster again.
func (p *Postgres) Start(t testing.TB) {
	t.Helper()
	if out, err := p.script("start"); err != nil {
		t.Fatalf("start postgres: %v\n%s", err, out)
	}
}

// Copy copies p, which must be stopped, into a cluster directory of its own
// with a port of its own, as a file-system backup restores it: the same
// system identifier, timeline, WAL and replication slots. It is not started;
// it is stopped and removed when the test ends.
func (p *Postgres) Copy(t testing.TB) *Postgres {
	t.Helper()
	c := newPostgres(t)
	if out, err := exec.Command("cp", "-a", p.Dir+"/.", c.Dir).CombinedOutput(); err != nil {
		t.Fatalf("copy %s: %v\n%s", p.Dir, err, out)
	}
	return c
}

// Promote starts p, stopped, as a standby of no primary, which replays the
// WAL it holds, and promotes it: it goes on on a new timeline that begins
// where its WAL ended, as a failover to a standby or a restore does.
func (p *Postgres) Promote(t testing.TB) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(p.Dir, "standby.signal"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	p.Start(t)
	var promoted bool
	c := p.Conn(t)
	if err := c.QueryRow(context.Background(), `SELECT pg_promote(true, 60)`).Scan(&promoted); err != nil || !promoted {
		t.Fatalf("promote %s: %v (promoted %v)", p.Dir, err, promoted)
	}
	c.Close(context.Background())
}

// Conn opens a connection that is closed when the test ends.
func (p *Postgres) Conn(t testing.TB) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, p.DSN)
	if err != nil {
		t.Fatalf("connect %s: %v", p.DSN, err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// Exec runs SQL statements and fails the test on error.
func (p *Postgres) Exec(t testing.TB, sql ...string) {
	t.Helper()
	c := p.Conn(t)
	for _, s := range sql {
		if _, err := c.Exec(context.Background(), s); err != nil {
			t.Fatalf("exec %q: %v", s, err)
		}
	}
}

// Kafka is the broker and registry a test runs against.
type Kafka struct {
	Brokers     []string
	RegistryURL string
	Embedded    *embedded.Stack // nil on the real-Kafka lane
	Real        bool
}

// StartKafka gives the test a broker and a registry. On the real-Kafka lane
// (TRIBUTARY_TEST_BROKERS set) the broker is the external one and only the
// registry runs in process; otherwise both are the embedded stack, persisted
// under dataDir when it is not empty.
func StartKafka(t testing.TB, dataDir string) *Kafka {
	t.Helper()
	if b := os.Getenv("TRIBUTARY_TEST_BROKERS"); b != "" {
		st, err := embedded.Start(embedded.Config{DataDir: dataDir})
		if err != nil {
			t.Fatalf("embedded registry: %v", err)
		}
		// The real lane uses only the registry of the stack.
		st.Cluster.Close()
		t.Cleanup(func() { st.Close() })
		return &Kafka{Brokers: strings.Split(b, ","), RegistryURL: st.RegistryURL, Real: true}
	}
	st, err := embedded.Start(embedded.Config{DataDir: dataDir})
	if err != nil {
		t.Fatalf("embedded stack: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return &Kafka{Brokers: []string{st.KafkaAddr}, RegistryURL: st.RegistryURL, Embedded: st}
}

// Client returns a plain client on the test's broker, closed at the end.
func (k *Kafka) Client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(k.Brokers...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// Admin returns an admin client on the test's broker.
func (k *Kafka) Admin(t testing.TB) *kadm.Client { return kadm.NewClient(k.Client(t)) }

// Prefix returns a topic prefix unique to this test, so that tests sharing a
// real broker never read each other's topics.
func Prefix(t testing.TB) string {
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		if r >= 'A' && r <= 'Z' {
			return r + 32
		}
		return '_'
	}, t.Name())
	return fmt.Sprintf("t%d_%s", time.Now().UnixNano()%1e9, name)
}

// Opts are the client options that reach the test's broker.
func (k *Kafka) Opts() []kgo.Opt { return []kgo.Opt{kgo.SeedBrokers(k.Brokers...)} }
