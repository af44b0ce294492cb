//go:build !linux

package producer

import "net"

// replSocket is the Linux socket control of coalesce.go; elsewhere the
// stream reads every message as it comes.
type replSocket struct{ readsAhead bool }

func newReplSocket(net.Conn) *replSocket { return nil }

func (*replSocket) setLowWater(int) error { return nil }

func (*replSocket) queued() (int, error) { return 0, nil }
