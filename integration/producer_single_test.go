package integration

import (
	"crypto/tls"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tributary-cdc/tributary/deploy/embedded"
	"github.com/tributary-cdc/tributary/integration/harness"
)

// TestSecondProducerOnSlotFailsFast: PostgreSQL refuses a second reader of
// an active slot; the second producer says so in one line, names the pid,
// and exits non-zero instead of retrying, while the first keeps streaming.
func TestSecondProducerOnSlotFailsFast(t *testing.T) {
	e := newEnv(t)
	e.pg.Exec(t, `CREATE TABLE one (id int PRIMARY KEY)`, `CREATE PUBLICATION pub FOR TABLE one`)
	first := harness.StartTributary(t, nil, e.producerArgs("--snapshot", "never")...)
	e.waitSlotActive(t, "slot", first)
	cmd := exec.Command(harness.Binary(t), e.producerArgs("--snapshot", "never")...)
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		t.Fatal("the second producer did not exit within a minute")
	}
	text := string(out)
	if err == nil || !strings.Contains(text, "slot slot is in use by another process (pid ") || !strings.Contains(text, "only one producer may run per slot") {
		t.Fatalf("second producer: %v\n%s", err, lastLines(text, 5))
	}
	if strings.Contains(text, "retrying") {
		t.Fatalf("the second producer retried an active slot:\n%s", lastLines(text, 5))
	}
	e.pg.Exec(t, `INSERT INTO one VALUES (1)`)
	e.waitFrameCount(t, 1)
	if err := first.Stop(t, 30*time.Second); err != nil {
		t.Fatalf("first producer: %v", err)
	}
}

// TestRegistryBasicAuthAndTLS: with a registry that requires basic auth over
// HTTPS, the producer works with --registry-user, the password from the
// environment and --registry-ca-file; a wrong password and a wrong CA each
// stop it with a clear error.
func TestRegistryBasicAuthAndTLS(t *testing.T) {
	pg := harness.StartPostgres(t)
	pg.Exec(t, `CREATE TABLE r (id int PRIMARY KEY)`, `CREATE PUBLICATION pub FOR TABLE r`, `INSERT INTO r VALUES (1)`)
	pki, other := newTestPKI(t, "registry"), newTestPKI(t, "other")
	dir := t.TempDir()
	caFile := writeFile(t, filepath.Join(dir, "ca.pem"), pki.caPEM, 0o644)
	wrongCA := writeFile(t, filepath.Join(dir, "wrong.pem"), other.caPEM, 0o644)
	st, err := embedded.Start(embedded.Config{RegistryBasicAuth: "reg:s3cret-reg",
		RegistryTLS: &tls.Config{Certificates: []tls.Certificate{pki.server}, MinVersion: tls.VersionTLS12}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if !strings.HasPrefix(st.RegistryURL, "https://") {
		t.Fatalf("registry URL %s is not https", st.RegistryURL)
	}
	args := func(prefix string, ca string) []string {
		return []string{"producer", "--source", pg.DSN, "--publication", "pub", "--slot", prefix, "--brokers", st.KafkaAddr,
			"--registry", st.RegistryURL, "--registry-ca-file", ca, "--prefix", prefix, "--registry-user", "reg",
			"--snapshot", "only", "--log-format", "json"}
	}
	ok := exec.Command(harness.Binary(t), args("good", caFile)...)
	ok.Env = append(ok.Environ(), "TRIBUTARY_REGISTRY_PASSWORD=s3cret-reg")
	if out, err := ok.CombinedOutput(); err != nil {
		t.Fatalf("producer with registry credentials: %v\n%s", err, lastLines(string(out), 5))
	}
	untrusted := exec.Command(harness.Binary(t), args("untrusted", wrongCA)...)
	untrusted.Env = append(untrusted.Environ(), "TRIBUTARY_REGISTRY_PASSWORD=s3cret-reg")
	if out, err := untrusted.CombinedOutput(); err == nil || !strings.Contains(string(out), "certificate signed by unknown authority") {
		t.Fatalf("producer trusting the wrong CA for the registry: %v\n%s", err, lastLines(string(out), 5))
	}
	bad := exec.Command(harness.Binary(t), args("bad", caFile)...)
	bad.Env = append(bad.Environ(), "TRIBUTARY_REGISTRY_PASSWORD=wrong")
	out, err := bad.CombinedOutput()
	text := string(out)
	if err == nil || !strings.Contains(strings.ToLower(text), "not authorized") || !strings.Contains(text, "registry") {
		t.Fatalf("producer with a wrong registry password: %v\n%s", err, lastLines(text, 5))
	}
	if strings.Contains(text, "s3cret-reg") || strings.Contains(text, "wrong\"") {
		t.Fatalf("a registry password leaked into the output:\n%s", text)
	}
}
