package harness

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binary is the path of the tributary binary that `make build` writes (or
// $TRIBUTARY_TEST_BINARY when set); the
// integration suite runs it as users do.
func Binary(t testing.TB) string {
	t.Helper()
	p := os.Getenv("TRIBUTARY_TEST_BINARY")
	if p == "" {
		p = filepath.Join(RepoRoot(), "bin", "tributary")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s is missing: run `make build` (make test-integration does) before the integration suite, or set TRIBUTARY_TEST_BINARY", p)
	}
	return p
}

// Proc is a running tributary subprocess whose output is kept for failure
// messages.
type Proc struct {
	Cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// StartTributary starts `tributary args...`; it is killed when the test ends.
func StartTributary(t testing.TB, env []string, args ...string) *Proc {
	t.Helper()
	cmd := exec.Command(Binary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	p := &Proc{Cmd: cmd, out: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start tributary %v: %v", args, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.Kill() })
	return p
}

// Output is what the process printed so far.
func (p *Proc) Output() string { return p.out.String() }

// Kill sends SIGKILL and waits for the process to end.
func (p *Proc) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Exited reports whether the process has ended, and its wait error.
func (p *Proc) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Wait waits up to timeout for the process to end on its own; it reports
// whether it ended, and its wait error.
func (p *Proc) Wait(timeout time.Duration) (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	case <-time.After(timeout):
		return false, nil
	}
}

// Stop sends SIGTERM and waits up to timeout for a clean exit; it returns the
// exit error, or fails the test when the process does not stop in time.
func (p *Proc) Stop(t testing.TB, timeout time.Duration) error {
	t.Helper()
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.Kill()
		t.Fatalf("tributary did not stop within %s of SIGTERM; output:\n%s", timeout, p.Output())
		return nil
	}
}
