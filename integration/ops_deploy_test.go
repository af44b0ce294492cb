package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/tributary-cdc/tributary/integration/harness"
)

// cliSpec is what `tributary <cmd> --help` declares.
type cliSpec struct {
	flags map[string]bool // without dashes
	envs  map[string]bool // TRIBUTARY_*
}

var (
	helpFlagRE = regexp.MustCompile(`(?m)^\s+--([a-z0-9-]+)`)
	helpEnvRE  = regexp.MustCompile(`TRIBUTARY_[A-Z0-9_]+`)
)

// helpOf runs `tributary args... --help` once per command and parses it.
func helpOf(t *testing.T, cache map[string]cliSpec, args ...string) cliSpec {
	t.Helper()
	key := strings.Join(args, " ")
	if s, ok := cache[key]; ok {
		return s
	}
	out, err := exec.Command(opsBinary(t), append(append([]string(nil), args...), "--help")...).CombinedOutput()
	if err != nil {
		t.Fatalf("tributary %s --help: %v\n%s", key, err, out)
	}
	s := cliSpec{flags: map[string]bool{}, envs: map[string]bool{}}
	for _, m := range helpFlagRE.FindAllStringSubmatch(string(out), -1) {
		s.flags[m[1]] = true
	}
	for _, m := range helpEnvRE.FindAllString(string(out), -1) {
		s.envs[m] = true
	}
	if len(s.flags) < 2 {
		t.Fatalf("tributary %s --help lists no flags:\n%s", key, out)
	}
	cache[key] = s
	return s
}

// commandOf splits a tributary argument list into the command words (e.g.
// "producer" or "slot list") and the rest.
func commandOf(args []string) ([]string, []string) {
	if len(args) > 1 && (args[0] == "slot" || args[0] == "setup") {
		return args[:2], args[2:]
	}
	return args[:1], args[1:]
}

// checkInvocation checks every --flag of a tributary command line against its --help.
func checkInvocation(t *testing.T, cache map[string]cliSpec, where string, args []string) {
	t.Helper()
	if len(args) == 0 {
		t.Errorf("%s: empty tributary command", where)
		return
	}
	cmd, rest := commandOf(args)
	spec := helpOf(t, cache, cmd...)
	for _, a := range rest {
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !spec.flags[name] {
			t.Errorf("%s: tributary %s has no flag --%s", where, strings.Join(cmd, " "), name)
		}
		if strings.Contains(name, "password") && !strings.HasSuffix(name, "-file") {
			t.Errorf("%s: a secret on the command line: --%s", where, name)
		}
	}
}

// checkConfigKeys checks that every key of a --config file is a flag of cmd.
func checkConfigKeys(t *testing.T, cache map[string]cliSpec, where string, cmd []string, body []byte) {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal(body, &m); err != nil {
		t.Errorf("%s: %v", where, err)
		return
	}
	spec := helpOf(t, cache, cmd...)
	for k := range m {
		if !spec.flags[k] {
			t.Errorf("%s: key %q is not a flag of tributary %s", where, k, strings.Join(cmd, " "))
		}
		if strings.Contains(k, "password") && !strings.HasSuffix(k, "-file") {
			t.Errorf("%s: a secret in a config file: %s", where, k)
		}
	}
}

// checkEnv checks that every TRIBUTARY_* variable given to cmd is one it reads.
func checkEnv(t *testing.T, cache map[string]cliSpec, where string, cmd []string, names []string) {
	t.Helper()
	spec := helpOf(t, cache, cmd...)
	for _, n := range names {
		if strings.HasPrefix(n, "TRIBUTARY_") && !spec.envs[n] {
			t.Errorf("%s: tributary %s does not read %s", where, strings.Join(cmd, " "), n)
		}
	}
}

