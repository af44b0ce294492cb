package chaos

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tributary-cdc/tributary/integration/harness"
)

// supervised keeps a tributary subprocess running as systemd's
// Restart=on-failure does (deploy/systemd): when it exits, it is started
// again after a second. Exits the test did not cause are recorded.
type supervised struct {
	t    *testing.T
	name string
	args []string

	mu      sync.Mutex
	proc    *harness.Proc
	killing bool
	stopped bool
	exits   []string // exits the test did not cause: the last lines printed
	done    chan struct{}
}

func supervise(t *testing.T, name string, args ...string) *supervised {
	s := &supervised{t: t, name: name, args: args, done: make(chan struct{})}
	s.proc = harness.StartTributary(t, nil, args...)
	go s.loop()
	t.Cleanup(func() { s.stop() })
	return s
}

func (s *supervised) loop() {
	defer close(s.done)
	for {
		s.mu.Lock()
		p := s.proc
		s.mu.Unlock()
		for {
			if exited, _ := p.Exited(); exited {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		s.mu.Lock()
		if s.stopped {
			s.mu.Unlock()
			return
		}
		if !s.killing {
			_, err := p.Exited()
			s.exits = append(s.exits, time.Now().Format("15:04:05")+" "+errString(err)+": "+lastLines(p.Output(), 4))
		}
		s.killing = false
		s.mu.Unlock()
		time.Sleep(time.Second)
		s.mu.Lock()
		if s.stopped {
			s.mu.Unlock()
			return
		}
		s.proc = harness.StartTributary(s.t, nil, s.args...)
		s.mu.Unlock()
	}
}

// kill9 sends SIGKILL; the supervisor starts it again.
func (s *supervised) kill9() {
	s.mu.Lock()
	s.killing = true
	p := s.proc
	s.mu.Unlock()
	p.Kill()
}

// stop ends supervision and kills the process.
func (s *supervised) stop() {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	p := s.proc
	s.mu.Unlock()
	p.Kill()
	<-s.done
}

// term ends supervision with SIGTERM and returns the exit error.
func (s *supervised) term(t *testing.T) error {
	s.mu.Lock()
	s.stopped = true
	p := s.proc
	s.mu.Unlock()
	err := p.Stop(t, 60*time.Second)
	<-s.done
	return err
}

func (s *supervised) exitsSince(n int) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.exits[n:]...)
}

func (s *supervised) exitCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.exits)
}

func (s *supervised) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc.Output()
}

func errString(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
