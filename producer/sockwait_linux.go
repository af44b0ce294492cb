//go:build linux

package producer

import (
	"crypto/tls"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// replSocket is the TCP socket under the replication connection, for the
// two things the stream asks the kernel directly (coalesce.go): how many
// bytes must be queued before a waiting read wakes, and how many are queued.
type replSocket struct {
	rc syscall.RawConn
	// readsAhead: a TLS layer is between the socket and pgconn. It reads
	// ahead of what it returns, so the records it holds are in neither
	// pgconn's buffer nor the kernel's count (arrivedUnread probes it).
	readsAhead bool
}

// newReplSocket returns the TCP socket under c, plain or under TLS, or nil:
// the stream then reads every message as it comes. A Unix socket's
// readiness ignores SO_RCVLOWAT.
func newReplSocket(c net.Conn) *replSocket {
	var readsAhead bool
	if t, ok := c.(*tls.Conn); ok {
		c, readsAhead = t.NetConn(), true
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return &replSocket{rc: rc, readsAhead: readsAhead}
}

// setLowWater sets SO_RCVLOWAT: a read that finds the socket empty waits
// until n bytes are queued (or its deadline). A read that finds any bytes
// returns them at once whatever n is.
func (r *replSocket) setLowWater(n int) error {
	var serr error
	if err := r.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVLOWAT, n)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("setsockopt SO_RCVLOWAT %d: %w", n, serr)
	}
	return nil
}

// queued is the number of bytes the kernel holds for the next read.
func (r *replSocket) queued() (int, error) {
	var n int
	var serr error
	if err := r.rc.Control(func(fd uintptr) {
		n, serr = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	}); err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, fmt.Errorf("ioctl SIOCINQ: %w", serr)
	}
	return n, nil
}
