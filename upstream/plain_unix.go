//go:build unix

package upstream

import (
	"errors"
	"syscall"
)

// peekAlive reports whether an idle connection is still open and quiet:
// a non-blocking peek finds no data (EAGAIN). EOF means the upstream
// closed it; data means it sent something unasked, and the connection
// can no longer be trusted to frame the next answer. One system call
// per reuse.
func (c *plainConn) peekAlive() bool {
	if c.raw == nil {
		return true
	}
	if c.peekFn == nil {
		c.peekFn = func(fd uintptr) bool {
			_, _, c.peekErr = syscall.Recvfrom(int(fd), c.peek[:],
				syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			return true
		}
	}
	if err := c.raw.Read(c.peekFn); err != nil {
		return false
	}
	return c.peekErr == syscall.EAGAIN
}

// isReset reports an error of a connection the peer reset or closed
// under a write.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
