package duckdb

import (
	"context"
	"errors"
	"strings"
	"testing"

	ddb "github.com/duckdb/duckdb-go/v2"

	"github.com/tributary-cdc/tributary/consumer"
)

func TestErrorfNamesFileCauseAndHalts(t *testing.T) {
	s, err := New(Config{Path: "/data/wh.duckdb", Consumer: "wh"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		err   error
		cause error
		halt  bool
	}{
		{"locked", &ddb.Error{Type: ddb.ErrorTypeIO, Msg: `IO Error: Could not set lock on file "/data/wh.duckdb": Conflicting lock is held in /usr/bin/x (PID 7)`},
			ErrLocked, true},
		{"read-only", &ddb.Error{Type: ddb.ErrorTypeIO, Msg: `IO Error: Cannot open file "/data/wh.duckdb": Read-only file system`},
			ErrReadOnly, true},
		{"disk full at commit", &ddb.Error{Type: ddb.ErrorTypeTransaction,
			Msg: `TransactionContext Error: Failed to commit: Could not write file "/data/wh.duckdb.wal": No space left on device`}, ErrNoSpace, true},
		{"file-size limit", &ddb.Error{Type: ddb.ErrorTypeIO, Msg: `IO Error: Could not write file "/data/wh.duckdb": File too large`},
			ErrNoSpace, true},
		{"other I/O", &ddb.Error{Type: ddb.ErrorTypeIO, Msg: "IO Error: checksum mismatch"}, nil, true},
		{"memory limit", &ddb.Error{Type: ddb.ErrorTypeOutOfMemory,
			Msg: "Out of Memory Error: failed to pin block of size 256.0 KiB (60.9 MiB/61.0 MiB used)"}, ErrMemoryLimit, true},
		{"invalidated", &ddb.Error{Type: ddb.ErrorTypeFatal, Msg: "FATAL Error: database has been invalidated"}, nil, true},
		{"data", &ddb.Error{Type: ddb.ErrorTypeConversion, Msg: "Conversion Error: Could not convert string 'x' to INT32\nLINE 1: ..."},
			nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := s.errorf(context.Background(), tc.err, "merge %d row(s)", 3)
			msg := got.Error()
			if !strings.HasPrefix(msg, "duckdb /data/wh.duckdb: merge 3 row(s): ") || strings.Contains(msg, "\n") {
				t.Errorf("message %q: want one line naming the file and the step", msg)
			}
			if tc.cause != nil && !errors.Is(got, tc.cause) {
				t.Errorf("%q does not wrap %v", msg, tc.cause)
			}
			var de *ddb.Error
			if !errors.As(got, &de) {
				t.Errorf("%q does not unwrap to the DuckDB error", msg)
			}
			if !consumer.IsPermanent(got) {
				t.Errorf("%q is not permanent", msg)
			}
			if _, halt := classify(tc.err); halt != tc.halt {
				t.Errorf("%q: halt %v, want %v (errors about the file end the run whatever --on-error says)", msg, halt, tc.halt)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.errorf(ctx, errors.New("interrupted"), "commit"); consumer.IsPermanent(err) {
		t.Errorf("an error after ctx ended must not be permanent: %v", err)
	}
}
