package harness

// Fault-injection helpers for the chaos suite (integration/chaos): a TCP
// proxy with latency, bandwidth limits, blackholes and resets; the embedded
// broker and registry run as a `tributary dev` subprocess so that they can
// be restarted on the same data directory and ports; and a restart of the
// real Kafka broker that deploy/local/kafka.sh started, keeping its data.

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Proxy is an in-process TCP proxy between a client and one upstream
// address, with toxiproxy-like faults: latency, a bandwidth limit, a
// blackhole (data held, connections kept open), connection resets, and a
// down state in which new connections are refused.
type Proxy struct {
	Addr   string // host:port clients connect to
	target string

	mu      sync.Mutex
	ln      net.Listener
	conns   map[*proxyConn]struct{}
	latency time.Duration
	bps     int // bytes per second per direction; 0 is unlimited
	hold    bool
	down    bool
	closed  bool
}

type proxyConn struct {
	client, upstream net.Conn
	once             sync.Once
	gone             chan struct{}
}

// StartProxy starts a proxy on a free loopback port to target; it is closed
// when the test ends.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	return StartProxyAt(t, "127.0.0.1:0", target)
}

// StartProxyAt is StartProxy listening on addr (a free loopback port for
// "127.0.0.1:0"), for clients that must find the proxy at a known address:
// a broker that advertises it.
func StartProxyAt(t testing.TB, addr, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("proxy listen on %s: %v", addr, err)
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, conns: map[*proxyConn]struct{}{}}
	p.serve(ln)
	t.Cleanup(p.Close)
	return p
}

func (p *Proxy) serve(ln net.Listener) {
	p.ln = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.handle(c)
		}
	}()
}

func (p *Proxy) handle(c net.Conn) {
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		reset(c)
		return
	}
	pc := &proxyConn{client: c, upstream: up, gone: make(chan struct{})}
	p.mu.Lock()
	if p.down || p.closed {
		p.mu.Unlock()
		reset(c)
		reset(up)
		return
	}
	p.conns[pc] = struct{}{}
	p.mu.Unlock()
	go p.pipe(pc, c, up)
	go p.pipe(pc, up, c)
}