// configCommand maps a config file's name to its command.
func configCommand(name string) []string {
	switch {
	case strings.HasPrefix(name, "producer"):
		return []string{"producer"}
	case strings.HasPrefix(name, "consumer"):
		return []string{"consumer"}
	case strings.HasPrefix(name, "status"):
		return []string{"status"}
	}
	return nil
}

func readYAMLDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []map[string]any
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
}

// dig walks nested maps and lists by keys and indexes.
func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func strs(v any) []string {
	var out []string
	for _, x := range asList(v) {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func asList(v any) []any { l, _ := v.([]any); return l }

func keys(v any) []string {
	m, _ := v.(map[string]any)
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestOpsDeployFilesMatchTheBinary validates deploy/ without a container
// engine: every YAML parses; the compose file has the services it should,
// with Kafka in KRaft mode and PostgreSQL with wal_level=logical; the
// Kubernetes producer is one pod replaced with Recreate under a PDB with
// maxUnavailable 0, and each Kubernetes container's readiness (/readyz) and
// liveness (/healthz) probes use the port its config's metrics-addr serves;
// the systemd units restart on failure and stop with
// SIGTERM; and every tributary command, flag, config key and TRIBUTARY_*
// variable these files use exists in that command's --help.
func TestOpsDeployFilesMatchTheBinary(t *testing.T) {
	root := filepath.Join(harness.RepoRoot(), "deploy")
	cache := map[string]cliSpec{}
	invocations := 0

	// Every YAML file parses.
	var yamls []string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			yamls = append(yamls, p)
		}
		return nil
	})
	if len(yamls) < 8 {
		t.Fatalf("only %d YAML files under deploy/", len(yamls))
	}
	for _, p := range yamls {
		readYAMLDocs(t, p)
	}

	// docker-compose.yml.
	compose := readYAMLDocs(t, filepath.Join(root, "docker-compose.yml"))[0]
	services := dig(compose, "services")
	if got := strings.Join(keys(services), ","); got != "consumer,kafka,producer,schema-registry,source,target" {
		t.Fatalf("compose services %s", got)
	}
	if r := dig(services, "kafka", "environment", "KAFKA_PROCESS_ROLES"); r != "broker,controller" {
		t.Errorf("compose kafka is not KRaft: process roles %v", r)
	}
	if img, _ := dig(services, "source", "image").(string); !strings.HasPrefix(img, "postgres:15") ||
		!strings.Contains(strings.Join(strs(dig(services, "source", "command")), " "), "wal_level=logical") {
		t.Errorf("compose source: %v %v", img, dig(services, "source", "command"))
	}
	if img, _ := dig(services, "schema-registry", "image").(string); !strings.Contains(img, "schema-registry") {
		t.Errorf("compose schema registry image %q", img)
	}
	for _, svc := range []string{"producer", "consumer"} {
		args := strs(dig(services, svc, "command"))
		if len(args) == 0 || args[0] != svc {
			t.Errorf("compose %s runs %v", svc, args)
			continue
		}
		checkInvocation(t, cache, "docker-compose.yml "+svc, args)
		checkEnv(t, cache, "docker-compose.yml "+svc, []string{svc}, keys(dig(services, svc, "environment")))
		if dig(services, svc, "stop_signal") != "SIGTERM" {
			t.Errorf("compose %s: stop_signal %v", svc, dig(services, svc, "stop_signal"))
		}
		invocations++
	}

	// Kubernetes.
	byKind := map[string][]map[string]any{}
	k8sDir := filepath.Join(root, "k8s")
	entries, _ := os.ReadDir(k8sDir)
	for _, e := range entries {
		for _, d := range readYAMLDocs(t, filepath.Join(k8sDir, e.Name())) {
			kind, _ := d["kind"].(string)
			byKind[kind] = append(byKind[kind], d)
		}
	}
	for _, k := range []string{"Deployment", "ConfigMap", "Secret", "Service", "PodDisruptionBudget"} {
		if len(byKind[k]) == 0 {
			t.Errorf("k8s: no %s", k)
		}
	}
	secretKeys := map[string]bool{}
	for _, s := range byKind["Secret"] {
		for _, k := range keys(s["stringData"]) {
			secretKeys[k] = true
		}
	}
	configData := map[string]bool{}
	configBody := map[string]string{}
	for _, cm := range byKind["ConfigMap"] {
		for name, body := range dig(cm, "data").(map[string]any) {
			configData[name] = true
			configBody[name], _ = body.(string)
			if cmd := configCommand(name); cmd != nil {
				checkConfigKeys(t, cache, "k8s ConfigMap "+name, cmd, []byte(body.(string)))
			}
		}
	}
	var producerLabels map[string]any
	for _, d := range byKind["Deployment"] {
		name, _ := dig(d, "metadata", "name").(string)
		if dig(d, "spec", "replicas") != 1 || dig(d, "spec", "strategy", "type") != "Recreate" {
			t.Errorf("k8s %s: replicas %v, strategy %v; want 1 and Recreate (one reader per slot / checkpoint)",
				name, dig(d, "spec", "replicas"), dig(d, "spec", "strategy", "type"))
		}
		if name == "tributary-producer" {
			producerLabels, _ = dig(d, "spec", "selector", "matchLabels").(map[string]any)
		}
		for _, c := range asList(dig(d, "spec", "template", "spec", "containers")) {
			args := strs(dig(c, "args"))
			checkInvocation(t, cache, "k8s "+name, args)
			invocations++
			cmd, _ := commandOf(args)
			var envNames []string
			for _, ev := range asList(dig(c, "env")) {
				n, _ := dig(ev, "name").(string)
				envNames = append(envNames, n)
				if v, ok := dig(ev, "value").(string); ok && strings.Contains(strings.ToLower(n), "password") {
					t.Errorf("k8s %s: %s is a literal value %q, want a secretKeyRef", name, n, v)
				}
				if k, ok := dig(ev, "valueFrom", "secretKeyRef", "key").(string); ok && !secretKeys[k] {
					t.Errorf("k8s %s: secret key %s does not exist", name, k)
				}
			}
			checkEnv(t, cache, "k8s "+name, cmd, envNames)
			metricsAddr := ""
			for _, vm := range asList(dig(c, "volumeMounts")) {
				if sp, ok := dig(vm, "subPath").(string); ok && !configData[sp] {
					t.Errorf("k8s %s: subPath %s is not in the ConfigMap", name, sp)
				} else if ok {
					var conf map[string]any
					_ = yaml.Unmarshal([]byte(configBody[sp]), &conf) // checkConfigKeys reports parse errors
					if a, ok := conf["metrics-addr"].(string); ok {
						metricsAddr = a
					}
				}
			}
			checkProbes(t, "k8s "+name, c, metricsAddr)
		}
	}
	pdbOK := false
	for _, p := range byKind["PodDisruptionBudget"] {
		sel, _ := dig(p, "spec", "selector", "matchLabels").(map[string]any)
		pdbOK = pdbOK || dig(p, "spec", "maxUnavailable") == 0 && producerLabels != nil && yamlEqual(sel, producerLabels)
	}
	if !pdbOK {
		t.Errorf("k8s: no PodDisruptionBudget with maxUnavailable 0 selecting the producer (%v)", producerLabels)
	}
	if dig(byKind["Service"][0], "spec", "ports", 0, "name") != "metrics" {
		t.Errorf("k8s service: %v", dig(byKind["Service"][0], "spec", "ports"))
	}

	// systemd units and their config and environment files.
	sysDir := filepath.Join(root, "systemd")
	entries, _ = os.ReadDir(sysDir)
	units := 0
	for _, e := range entries {
		p := filepath.Join(sysDir, e.Name())
		b, _ := os.ReadFile(p)
		text := string(b)
		switch {
		case strings.HasSuffix(e.Name(), ".service"):
			units++
			for _, line := range strings.Split(text, "\n") {
				if rest, ok := strings.CutPrefix(line, "ExecStart="); ok {
					f := strings.Fields(rest)
					if !strings.HasSuffix(f[0], "/tributary") {
						t.Errorf("%s: ExecStart runs %s", e.Name(), f[0])
					}
					checkInvocation(t, cache, e.Name(), f[1:])
					invocations++
				}
			}
			if strings.Contains(text, "Type=simple") {
				for _, want := range []string{"Restart=on-failure", "KillSignal=SIGTERM", "TimeoutStopSec=", "EnvironmentFile="} {
					if !strings.Contains(text, "\n"+want) {
						t.Errorf("%s lacks %s", e.Name(), want)
					}
				}
			}
		case strings.HasSuffix(e.Name(), ".yaml"):
			checkConfigKeys(t, cache, e.Name(), configCommand(e.Name()), b)
		case strings.HasSuffix(e.Name(), ".env.example"):
			var names []string
			for _, line := range strings.Split(text, "\n") {
				if n, _, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
					names = append(names, n)
				}
			}
			checkEnv(t, cache, e.Name(), configCommand(e.Name()), names)
		}
	}
	if units < 2 {
		t.Errorf("only %d systemd units", units)
	}

	// Dockerfile: multi-stage, static.
	df, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(df), "\nFROM ") < 2 || !strings.Contains(string(df), "CGO_ENABLED=0") ||
		!strings.Contains(string(df), `ENTRYPOINT ["/usr/local/bin/tributary"]`) {
		t.Errorf("Dockerfile is not a multi-stage static build with the tributary entrypoint")
	}
	t.Logf("%d YAML files parsed; %d tributary invocations and their config files checked against --help", len(yamls), invocations)
}

