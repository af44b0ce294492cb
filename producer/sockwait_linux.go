//go:build linux

package producer

import (
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
}

// newReplSocket returns the socket of c when c is plain TCP, or nil: the
// stream then reads every message as it comes. A TLS layer reads ahead of
// what it returns, so bytes it holds are in neither pgconn's buffer nor
// the kernel's count, and a group could commit without them; a Unix
// socket's readiness ignores SO_RCVLOWAT.
func newReplSocket(c net.Conn) *replSocket {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return &replSocket{rc: rc}
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
