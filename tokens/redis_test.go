package tokens

import (
	"crypto/tls"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// redisServer is a real redis-server on a free loopback port, killed at
// the end of the test. Without the binary the test is skipped, unless
// CERBAI_REQUIRE_REDIS is set (as in CI): then it fails.
type redisServer struct {
	t    *testing.T
	bin  string
	port int
	args []string
	cmd  *exec.Cmd
	exit chan struct{}
}

func startRedis(t *testing.T, extra ...string) *redisServer {
	t.Helper()
	return newRedis(t, extra)
}

func newRedis(t *testing.T, extra []string) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CERBAI_REQUIRE_REDIS") != "" {
			t.Fatalf("redis-server is not on PATH and CERBAI_REQUIRE_REDIS is set: %v", err)
		}
		t.Skip("redis-server is not on PATH: skipping the Redis tests " +
			"(install redis-server, or set CERBAI_REQUIRE_REDIS=1 to make this a failure)")
	}
	r := &redisServer{t: t, bin: bin, port: freePort(t), args: extra}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (r *redisServer) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

func (r *redisServer) url() string { return "redis://" + r.addr() }

// start runs the server (again, on the same port) and waits until it
// answers PING.
func (r *redisServer) start() {
	r.t.Helper()
	args := []string{"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--protected-mode", "yes"}
	r.cmd = exec.Command(r.bin, append(args, r.args...)...)
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	r.exit = make(chan struct{})
	go func(cmd *exec.Cmd, exit chan struct{}) {
		_ = cmd.Wait()
		close(exit)
	}(r.cmd, r.exit)
	r.waitPing()
}

func (r *redisServer) waitPing() {
	r.t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := r.dial()
		if err == nil {
			_, err = c.Do("PING")
			c.Close()
			if err == nil || redisAuthError(err) {
				return
			}
		}
		select {
		case <-tick.C:
		case <-r.exit:
			r.t.Fatalf("redis-server on port %d exited at start", r.port)
		case <-deadline.C:
			r.t.Fatalf("redis-server on port %d does not answer PING: %v", r.port, err)
		}
	}
}

func redisAuthError(err error) bool { return strings.HasPrefix(err.Error(), "NOAUTH ") }

func (r *redisServer) dial(opts ...redis.DialOption) (redis.Conn, error) {
	opts = append(opts, redis.DialConnectTimeout(time.Second))
	return redis.Dial("tcp", r.addr(), opts...)
}

// conn is a direct connection for a test to look into the server.
func (r *redisServer) conn(opts ...redis.DialOption) redis.Conn {
	r.t.Helper()
	c, err := r.dial(opts...)
	if err != nil {
		r.t.Fatalf("dial redis: %v", err)
	}
	r.t.Cleanup(func() { c.Close() })
	return c
}

func (r *redisServer) stop() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	<-r.exit
	r.cmd = nil
}

// tlsFront is a TLS listener on loopback that relays each connection to
// a plain redis-server, standing in for a Redis that speaks TLS (this
// machine's redis-server may be built without TLS).
func tlsFront(t *testing.T, p *testPKI, backend string) string {
	t.Helper()
	certPEM, keyPEM := p.issue(t, "redis", true)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0",
		&tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go relay(c, backend)
		}
	}()
	return l.Addr().String()
}

func relay(c net.Conn, backend string) {
	defer c.Close()
	b, err := net.Dial("tcp", backend)
	if err != nil {
		return
	}
	defer b.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(b, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, b); done <- struct{}{} }()
	<-done
}

// waitFor polls cond until it holds, failing the test after 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
