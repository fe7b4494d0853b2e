package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// notifier speaks systemd's notify protocol: one datagram per state change
// ("READY=1", "STOPPING=1", "WATCHDOG=1") to the unix socket named by
// $NOTIFY_SOCKET. Without that variable (not under systemd, or a unit that
// is not Type=notify) every method is a no-op, and so is a nil or zero
// notifier.
//
// Limitation: only path and abstract ("@name") sockets are supported; a
// "vsock:" address (systemd in a VM) makes notify return an error.
type notifier struct {
	socket   string        // $NOTIFY_SOCKET; "" means do nothing
	interval time.Duration // between WATCHDOG=1 pings; 0 means no watchdog
}

// newNotifier reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID through
// getenv (os.Getenv in production).
func newNotifier(getenv func(string) string) *notifier {
	return &notifier{
		socket:   getenv("NOTIFY_SOCKET"),
		interval: watchdogInterval(getenv),
	}
}

// watchdogInterval is half of WATCHDOG_USEC, as systemd recommends, so one
// late ping does not get the service killed. It is 0 when the watchdog is
// off or meant for another process (WATCHDOG_PID names a different pid:
// the variables were inherited from a parent).
func watchdogInterval(getenv func(string) string) time.Duration {
	usec, err := strconv.ParseUint(getenv("WATCHDOG_USEC"), 10, 63)
	if err != nil || usec == 0 {
		return 0
	}
	if pid := getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec/2) * time.Microsecond
}

// notifyWriteTimeout bounds a send: a service manager that stopped reading
// must not block shutdown.
const notifyWriteTimeout = 2 * time.Second

// notify sends state as one datagram. It returns nil without doing anything
// when NOTIFY_SOCKET is unset.
func (n *notifier) notify(state string) error {
	if n == nil || n.socket == "" {
		return nil
	}
	// A leading "@" names an abstract socket; Go's net package turns it
	// into the leading NUL byte the kernel expects.
	if !strings.HasPrefix(n.socket, "/") && !strings.HasPrefix(n.socket, "@") {
		return fmt.Errorf("notify systemd: unsupported NOTIFY_SOCKET %q", n.socket)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.socket, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	defer conn.Close()
	if err := conn.SetWriteDeadline(time.Now().Add(notifyWriteTimeout)); err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("notify systemd %s: %w", state, err)
	}
	return nil
}

// watchdog sends WATCHDOG=1 every half WATCHDOG_USEC until ctx is done. It
// returns at once when the watchdog is off. Send errors are dropped: a
// missed ping is exactly what the watchdog exists to notice.
func (n *notifier) watchdog(ctx context.Context) {
	if n == nil || n.socket == "" || n.interval <= 0 {
		return
	}
	t := time.NewTicker(n.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = n.notify("WATCHDOG=1")
		}
	}
}
