package conflict

import (
	"strings"
	"testing"
	"time"
)

func TestSetupSQL(t *testing.T) {
	f, err := ParseFile([]byte(`schema: cfl
tables:
  public.t:
    method: maximum
    groups:
      g1: {columns: [a, "b c"], method: latest}
      lo: {columns: [lo], method: minimum}
  public.u: {}
`), "x")
	if err != nil {
		t.Fatal(err)
	}
	tables := []SetupTable{{Schema: "public", Name: "t", Key: []string{"id", `k"1`}, Columns: []string{"id", `k"1`, "a", "b c", "lo", "hi"}},
		{Schema: "public", Name: "u", Key: []string{"id"}, Columns: []string{"id", "v"}}}
	sql, err := SetupSQL(f, "B", tables, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`CREATE TABLE IF NOT EXISTS "cfl".tributary_row_meta`,
		`CREATE OR REPLACE FUNCTION "cfl".tributary_group_times()`,
		`EXECUTE FUNCTION "cfl".tributary_group_times('B', '{"id","k\"1"}', '{"g1":["a","b c"],"lo":["lo"]}', 'public.t');`,
		`CREATE TRIGGER tributary_monotone BEFORE UPDATE ON "public"."t" FOR EACH ROW EXECUTE FUNCTION "cfl".tributary_monotone('{"hi":"GREATEST","lo":"LEAST"}');`,
		`EXECUTE FUNCTION "cfl".tributary_group_times('B', '{"id"}', '{}', 'public.u');`,
		`AFTER TRUNCATE ON "public"."u"`,
	} {
		if !strings.Contains(sql, want) {
			t.Errorf("SetupSQL lacks %s", want)
		}
	}
	if strings.Contains(sql, `tributary_monotone BEFORE UPDATE ON "public"."u"`) {
		t.Error("a table without minimum or maximum groups got the monotone trigger")
	}
	if sql, _ := SetupSQL(f, "B", tables, false); strings.Contains(sql, "CREATE TRIGGER tributary_monotone") {
		t.Error("monotone false still installs the monotone trigger")
	}
	if _, err := SetupSQL(f, "", tables, true); err == nil {
		t.Error("no site: want an error")
	}
	if _, err := SetupSQL(f, "B", []SetupTable{{Schema: "public", Name: "other", Key: []string{"id"}}}, true); err == nil {
		t.Error("a table the configuration does not handle: want an error")
	}
}

// TestConflictAvro encodes a record in the conflicts topic's schema and
// decodes it back.
func TestConflictAvro(t *testing.T) {
	s := func(v string) *string { return &v }
	at := time.Date(2026, 12, 6, 10, 0, 0, 123456000, time.UTC)
	r := Record{ID: 42, DetectedAt: at, Site: "B", RemoteSite: "A", Consumer: "from_A", Table: "public.t",
		Key: Row{"id": s("1")}, Kind: KindUpdateDiffers, Group: "g", Method: MethodLatest, Outcome: OutcomeRemote,
		Local: Row{"id": s("1"), "v": nil}, RemoteBefore: Row{"id": s("1"), "v": s("x")}, RemoteAfter: Row{"id": s("1"), "v": s("y")},
		CommitLSN: "0/1A2B", Xid: 77, CommitTime: at.Add(-time.Second), LocalSite: "B", LocalCommitTime: at.Add(-2 * time.Second),
		Detail: "d"}
	b, err := encodeValue(r)
	if err != nil {
		t.Fatal(err)
	}
	native, _, err := conflictCodec.NativeFromBinary(b)
	if err != nil {
		t.Fatal(err)
	}
	got := recordFromNative(native.(map[string]any))
	if keyText(got.Key) != keyText(r.Key) || keyText(got.Local) != keyText(r.Local) || keyText(got.RemoteAfter) != keyText(r.RemoteAfter) ||
		got.Resolved != nil || got.ID != 42 || !got.DetectedAt.Equal(at) || !got.CommitTime.Equal(r.CommitTime) ||
		!got.LocalCommitTime.Equal(r.LocalCommitTime) || got.Kind != r.Kind || got.Xid != 77 || got.Detail != "d" || got.CommitLSN != r.CommitLSN {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, r)
	}
	k, err := encodeKey(r)
	if err != nil {
		t.Fatal(err)
	}
	kn, _, err := keyCodec.NativeFromBinary(k)
	if err != nil || kn.(map[string]any)["key"] != `{"id":"1"}` {
		t.Fatalf("key: %v %v", kn, err)
	}
	for in, ok := range map[string]bool{"12:34": true, "x:1": false, "12": false} {
		if _, got := parsePosition(in); got != ok {
			t.Errorf("parsePosition(%q) ok = %v", in, got)
		}
	}
}
