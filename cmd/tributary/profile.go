package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"

	"github.com/tributary-cdc/tributary/cmd/tributary/internal/flagconf"
)

// runtimeFlags are the flags that tune the Go runtime of a long-running
// command: its CPU and heap profiles and its memory budget.
type runtimeFlags struct {
	cpuProfile   *string
	heapProfile  *string
	memoryBudget *string
}

// declareRuntime declares --cpu-profile, --heap-profile and --memory-budget
// (default def) on fs.
func declareRuntime(fs *flagconf.Set, def string) runtimeFlags {
	return runtimeFlags{
		cpuProfile:  fs.String("cpu-profile", "", "write a Go CPU profile of the whole run to `file` (go tool pprof reads it); for performance work"),
		heapProfile: fs.String("heap-profile", "", "write a Go heap profile to `file` when the command ends (what is live then, and what the run allocated); for memory work"),
		memoryBudget: fs.String("memory-budget", def, "Go memory `size` the process aims to stay under, e.g. 256MB (PostgreSQL's 1024-based units):\n"+
			"the garbage collector runs a quarter as often as Go's default (GOGC 400) and more often near the budget\n"+
			"(a soft limit, GOMEMLIMIT); 0 keeps Go's defaults. GOGC or GOMEMLIMIT in the environment override it"),
	}
}

// start applies the memory budget and starts the CPU profile; the returned
// stop writes the profiles out.
func (r runtimeFlags) start(log *slog.Logger) (stop func(), err error) {
	if err := applyMemoryBudget(*r.memoryBudget, log); err != nil {
		return nil, err
	}
	heap := *r.heapProfile
	if heap != "" {
		// Checked now, so that a bad path fails before the run, not after.
		f, err := os.Create(heap)
		if err != nil {
			return nil, usageError{fmt.Errorf("--heap-profile: %w", err)}
		}
		f.Close()
	}
	stopCPU, err := startCPUProfile(*r.cpuProfile, log)
	if err != nil {
		return nil, err
	}
	return func() {
		stopCPU()
		if heap != "" {
			writeHeapProfile(heap, log)
		}
	}, nil
}

// writeHeapProfile writes the heap profile to path after a collection, so
// that its inuse figures are what is live at the end.
func writeHeapProfile(path string, log *slog.Logger) {
	runtime.GC()
	f, err := os.Create(path)
	if err == nil {
		err = pprof.WriteHeapProfile(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		log.Warn("heap profile", "file", path, "err", err)
	}
}

// applyMemoryBudget sets the soft memory limit to the budget spec and the
// GC percentage to 400, unless spec is 0 or the environment sets GOGC or
// GOMEMLIMIT (the runtime has read those already).
func applyMemoryBudget(spec string, log *slog.Logger) error {
	n, err := parseSize(spec)
	if err != nil || n < 0 {
		return usageError{fmt.Errorf("--memory-budget %q: want a size such as 256MB, or 0", spec)}
	}
	if n == 0 {
		return nil
	}
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		log.Info("memory budget not applied: the environment sets the garbage collector",
			"memory_budget", spec, "GOGC", os.Getenv("GOGC"), "GOMEMLIMIT", os.Getenv("GOMEMLIMIT"))
		return nil
	}
	debug.SetMemoryLimit(n)
	debug.SetGCPercent(400)
	log.Debug("memory budget applied", "memory_budget_bytes", n, "gc_percent", 400)
	return nil
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
