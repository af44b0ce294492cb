package producer

import (
	"testing"

	"github.com/tributary-cdc/tributary/schemas"
)

// TestConnConfigKeepsApplicationName: the source connections carry the
// contract's session settings, and the application_name a DSN sets is
// kept (operators tell producers apart by it); without one it is the
// contract's.
func TestConnConfigKeepsApplicationName(t *testing.T) {
	t.Setenv("PGAPPNAME", "")
	want := schemas.SessionParams()
	for _, c := range []struct{ dsn, app string }{
		{"postgres://u@127.0.0.1:5432/db", want["application_name"]},
		{"postgres://u@127.0.0.1:5432/db?application_name=orders_cdc", "orders_cdc"},
		{"host=127.0.0.1 user=u application_name=orders_cdc", "orders_cdc"},
	} {
		for _, repl := range []bool{false, true} {
			cfg, err := connConfig(c.dsn, repl)
			if err != nil {
				t.Fatalf("%s: %v", c.dsn, err)
			}
			for k, v := range want {
				if k == "application_name" {
					v = c.app
				}
				if got := cfg.RuntimeParams[k]; got != v {
					t.Errorf("%s (replication %v): %s = %q, want %q", c.dsn, repl, k, got, v)
				}
			}
			if got := cfg.RuntimeParams["replication"]; (got == "database") != repl {
				t.Errorf("%s (replication %v): replication = %q", c.dsn, repl, got)
			}
		}
	}
}