// checkProbes: a container's readiness probe asks /readyz and its liveness
// probe /healthz, on a port the container declares, and the config file it
// mounts sets metrics-addr to that port (without it nothing answers them).
func checkProbes(t *testing.T, where string, c any, metricsAddr string) {
	t.Helper()
	ports := map[string]int{} // name -> containerPort
	for _, p := range asList(dig(c, "ports")) {
		n, _ := dig(p, "name").(string)
		cp, _ := dig(p, "containerPort").(int)
		ports[n] = cp
	}
	for probe, path := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
		get := dig(c, probe, "httpGet")
		if get == nil {
			t.Errorf("%s: no %s with httpGet", where, probe)
			continue
		}
		if dig(get, "path") != path {
			t.Errorf("%s: %s path %v, want %s", where, probe, dig(get, "path"), path)
		}
		port := dig(get, "port")
		if n, ok := port.(string); ok {
			if _, declared := ports[n]; !declared {
				t.Errorf("%s: %s port %q is not a declared container port", where, probe, n)
			}
			port = ports[n]
		}
		_, addrPort, err := net.SplitHostPort(metricsAddr)
		if err != nil || addrPort != fmt.Sprint(port) {
			t.Errorf("%s: %s on port %v, but the config's metrics-addr is %q", where, probe, port, metricsAddr)
		}
	}
}

func yamlEqual(a, b map[string]any) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestOpsStaticBuild: the Dockerfile builds with CGO_ENABLED=0, which must
// work (the DuckDB sink is left out of such a build and says so).
func TestOpsStaticBuild(t *testing.T) {
	out := filepath.Join(t.TempDir(), "tributary-static")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/tributary")
	cmd.Dir = harness.RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build: %v\n%s", err, b)
	}
	b, err := exec.Command(out, "consumer", "--brokers", "127.0.0.1:1", "--registry", "http://127.0.0.1:1", "--prefix", "p",
		"--name", "n", "--sink", "duckdb", "--duckdb-file", filepath.Join(t.TempDir(), "w.duckdb")).CombinedOutput()
	if err == nil || !strings.Contains(string(b), "without cgo") {
		t.Fatalf("static binary with --sink duckdb: %v\n%s", err, b)
	}
}
