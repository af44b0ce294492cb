package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/tributary-cdc/tributary/producer"
)

func TestSetupRolesQuotesEveryIdentifier(t *testing.T) {
	specs, err := producer.ParseTableSpecs([]string{`public."a""b; drop table x"`, `"My Schema"."Orders"`})
	if err != nil {
		t.Fatal(err)
	}
	p := rolePlan{CaptureRole: `cap"; drop role x; --`, ApplyRole: "Apply Role", Publication: `p"ub`,
		SourceDB: `db"1`, TargetDB: "", Tables: specs, CheckpointSchema: "trib", Capture: true, Apply: true}
	var b bytes.Buffer
	writeScript(&b, "capture", captureSQL(p))
	writeScript(&b, "apply", applySQL(p))
	out := b.String()
	for _, want := range []string{
		`CREATE ROLE "cap""; drop role x; --" WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE;`,
		`GRANT CONNECT ON DATABASE "db""1" TO "cap""; drop role x; --";`,
		`GRANT USAGE ON SCHEMA "My Schema" TO "cap""; drop role x; --";`,
		`GRANT SELECT ON TABLE "public"."a""b; drop table x", "My Schema"."Orders" TO "cap""; drop role x; --";`,
		`CREATE PUBLICATION "p""ub" FOR TABLE "public"."a""b; drop table x", "My Schema"."Orders";`,
		`CREATE ROLE "Apply Role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;`,
		`DO $grant$ BEGIN EXECUTE format('GRANT CONNECT, CREATE ON DATABASE %I TO %I', current_database(), 'Apply Role'); END $grant$;`,
		`GRANT USAGE, CREATE ON SCHEMA "trib" TO "Apply Role";`,
		`GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON TABLE "public"."a""b; drop table x", "My Schema"."Orders" TO "Apply Role";`,
		`GRANT SET ON PARAMETER session_replication_role TO "Apply Role";`,
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("missing %s\nin:\n%s", want, out)
		}
	}
	if strings.Contains(out, "ALTER ROLE") || strings.Contains(out, " PASSWORD '") {
		t.Errorf("a password statement was printed:\n%s", out)
	}
	// A role name that contains the dollar-quote tag gets another tag.
	if got := grantOnDatabase("CONNECT", "", "x$grant$'y"); !strings.HasPrefix(got, "DO $grant0$ ") || !strings.Contains(got, `'x$grant$''y'`) {
		t.Errorf("grantOnDatabase: %s", got)
	}
}

func TestScramVerifier(t *testing.T) {
	v, err := scramVerifier("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(v, "SCRAM-SHA-256$4096:") || strings.Count(v, "$") != 2 || strings.Contains(v, "correct") {
		t.Fatalf("verifier %q", v)
	}
	if _, err := scramVerifier("pässword"); err == nil {
		t.Fatal("non-ASCII password accepted")
	}
}

func TestSetupRolesUsage(t *testing.T) {
	e := env{stdout: new(bytes.Buffer), stderr: new(bytes.Buffer), lookup: func(string) (string, bool) { return "", false }}
	for _, args := range [][]string{
		{"roles"}, // no tables
		{"roles", "--tables", "t", "--apply"},
		{"roles", "--tables", "t", "--capture-role", "x", "--apply-role", "x"},
		{"roles", "--tables", "t", "--only", "both"},
		{"roles", "--tables", "t", "--capture-password", "pw"},
		{"frobnicate"},
	} {
		err := runSetup(context.Background(), args, e)
		if !errors.As(err, new(usageError)) {
			t.Errorf("setup %v: %v, want a usage error", args, err)
		}
		if err != nil && strings.Contains(err.Error(), "pw") && strings.Contains(strings.Join(args, " "), "password") {
			t.Errorf("setup %v: error shows the password: %v", args, err)
		}
	}
	out := new(bytes.Buffer)
	e.stdout = out
	if err := runSetup(context.Background(), []string{"roles", "--tables", "public.t", "--only", "capture"}, e); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "TARGET") || !strings.Contains(out.String(), `GRANT SELECT ON TABLE "public"."t"`) {
		t.Fatalf("--only capture printed:\n%s", out)
	}
}
