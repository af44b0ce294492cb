//go:build unix

package duckdb

import (
	"os/signal"
	"syscall"
)

// ignoreFileSizeSignal makes a write past the file-size limit (RLIMIT_FSIZE,
// `ulimit -f`) fail with EFBIG, which the sink reports as ErrNoSpace naming
// the file, instead of killing the process with SIGXFSZ. Go ignores that
// signal on its own threads only; DuckDB writes from threads of its own.
func ignoreFileSizeSignal() { signal.Ignore(syscall.SIGXFSZ) }
