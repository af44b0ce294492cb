package integration

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tributary-cdc/tributary/consumer/verify"
	"github.com/tributary-cdc/tributary/integration/harness"
)

// runVerifyCLI runs `tributary verify args...` to its end and returns its
// exit status and output.
func runVerifyCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, harness.Binary(t), append([]string{"verify", "--log-format", "text"}, args...)...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String(), errOut.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), out.String(), errOut.String()
	}
	t.Fatalf("run tributary verify: %v", err)
	return 0, "", ""
}

// withPassword adds a password to a DSN; the clusters trust loopback, so it
// is only there to check that it is never printed.
func withPassword(dsn string) string {
	return strings.Replace(dsn, "postgres://postgres@", "postgres://postgres:s3cr3t-pw@", 1)
}

func verifyNow(t *testing.T, src, dst *harness.Postgres, tables ...string) *verify.Report {
	t.Helper()
	ctx := context.Background()
	tgt, err := verify.NewPostgresTarget(ctx, dst.DSN, "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.Close(ctx)
	rep, err := verify.Run(ctx, verify.Config{SourceDSN: src.DSN, Target: tgt, Tables: tables, Logger: testLog(t)})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return rep
}

func wantKeys(t *testing.T, tr verify.TableReport, want ...verify.KeyDiff) {
	t.Helper()
	got := fmt.Sprint(tr.Keys)
	if fmt.Sprint(want) != got {
		t.Fatalf("%s: differing keys %s, want %s (report %+v)", tr.Table, got, fmt.Sprint(want), tr)
	}
}

// TestVerifyDifferences compares two databases without a consumer: equal
// tables pass, and a deleted row, an extra row and a changed value on the
// target are each reported with their key, through the engine and the CLI.
// A 200,000-row table with one changed row is narrowed down by range
// splitting.
func TestVerifyDifferences(t *testing.T) {
	src, dst := harness.StartPostgres(t), harness.StartPostgres(t)
	for _, pg := range []*harness.Postgres{src, dst} {
		pg.Exec(t,
			`CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2), seen timestamptz, tags text[])`,
			`INSERT INTO items SELECT g, 'item ' || g, g * 1.25, '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 hour',
			 ARRAY['a', 'b,' || g] FROM generate_series(1, 500) g`,
			`UPDATE items SET name = NULL WHERE id % 50 = 0`,
			`CREATE TABLE "Mixed Case" (region text, n int, "Value" double precision, PRIMARY KEY (region, n))`,
			`INSERT INTO "Mixed Case" SELECT r, g, g / 3.0 FROM unnest(ARRAY['east', 'west', 'o''brien']) r, generate_series(1, 100) g`,
			`CREATE TABLE big (id bigint PRIMARY KEY, payload text NOT NULL)`,
			`INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 200000) g`)
	}
	tables := []string{"public.items", `public.Mixed Case`, "public.big"}

	rep := verifyNow(t, src, dst, tables...)
	if !rep.Equal {
		t.Fatalf("equal databases reported different: %+v", rep)
	}
	code, out, errOut := runVerifyCLI(t, "--source", withPassword(src.DSN), "--target", withPassword(dst.DSN),
		"--tables", strings.Join(tables, ","))
	if code != 0 || !strings.Contains(out, "verify: EQUAL") {
		t.Fatalf("verify of equal databases: exit %d\n%s\n%s", code, out, errOut)
	}

	dst.Exec(t,
		`DELETE FROM items WHERE id = 17`,
		`INSERT INTO items VALUES (501, 'extra', 1, now(), NULL)`,
		`UPDATE items SET price = price + 0.01 WHERE id = 250`,
		`UPDATE items SET tags = ARRAY['a', 'b', '3'] WHERE id = 3`, // same text if joined naively
		`UPDATE "Mixed Case" SET "Value" = "Value" + 1e-12 WHERE region = 'o''brien' AND n = 7`,
		`UPDATE big SET payload = 'changed' WHERE id = 123457`)
	rep = verifyNow(t, src, dst, tables...)
	if rep.Equal {
		t.Fatal("differences not found")
	}
	byName := map[string]verify.TableReport{}
	for _, tr := range rep.Tables {
		byName[tr.Table] = tr
	}
	wantKeys(t, byName["public.items"], verify.KeyDiff{Kind: verify.Different, Key: "id=3"},
		verify.KeyDiff{Kind: verify.Different, Key: "id=250"}, verify.KeyDiff{Kind: verify.Extra, Key: "id=501"},
		verify.KeyDiff{Kind: verify.Missing, Key: "id=17"})
	wantKeys(t, byName["public.Mixed Case"], verify.KeyDiff{Kind: verify.Different, Key: "region=o'brien, n=7"})
	b := byName["public.big"]
	wantKeys(t, b, verify.KeyDiff{Kind: verify.Different, Key: "id=123457"})
	t.Logf("public.big: %d rows, one difference found after comparing %d ranges", b.SourceRows, b.RangesCompared)
	if b.RangesCompared > 100 {
		t.Fatalf("public.big: %d ranges compared; range splitting should need about 3 levels of 16", b.RangesCompared)
	}

	code, out, errOut = runVerifyCLI(t, "--source", withPassword(src.DSN), "--target", withPassword(dst.DSN),
		"--tables", strings.Join(tables, ","))
	if code != 1 {
		t.Fatalf("verify of different databases: exit %d, want 1\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"verify: DIFFERENT", "missing   id=17", "extra     id=501", "different id=250", "different id=123457"} {
		if !strings.Contains(out, want) {
			t.Fatalf("report lacks %q:\n%s", want, out)
		}
	}
	t.Logf("report:\n%s", out)

	code, out, errOut = runVerifyCLI(t, "--source", withPassword(src.DSN), "--target", withPassword(dst.DSN),
		"--tables", "public.items", "--json")
	if code != 1 || !strings.Contains(out, `"kind": "missing"`) || !strings.Contains(out, `"key": "id=17"`) {
		t.Fatalf("--json: exit %d\n%s\n%s", code, out, errOut)
	}

	// Bad input: one line, exit 2, no password.
	for _, args := range [][]string{
		{"--source", withPassword(src.DSN), "--target", withPassword(dst.DSN), "--tables", "public.nope"},
		{"--source", withPassword(src.DSN), "--target", withPassword(dst.DSN), "--sink", "duckdb"},
		{"--source", withPassword(src.DSN)},
		{"--source", "postgres://postgres:s3cr3t-pw@127.0.0.1:1/x?sslmode=disable&connect_timeout=5", "--target", withPassword(dst.DSN), "--tables", "public.items"},
	} {
		code, out, errOut = runVerifyCLI(t, args...)
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		last := lines[len(lines)-1]
		if code != 2 || !strings.HasPrefix(last, "tributary verify: ") {
			t.Fatalf("verify %v: exit %d, want 2 with a one-line error\nstdout:\n%s\nstderr:\n%s", args, code, out, errOut)
		}
		if strings.Contains(out+errOut, "s3cr3t-pw") {
			t.Fatalf("verify %v printed the password:\n%s\n%s", args, out, errOut)
		}
		t.Logf("verify %v: %s", args[len(args)-2:], last)
	}
}

// TestVerifyWaitsForConsumer runs the real producer and `tributary consumer`:
// verify is started while the consumer is not running, waits for it, and
// passes once it has caught up with the source snapshot. An idle source
// reaches the snapshot through verify's barrier message.
func TestVerifyWaitsForConsumer(t *testing.T) {
	e := newEnv(t)
	target := harness.StartPostgres(t)
	for _, pg := range []*harness.Postgres{e.pg, target} {
		pg.Exec(t,
			`CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL)`,
			`CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES customers, total numeric(12,2))`)
	}
	e.pg.Exec(t,
		`INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 50) g`,
		`CREATE PUBLICATION pub FOR TABLE customers, orders`)
	cfg := e.producerConfig(t)
	cfg.Snapshot = "initial"
	e.runProducer(t, cfg)
	c := e.pg.Conn(t)
	for i := 1; i <= 200; i++ { // one source transaction each
		if _, err := c.Exec(context.Background(), `INSERT INTO orders VALUES ($1, $2, $3)`, i, i%50+1, fmt.Sprintf("%d.50", i)); err != nil {
			t.Fatal(err)
		}
	}
	e.pg.Exec(t, `UPDATE customers SET name = 'renamed' WHERE id = 7`, `DELETE FROM orders WHERE id = 9`)

	verifyArgs := []string{"verify", "--log-format", "text", "--source", e.pg.DSN, "--target", target.DSN,
		"--consumer", "replica", "--timeout", "2m"}
	v := harness.StartTributary(t, nil, verifyArgs...)
	mustWaitOutput(t, v, "waiting for the consumer", time.Minute)
	harness.StartTributary(t, nil, "consumer", "--brokers", e.kafka.Brokers[0], "--registry", e.kafka.RegistryURL,
		"--prefix", e.prefix, "--name", "replica", "--target", target.DSN, "--log-format", "json")
	select {
	case <-waitExit(v):
	case <-time.After(2 * time.Minute):
		t.Fatalf("verify did not finish:\n%s", v.Output())
	}
	if _, err := v.Exited(); err != nil {
		t.Fatalf("verify after the consumer caught up: %v\n%s", err, v.Output())
	}
	out := v.Output()
	if !strings.Contains(out, "verify: EQUAL") || !strings.Contains(out, "consumer caught up") {
		t.Fatalf("verify output:\n%s", out)
	}
	t.Logf("verify output:\n%s", lastLines(out, 12))

	// The consumer keeps running; a change made on the target alone is found
	// even after the re-check rounds.
	target.Exec(t, `UPDATE orders SET total = 0 WHERE id = 100`)
	code, rout, rerr := runVerifyCLI(t, "--source", e.pg.DSN, "--target", target.DSN, "--consumer", "replica", "--timeout", "1m", "--barrier=false")
	if code != 1 || !strings.Contains(rout, "different id=100") || !strings.Contains(rout, "3 round(s)") {
		t.Fatalf("verify with a target-only change: exit %d\n%s\n%s", code, rout, rerr)
	}
}
