//go:build linux

package producer

import (
	"crypto/tls"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sys/unix"
)

// readable is what poll(2) says of the socket now: whether a waiting read
// would wake.
func readable(t *testing.T, r *replSocket) bool {
	t.Helper()
	var ev int16
	var perr error
	if err := r.rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		_, perr = unix.Poll(fds, 0)
		ev = fds[0].Revents
	}); err != nil {
		t.Fatal(err)
	}
	if perr != nil {
		t.Fatal(perr)
	}
	return ev&unix.POLLIN != 0
}

// loopback returns the two ends of a TCP connection on 127.0.0.1.
func loopback(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	srv, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { srv.Close() })
	return c, srv
}

// waitQueued waits until the kernel holds n bytes for r's next read.
func waitQueued(t *testing.T, r *replSocket, n int) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); ; {
		got, err := r.queued()
		if err != nil {
			t.Fatal(err)
		}
		if got == n {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("queued %d bytes, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestReplSocketLowWater: on a loopback TCP connection, a low-water mark
// above what is queued keeps a waiting read asleep, the queued bytes are
// counted, and a read still returns them at once; one byte wakes it again.
// Under TLS the mark is set on the TCP socket, and the stream knows that
// the TLS layer reads ahead; a Unix socket is not coalesced.
func TestReplSocketLowWater(t *testing.T) {
	c, srv := loopback(t)
	r := newReplSocket(c)
	if r == nil {
		t.Fatal("no socket under a TCP connection")
	}
	if r.readsAhead {
		t.Error("plain TCP reads ahead")
	}
	if tr := newReplSocket(tls.Client(c, &tls.Config{ServerName: "localhost"})); tr == nil || !tr.readsAhead {
		t.Errorf("under TLS: %+v, want the TCP socket, reading ahead", tr)
	}
	if err := r.setLowWater(coalesceBytes); err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, 100)
	if _, err := srv.Write(msg); err != nil {
		t.Fatal(err)
	}
	waitQueued(t, r, len(msg))
	if readable(t, r) {
		t.Errorf("%d bytes queued under a low-water mark of %d: a waiting read would wake", len(msg), coalesceBytes)
	}
	if err := r.setLowWater(1); err != nil {
		t.Fatal(err)
	}
	if !readable(t, r) {
		t.Errorf("%d bytes queued under a low-water mark of 1: a waiting read would not wake", len(msg))
	}
	if err := r.setLowWater(coalesceBytes); err != nil {
		t.Fatal(err)
	}
	// A read finds the bytes at once, whatever the mark.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 8192)
	if n, err := c.Read(buf); err != nil || n != len(msg) {
		t.Fatalf("read %d bytes (%v), want %d", n, err, len(msg))
	}

	dir := t.TempDir()
	uln, err := net.Listen("unix", dir+"/s")
	if err != nil {
		t.Fatal(err)
	}
	defer uln.Close()
	uc, err := net.Dial("unix", dir+"/s")
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	if newReplSocket(uc) != nil {
		t.Error("a Unix socket is coalesced")
	}
}

// TestCoalesceOnlyWhileAGroupWaits: the stream raises the low-water mark
// only while the open group waits for its deadline or a commit is in
// flight, and lowers it once the deadline has passed. A group that commits
// before its deadline (--synchronous, or full by --group-max-events) keeps
// one byte: a wait for the rest of its source transaction would hold its
// commit back until the deadline.
func TestCoalesceOnlyWhileAGroupWaits(t *testing.T) {
	c, srv := loopback(t)
	r := newReplSocket(c)
	if _, err := srv.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	waitQueued(t, r, 100)
	now := time.Now()
	for _, tc := range []struct {
		name            string
		sync            bool
		group, inflight bool
		queued          bool // records wait for the commit in flight
		events          int
		started         time.Time
		high            bool
	}{
		{name: "a group waits for its deadline", group: true, started: now, high: true},
		{name: "a commit in flight, records queued", inflight: true, queued: true, started: now, high: true},
		{name: "a commit in flight, nothing queued", inflight: true, started: now},
		{name: "no group", started: now},
		{name: "the deadline has passed", group: true, started: now.Add(-2 * time.Hour)},
		{name: "--synchronous", sync: true, group: true, started: now},
		{name: "full by --group-max-events", group: true, events: 100, started: now},
	} {
		if err := r.setLowWater(1); err != nil {
			t.Fatal(err)
		}
		s := &session{cfg: &Config{Slot: "slot", GroupMaxDelay: time.Hour, GroupMaxEvents: 100, Synchronous: tc.sync},
			log: slog.New(slog.DiscardHandler), w: &kafkaWriter{inTxn: tc.group}, groupStart: tc.started, groupEvents: tc.events,
			sock: r, lowWater: 1}
		if tc.inflight {
			s.inflight = &inflightCommit{}
		}
		if tc.queued {
			s.queue, s.queueStart = []*kgo.Record{{}}, tc.started
		}
		if err := s.coalesce(now); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if high := !readable(t, r); high != tc.high {
			t.Errorf("%s: low-water mark raised %v, want %v", tc.name, high, tc.high)
		}
		if !tc.high {
			continue
		}
		// Once the deadline has passed (and the commit has ended), one byte.
		s.inflight = nil
		if tc.queued {
			s.groupStart, s.w.inTxn = tc.started, true
			s.queue = nil
		}
		if err := s.coalesce(now.Add(2 * time.Hour)); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !readable(t, r) {
			t.Errorf("%s, then the deadline passed: the low-water mark stayed raised", tc.name)
		}
	}
}
