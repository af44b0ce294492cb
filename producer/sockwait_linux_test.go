//go:build linux

package producer

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

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

// TestReplSocketLowWater: on a loopback TCP connection, a low-water mark
// above what is queued keeps a waiting read asleep, the queued bytes are
// counted, and a read still returns them at once; one byte wakes it again.
// Neither a TLS connection nor a Unix socket is coalesced.
func TestReplSocketLowWater(t *testing.T) {
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
	defer c.Close()
	srv, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	defer srv.Close()

	r := newReplSocket(c)
	if r == nil {
		t.Fatal("no socket under a TCP connection")
	}
	if newReplSocket(tls.Client(c, &tls.Config{ServerName: "localhost"})) != nil {
		t.Error("a TLS connection is coalesced")
	}
	if err := r.setLowWater(coalesceBytes); err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, 100)
	if _, err := srv.Write(msg); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(10 * time.Second); ; {
		n, err := r.queued()
		if err != nil {
			t.Fatal(err)
		}
		if n == len(msg) {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("queued %d bytes, want %d", n, len(msg))
		}
		time.Sleep(time.Millisecond)
	}
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
