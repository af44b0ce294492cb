package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"

	"github.com/tributary-cdc/tributary/cmd/tributary/internal/flagconf"
)

// declareProfile declares --cpu-profile on fs.
func declareProfile(fs *flagconf.Set) *string {
	return fs.String("cpu-profile", "", "write a Go CPU profile of the whole run to `file` (go tool pprof reads it); for performance work")
}

// startCPUProfile starts a CPU profile into path (nothing when path is
// empty); the returned stop writes it out and closes the file.
func startCPUProfile(path string, log *slog.Logger) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, usageError{fmt.Errorf("--cpu-profile: %w", err)}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpu-profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			log.Warn("cpu profile", "file", path, "err", err)
		}
	}, nil
}
