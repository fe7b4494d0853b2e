package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/cerbai/cerbai/integration/fake"
)

const redisPrefix = "cerbai-it:"

// redisServer is a real redis-server on a loopback port, without
// persistence.
type redisServer struct {
	t    *testing.T
	bin  string
	dir  string
	addr string
	cmd  *exec.Cmd
	done chan struct{}
}

// startRedis starts redis-server from PATH. Without it the test skips,
// unless CERBAI_REQUIRE_REDIS is set (as .ci/run does): then it fails.
func startRedis(t *testing.T) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CERBAI_REQUIRE_REDIS") != "" {
			t.Fatalf("redis-server not on PATH and CERBAI_REQUIRE_REDIS is set: %v", err)
		}
		t.Skip("redis-server not on PATH: install it (apt-get install redis-server) " +
			"to run the Redis tests; set CERBAI_REQUIRE_REDIS=1 to fail instead of skipping")
	}
	r := &redisServer{t: t, bin: bin, dir: t.TempDir()}
	for attempt := 0; ; attempt++ {
		r.addr = freeAddr(t)
		err := r.start()
		if err == nil {
			break
		}
		if attempt == 3 {
			t.Fatalf("start redis-server: %v", err)
		}
	}
	t.Cleanup(r.stop)
	return r
}

// start runs redis-server on r.addr and waits until it answers PING.
func (r *redisServer) start() error {
	_, port, _ := net.SplitHostPort(r.addr)
	r.cmd = exec.Command(r.bin, "--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir)
	var out lockedBuffer
	r.cmd.Stdout, r.cmd.Stderr = &out, &out
	if err := r.cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	r.done = done
	go func() { _ = r.cmd.Wait(); close(done) }()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if c, err := redis.Dial("tcp", r.addr, redis.DialConnectTimeout(time.Second)); err == nil {
			_, err = c.Do("PING")
			c.Close()
			if err == nil {
				return nil
			}
		}
		select {
		case <-done:
			return fmt.Errorf("redis-server exited:\n%s", out.String())
		case <-deadline.C:
			r.stop()
			return fmt.Errorf("redis-server did not answer PING within 10s:\n%s", out.String())
		case <-tick.C:
		}
	}
}

// stop kills redis-server abruptly, as a crash would, and waits for it.
func (r *redisServer) stop() {
	select {
	case <-r.done:
	default:
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}

// restart starts redis-server again on the same port (empty).
func (r *redisServer) restart() {
	r.t.Helper()
	if err := r.start(); err != nil {
		r.t.Fatalf("restart redis-server: %v", err)
	}
}

func (r *redisServer) url() string { return "redis://" + r.addr + "/0" }

// contents is every key and the serialized (DUMP) value of each.
func (r *redisServer) contents() map[string]string {
	r.t.Helper()
	c, err := redis.Dial("tcp", r.addr, redis.DialConnectTimeout(time.Second))
	if err != nil {
		r.t.Fatal(err)
	}
	defer c.Close()
	keys, err := redis.Strings(c.Do("KEYS", "*"))
	if err != nil {
		r.t.Fatal(err)
	}
	out := map[string]string{}
	for _, k := range keys {
		v, err := redis.String(c.Do("DUMP", k))
		if err != nil && err != redis.ErrNil {
			r.t.Fatal(err)
		}
		out[k] = v
	}
	return out
}

// tokenKeys are the keys under cerbai's prefix.
func (r *redisServer) tokenKeys() []string {
	var keys []string
	for k := range r.contents() {
		if strings.HasPrefix(k, redisPrefix) {
			keys = append(keys, k)
		}
	}
	return keys
}

// startFleet starts n cerbai processes sharing one Redis at the same time,
// so their start-up fetches race.
func startFleet(t *testing.T, f *fixture, r *redisServer, n int, extra ...string) []*proc {
	t.Helper()
	var fleet []*proc
	for range n {
		args := f.args(append([]string{"--redis-url", r.url(),
			"--redis-key-prefix", redisPrefix, "--log-level", "info"}, extra...)...)
		fleet = append(fleet, spawn(t, nil, append([]string{"--listen-addr", freeAddr(t)},
			args...)...))
	}
	for i, p := range fleet {
		if err := p.waitHealthy(20 * time.Second); err != nil {
			t.Fatalf("replica %d: %v\n%s", i, err, p.output())
		}
	}
	return fleet
}

// assertSealed checks that Redis holds cerbai's entries and that neither
// keys nor values contain a token or the client secret.
func assertSealed(t *testing.T, r *redisServer, tokens []string) {
	t.Helper()
	contents := r.contents()
	if len(r.tokenKeys()) == 0 {
		t.Errorf("no key with prefix %q in Redis (got %d keys): shared cache unused",
			redisPrefix, len(contents))
	}
	for k, v := range contents {
		for _, secret := range append(tokens, clientSecret) {
			if strings.Contains(k, secret) || strings.Contains(v, secret) {
				t.Errorf("Redis entry %q contains %q in clear", k, secret)
			}
		}
	}
}

func TestRedis_FleetColdBurstFetchesOneToken(t *testing.T) {
	r := startRedis(t)
	f := newFixture(t, fake.TokenServerOptions{Latency: 200 * time.Millisecond},
		fake.LLMOptions{})
	fleet := startFleet(t, f, r, 3)

	// 500 requests released at once, spread over the three replicas.
	const total = 500
	start := make(chan struct{})
	var wg sync.WaitGroup
	var failed atomic.Int32
	failures := make(chan string, total)
	for i := range total {
		wg.Go(func() {
			<-start
			resp, err := chatErr(context.Background(), fleet[i%3].base, chatBody(false, "hi"))
			if err != nil {
				failed.Add(1)
				failures <- err.Error()
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				failed.Add(1)
				failures <- fmt.Sprintf("status %d", resp.StatusCode)
			}
		})
	}
	close(start)
	wg.Wait()
	close(failures)

	if n := failed.Load(); n != 0 {
		t.Errorf("got %d failed requests of %d, want 0; first: %s", n, total, <-failures)
	}
	if n := f.ts.Count(); n != 1 {
		t.Errorf("got %d token requests from 3 replicas, want exactly 1", n)
	}
	assertSealed(t, r, f.ts.Tokens())
}

// loader sends requests round-robin over a fleet until stopped, counting
// successes and failures.
type loader struct {
	ok, failed atomic.Int64
	firstFail  atomic.Value // string
	stop       chan struct{}
	stopOnce   sync.Once
	wg         sync.WaitGroup
}

func startLoad(fleet []*proc, workers int) *loader {
	l := &loader{stop: make(chan struct{})}
	for w := range workers {
		l.wg.Go(func() {
			for i := w; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				l.one(fleet[i%len(fleet)].base)
			}
		})
	}
	return l
}

