package main

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
)

// Operators compare logged LSNs with pg_replication_slots, which prints them
// as "X/Y"; JSON logs must not turn them (or durations) into integers.
func TestLoggerWritesLSNsAndDurationsReadably(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		var buf bytes.Buffer
		log, err := newLogger(&buf, format, "info")
		if err != nil {
			t.Fatal(err)
		}
		log.Info("x", "lsn", pglogrepl.LSN(0x3E8746A8), "took", 1500*time.Millisecond, "n", 7)
		out := buf.String()
		if format == "json" {
			var m map[string]any
			if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
				t.Fatalf("json log %q: %v", out, err)
			}
			if m["lsn"] != "0/3E8746A8" || m["took"] != "1.5s" || m["n"] != float64(7) {
				t.Fatalf("json log %q: want lsn 0/3E8746A8, took 1.5s, n 7", out)
			}
			continue
		}
		for _, want := range []string{"lsn=0/3E8746A8", "took=1.5s", "n=7"} {
			if !bytes.Contains(buf.Bytes(), []byte(want)) {
				t.Fatalf("text log %q lacks %s", out, want)
			}
		}
	}
}
