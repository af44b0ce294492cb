package integration

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/tributary-cdc/tributary/integration/harness"
)

// TestMonitoringUsesExposedMetrics checks deploy/monitoring against the real
// binary: the alert rules parse with Prometheus's own rule parser, every
// dashboard query parses as PromQL, and every metric they name is one that a
// running producer or consumer serves.
func TestMonitoringUsesExposedMetrics(t *testing.T) {
	dir := filepath.Join(harness.RepoRoot(), "deploy", "monitoring")
	used := map[string][]string{} // metric -> where
	p := parser.NewParser(parser.Options{})
	collect := func(where, expr string) {
		// Grafana's variables, as Grafana substitutes them.
		expr = strings.NewReplacer("$__rate_interval", "5m", "$job", ".*", "$instance", ".*").Replace(expr)
		e, err := p.ParseExpr(expr)
		if err != nil {
			t.Errorf("%s: %q: %v", where, expr, err)
			return
		}
		parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok {
				used[vs.Name] = append(used[vs.Name], where)
			}
			return nil
		})
	}

	groups, errs := rulefmt.ParseFile(filepath.Join(dir, "tributary-alerts.yml"), false, model.UTF8Validation, p, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Errorf("tributary-alerts.yml: %v", err)
	}
	if groups == nil || len(groups.Groups) == 0 {
		t.Fatal("tributary-alerts.yml has no rule groups")
	}
	nrules := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			nrules++
			collect("alert "+r.Alert, r.Expr)
		}
	}

	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
		Templating struct {
			List []struct {
				Name       string
				Definition string
			}
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "tributary-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("tributary-dashboard.json: %v", err)
	}
	nqueries := 0
	for _, pn := range dash.Panels {
		for _, tg := range pn.Targets {
			nqueries++
			collect("panel "+pn.Title, tg.Expr)
		}
	}
	labelValues := regexp.MustCompile(`^label_values\((.+), *\w+\)$`)
	for _, v := range dash.Templating.List {
		if m := labelValues.FindStringSubmatch(v.Definition); m != nil {
			collect("variable "+v.Name, m[1])
		}
	}
	if nrules < 8 || nqueries < 15 {
		t.Fatalf("%d alert rules and %d dashboard queries: the files lost their content", nrules, nqueries)
	}

	// A producer that snapshots a table and streams, and a consumer that
	// applies it: together they serve every metric family the files may use.
	e := newEnv(t)
	target := harness.StartPostgres(t)
	e.pg.Exec(t, `CREATE TABLE m (id int PRIMARY KEY)`, `INSERT INTO m SELECT generate_series(1, 100)`, `CREATE PUBLICATION pub FOR TABLE m`)
	target.Exec(t, `CREATE TABLE m (id int PRIMARY KEY)`)
	paddr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	caddr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	prod := harness.StartTributary(t, nil, e.producerArgs("--metrics-addr", paddr)...)
	cons := harness.StartTributary(t, nil, "consumer", "--brokers", e.kafka.Brokers[0], "--registry", e.kafka.RegistryURL,
		"--prefix", e.prefix, "--name", "mon", "--target", target.DSN, "--metrics-addr", caddr, "--log-format", "json")
	e.pg.Exec(t, `INSERT INTO m VALUES (0)`)
	exposed := map[string]bool{}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		var n int
		if err := target.Conn(t).QueryRow(t.Context(), `SELECT count(*) FROM m`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 101 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the consumer applied %d of 101 rows:\nproducer:\n%s\nconsumer:\n%s", n, lastLines(prod.Output(), 10), lastLines(cons.Output(), 10))
		}
	}
	for _, addr := range []string{paddr, caddr} {
		for name := range exposedNames(t, addr) {
			exposed[name] = true
		}
	}
	var missing []string
	for name, where := range used {
		if !exposed[name] {
			missing = append(missing, fmt.Sprintf("%s (%s)", name, strings.Join(where, ", ")))
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("deploy/monitoring uses metrics the binary does not serve:\n%s", strings.Join(missing, "\n"))
	}
	for _, pr := range []*harness.Proc{prod, cons} {
		if err := pr.Stop(t, 30*time.Second); err != nil {
			t.Errorf("stop: %v", err)
		}
	}
}

// exposedNames are the metric names (histogram series included) served at
// addr/metrics.
func exposedNames(t *testing.T, addr string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	scrapeLines(t, addr, func(line string) {
		if i := strings.IndexAny(line, "{ "); i > 0 {
			out[line[:i]] = true
		}
	})
	return out
}
