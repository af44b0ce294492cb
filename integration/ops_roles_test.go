package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tributary-cdc/tributary/integration/harness"
)

// requirePasswords makes TCP logins of the named roles use SCRAM, so that
// the passwords `setup roles` set are really checked.
func requirePasswords(t *testing.T, pg *harness.Postgres, roles string) {
	t.Helper()
	hba := filepath.Join(pg.Dir, "pg_hba.conf")
	old, err := os.ReadFile(hba)
	if err != nil {
		t.Fatal(err)
	}
	line := "host all " + roles + " 127.0.0.1/32 scram-sha-256\n"
	if err := os.WriteFile(hba, append([]byte(line), old...), 0o600); err != nil {
		t.Fatal(err)
	}
	pg.Exec(t, `SELECT pg_reload_conf()`)
	time.Sleep(200 * time.Millisecond)
}

// opsDump is a table's rows as text, in order, read on conn.
func opsDump(t *testing.T, conn *pgx.Conn, table string) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT t::text FROM `+table+` t ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestOpsLeastPrivilegeRolesHostileNames creates the capture and apply roles
// with `setup roles --apply`, runs the real producer as the capture role and
// the real consumer as the apply role, and checks that a table named
// `a"b; drop table x` with mixed-case columns replicates, that nothing was
// dropped, and that the roles have no more than they need.
func TestOpsLeastPrivilegeRolesHostileNames(t *testing.T) {
	e := newEnv(t)
	target := harness.StartPostgres(t)
	const hostile = `"a""b; drop table x"`
	for _, pg := range []*harness.Postgres{e.pg, target} {
		pg.Exec(t,
			`CREATE TABLE x (id int PRIMARY KEY)`,
			`CREATE TABLE `+hostile+` ("Id" int PRIMARY KEY, "MixedCase" text, "with space" bigint, lower text)`,
			`CREATE TABLE "Accounts" ("AccountId" int PRIMARY KEY, "Balance" bigint NOT NULL)`,
			`CREATE TABLE secret (id int PRIMARY KEY, s text)`)
	}
	e.pg.Exec(t, `INSERT INTO `+hostile+` VALUES (1, 'Snapshot', 10, 'a''b')`,
		`INSERT INTO "Accounts" VALUES (1, 100)`)

	// The publication is lower case: the producer passes publication_names
	// unquoted to pgoutput, which folds "Pub" to pub (reported; producer/session.go).
	const capPW, appPW = "cap-pw-0a7f3", "app-pw-91c2e"
	pwEnv := []string{"TRIBUTARY_CAPTURE_PASSWORD=" + capPW, "TRIBUTARY_APPLY_PASSWORD=" + appPW}
	out, code := opsRun(t, pwEnv, "", "setup", "roles", "--apply", "--source", e.pg.DSN, "--target", target.DSN,
		"--publication", "pub", "--capture-role", "Capture Role", "--apply-role", "apply", "--checkpoint-schema", "tributary",
		"--tables", `public.`+hostile+`,public."Accounts"`)
	if code != 0 {
		t.Fatalf("setup roles --apply: exit %d\n%s", code, out)
	}
	if strings.Contains(out, capPW) || strings.Contains(out, appPW) {
		t.Fatalf("setup roles printed a password:\n%s", out)
	}
	// Running it again changes nothing and does not fail.
	if out, code := opsRun(t, pwEnv, "", "setup", "roles", "--apply", "--source", e.pg.DSN, "--target", target.DSN,
		"--publication", "pub", "--capture-role", "Capture Role", "--apply-role", "apply", "--checkpoint-schema", "tributary",
		"--tables", `public.`+hostile+`,public."Accounts"`); code != 0 {
		t.Fatalf("second setup roles --apply: exit %d\n%s", code, out)
	}
	requirePasswords(t, e.pg, `"Capture Role"`)
	requirePasswords(t, target, "apply")

	ctx := context.Background()
	capDSN := strings.Replace(e.pg.DSN, "postgres://postgres@", "postgres://Capture%20Role@", 1)
	appDSN := strings.Replace(target.DSN, "postgres://postgres@", "postgres://apply@", 1)
	// The passwords work, a wrong one does not; the roles hold no more than they need.
	if c, err := pgx.Connect(ctx, strings.Replace(capDSN, "Role@", "Role:wrong@", 1)); err == nil {
		c.Close(ctx)
		t.Fatal("the capture role logged in with a wrong password")
	}
	capConn, err := pgx.Connect(ctx, strings.Replace(capDSN, "Role@", "Role:"+capPW+"@", 1))
	if err != nil {
		t.Fatalf("capture role login: %v", err)
	}
	defer capConn.Close(ctx)
	for _, sql := range []string{`SELECT * FROM secret`, `INSERT INTO "Accounts" VALUES (9, 9)`, `CREATE TABLE t (i int)`,
		`CREATE PUBLICATION p2 FOR TABLE "Accounts"`} {
		if _, err := capConn.Exec(ctx, sql); err == nil || !strings.Contains(err.Error(), "ermission denied") && !strings.Contains(err.Error(), "must be owner") {
			t.Errorf("capture role: %s: %v, want permission denied", sql, err)
		}
	}
	appConn, err := pgx.Connect(ctx, strings.Replace(appDSN, "apply@", "apply:"+appPW+"@", 1))
	if err != nil {
		t.Fatalf("apply role login: %v", err)
	}
	defer appConn.Close(ctx)
	for _, sql := range []string{`SELECT * FROM secret`, `DROP TABLE x`, `CREATE TABLE public.t (i int)`} {
		if _, err := appConn.Exec(ctx, sql); err == nil {
			t.Errorf("apply role may run %s", sql)
		}
	}
	var super, repl bool
	e.pg.Conn(t).QueryRow(ctx, `SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = 'Capture Role'`).Scan(&super, &repl)
	if super || !repl {
		t.Fatalf("capture role: superuser %v, replication %v", super, repl)
	}

	kafkaArgs := []string{"--brokers", e.kafka.Brokers[0], "--registry", e.kafka.RegistryURL, "--prefix", e.prefix}
	producer := harness.StartTributary(t, []string{"PGPASSWORD=" + capPW}, append([]string{"producer", "--source", capDSN,
		"--publication", "pub", "--slot", "cap_slot", "--snapshot", "initial", "--heartbeat-interval", "1s", "--log-format", "json"}, kafkaArgs...)...)
	e.waitSlotActive(t, "cap_slot", producer)
	consumer := harness.StartTributary(t, []string{"PGPASSWORD=" + appPW}, append([]string{"consumer", "--name", "replica",
		"--target", appDSN, "--checkpoint-schema", "tributary", "--log-format", "json"}, kafkaArgs...)...)

	src := e.pg.Conn(t)
	for _, sql := range []string{
		`INSERT INTO ` + hostile + ` VALUES (2, 'Two', 20, NULL), (3, 'Three', 30, 'x')`,
		`UPDATE ` + hostile + ` SET "MixedCase" = 'One', "with space" = 11 WHERE "Id" = 1`,
		`DELETE FROM ` + hostile + ` WHERE "Id" = 3`,
		`BEGIN; UPDATE "Accounts" SET "Balance" = 50 WHERE "AccountId" = 1; INSERT INTO "Accounts" VALUES (2, 50); COMMIT`,
	} {
		if _, err := src.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	srcDump, tgtDump := e.pg.Conn(t), target.Conn(t)
	deadline := time.Now().Add(time.Minute)
	for _, tbl := range []string{`public.` + hostile, `public."Accounts"`} {
		for {
			s, d := opsDump(t, srcDump, tbl), opsDump(t, tgtDump, tbl)
			if strings.Join(s, "\n") == strings.Join(d, "\n") {
				t.Logf("%s replicated: %v", tbl, d)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s differs:\nsource %v\ntarget %v\nproducer:\n%s\nconsumer:\n%s", tbl, s, d,
					lastLines(producer.Output(), 10), lastLines(consumer.Output(), 10))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	for _, pg := range []*harness.Postgres{e.pg, target} {
		var n int
		if err := pg.Conn(t).QueryRow(ctx, `SELECT count(*) FROM x`).Scan(&n); err != nil {
			t.Fatalf("table x: %v", err)
		}
	}
	for _, p := range []*harness.Proc{producer, consumer} {
		if out := p.Output(); strings.Contains(out, capPW) || strings.Contains(out, appPW) {
			t.Fatalf("a password appears in the output:\n%s", out)
		}
	}
}
