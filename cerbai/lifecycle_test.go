package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cerbai/cerbai/integration/fake"
)

// lifecycleEnv starts a token server and a fake LLM and returns a valid
// environment for them.
func lifecycleEnv(t *testing.T) map[string]string {
	t.Helper()
	pki := testPKI(t)
	ts := newTokenServer(t, pki)
	llm, err := fake.NewLLM(fake.LLMOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(llm.Close)
	return baseEnv(pki, ts.URL, llm.URL)
}

// fetch GETs url, with key as a proxy key when it is not empty.
func fetch(t *testing.T, url, key string) (int, string) {
	t.Helper()
	return getStatus(t, http.DefaultClient, http.MethodGet, url, key)
}

// chatStatus sends a small chat completion and returns its status.
func chatStatus(t *testing.T, base, key string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions",
		strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitStatus polls url until it answers want, with a deadline.
func waitStatus(t *testing.T, url string, want int) {
	t.Helper()
	deadline := time.NewTimer(guardTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
		}
		select {
		case <-deadline.C:
			t.Fatalf("%s did not answer %d within %v", url, want, guardTimeout)
		case <-tick.C:
		}
	}
}

// logAttr finds attr of the first log line with msg.
func logAttr(logs, msg, attr string) string {
	for line := range strings.Lines(logs) {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg {
			s, _ := rec[attr].(string)
			return s
		}
	}
	return ""
}

func TestRun_AddressTakenExitsOne(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	// A token fetch started before the listen failed may still log after
	// run returns: the buffer must be safe for that.
	stdout, stderr := newLogBuffer(), newLogBuffer()
	code := run(context.Background(), []string{"--listen-addr", taken.Addr().String()},
		lifecycleEnv(t), stdout, stderr)
	if code != exitFail {
		t.Errorf("exit status %d, want %d", code, exitFail)
	}
	if !strings.Contains(stdout.String(), `"msg":"cannot listen"`) {
		t.Errorf("no 'cannot listen' error in the log:\n%s", stdout.String())
	}
}

func TestDrain_NotReadyAtOnceButServingThroughTheDelay(t *testing.T) {
	// The delay only has to outlast one request made right after the
	// flip; it is long so that a slow machine cannot break the test.
	p := startProxy(t, []string{"--listen-addr", "127.0.0.1:0", "--shutdown-delay", "5s"},
		lifecycleEnv(t))
	base := "http://" + p.addr
	waitStatus(t, base+"/readyz", http.StatusOK)

	p.cancel() // what SIGTERM does
	waitStatus(t, base+"/readyz", http.StatusServiceUnavailable)
	code, body := fetch(t, base+"/readyz", "")
	if !strings.Contains(body, `"draining"`) {
		t.Errorf("readyz while draining: %d %s, want reason draining", code, body)
	}
	if code := chatStatus(t, base, ""); code != http.StatusOK {
		t.Errorf("request during the shutdown delay: got %d, want 200", code)
	}
	p.stop(t) // run returns 0 once the delay and the drain are over
	if _, err := net.Dial("tcp", p.addr); err == nil {
		t.Error("the listener still accepts after the drain")
	}
}

func TestHealthcheck_Subcommand(t *testing.T) {
	p := startProxy(t, []string{"--listen-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"},
		lifecycleEnv(t))
	admin := logAttr(p.stdout.String(), "starting proxy server", "admin_addr")
	if admin == "" {
		t.Fatalf("no admin_addr in the start-up line:\n%s", p.stdout)
	}
	_, port, _ := net.SplitHostPort(p.addr)
	closedAddr := closedAddr(t)

	tests := []struct {
		name    string
		args    []string
		environ map[string]string
		want    int
	}{
		{"admin listener from a flag", []string{"--admin-addr", admin}, nil, exitOK},
		{"admin listener from the environment", nil,
			map[string]string{"CERBAI_ADMIN_ADDR": admin}, exitOK},
		{"proxy listener, empty host", []string{"--listen-addr", ":" + port}, nil, exitOK},
		{"nothing listening", []string{"--listen-addr", closedAddr}, nil, exitFail},
		{"the rest of the config is not checked", []string{"--listen-addr", p.addr,
			"--log-level", "loud"}, nil, exitOK},
	}
	for _, tt := range tests {
		var stderr bytes.Buffer
		if got := healthcheck(tt.args, tt.environ, &stderr); got != tt.want {
			t.Errorf("%s: exit %d, want %d (stderr %q)", tt.name, got, tt.want, stderr.String())
		}
	}
}

func TestMetrics_ProxyListenerNeedsAKeyAdminDoesNot(t *testing.T) {
	environ := lifecycleEnv(t)
	environ["CERBAI_PROXY_TOKEN"] = "team-a=sk-metrics-a,team-b=sk-metrics-b"
	p := startProxy(t, []string{"--listen-addr", "127.0.0.1:0"}, environ)
	base := "http://" + p.addr
	waitStatus(t, base+"/readyz", http.StatusOK)
	if code := chatStatus(t, base, "sk-metrics-a"); code != http.StatusOK {
		t.Fatalf("chat completion: got %d, want 200", code)
	}

	if code, _ := fetch(t, base+"/metrics", ""); code != http.StatusUnauthorized {
		t.Errorf("/metrics without a key: got %d, want 401", code)
	}
	code, body := fetch(t, base+"/metrics", "sk-metrics-b")
	if code != http.StatusOK {
		t.Fatalf("/metrics with a key: got %d, want 200", code)
	}
	for _, want := range []string{
		`cerbai_requests_total{method="POST",class="2xx"} 1`,
		`cerbai_token_fetches_total{result="ok"} 1`,
		`cerbai_token_cache_lookups_total{layer="local",result="hit"} 1`,
		`cerbai_proxy_key_requests_total{key="team-a"} 1`,
		`cerbai_proxy_key_requests_total{key="team-b"} 0`,
		`cerbai_redis_up 0`,
		`cerbai_build_info{version="dev"`,
		`cerbai_request_duration_seconds_count 1`,
		`cerbai_upstream_connections_opened_total 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, secret := range []string{"sk-metrics-a", "sk-metrics-b", "test-client-secret"} {
		if strings.Contains(body, secret) {
			t.Errorf("/metrics holds the secret %q", secret)
		}
	}

	// With an admin listener, metrics move there and need no key.
	pa := startProxy(t, []string{"--listen-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"},
		environ)
	admin := logAttr(pa.stdout.String(), "starting proxy server", "admin_addr")
	code, body = fetch(t, "http://"+admin+"/metrics", "")
	if code != http.StatusOK || !strings.Contains(body, "cerbai_build_info") {
		t.Errorf("admin /metrics without a key: got %d, want 200 with metrics", code)
	}
	if code, _ := fetch(t, "http://"+pa.addr+"/metrics", "sk-metrics-a"); code != 404 {
		t.Errorf("proxy /metrics with an admin listener: got %d, want 404", code)
	}
	if code, body := fetch(t, "http://"+admin+"/healthz", ""); code != 200 || body != "ok" {
		t.Errorf("admin /healthz: got %d %q, want 200 ok", code, body)
	}
}

// TestServer_SlowHeadersAndIdleConnectionsAreClosed watches the two time
// limits act, shortened so that the test does not wait for the real ones.
func TestServer_SlowHeadersAndIdleConnectionsAreClosed(t *testing.T) {
	oldHeader, oldIdle := readHeaderTimeout, idleTimeout
	readHeaderTimeout, idleTimeout = 200*time.Millisecond, 300*time.Millisecond
	t.Cleanup(func() { readHeaderTimeout, idleTimeout = oldHeader, oldIdle })
	p := startProxy(t, []string{"--listen-addr", "127.0.0.1:0"}, lifecycleEnv(t))

	// closedWithin reads until the server closes conn; it fails the test
	// if that takes longer than the guard.
	closedWithin := func(conn net.Conn, what string) {
		t.Helper()
		_ = conn.SetReadDeadline(time.Now().Add(guardTimeout))
		buf := make([]byte, 4096)
		for {
			if _, err := conn.Read(buf); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Errorf("%s: the connection stayed open for %v", what, guardTimeout)
				}
				return
			}
		}
	}

	slow, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := io.WriteString(slow, "GET /healthz HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	closedWithin(slow, "a header block never finished")

	idle, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if _, err := io.WriteString(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(idle), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz on the keep-alive connection: %v %v", resp, err)
	}
	resp.Body.Close()
	closedWithin(idle, "an idle keep-alive connection")
}
