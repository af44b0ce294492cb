package main

import (
	"compress/gzip"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// TestRuntimeFlagsWriteProfiles: --cpu-profile and --heap-profile write
// profiles (gzipped protocol buffers, which pprof reads) when the command
// ends, and a heap profile path that cannot be written fails before the run.
func TestRuntimeFlagsWriteProfiles(t *testing.T) {
	dir := t.TempDir()
	cpu, heap, budget := filepath.Join(dir, "cpu.pprof"), filepath.Join(dir, "heap.pprof"), "0"
	rt := runtimeFlags{cpuProfile: &cpu, heapProfile: &heap, memoryBudget: &budget}
	stop, err := rt.start(slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	stop()
	for _, path := range []string{cpu, heap} {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		z, err := gzip.NewReader(f)
		if err != nil {
			f.Close()
			t.Fatalf("%s: %v", path, err)
		}
		n, err := io.Copy(io.Discard, z)
		f.Close()
		if err != nil || n == 0 {
			t.Fatalf("%s: %d bytes, %v", path, n, err)
		}
	}
	bad := filepath.Join(dir, "no such dir", "heap.pprof")
	rt.heapProfile = &bad
	empty := ""
	rt.cpuProfile = &empty
	if _, err := rt.start(slog.Default()); err == nil {
		t.Fatal("an unwritable --heap-profile path started the run")
	}
}
