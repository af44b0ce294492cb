package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// stopping is set on SIGINT/SIGTERM so that every wait gives up and cleanup runs.
var stopping atomic.Bool

// clkTck is USER_HZ on Linux, the unit of utime/stime in /proc/<pid>/stat.
const clkTck = 100.0

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "[tribench %s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// procCPU returns utime+stime (all threads) plus the waited-for children's
// cutime+cstime of pid, in seconds; -1 when the process is gone.
func procCPU(pid int) float64 {
	return statCPU(fmt.Sprintf("/proc/%d/stat", pid), true)
}

// statCPU reads utime+stime, and with children also cutime+cstime, from a
// /proc stat file (a process's, or one thread's under task/), in seconds;
// -1 when it cannot be read.
func statCPU(path string, children bool) float64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(s[i+1:])
	// after ")": state(3) ppid(4) ... utime is field 14 overall, i.e. index 11 here.
	if len(f) < 15 {
		return -1
	}
	fields := []int{11, 12}
	if children {
		fields = append(fields, 13, 14)
	}
	var sum float64
	for _, k := range fields {
		v, _ := strconv.ParseFloat(f[k], 64)
		sum += v
	}
	return sum / clkTck
}

// treeCPU is procCPU summed over pid and its live descendants.
func treeCPU(pid int) float64 {
	c := procCPU(pid)
	if c < 0 {
		return -1
	}
	for _, ch := range children(pid) {
		if v := treeCPU(ch); v > 0 {
			c += v
		}
	}
	return c
}

func children(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for _, f := range strings.Fields(string(b)) {
			if v, err := strconv.Atoi(f); err == nil {
				out = append(out, v)
			}
		}
	}
	return out
}

// procHWM returns VmHWM (peak RSS) of pid in MB; -1 when unknown.
func procHWM(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			f := strings.Fields(l)
			if len(f) >= 2 {
				v, _ := strconv.ParseFloat(f[1], 64)
				return v / 1024
			}
		}
	}
	return -1
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Proc is a measured child process.
type Proc struct {
	Name    string
	Cmd     *exec.Cmd
	Start   time.Time
	End     time.Time
	done    chan struct{}
	err     error
	logPath string
	hwmKB   atomic.Int64 // the largest VmHWM read while it ran, in KiB
}

// hwmPeriod is how often a Proc's peak RSS is read while it runs.
const hwmPeriod = 50 * time.Millisecond

func startProc(name, dir, logPath string, env []string, args ...string) (*Proc, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	p := &Proc{Name: name, Cmd: cmd, done: make(chan struct{}), logPath: logPath}
	p.Start = time.Now()
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	go func() {
		p.err = cmd.Wait()
		p.End = time.Now()
		f.Close()
		close(p.done)
	}()
	go p.watchHWM()
	return p, nil
}

// watchHWM reads the process's VmHWM every hwmPeriod until it exits. The
// rusage that wait4 returns cannot give a child's peak RSS here: Go starts
// a child in the runner's address space (CLONE_VM) until it execs, and the
// kernel keeps that address space's peak as the child's, so a 5-MB
// process would report the runner's own peak.
func (p *Proc) watchHWM() {
	t := time.NewTicker(hwmPeriod)
	defer t.Stop()
	for {
		if kb := int64(procHWM(p.Pid()) * 1024); kb > p.hwmKB.Load() {
			p.hwmKB.Store(kb)
		}
		select {
		case <-p.done:
			return
		case <-t.C:
		}
	}
}

func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits for the exit, up to timeout; on timeout it kills the group.
func (p *Proc) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("%s: timed out after %s", p.Name, timeout)
	}
}

// Stop sends SIGTERM to the process group and waits up to 30 s, then kills.
func (p *Proc) Stop() {
	if p.Exited() {
		return
	}
	_ = syscall.Kill(-p.Pid(), syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.Kill()
	}
}

func (p *Proc) Kill() {
	_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
	<-p.done
}

// Rusage returns CPU seconds (from wait4) and peak RSS (MB, the largest
// VmHWM read while it ran; -1 when none was read) of an exited process.
func (p *Proc) Rusage() (cpu, rssMB float64) {
	if p.Cmd.ProcessState == nil {
		return -1, -1
	}
	ru, ok := p.Cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return -1, -1
	}
	cpu = float64(ru.Utime.Sec) + float64(ru.Utime.Usec)/1e6 + float64(ru.Stime.Sec) + float64(ru.Stime.Usec)/1e6
	rssMB = -1
	if kb := p.hwmKB.Load(); kb > 0 {
		rssMB = float64(kb) / 1024
	}
	return cpu, rssMB
}

func (p *Proc) Tail(n int) string {
	b, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// run runs a command to completion and returns its combined output.
func run(ctx context.Context, dir string, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	if err != nil {
		return buf.String(), fmt.Errorf("%s: %v\n%s", strings.Join(args, " "), err, tail(buf.String(), 30))
	}
	return buf.String(), nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// pollUntil calls cond every interval until it returns true, an error, or the timeout.
func pollUntil(timeout, interval time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		if stopping.Load() {
			return fmt.Errorf("interrupted")
		}
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", timeout)
		}
		time.Sleep(interval)
	}
}

func median(xs []float64) float64 {
	var v []float64
	for _, x := range xs {
		if x >= 0 {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return -1
	}
	sort.Float64s(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return -1
	}
	i := int(p*float64(len(sorted)-1) + 0.5)
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}

// tributaryEnv is what the tributary processes under test get in their
// environment beyond the runner's own: GOMAXPROCS, unless --gomaxprocs is 0.
func (b *Bench) tributaryEnv() []string {
	if b.cfg.GoMaxProcs == 0 {
		return nil
	}
	return []string{"GOMAXPROCS=" + strconv.Itoa(b.cfg.GoMaxProcs)}
}

// tributaryCmd is args as the shell command line that runs a tributary
// process under test, its environment first.
func (b *Bench) tributaryCmd(args []string) string {
	return strings.Join(append(b.tributaryEnv(), shellQuote(args)), " ")
}

func shellQuote(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " '\"$&|;<>()*?!\\`\t\n") {
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		} else {
			out[i] = a
		}
	}
	return strings.Join(out, " ")
}
