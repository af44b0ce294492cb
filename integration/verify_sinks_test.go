package integration

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tributary-cdc/tributary/integration/harness"
)

// verifyTransforms is the consumer's transform file of
// TestVerifyAppliesTheConsumersTransforms: people of region NE become
// contacts (filter, split, combine, hash, convert, drop, rename), and tokens
// have their key hashed.
const verifyTransforms = `
tables:
  public.people:
    to: contacts
    steps:
      - filter: region == 'NE'
      - split: {column: full_name, separator: " ", into: [first_name, last_name]}
      - combine: {columns: [street, city, zip], into: address, separator: ", "}
      - hash: {column: ssn, into: ssn_hash, salt_env: TRIBUTARY_TEST_SSN_SALT}
      - convert: {column: born_at, to: date, into: born_on}
      - drop: [region]
      - rename: {id: person_id}
  public.tokens:
    steps:
      - hash: {column: code, into: code_hash, salt_env: TRIBUTARY_TEST_SSN_SALT}
`

// TestVerifyAppliesTheConsumersTransforms runs a transforming consumer from a
// YAML config file, then `tributary verify --config` on the same file: the
// source rows go through the consumer's transforms before they are compared,
// so the reshaped, filtered target verifies equal (with range splitting over
// a filtered table), and a changed, a deleted and an intruding target row are
// each reported by key. A table whose key the transform hashes is compared as
// a whole. Without the transforms, the target does not match. The same
// transforms into a DuckDB warehouse and into a history sink verify equal
// too, and damage to either is reported by key.
func TestVerifyAppliesTheConsumersTransforms(t *testing.T) {
	t.Setenv("TRIBUTARY_TEST_SSN_SALT", "verify-salt")
	e := newEnv(t)
	target := harness.StartPostgres(t)
	e.pg.Exec(t,
		`CREATE TABLE people (id int PRIMARY KEY, full_name text, street text, city text, zip text, ssn text,
			region text, born_at timestamptz)`,
		`ALTER TABLE people REPLICA IDENTITY FULL`,
		`CREATE TABLE tokens (code text PRIMARY KEY, n int NOT NULL, span interval)`,
		`INSERT INTO people SELECT g, 'First' || g || ' Last' || g, g || ' Main St', 'City' || (g % 7), lpad(g::text, 5, '0'),
			'ssn-' || g, CASE WHEN g % 3 = 0 THEN 'SW' ELSE 'NE' END, '1980-01-01 12:00:00+00'::timestamptz + g * interval '1 day'
			FROM generate_series(1, 300) g`,
		`UPDATE people SET full_name = NULL WHERE id = 10`,
		`INSERT INTO tokens SELECT 'tok-' || g, g, g * interval '1 day 3 hours 7 seconds' FROM generate_series(1, 50) g`,
		`CREATE PUBLICATION pub FOR TABLE people, tokens`)
	cfg := e.producerConfig(t)
	cfg.Snapshot = "initial"
	e.runProducer(t, cfg)

	dir := t.TempDir()
	tf := filepath.Join(dir, "transforms.yaml")
	if err := os.WriteFile(tf, []byte(verifyTransforms), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "consumer.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`brokers: [%q]
registry: %q
prefix: %q
name: branch
sink: postgres
target: %q
transforms: %q
create-tables: true
log-format: json
`, e.kafka.Brokers[0], e.kafka.RegistryURL, e.prefix, target.DSN, tf)), 0o600); err != nil {
		t.Fatal(err)
	}
	harness.StartTributary(t, nil, "consumer", "--config", conf)
	// Changes while the consumer runs: moves out of and into the region,
	// deletes, an update of a filtered-out row.
	e.pg.Exec(t,
		`UPDATE people SET region = 'SW' WHERE id IN (1, 2)`,
		`UPDATE people SET region = 'NE' WHERE id IN (3, 6)`,
		`UPDATE people SET city = 'Elsewhere' WHERE id = 9`,
		`DELETE FROM people WHERE id IN (4, 12)`,
		`UPDATE tokens SET n = n * 10 WHERE n % 5 = 0`,
		`DELETE FROM tokens WHERE code = 'tok-7'`)

	args := []string{"--config", conf, "--source", e.pg.DSN, "--log-format", "text", "--leaf-rows", "8", "--fanout", "4", "--timeout", "1m"}
	code, out, errOut := runVerifyCLI(t, args...)
	if code != 0 || !strings.Contains(out, "verify: EQUAL") {
		t.Fatalf("verify with the consumer's transforms: exit %d\n%s\n%s", code, out, errOut)
	}
	t.Logf("equal:\n%s", out)

	// Without the transforms the target is not the source.
	code, out, errOut = runVerifyCLI(t, "--source", e.pg.DSN, "--target", target.DSN, "--consumer", "branch",
		"--tables", "public.people", "--log-format", "text", "--timeout", "1m")
	if code != 1 || !strings.Contains(out, "the target has no table public.people") {
		t.Fatalf("verify without the transforms: exit %d\n%s\n%s", code, out, errOut)
	}

	// Damage the target: a changed row, a deleted row, a row the filter
	// keeps out, and a changed row of the table with a hashed key.
	target.Exec(t,
		`UPDATE contacts SET last_name = 'Changed' WHERE person_id = 100`,
		`DELETE FROM contacts WHERE person_id = 200`,
		`INSERT INTO contacts (person_id, first_name) VALUES (9, 'Intruder')`,
		`UPDATE tokens SET n = n + 1 WHERE n = 11`)
	code, out, errOut = runVerifyCLI(t, args...)
	if code != 1 {
		t.Fatalf("verify of a damaged target: exit %d, want 1\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"verify: DIFFERENT", "different person_id=100", "missing   person_id=200", "extra     person_id=9",
		"1 missing, 1 extra, 1 different", `rewrites key column "code_hash"`} {
		if !strings.Contains(out, want) {
			t.Fatalf("report lacks %q:\n%s\n%s", want, out, errOut)
		}
	}
	t.Logf("damaged:\n%s", out)

	// The same transforms into a DuckDB warehouse: verify --sink duckdb
	// with the transforms file finds it equal, then reports damage by key.
	path := filepath.Join(dir, "wh.duckdb")
	if last, err := catchUpDuck(t, e.duckArgs(path, "--transforms", tf)); err != nil {
		t.Fatalf("duckdb consumer with the transforms: %v: %s", err, last)
	}
	dargs := []string{"--source", e.pg.DSN, "--sink", "duckdb", "--duckdb-file", path, "--consumer", "wh",
		"--transforms", tf, "--registry", e.kafka.RegistryURL, "--prefix", e.prefix,
		"--log-format", "text", "--leaf-rows", "8", "--fanout", "4", "--timeout", "30s", "--barrier=false"}
	code, out, errOut = runVerifyCLI(t, dargs...)
	if code != 0 || !strings.Contains(out, "verify: EQUAL") {
		t.Fatalf("verify --sink duckdb with the consumer's transforms: exit %d\n%s\n%s", code, out, errOut)
	}
	duckExec(t, path,
		`UPDATE public.contacts SET last_name = 'Changed' WHERE person_id = 100`,
		`DELETE FROM public.contacts WHERE person_id = 200`)
	code, out, errOut = runVerifyCLI(t, dargs...)
	if code != 1 {
		t.Fatalf("verify of a damaged duckdb file through the transforms: exit %d, want 1\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"verify: DIFFERENT", "different person_id=100", "missing   person_id=200"} {
		if !strings.Contains(out, want) {
			t.Fatalf("duckdb report lacks %q:\n%s\n%s", want, out, errOut)
		}
	}

	// And into a history sink: its current versions verify equal through
	// the transforms, with the history's own invariants.
	hist := harness.StartPostgres(t)
	harness.StartTributary(t, nil, "consumer", "--brokers", e.kafka.Brokers[0], "--registry", e.kafka.RegistryURL,
		"--prefix", e.prefix, "--name", "hist", "--sink", "history", "--target", hist.DSN, "--transforms", tf, "--log-format", "json")
	hargs := []string{"--source", e.pg.DSN, "--sink", "history", "--target", hist.DSN, "--consumer", "hist", "--check-history",
		"--transforms", tf, "--registry", e.kafka.RegistryURL, "--prefix", e.prefix,
		"--log-format", "text", "--leaf-rows", "8", "--fanout", "4", "--timeout", "1m"}
	code, out, errOut = runVerifyCLI(t, hargs...)
	if code != 0 || !strings.Contains(out, "verify: EQUAL") {
		t.Fatalf("verify --sink history with the consumer's transforms: exit %d\n%s\n%s", code, out, errOut)
	}
	hist.Exec(t, `UPDATE contacts_history SET last_name = 'Changed' WHERE person_id = 100 AND valid_to IS NULL`)
	code, out, errOut = runVerifyCLI(t, hargs...)
	if code != 1 || !strings.Contains(out, "person_id=100") {
		t.Fatalf("verify of a damaged history through the transforms: exit %d, want 1 naming person_id=100\n%s\n%s", code, out, errOut)
	}
}

// TestVerifyHistorySink compares a source with a history sink's current
// versions and checks the history's invariants: equal after inserts,
// updates (several of one key in one transaction), deletes and a key deleted
// and inserted again; then a removed current version, a second open
// version and a gap in the version numbers are each reported.
func TestVerifyHistorySink(t *testing.T) {
	e := newEnv(t)
	target := harness.StartPostgres(t)
	e.pg.Exec(t,
		`CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric(12,2), opened date)`,
		`INSERT INTO accounts SELECT g, 'owner ' || g, g * 10.5, '2020-01-01'::date + g FROM generate_series(1, 200) g`,
		`CREATE PUBLICATION pub FOR TABLE accounts`)
	cfg := e.producerConfig(t)
	cfg.Snapshot = "initial"
	e.runProducer(t, cfg)
	harness.StartTributary(t, nil, "consumer", "--brokers", e.kafka.Brokers[0], "--registry", e.kafka.RegistryURL,
		"--prefix", e.prefix, "--name", "hist", "--sink", "history", "--target", target.DSN, "--log-format", "json")
	c := e.pg.Conn(t)
	execEach(t, c,
		`UPDATE accounts SET balance = balance + 1 WHERE id % 4 = 0`,
		`BEGIN`, `UPDATE accounts SET owner = 'twice' WHERE id = 9`, `UPDATE accounts SET balance = 0 WHERE id = 9`, `COMMIT`,
		`DELETE FROM accounts WHERE id IN (3, 5, 150)`,
		`INSERT INTO accounts VALUES (3, 'back again', 1, NULL)`,
		`UPDATE accounts SET owner = 'moved' WHERE id = 7`)

	args := []string{"--source", e.pg.DSN, "--target", target.DSN, "--sink", "history", "--check-history",
		"--consumer", "hist", "--log-format", "text", "--leaf-rows", "16", "--timeout", "1m"}
	code, out, errOut := runVerifyCLI(t, args...)
	if code != 0 || !strings.Contains(out, "verify: EQUAL") || !strings.Contains(out, "public.accounts") {
		t.Fatalf("verify of the history sink: exit %d\n%s\n%s", code, out, errOut)
	}
	t.Logf("equal:\n%s", out)

	target.Exec(t,
		`DELETE FROM accounts_history WHERE id = 20 AND valid_to IS NULL`,
		`UPDATE accounts_history SET valid_to = NULL WHERE id = 7 AND version = 1`,
		`UPDATE accounts_history SET version = 5 WHERE id = 9 AND version = 3`)
	code, out, errOut = runVerifyCLI(t, args...)
	if code != 1 {
		t.Fatalf("verify of a damaged history: exit %d, want 1\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"verify: DIFFERENT", "missing   id=20", "extra     id=7", "BROKEN",
		"invariant id=7 version 1 (op r): not the last version, but still open", "invariant id=9 version 5 (op u): version 5 follows version 2 (a gap"} {
		if !strings.Contains(out, want) {
			t.Fatalf("report lacks %q:\n%s\n%s", want, out, errOut)
		}
	}
	t.Logf("damaged:\n%s", out)
}

// TestVerifyDuckDBSink compares a source with a DuckDB warehouse's
// current-state tables, over the types the sink stores natively (integers,
// numeric, text key, timestamptz, boolean, date, double, jsonb, bytea, uuid,
// arrays) and those it keeps as PostgreSQL text (interval): equal after
// inserts, updates and deletes; then a changed, a deleted and an extra row in
// the file are each reported, with range splitting over a text key compared
// in byte order.
func TestVerifyDuckDBSink(t *testing.T) {
	e := newEnv(t)
	e.pg.Exec(t,
		`CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2), seen timestamptz, ok boolean, born date,
			score double precision, doc jsonb, raw bytea, uid uuid, tags text[], nums int[], span interval)`,
		`INSERT INTO items SELECT g, 'item "' || g || '"', g * 1.25, '2024-01-01 00:00:00+00'::timestamptz + g * interval '90 minutes',
			g % 2 = 0, '2020-02-29'::date + g, g / 7.0, jsonb_build_object('g', g, 'tag', 'x' || g), decode(lpad(to_hex(g), 4, '0'), 'hex'),
			md5(g::text)::uuid, ARRAY['a,' || g, NULL, 'q"' || g], ARRAY[g, -g], g * interval '1 day 3 hours'
			FROM generate_series(1, 300) g`,
		`UPDATE items SET name = NULL, doc = NULL, tags = '{}' WHERE id % 50 = 0`,
		`CREATE TABLE words (w text PRIMARY KEY, n int)`,
		`INSERT INTO words SELECT w, length(w) FROM unnest(ARRAY['apple', 'Banana', 'cherry', 'Zebra', 'äpfel', 'éclair', '_under', '0zero']) w`,
		`INSERT INTO words SELECT 'w' || g, g FROM generate_series(1, 100) g`,
		`CREATE PUBLICATION pub FOR TABLE items, words`)
	cfg := e.producerConfig(t)
	cfg.Snapshot = "initial"
	e.runProducer(t, cfg)
	e.pg.Exec(t, `UPDATE items SET price = price * 2, tags = tags || ARRAY['more'] WHERE id % 3 = 0`,
		`DELETE FROM items WHERE id IN (7, 8)`, `DELETE FROM words WHERE w = 'cherry'`)
	e.waitConfirmed(t, "slot", nil) // everything is in Kafka
	path := filepath.Join(t.TempDir(), "wh.duckdb")
	if last, err := catchUpDuck(t, e.duckArgs(path)); err != nil {
		t.Fatalf("duckdb consumer: %v: %s", err, last)
	}

	args := []string{"--source", e.pg.DSN, "--sink", "duckdb", "--duckdb-file", path, "--consumer", "wh",
		"--log-format", "text", "--leaf-rows", "8", "--fanout", "4", "--timeout", "30s", "--barrier=false"}
	code, out, errOut := runVerifyCLI(t, args...)
	if code != 0 || !strings.Contains(out, "verify: EQUAL") {
		t.Fatalf("verify of the duckdb sink: exit %d\n%s\n%s", code, out, errOut)
	}
	t.Logf("equal:\n%s", out)

	duckExec(t, path,
		`UPDATE public.items SET tags = ['a,10', NULL, 'q"11'] WHERE id = 10`,
		`DELETE FROM public.items WHERE id = 200`,
		`INSERT INTO public.words VALUES ('cherry', 6)`,
		`UPDATE public.words SET n = 0 WHERE w = 'éclair'`)
	code, out, errOut = runVerifyCLI(t, args...)
	if code != 1 {
		t.Fatalf("verify of a damaged duckdb file: exit %d, want 1\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"verify: DIFFERENT", "different id=10", "missing   id=200", "extra     w=cherry", "different w=éclair"} {
		if !strings.Contains(out, want) {
			t.Fatalf("report lacks %q:\n%s\n%s", want, out, errOut)
		}
	}
	t.Logf("damaged:\n%s", out)
}

// duckExec runs statements on the DuckDB file at path, as damage a verify
// must find.
func duckExec(t *testing.T, path string, stmts ...string) {
	t.Helper()
	db, err := sql.Open("duckdb", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}
