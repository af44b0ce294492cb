package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/tributary-cdc/tributary/deploy/embedded"
	"github.com/tributary-cdc/tributary/integration/harness"
)

// testPKI is a throw-away CA and a server certificate for 127.0.0.1 and localhost.
type testPKI struct {
	caPEM, certPEM, keyPEM []byte
	server                 tls.Certificate
}

func newTestPKI(t *testing.T, name string) testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p := testPKI{
		caPEM:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}
	if p.server, err = tls.X509KeyPair(p.certPEM, p.keyPEM); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeFile(t *testing.T, path string, b []byte, mode os.FileMode) string {
	t.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// configureTLS gives pg the server certificate of pki and turns ssl on; it
// takes effect when pg restarts.
func configureTLS(t *testing.T, pg *harness.Postgres, pki testPKI) {
	t.Helper()
	writeFile(t, filepath.Join(pg.Dir, "server.crt"), pki.certPEM, 0o644)
	writeFile(t, filepath.Join(pg.Dir, "server.key"), pki.keyPEM, 0o600)
	if os.Getuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, f := range []string{"server.crt", "server.key"} {
			if err := os.Chown(filepath.Join(pg.Dir, f), uid, gid); err != nil {
				t.Fatal(err)
			}
		}
	}
	conf, err := os.OpenFile(filepath.Join(pg.Dir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer conf.Close()
	if _, err := conf.WriteString("\n# configureTLS\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"); err != nil {
		t.Fatal(err)
	}
}

// noSecrets fails the test when any secret appears in out.
func noSecrets(t *testing.T, what, out string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Fatalf("%s shows a password:\n%s", what, out)
		}
	}
}

// oneLineError checks that a failed command printed one clear line.
func oneLineError(t *testing.T, what, out string, code int, want ...string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	if code == 0 || !strings.HasPrefix(last, "tributary ") {
		t.Fatalf("%s: exit %d, want non-zero with a final 'tributary <cmd>: ...' line:\n%s", what, code, out)
	}
	for _, w := range want {
		if !strings.Contains(last, w) {
			t.Fatalf("%s: error line lacks %q:\n%s", what, w, last)
		}
	}
}