func (p *Proxy) pipe(pc *proxyConn, src, dst net.Conn) {
	defer p.drop(pc, false)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			for {
				p.mu.Lock()
				hold := p.hold
				p.mu.Unlock()
				if !hold {
					break
				}
				select {
				case <-pc.gone:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
			p.mu.Lock()
			lat, bps := p.latency, p.bps
			p.mu.Unlock()
			if lat > 0 {
				select {
				case <-pc.gone:
					return
				case <-time.After(lat):
				}
			}
			data := buf[:n]
			for len(data) > 0 {
				chunk := len(data)
				if bps > 0 && chunk > bps/20+1 {
					chunk = bps/20 + 1
				}
				if _, werr := dst.Write(data[:chunk]); werr != nil {
					return
				}
				data = data[chunk:]
				if bps > 0 {
					time.Sleep(time.Duration(float64(chunk) / float64(bps) * float64(time.Second)))
				}
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *Proxy) drop(pc *proxyConn, rst bool) {
	pc.once.Do(func() {
		close(pc.gone)
		if rst {
			reset(pc.client)
			reset(pc.upstream)
		} else {
			pc.client.Close()
			pc.upstream.Close()
		}
		p.mu.Lock()
		delete(p.conns, pc)
		p.mu.Unlock()
	})
}

// reset closes c with a TCP RST rather than a FIN.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// SetLatency delays every chunk of data in both directions by d (0: none).
func (p *Proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	p.latency = d
	p.mu.Unlock()
}

// SetBandwidth limits each direction of each connection to bytesPerSec (0: none).
func (p *Proxy) SetBandwidth(bytesPerSec int) {
	p.mu.Lock()
	p.bps = bytesPerSec
	p.mu.Unlock()
}

// SetBlackhole holds all data (connections stay open, nothing passes) while on.
func (p *Proxy) SetBlackhole(on bool) {
	p.mu.Lock()
	p.hold = on
	p.mu.Unlock()
}

// Reset resets every open connection (TCP RST to both sides) and returns how
// many there were.
func (p *Proxy) Reset() int {
	p.mu.Lock()
	var all []*proxyConn
	for pc := range p.conns {
		all = append(all, pc)
	}
	p.mu.Unlock()
	for _, pc := range all {
		p.drop(pc, true)
	}
	return len(all)
}

// Down stops accepting (new connections are refused) and resets the open ones.
func (p *Proxy) Down() {
	p.mu.Lock()
	p.down = true
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	p.mu.Unlock()
	p.Reset()
}

// Up listens again on the same address after Down.
func (p *Proxy) Up(t testing.TB) {
	t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 100; i++ {
		if ln, err = net.Listen("tcp", p.Addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("proxy re-listen on %s: %v", p.Addr, err)
	}
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
	p.serve(ln)
}

// Clear removes latency, bandwidth limit and blackhole.
func (p *Proxy) Clear() {
	p.mu.Lock()
	p.latency, p.bps, p.hold = 0, 0, false
	p.mu.Unlock()
}

// Close stops the proxy for good.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	p.mu.Unlock()
	p.Reset()
}

// DevStack is `tributary dev` (the embedded kfake broker and srfake registry)
// running as a subprocess, persisted in DataDir, so that a test can restart
// the broker on the same directory and ports.
type DevStack struct {
	DataDir      string
	KafkaAddr    string
	RegistryAddr string
	RegistryURL  string
	// Advertise, when set, is the broker address clients are sent to
	// (tributary dev --advertise); see StartDevStackBehindProxy.
	Advertise string
	proc      *Proc
}

// StartDevStack starts `tributary dev` on free ports with dataDir.
func StartDevStack(t testing.TB, dataDir string) *DevStack {
	t.Helper()
	d := &DevStack{DataDir: dataDir,
		KafkaAddr:    fmt.Sprintf("127.0.0.1:%d", FreePort(t)),
		RegistryAddr: fmt.Sprintf("127.0.0.1:%d", FreePort(t))}
	d.RegistryURL = "http://" + d.RegistryAddr
	d.start(t)
	return d
}

// StartDevStackBehindProxy starts `tributary dev` with its broker behind a
// Proxy: the broker advertises the proxy's address, so every Kafka client
// that bootstraps from the proxy's Addr (returned as the brokers to use)
// sends all its Kafka traffic through the proxy, where a test injects
// network faults. The proxy keeps its address across Restart.
func StartDevStackBehindProxy(t testing.TB, dataDir string) (*DevStack, *Proxy) {
	t.Helper()
	d := &DevStack{DataDir: dataDir,
		KafkaAddr:    fmt.Sprintf("127.0.0.1:%d", FreePort(t)),
		RegistryAddr: fmt.Sprintf("127.0.0.1:%d", FreePort(t))}
	d.RegistryURL = "http://" + d.RegistryAddr
	p := StartProxy(t, d.KafkaAddr)
	d.Advertise = p.Addr
	d.start(t)
	return d, p
}

func (d *DevStack) start(t testing.TB) {
	t.Helper()
	var p *Proc
	for attempt := 0; ; attempt++ {
		args := []string{"dev", "--data-dir", d.DataDir, "--kafka-addr", d.KafkaAddr,
			"--registry-addr", d.RegistryAddr, "--log-format", "json"}
		if d.Advertise != "" {
			args = append(args, "--advertise", d.Advertise)
		}
		p = StartTributary(t, nil, args...)
		deadline := time.Now().Add(60 * time.Second)
		for !strings.Contains(p.Output(), "\nready\n") {
			if exited, _ := p.Exited(); exited || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if strings.Contains(p.Output(), "\nready\n") {
			break
		}
		p.Kill()
		// A port of the previous run may still be in use for a moment.
		if attempt == 20 {
			t.Fatalf("tributary dev did not become ready:\n%s", p.Output())
		}
		time.Sleep(500 * time.Millisecond)
	}
	d.proc = p
}

// Restart stops the stack (SIGKILL when kill is true, else SIGTERM) and
// starts it again on the same data directory and ports.
func (d *DevStack) Restart(t testing.TB, kill bool, down time.Duration) {
	t.Helper()
	d.Stop(t, kill)
	time.Sleep(down)
	d.start(t)
}

// Stop stops the stack; Start starts it again.
func (d *DevStack) Stop(t testing.TB, kill bool) {
	t.Helper()
	if kill {
		d.proc.Kill()
	} else if err := d.proc.Stop(t, 60*time.Second); err != nil {
		t.Fatalf("tributary dev exit after SIGTERM: %v\n%s", err, d.proc.Output())
	}
}

// Start starts a stopped stack again.
func (d *DevStack) Start(t testing.TB) { t.Helper(); d.start(t) }

// Output is what the running dev process printed.
func (d *DevStack) Output() string { return d.proc.Output() }

// RealKafka is the Apache Kafka broker that `deploy/local/kafka.sh start DIR`
// started. Its Restart keeps the data: kafka.sh start formats fresh storage,
// so a restart stops the JVM and starts it again with the same
// DIR/run/server.properties.
type RealKafka struct {
	Dir       string
	Bootstrap string
	// ProxiedListen and ProxiedAdvertise are set when kafka.sh started the
	// broker with KAFKA_PROXIED_LISTENER=1: a second listener on
	// ProxiedListen that advertises ProxiedAdvertise, where nothing listens
	// until a test puts a Proxy there (StartProxyAt(ProxiedAdvertise,
	// ProxiedListen)); clients that bootstrap from ProxiedAdvertise then send
	// all their Kafka traffic through that proxy.
	ProxiedListen, ProxiedAdvertise string
}

// RealKafkaFromEnv returns the broker in $TRIBUTARY_TEST_KAFKA_DIR, or nil
// when that variable is unset.
func RealKafkaFromEnv(t testing.TB) *RealKafka {
	t.Helper()
	dir := os.Getenv("TRIBUTARY_TEST_KAFKA_DIR")
	if dir == "" {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(dir, "run", "bootstrap"))
	if err != nil {
		t.Fatalf("TRIBUTARY_TEST_KAFKA_DIR=%s: %v (start it with deploy/local/kafka.sh start)", dir, err)
	}
	k := &RealKafka{Dir: dir, Bootstrap: strings.TrimSpace(string(b))}
	if p, err := os.ReadFile(filepath.Join(dir, "run", "proxied")); err == nil {
		if f := strings.Fields(string(p)); len(f) == 2 {
			k.ProxiedListen, k.ProxiedAdvertise = f[0], f[1]
		}
	}
	return k
}

var kafkaStarted = []string{"Kafka Server started", "] started (kafka.server"}

// Restart stops the broker (SIGTERM, SIGKILL after 30 s; SIGKILL at once
// when kill is true), waits down, and starts it again with its properties.
func (k *RealKafka) Restart(t testing.TB, kill bool, down time.Duration) {
	t.Helper()
	run := filepath.Join(k.Dir, "run")
	pidb, err := os.ReadFile(filepath.Join(run, "kafka.pid"))
	if err != nil {
		t.Fatalf("real kafka pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(pidb)))
	if err != nil {
		t.Fatalf("real kafka pid %q: %v", pidb, err)
	}
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	_ = syscall.Kill(pid, sig)
	deadline := time.Now().Add(30 * time.Second)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			deadline = time.Now().Add(30 * time.Second)
		}
		time.Sleep(100 * time.Millisecond)
		// Reap it if it is our child from an earlier restart.
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
	}
	time.Sleep(down)

	logFile := filepath.Join(run, "kafka.log")
	before := countStarted(logFile)
	verb, _ := os.ReadFile(filepath.Join(k.Dir, "lib", ".version"))
	heap := os.Getenv("KAFKA_HEAP")
	if heap == "" {
		heap = "-Xmx512m -Xms256m"
	}
	args := append(strings.Fields(heap), "-XX:+UseG1GC", "-Djava.awt.headless=true", "-Dkafka.logs.dir="+run)
	if strings.HasPrefix(strings.TrimSpace(string(verb)), "3.") || len(verb) == 0 {
		args = append(args, "-Dlog4j.configuration=file:"+filepath.Join(k.Dir, "conf", "log4j.properties"))
	} else {
		args = append(args, "-Dlog4j2.configurationFile="+filepath.Join(k.Dir, "conf", "log4j2.properties"))
	}
	args = append(args, "-cp", filepath.Join(k.Dir, "lib")+"/*", "kafka.Kafka", filepath.Join(run, "server.properties"))
	java := os.Getenv("JAVA")
	if java == "" {
		java = "java"
	}
	lf, err := os.OpenFile(logFile, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	cmd := exec.Command(java, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // outlives the test, as kafka.sh's nohup does
	if err := cmd.Start(); err != nil {
		t.Fatalf("restart real kafka: %v", err)
	}
	go func() { _ = cmd.Wait() }()
	if err := os.WriteFile(filepath.Join(run, "kafka.pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(120 * time.Second)
	for countStarted(logFile) <= before {
		if time.Now().After(deadline) {
			t.Fatalf("real kafka did not start again within 120 s; see %s", logFile)
		}
		time.Sleep(250 * time.Millisecond)
	}
	// Ready when it answers metadata.
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := kadm.NewClient(cl).BrokerMetadata(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("real kafka not answering metadata after restart: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// processAlive reports whether pid is running: a process that was killed
// but not reaped (a zombie, which this machine's PID 1 may leave behind) is
// not.
func processAlive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // no /proc: trust kill -0
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

func countStarted(file string) int {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	n := 0
	for _, s := range kafkaStarted {
		n += strings.Count(string(b), s)
	}
	return n
}