func (l *loader) one(base string) {
	resp, err := chatErr(context.Background(), base, chatBody(false, "load"))
	msg := ""
	switch {
	case err != nil:
		msg = err.Error()
	case resp.StatusCode != 200:
		msg = fmt.Sprintf("status %d", resp.StatusCode)
		resp.Body.Close()
	default:
		resp.Body.Close()
		l.ok.Add(1)
		return
	}
	l.failed.Add(1)
	l.firstFail.CompareAndSwap(nil, msg)
}

// waitOK waits until n more requests have succeeded.
func (l *loader) waitOK(t *testing.T, n int64, phase string) {
	t.Helper()
	target := l.ok.Load() + n
	eventually(t, 30*time.Second, phase+": requests succeed", func() bool {
		return l.ok.Load() >= target
	})
}

// halt stops the workers and waits for them; calling it again is a no-op.
func (l *loader) halt() {
	l.stopOnce.Do(func() { close(l.stop) })
	l.wg.Wait()
}

func TestRedis_OutageMidLoadFailsNothing(t *testing.T) {
	r := startRedis(t)
	// A 3s lifetime makes the fleet refresh every couple of seconds, so
	// refreshes happen before, during and after the outage.
	f := newFixture(t, fake.TokenServerOptions{ExpiresIn: 3}, fake.LLMOptions{})
	fleet := startFleet(t, f, r, 3)
	load := startLoad(fleet, 12)
	defer load.halt()

	// Redis up: the fleet refreshes once per lifetime, not once per
	// replica: fetches are a refresh period apart (about 2s), never
	// bunched as three independent replicas' would be.
	load.waitOK(t, 100, "before the outage")
	before := f.ts.Count()
	eventually(t, 20*time.Second, "two refreshes", func() bool {
		return f.ts.Count() >= before+2
	})
	reqs := f.ts.Requests()
	for i := 1; i < len(reqs); i++ {
		if gap := reqs[i].At.Sub(reqs[i-1].At); gap < time.Second {
			t.Errorf("token requests %d and %d only %v apart: replicas fetched separately",
				i-1, i, gap)
		}
	}

	// Redis down: replicas fetch for themselves and nothing fails.
	r.stop()
	during := f.ts.Count()
	load.waitOK(t, 100, "Redis down")
	eventually(t, 20*time.Second, "a token fetch while Redis is down", func() bool {
		return f.ts.Count() > during
	})
	load.waitOK(t, 100, "Redis down after a refresh")

	// Redis back (empty): the shared cache fills again on the next refresh.
	r.restart()
	eventually(t, 20*time.Second, "a sealed token stored in Redis again", func() bool {
		return len(r.tokenKeys()) > 0
	})
	load.waitOK(t, 100, "Redis back")
	load.halt()

	if n := load.failed.Load(); n != 0 {
		t.Errorf("got %d failed requests of %d, want 0; first: %v",
			n, n+load.ok.Load(), load.firstFail.Load())
	}
	assertSealed(t, r, f.ts.Tokens())
}
