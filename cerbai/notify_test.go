package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// notifyTestDeadline only bounds a broken test; passing tests never wait
// for it.
const notifyTestDeadline = 10 * time.Second

// envMap is a getenv over a fixed map.
func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// listenNotify stands in for systemd: a unixgram socket at name (a path,
// or "@..." for an abstract socket).
func listenNotify(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen unixgram %q: %v", name, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// recvNotify reads one datagram, failing the test if none comes in time.
func recvNotify(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(notifyTestDeadline)); err != nil {
		t.Fatalf("set read deadline: %v", err)
	}
	buf := make([]byte, 4096)
	n, _, err := conn.ReadFromUnix(buf)
	if err != nil {
		t.Fatalf("read notify datagram: %v", err)
	}
	return string(buf[:n])
}

func TestNotifier_SendsEachStateAsOneDatagram(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	conn := listenNotify(t, path)
	n := newNotifier(envMap(map[string]string{"NOTIFY_SOCKET": path}))

	for _, state := range []string{"READY=1", "STOPPING=1", "WATCHDOG=1"} {
		if err := n.notify(state); err != nil {
			t.Fatalf("notify(%q): %v", state, err)
		}
		if got := recvNotify(t, conn); got != state {
			t.Errorf("got datagram %q, want %q", got, state)
		}
	}
}

func TestNotifier_SendsToAbstractSocket(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("abstract unix sockets exist only on Linux")
	}
	name := fmt.Sprintf("@cerbai-notify-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	conn := listenNotify(t, name)
	n := newNotifier(envMap(map[string]string{"NOTIFY_SOCKET": name}))

	if err := n.notify("READY=1"); err != nil {
		t.Fatalf("notify: %v", err)
	}
	if got := recvNotify(t, conn); got != "READY=1" {
		t.Errorf("got datagram %q, want %q", got, "READY=1")
	}
}

func TestNotifier_WithoutSocketDoesNothing(t *testing.T) {
	tests := []struct {
		name string
		n    *notifier
	}{
		{"NOTIFY_SOCKET unset", newNotifier(envMap(map[string]string{"WATCHDOG_USEC": "2"}))},
		{"zero value", &notifier{}},
		{"nil", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.n.notify("READY=1"); err != nil {
				t.Errorf("notify: got error %v, want nil", err)
			}
			// ctx is never cancelled: watchdog must return on its own.
			waitReturn(t, func() { tt.n.watchdog(context.Background()) })
		})
	}
}

func TestNotifier_ReportsUnusableSocket(t *testing.T) {
	tests := []struct {
		name, socket, want string
	}{
		{"vsock address", "vsock:2:1234", "unsupported NOTIFY_SOCKET"},
		{"relative path", "run/notify", "unsupported NOTIFY_SOCKET"},
		{"nobody listening", filepath.Join(t.TempDir(), "missing"), "notify systemd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNotifier(envMap(map[string]string{"NOTIFY_SOCKET": tt.socket}))
			err := n.notify("READY=1")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestNotifier_WatchdogPingsUntilCancelled(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	conn := listenNotify(t, path)
	n := newNotifier(envMap(map[string]string{
		"NOTIFY_SOCKET": path,
		"WATCHDOG_USEC": "2000", // pings every millisecond
		"WATCHDOG_PID":  strconv.Itoa(os.Getpid()),
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.watchdog(ctx)
	}()

	for i := range 2 {
		if got := recvNotify(t, conn); got != "WATCHDOG=1" {
			t.Errorf("datagram %d: got %q, want %q", i, got, "WATCHDOG=1")
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(notifyTestDeadline):
		t.Fatal("watchdog did not return after its context was cancelled")
	}
}

func TestNotifier_WatchdogForAnotherProcessDoesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	listenNotify(t, path)
	n := newNotifier(envMap(map[string]string{
		"NOTIFY_SOCKET": path,
		"WATCHDOG_USEC": "2000",
		"WATCHDOG_PID":  strconv.Itoa(os.Getpid() + 1),
	}))
	waitReturn(t, func() { n.watchdog(context.Background()) })
}

func TestWatchdogInterval(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	tests := []struct {
		name      string
		usec, pid string
		want      time.Duration
	}{
		{"unset", "", "", 0},
		{"zero", "0", "", 0},
		{"not a number", "30s", "", 0},
		{"negative", "-1", "", 0},
		{"half of 30s", "30000000", "", 15 * time.Second},
		{"for this process", "30000000", self, 15 * time.Second},
		{"for another process", "30000000", strconv.Itoa(os.Getpid() + 1), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"WATCHDOG_USEC": tt.usec, "WATCHDOG_PID": tt.pid}
			if got := watchdogInterval(envMap(env)); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// waitReturn fails the test unless f returns (it should at once).
func waitReturn(t *testing.T, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(notifyTestDeadline):
		t.Fatal("did not return; want an immediate return")
	}
}