// TestOpsKafkaTLSAndSCRAM runs the producer binary against a kfake broker
// that requires TLS and SASL/SCRAM, with SHA-256 and SHA-512 users, the CA
// from a file and the password from the environment; then with a wrong
// password and a wrong CA, which must fail with one clear line. Neither the
// SASL password nor the database password appears in any output.
func TestOpsKafkaTLSAndSCRAM(t *testing.T) {
	dir := t.TempDir()
	pki, wrong := newTestPKI(t, "kafka"), newTestPKI(t, "other")
	caFile := writeFile(t, filepath.Join(dir, "ca.pem"), pki.caPEM, 0o644)
	wrongCA := writeFile(t, filepath.Join(dir, "wrong-ca.pem"), wrong.caPEM, 0o644)
	const pw256, pw512, pgPW = "sasl-256-Secret!x", "sasl-512-Secret!y", "pg-Secret-z9"
	st, err := embedded.Start(embedded.Config{
		KafkaTLS:  &tls.Config{Certificates: []tls.Certificate{pki.server}, MinVersion: tls.VersionTLS12},
		SASLUsers: [][3]string{{"SCRAM-SHA-256", "admin256", pw256}, {"SCRAM-SHA-512", "user512", pw512}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	pg := harness.StartPostgres(t)
	pg.Exec(t, `CREATE TABLE t (id int PRIMARY KEY, v text)`, `CREATE PUBLICATION pub FOR TABLE t`)
	prefix := harness.Prefix(t)

	args := func(mech, user, ca string, extra ...string) []string {
		return append([]string{"producer", "--source", pg.DSN, "--publication", "pub", "--slot", "slot", "--snapshot", "never",
			"--brokers", st.KafkaAddr, "--registry", st.RegistryURL, "--prefix", prefix, "--log-format", "json",
			"--kafka-ca-file", ca, "--kafka-sasl-mechanism", mech, "--kafka-sasl-user", user}, extra...)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pki.caPEM)
	reader := func(t *testing.T) *kadm.Client {
		cl, err := kgo.NewClient(kgo.SeedBrokers(st.KafkaAddr), kgo.DialTLSConfig(&tls.Config{RootCAs: pool}),
			kgo.SASL(scram.Auth{User: "admin256", Pass: pw256}.AsSha256Mechanism()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return kadm.NewClient(cl)
	}(t)
	frames := func() int64 {
		ends, err := reader.ListCommittedOffsets(context.Background(), prefix+".transactions")
		if err != nil {
			return 0
		}
		o, _ := ends.Lookup(prefix+".transactions", 0)
		return o.Offset
	}

	src := pg.Conn(t)
	var outputs []string
	for i, u := range []struct{ mech, user, pw string }{{"SCRAM-SHA-256", "admin256", pw256}, {"SCRAM-SHA-512", "user512", pw512}} {
		env := []string{"TRIBUTARY_KAFKA_SASL_PASSWORD=" + u.pw, "PGPASSWORD=" + pgPW}
		p := harness.StartTributary(t, env, args(u.mech, u.user, caFile)...)
		waitActive(t, pg, "slot", p)
		before := frames()
		if _, err := src.Exec(context.Background(), `INSERT INTO t VALUES ($1, 'x')`, i); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for frames() <= before {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no frame reached Kafka over TLS:\n%s", u.mech, lastLines(p.Output(), 10))
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err := p.Stop(t, 30*time.Second); err != nil {
			t.Fatalf("%s: producer stop: %v\n%s", u.mech, err, lastLines(p.Output(), 10))
		}
		outputs = append(outputs, p.Output())
	}

	// Wrong password, wrong CA, no TLS: one clear line, non-zero exit.
	out, code := opsRun(t, []string{"TRIBUTARY_KAFKA_SASL_PASSWORD=wrong-" + pw512}, "", args("SCRAM-SHA-512", "user512", caFile)...)
	oneLineError(t, "wrong SASL password", out, code, "tributary producer: ", "cannot reach Kafka")
	if !strings.Contains(out, "SCRAM-SHA-512 authentication") || !strings.Contains(out, "user512") {
		// kfake closes the connection on a failed SCRAM exchange, so the
		// client only sees EOF: the error must still name the likely cause.
		t.Fatalf("a wrong SASL password reads %q; it should name the authentication and the user", strings.TrimSpace(out))
	}
	outputs = append(outputs, out)
	out, code = opsRun(t, []string{"TRIBUTARY_KAFKA_SASL_PASSWORD=" + pw256}, "", args("SCRAM-SHA-256", "admin256", wrongCA)...)
	oneLineError(t, "wrong CA", out, code, "certificate")
	outputs = append(outputs, out)
	// A secret on the command line is refused, and not echoed.
	out, code = opsRun(t, nil, "", args("SCRAM-SHA-256", "admin256", caFile, "--kafka-sasl-password", pw256)...)
	oneLineError(t, "password flag", out, code, "TRIBUTARY_KAFKA_SASL_PASSWORD")
	outputs = append(outputs, out)

	// status reads Kafka through the same TLS and SASL settings.
	target := harness.StartPostgres(t)
	target.Exec(t, `CREATE TABLE tributary_checkpoint (consumer text, kind text, topic text, partition int, next_offset bigint,
		commit_lsn pg_lsn, commit_ts timestamptz, applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (consumer, kind, topic, partition))`,
		`INSERT INTO tributary_checkpoint VALUES ('c1', 'transactions', '`+prefix+`.transactions', 0, 0, '0/0', now() - interval '1 minute', now())`)
	out, code = opsRun(t, []string{"TRIBUTARY_KAFKA_SASL_PASSWORD=" + pw512, "PGPASSWORD=" + pgPW}, "", "status",
		"--source", strings.Replace(pg.DSN, "postgres@", "postgres:"+pgPW+"@", 1), "--target", target.DSN,
		"--brokers", st.KafkaAddr, "--kafka-ca-file", caFile, "--kafka-sasl-mechanism", "SCRAM-SHA-512", "--kafka-sasl-user", "user512")
	if !strings.Contains(out, " 2 txns") {
		t.Fatalf("status over TLS+SCRAM: exit %d, want consumer c1 2 transactions behind:\n%s", code, out)
	}
	outputs = append(outputs, out)
	for i, o := range outputs {
		noSecrets(t, "output "+strconv.Itoa(i), o, pw256, pw512, pgPW)
	}
}

// waitOutput waits until p's output contains want or p exits, at most timeout.
func waitOutput(p *harness.Proc, want string, timeout time.Duration) (out string, exited bool) {
	deadline := time.Now().Add(timeout)
	for {
		exited, _ = p.Exited()
		out = p.Output()
		if exited || strings.Contains(out, want) || time.Now().After(deadline) {
			return out, exited
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// mustWaitOutput is waitOutput that fails the test when p exits or the
// timeout passes before want is printed.
func mustWaitOutput(t *testing.T, p *harness.Proc, want string, timeout time.Duration) {
	t.Helper()
	out, exited := waitOutput(p, want, timeout)
	switch {
	case strings.Contains(out, want):
	case exited:
		_, err := p.Exited()
		t.Fatalf("the process exited (%v) before printing %q:\n%s", err, want, lastLines(out, 20))
	default:
		t.Fatalf("no %q printed within %s:\n%s", want, timeout, lastLines(out, 20))
	}
}

// waitActive waits until slot is active on pg.
func waitActive(t *testing.T, pg *harness.Postgres, slot string, p *harness.Proc) {
	t.Helper()
	(&env{pg: pg}).waitSlotActive(t, slot, p)
}

// TestOpsPostgresVerifyFull serves PostgreSQL over TLS with a certificate
// from a throw-away CA and password (SCRAM) authentication: the producer
// connects with sslmode=verify-full and that CA, fails clearly with another
// CA, and no output shows the password.
func TestOpsPostgresVerifyFull(t *testing.T) {
	e := newEnv(t)
	pki, wrong := newTestPKI(t, "postgres"), newTestPKI(t, "other")
	dir := t.TempDir()
	caFile := writeFile(t, filepath.Join(dir, "root.crt"), pki.caPEM, 0o644)
	wrongCA := writeFile(t, filepath.Join(dir, "wrong.crt"), wrong.caPEM, 0o644)
	configureTLS(t, e.pg, pki)
	const pgPW = "Pg-Tls-Secret-41"
	e.pg.Exec(t, `CREATE TABLE t (id int PRIMARY KEY)`, `CREATE PUBLICATION pub FOR TABLE t`,
		`CREATE ROLE tls_user LOGIN REPLICATION PASSWORD '`+pgPW+`'`, `GRANT SELECT ON t TO tls_user`)
	requirePasswords(t, e.pg, "tls_user")
	hba := filepath.Join(e.pg.Dir, "pg_hba.conf")
	old, _ := os.ReadFile(hba)
	writeFile(t, hba, append([]byte("hostnossl all tls_user 127.0.0.1/32 reject\n"), old...), 0o600)
	e.pg.Stop(t, "fast")
	e.pg.Start(t)

	dsn := func(ca string) string {
		return "postgres://tls_user@127.0.0.1:" + strconv.Itoa(e.pg.Port) + "/postgres?sslmode=verify-full&sslrootcert=" + ca
	}
	args := func(ca string) []string {
		return []string{"producer", "--source", dsn(ca), "--publication", "pub", "--slot", "slot", "--snapshot", "never",
			"--brokers", e.kafka.Brokers[0], "--registry", e.kafka.RegistryURL, "--prefix", e.prefix, "--log-format", "json"}
	}
	p := harness.StartTributary(t, []string{"PGPASSWORD=" + pgPW}, args(caFile)...)
	e.waitSlotActive(t, "slot", p)
	var ssl bool
	if err := e.pg.Conn(t).QueryRow(context.Background(), `SELECT bool_and(s.ssl) FROM pg_stat_ssl s
		JOIN pg_stat_activity a USING (pid) WHERE a.usename = 'tls_user'`).Scan(&ssl); err != nil || !ssl {
		t.Fatalf("the producer's connections are not TLS (%v)", err)
	}
	if _, err := e.pg.Conn(t).Exec(context.Background(), `INSERT INTO t VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	e.waitFrameCount(t, 1)
	if err := p.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("producer stop: %v\n%s", err, lastLines(p.Output(), 10))
	}
	outputs := []string{p.Output()}

	// A wrong CA and a wrong password are permanent: the producer names them
	// and exits instead of retrying.
	for _, c := range []struct{ what, pw, ca, want string }{
		{"wrong CA", pgPW, wrongCA, "x509: certificate signed by unknown authority"},
		{"wrong password", "wrong" + pgPW, caFile, "password authentication failed for user \"tls_user\""},
	} {
		p := harness.StartTributary(t, []string{"PGPASSWORD=" + c.pw}, args(c.ca)...)
		out, _ := waitOutput(p, c.want, 15*time.Second)
		if !strings.Contains(out, c.want) {
			t.Fatalf("%s: output lacks %q:\n%s", c.what, c.want, out)
		}
		// The line can be read a moment before the exit is seen; a
		// producer that retries does not exit at all.
		if done, _ := p.Wait(30 * time.Second); !done {
			t.Fatalf("with a %s the producer retries instead of exiting; it logs: %s", c.what, c.want)
		}
		p.Kill()
		outputs = append(outputs, p.Output())
	}

	// status and slot list over verify-full, with the password in the DSN itself.
	withPW := strings.Replace(dsn(caFile), "tls_user@", "tls_user:"+pgPW+"@", 1)
	out, code := opsRun(t, nil, "", "status", "--source", withPW, "--publication", "pub")
	if code != 0 || !strings.Contains(out, "tls_user@127.0.0.1") || !strings.Contains(out, "sslmode=verify-full") {
		t.Fatalf("status over verify-full: exit %d\n%s", code, out)
	}
	outputs = append(outputs, out)
	out, code = opsRun(t, nil, "", "status", "--source", strings.Replace(withPW, caFile, wrongCA, 1))
	oneLineError(t, "status with a wrong CA", out, code, "certificate signed by unknown authority")
	outputs = append(outputs, out)
	out, _ = opsRun(t, nil, "", "slot", "list", "--source", "host=127.0.0.1 port="+strconv.Itoa(e.pg.Port)+
		" user=tls_user password="+pgPW+" dbname=postgres sslmode=verify-full sslrootcert="+caFile)
	if !strings.Contains(out, "slot") {
		t.Fatalf("slot list: %s", out)
	}
	outputs = append(outputs, out)
	for i, o := range outputs {
		noSecrets(t, "output "+strconv.Itoa(i), o, pgPW)
	}
}
