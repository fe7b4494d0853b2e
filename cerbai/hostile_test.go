package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cerbai/cerbai/integration/fake"
)

// This file runs the real proxy in-process (run, as main calls it) against
// an mTLS token server and a recording upstream, and speaks raw HTTP/1.1
// to it, so the bytes on the wire are exactly the hostile ones. The
// harness (logBuffer, proxyRun, recordingUpstream, raw exchanges) is shared
// with hostile_upstream_test.go and secrets_test.go.

// guardTimeout bounds every wait for something that must happen. It only
// turns a hang into a failure; no assertion depends on how fast it happens.
const guardTimeout = 10 * time.Second

// logBuffer collects what run writes. It is safe for concurrent use (the
// proxy logs from many goroutines while the test reads) and wakes waiters
// on every write. slog's JSON handler writes each record with one Write.
type logBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every Write
}

func newLogBuffer() *logBuffer { return &logBuffer{changed: make(chan struct{})} }

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	close(b.changed)
	b.changed = make(chan struct{})
	return n, err
}

// snapshot returns the content and a channel closed on the next write.
func (b *logBuffer) snapshot() (string, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String(), b.changed
}

func (b *logBuffer) String() string { s, _ := b.snapshot(); return s }

// records parses every line as a JSON object; a line that is not one fails
// the test (every log line must be structured).
func (b *logBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(b.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not a JSON object: %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// count returns how many records have the message msg.
func (b *logBuffer) count(t *testing.T, msg string) int {
	t.Helper()
	n := 0
	for _, r := range b.records(t) {
		if r["msg"] == msg {
			n++
		}
	}
	return n
}

// waitFor waits until cond holds for the content, or fails the test.
func (b *logBuffer) waitFor(t *testing.T, what string, cond func(string) bool) string {
	t.Helper()
	deadline := time.NewTimer(guardTimeout)
	defer deadline.Stop()
	for {
		s, changed := b.snapshot()
		if cond(s) {
			return s
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("waited %v for %s; log:\n%s", guardTimeout, what, s)
		}
	}
}

// waitCount waits until exactly n records with message msg exist, or fails.
func (b *logBuffer) waitCount(t *testing.T, msg string, n int) {
	t.Helper()
	b.waitFor(t, fmt.Sprintf("%d %q lines", n, msg), func(s string) bool {
		return strings.Count(s, `"msg":"`+msg+`"`) >= n
	})
	if got := b.count(t, msg); got != n {
		t.Fatalf("got %d %q lines, want %d", got, msg, n)
	}
}

// proxyRun is one in-process run of cerbai.
type proxyRun struct {
	addr           string // the proxy listener, from the "starting proxy server" line
	stdout, stderr *logBuffer
	cancel         context.CancelFunc
	done           chan int
	stopped        bool
}

// startProxy runs cerbai with args and environ until the test ends (or
// stop is called) and waits until it listens. --listen-addr should be
// 127.0.0.1:0.
func startProxy(t *testing.T, args []string, environ map[string]string) *proxyRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &proxyRun{stdout: newLogBuffer(), stderr: newLogBuffer(), cancel: cancel,
		done: make(chan int, 1)}
	go func() { p.done <- run(ctx, args, environ, p.stdout, p.stderr) }()
	t.Cleanup(func() { p.stop(t) })

	deadline := time.NewTimer(guardTimeout)
	defer deadline.Stop()
	for {
		s, changed := p.stdout.snapshot()
		if addr, ok := listenAddr(s); ok {
			p.addr = addr
			return p
		}
		select {
		case code := <-p.done:
			p.stopped = true
			t.Fatalf("run returned %d before listening\nstderr:\n%s\nstdout:\n%s",
				code, p.stderr, s)
		case <-changed:
		case <-deadline.C:
			t.Fatalf("cerbai did not listen within %v; stdout:\n%s", guardTimeout, s)
		}
	}
}

// listenAddr finds the "addr" of the "starting proxy server" line.
func listenAddr(logs string) (string, bool) {
	for line := range strings.Lines(logs) {
		var rec struct{ Msg, Addr string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "starting proxy server" {
			return rec.Addr, rec.Addr != ""
		}
	}
	return "", false
}

// stop cancels the run and checks that it returns 0 in time.
func (p *proxyRun) stop(t *testing.T) {
	t.Helper()
	if p.stopped {
		return
	}
	p.stopped = true
	p.cancel()
	select {
	case code := <-p.done:
		if code != exitOK {
			t.Errorf("run returned %d after cancel, want %d; stderr:\n%s", code, exitOK,
				p.stderr)
		}
	case <-time.After(guardTimeout):
		t.Errorf("run did not return within %v of cancel", guardTimeout)
	}
}

// upstreamRequest is one request the recording upstream received.
type upstreamRequest struct {
	Method, URI, Host string
	LocalAddr         string // the address the request arrived on
	Header            http.Header
	Body              string
	ContentLength     int64
	TransferEncoding  []string
	BodyErr           error
}

// recordingUpstream is a fake LLM that records everything it receives.
// GET/POST /llm/v1/stream sends one SSE event and then waits for the
// client to go away; /llm/v1/hold signals entered and waits likewise;
// anything else gets 200 {"ok":true} with a Set-Cookie.
type recordingUpstream struct {
	srv       *httptest.Server
	entered   chan string // URI of each /hold or /stream request, on entry
	cancelled chan string // URI of each request whose context ended in the handler

	mu   sync.Mutex // guards seen
	seen []upstreamRequest
}

func newRecordingUpstream(t *testing.T) *recordingUpstream {
	t.Helper()
	u := &recordingUpstream{entered: make(chan string, 16), cancelled: make(chan string, 16)}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *recordingUpstream) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	u.mu.Lock()
	u.seen = append(u.seen, upstreamRequest{
		Method: r.Method, URI: r.RequestURI, Host: r.Host, Header: r.Header.Clone(),
		LocalAddr: r.Context().Value(http.LocalAddrContextKey).(net.Addr).String(),
		Body:      string(body), ContentLength: r.ContentLength,
		TransferEncoding: r.TransferEncoding, BodyErr: err,
	})
	u.mu.Unlock()

	switch r.URL.Path {
	case "/llm/v1/stream":
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: one\n\n")
		_ = http.NewResponseController(w).Flush()
		u.entered <- r.RequestURI
		<-r.Context().Done()
		u.cancelled <- r.RequestURI
	case "/llm/v1/hold":
		u.entered <- r.RequestURI
		<-r.Context().Done()
		u.cancelled <- r.RequestURI
	default:
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Set-Cookie", "upstream=1; HttpOnly")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}
}

// requests returns a copy of what was received so far.
func (u *recordingUpstream) requests() []upstreamRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]upstreamRequest(nil), u.seen...)
}

func (u *recordingUpstream) host() string { return u.srv.Listener.Addr().String() }

// hostileKey is the proxy key of the hostile runs.
const hostileKey = "sk-Hostile-7wQz"

// authz is the header line that presents hostileKey.
const authz = "Authorization: Bearer " + hostileKey + "\r\n"

// baseEnv is a valid configuration: the token server over mTLS with pki's
// client pair, the LLM at llmURL.
func baseEnv(pki *fake.PKI, tokenURL, llmURL string) map[string]string {
	return map[string]string{
		"CERBAI_LLM_URL":        llmURL,
		"CERBAI_TOKEN_ENDPOINT": tokenURL,
		"CERBAI_CLIENT_ID":      "cerbai-test",
		"CERBAI_CLIENT_SECRET":  "test-client-secret",
		"CERBAI_TLS_CERT_FILE":  pki.ClientCertFile,
		"CERBAI_TLS_KEY_FILE":   pki.ClientKeyFile,
		"CERBAI_TLS_CA_FILE":    pki.CAFile,
	}
}

// newTokenServer starts the fake mTLS token server for the test.
func newTokenServer(t *testing.T, pki *fake.PKI) *fake.TokenServer {
	t.Helper()
	ts, err := fake.NewTokenServer(pki, fake.TokenServerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ts.Close)
	return ts
}

// dialFrom connects to addr from the loopback address from ("" is the
// default, 127.0.0.1). The connection is closed when the test ends.
func dialFrom(t *testing.T, addr, from string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: guardTimeout}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %q: %v", addr, from, err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(guardTimeout)); err != nil {
		t.Fatal(err)
	}
	return c
}

// rawAnswer is what came back on a raw connection.
type rawAnswer struct {
	resp *http.Response // nil when the connection closed without an answer
	body []byte
	err  error         // reading the answer or its body
	br   *bufio.Reader // what follows the answer
}

// rawSend writes raw and reads one answer to a request of method.
func rawSend(t *testing.T, c net.Conn, raw, method string) rawAnswer {
	t.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		// The server may close before reading everything (a 431, say);
		// the answer is still there to read.
		t.Logf("write: %v", err)
	}
	return readAnswer(c, method)
}

// readAnswer reads one answer to a request of method from c.
func readAnswer(c net.Conn, method string) rawAnswer {
	a := rawAnswer{br: bufio.NewReader(c)}
	a.resp, a.err = http.ReadResponse(a.br, &http.Request{Method: method})
	if a.err != nil {
		a.resp = nil
		return a
	}
	a.body, a.err = io.ReadAll(a.resp.Body)
	return a
}

// closedAfter reports whether the server closed the connection after the
// answer with nothing more on it; it fails the test if more bytes came.
func closedAfter(t *testing.T, a rawAnswer) bool {
	t.Helper()
	rest, err := io.ReadAll(a.br)
	if len(rest) > 0 {
		t.Errorf("got %q after the answer, want nothing", rest)
	}
	var ne net.Error
	return err == nil || !(errors.As(err, &ne) && ne.Timeout())
}

// errorBody is cerbai's OpenAI-shaped error.
type errorBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    string  `json:"code"`
	} `json:"error"`
}

// checkCerbaiError checks that an answer is cerbai's own JSON error.
func checkCerbaiError(t *testing.T, resp *http.Response, body []byte, status int,
	code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("got status %d, want %d (body %q)", resp.StatusCode, status, body)
	}
	if got := resp.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("got Content-Type %q, want application/json", got)
	}
	if got := resp.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("got Cache-Control %q, want no-store", got)
	}
	var e errorBody
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("body %q is not JSON: %v", body, err)
	}
	if e.Error.Code != code || e.Error.Type != "cerbai_error" || e.Error.Param != nil ||
		e.Error.Message == "" {
		t.Errorf("got error %+v, want code %q, type cerbai_error, param null, a message",
			e.Error, code)
	}
}

// getStatus sends one request with Go's client and returns its status and
// body; it fails the test if the request cannot be made.
func getStatus(t *testing.T, c *http.Client, method, url, key string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp.StatusCode, string(b)
}

// waitGoroutines waits until the goroutine count is at most want.
func waitGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(guardTimeout)
	for {
		n := runtime.NumGoroutine()
		if n <= want {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("got %d goroutines after the run, want at most %d:\n%s", n, want, buf)
		}
		runtime.Gosched()
	}
}

// Raw request builders. Each header argument is a whole line with its
// CRLF.
func get(target string, headers ...string) string {
	return "GET " + target + " HTTP/1.1\r\nHost: cerbai.test\r\n" +
		strings.Join(headers, "") + "\r\n"
}

func post(target, body string, headers ...string) string {
	return "POST " + target + " HTTP/1.1\r\nHost: cerbai.test\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n" +
		strings.Join(headers, "") + "\r\n" + body
}

func chunked(target, chunks string, headers ...string) string {
	return "POST " + target + " HTTP/1.1\r\nHost: cerbai.test\r\n" +
		"Transfer-Encoding: chunked\r\n" + strings.Join(headers, "") + "\r\n" + chunks
}

// hostileEnv is what a hostile case may use.
type hostileEnv struct {
	run      *proxyRun
	upstream *recordingUpstream
	tokens   *fake.TokenServer
}

// hostileCase is one hostile request and the one answer it must get.
type hostileCase struct {
	name   string
	raw    string // the bytes sent; for a case with script, unused
	method string // of the request, for reading the answer; "" → from raw
	from   string // local loopback address to connect from; "" → 127.0.0.1

	// status is the answer's status. code is cerbai's JSON error code; ""
	// for an answer that is not cerbai's (a forwarded one, or Go's
	// server's plain text).
	status int
	code   string
	// closed: the server must close the connection after the answer.
	closed bool
	// vanish: the client closes the connection right after writing raw
	// and reads nothing.
	vanish bool
	// handled is how many requests reach cerbai's handler (each logs
	// one "request completed" line when done, so the test knows the
	// proxy is quiet before the next case).
	handled int
	// upstream is every request the upstream must receive, in order:
	// "METHOD URI body".
	upstream []string
	// check makes further assertions about the answer and what the
	// upstream received.
	check func(t *testing.T, a rawAnswer, got []upstreamRequest)
	// script replaces the single exchange for cases that need several
	// connections or a conversation.
	script func(t *testing.T, env *hostileEnv)
}

// TestHostile_RawRequests sends malformed and hostile requests over raw
// sockets to a running cerbai, one at a time, and checks each answer and
// exactly what reached the upstream. Afterwards the proxy still serves,
// and once stopped, no goroutine is left behind.
func TestHostile_RawRequests(t *testing.T) {
	// Goroutines of earlier tests may still be winding down; they only
	// lower the count.
	baseline := runtime.NumGoroutine()
	env, client := startHostile(t)
	for _, c := range hostileCases() {
		t.Run(c.name, func(t *testing.T) { runHostileCase(t, env, c) })
	}

	// The proxy still serves a normal request.
	status, body := getStatus(t, client, "GET", "http://"+env.run.addr+"/v1/models",
		hostileKey)
	if status != http.StatusOK || body != `{"ok":true}` {
		t.Errorf("after the hostile requests: got %d %q, want 200 {\"ok\":true}", status, body)
	}
	client.CloseIdleConnections()

	// Everything the test started is stopped (closing twice in cleanups is
	// harmless). Tolerance 0: nothing the run or the fakes start may
	// outlive them; idle keep-alive connections are closed with their
	// servers.
	env.run.stop(t)
	env.upstream.srv.Close()
	env.tokens.Close()
	waitGoroutines(t, baseline)
}

// startHostile starts the token server, the recording upstream and cerbai
// with keys, an allow list, a small body limit and a concurrency cap.
func startHostile(t *testing.T) (*hostileEnv, *http.Client) {
	t.Helper()
	pki := testPKI(t)
	ts := newTokenServer(t, pki)
	up := newRecordingUpstream(t)
	run := startProxy(t, []string{
		"--listen-addr", "127.0.0.1:0", "--log-level", "debug",
		"--proxy-token", "alice=" + hostileKey, "--allow-path", "/v1/",
		"--max-request-body", "4KiB", "--max-concurrent", "2",
		"--trust-forwarded", "127.0.0.2/32",
	}, baseEnv(pki, ts.URL, up.srv.URL+"/llm"))
	// The first token, so no case depends on the warm-up's timing.
	run.stdout.waitFor(t, "the first token", func(s string) bool {
		return strings.Contains(s, `"msg":"token refreshed"`)
	})
	client := &http.Client{Timeout: guardTimeout, Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	return &hostileEnv{run: run, upstream: up, tokens: ts}, client
}

func runHostileCase(t *testing.T, env *hostileEnv, c hostileCase) {
	t.Helper()
	before := len(env.upstream.requests())
	completed := env.run.stdout.count(t, "request completed")

	if c.script != nil {
		c.script(t, env)
	} else {
		conn := dialFrom(t, env.run.addr, c.from)
		if c.vanish {
			_, _ = io.WriteString(conn, c.raw)
			conn.Close()
		} else {
			method := c.method
			if method == "" {
				method, _, _ = strings.Cut(c.raw, " ")
			}
			a := rawSend(t, conn, c.raw, method)
			checkAnswer(t, c, a)
			conn.Close()
			defer func() {
				if c.check != nil {
					c.check(t, a, env.upstream.requests()[before:])
				}
			}()
		}
	}

	// Quiet before the next case: every handled request has finished.
	env.run.stdout.waitCount(t, "request completed", completed+c.handled)
	var got []string
	for _, r := range env.upstream.requests()[before:] {
		got = append(got, r.Method+" "+r.URI+" "+r.Body)
	}
	if diff := cmp.Diff(c.upstream, got); diff != "" {
		t.Errorf("upstream requests (-want +got):\n%s", diff)
	}
}

// checkAnswer checks the status, the body shape and the connection state.
func checkAnswer(t *testing.T, c hostileCase, a rawAnswer) {
	t.Helper()
	switch {
	case a.resp == nil:
		t.Fatalf("got no answer (%v), want status %d", a.err, c.status)
	case c.code != "":
		checkCerbaiError(t, a.resp, a.body, c.status, c.code)
	case a.resp.StatusCode != c.status:
		t.Errorf("got status %d, want %d (body %q)", a.resp.StatusCode, c.status, a.body)
	}
	if c.code == "" && c.status >= 400 && a.resp.Header.Get("Content-Type") ==
		"application/json" {
		t.Errorf("got a JSON answer %q, want Go's server's own", a.body)
	}
	if c.closed && !closedAfter(t, a) {
		t.Error("the connection stayed open after the answer, want it closed")
	}
}

// forwarded lists one upstream request as runHostileCase compares it.
func forwarded(method, uri, body string) []string {
	return []string{method + " " + uri + " " + body}
}

// hostileCases is the table. cerbai's order of checks: malformed target
// 400, method 405, proxy key 401, --allow-path 404, --max-concurrent 503,
// then forwarding (413 for a body over the limit).
func hostileCases() []hostileCase {
	models := forwarded("GET", "/llm/v1/models", "")
	return []hostileCase{
		// Absolute form and Host: only the configured upstream, ever.
		{name: "absolute-form target goes to the configured upstream",
			raw:    get("http://evil.example/v1/models?x=1", authz),
			status: 200, handled: 1, upstream: forwarded("GET", "/llm/v1/models?x=1", ""),
			check: upstreamHostIsOwn},
		{name: "absolute-form https target with userinfo",
			raw:    get("https://user:pw@169.254.169.254:8443/v1/models", authz),
			status: 200, handled: 1, upstream: models, check: upstreamHostIsOwn},
		{name: "absolute-form without a path is / and misses the allow list",
			raw: get("http://evil.example", authz), status: 404, code: "not_found", handled: 1},
		{name: "Host header does not route",
			raw:    "GET /v1/models HTTP/1.1\r\nHost: 169.254.169.254\r\n" + authz + "\r\n",
			status: 200, handled: 1, upstream: models, check: upstreamHostIsOwn},
		{name: "HTTP/1.1 without Host is refused by Go's server",
			raw: "GET /v1/models HTTP/1.1\r\n" + authz + "\r\n", status: 400, closed: true},
		{name: "HTTP/1.0 without Host goes to the configured upstream",
			raw:    "GET /v1/models HTTP/1.0\r\n" + authz + "\r\n",
			status: 200, handled: 1, upstream: models, check: upstreamHostIsOwn},

		// Methods.
		{name: "CONNECT is 405", raw: "CONNECT evil.example:443 HTTP/1.1\r\n" +
			"Host: evil.example:443\r\n" + authz + "\r\n",
			status: 405, code: "method_not_allowed", handled: 1, check: allowHeader},
		{name: "TRACE is 405", raw: "TRACE /v1/models HTTP/1.1\r\nHost: x\r\n" + authz + "\r\n",
			status: 405, code: "method_not_allowed", handled: 1, check: allowHeader},
		{name: "unknown method is 405",
			raw:    "BREW /v1/models HTTP/1.1\r\nHost: x\r\n" + authz + "\r\n",
			status: 405, code: "method_not_allowed", handled: 1},
		{name: "PROPFIND is 405",
			raw:    "PROPFIND /v1/models HTTP/1.1\r\nHost: x\r\n" + authz + "\r\n",
			status: 405, code: "method_not_allowed", handled: 1},
		{name: "OPTIONS * is answered by Go's server, not forwarded",
			raw: "OPTIONS * HTTP/1.1\r\nHost: x\r\n" + authz + "\r\n", status: 200},
		{name: "GET * is a malformed target",
			raw: get("*", authz), status: 400, code: "invalid_request", handled: 1},

		// Dot segments and control characters, before any router.
		{name: "raw .. segment", raw: get("/v1/../admin", authz),
			status: 400, code: "invalid_request", handled: 1},
		{name: "raw . segment", raw: get("/v1/./models", authz),
			status: 400, code: "invalid_request", handled: 1},
		{name: "trailing .. segment", raw: get("/v1/models/..", authz),
			status: 400, code: "invalid_request", handled: 1},
		{name: "%2e%2e segment", raw: get("/v1/%2e%2e/admin", authz),
			status: 400, code: "invalid_request", handled: 1},
		{name: "%2E%2e mixed case segment", raw: get("/v1/%2E%2e/admin", authz),
			status: 400, code: "invalid_request", handled: 1},
		{name: "%2e segment", raw: get("/v1/%2e/models", authz),
			status: 400, code: "invalid_request", handled: 1},
		{name: ".%2E segment", raw: get("/v1/.%2E/admin", authz),
			status: 400, code: "invalid_request", handled: 1},
		{name: ".. before an encoded slash", raw: get("/v1/..%2fadmin", authz),
			status: 400, code: "invalid_request", handled: 1},
		{name: ".. before a backslash", raw: get(`/v1/..\admin`, authz),
			status: 400, code: "invalid_request", handled: 1},
		{name: ".. with ;params", raw: get("/v1/..;x=1/admin", authz),
			status: 400, code: "invalid_request", handled: 1},
		{name: "dot segment in an absolute-form target",
			raw:    get("http://evil.example/v1/../admin", authz),
			status: 400, code: "invalid_request", handled: 1},
		{name: "dots that are not a segment are forwarded as received",
			raw:    get("/v1/models/...x/.hidden", authz),
			status: 200, handled: 1, upstream: forwarded("GET", "/llm/v1/models/...x/.hidden", "")},
		{name: "encoded NUL", raw: get("/v1/models%00", authz),
			status: 400, code: "invalid_request", handled: 1},
		{name: "encoded CRLF", raw: get("/v1/models%0d%0aX-Injected:%201", authz),
			status: 400, code: "invalid_request", handled: 1},
		{name: "encoded DEL", raw: get("/v1/models%7F", authz),
			status: 400, code: "invalid_request", handled: 1},
		{name: "malformed escape is refused by Go's server",
			raw: get("/v1/models%zz", authz), status: 400, closed: true},
		{name: "raw NUL in the target is refused by Go's server",
			raw: get("/v1/a\x00b", authz), status: 400, closed: true},
		{name: "raw control character in the target is refused by Go's server",
			raw: get("/v1/a\x01b", authz), status: 400, closed: true},
		{name: "raw DEL in the target is refused by Go's server",
			raw: get("/v1/a\x7fb", authz), status: 400, closed: true},
		{name: "encoded control character in the query is forwarded encoded",
			raw:    get("/v1/models?q=a%0Ab", authz),
			status: 200, handled: 1, upstream: forwarded("GET", "/llm/v1/models?q=a%0Ab", "")},
		{name: "encoded characters in the path are forwarded as received",
			raw:    get("/v1/files/a%2Fb%20c", authz),
			status: 200, handled: 1, upstream: forwarded("GET", "/llm/v1/files/a%2Fb%20c", "")},

		// Proxy keys, in each header form.
		{name: "missing key", raw: get("/v1/models"),
			status: 401, code: "unauthorized", handled: 1, check: wwwAuthenticate},
		{name: "wrong key in Authorization",
			raw:    get("/v1/models", "Authorization: Bearer sk-Hostile-7wQ\r\n"),
			status: 401, code: "unauthorized", handled: 1, check: wwwAuthenticate},
		{name: "wrong key in api-key", raw: get("/v1/models", "api-key: sk-nope\r\n"),
			status: 401, code: "unauthorized", handled: 1},
		{name: "wrong key in x-api-key", raw: get("/v1/models", "x-api-key: sk-nope\r\n"),
			status: 401, code: "unauthorized", handled: 1},
		{name: "right key with the Basic scheme",
			raw:    get("/v1/models", "Authorization: Basic "+hostileKey+"\r\n"),
			status: 401, code: "unauthorized", handled: 1},
		{name: "empty bearer", raw: get("/v1/models", "Authorization: Bearer \r\n"),
			status: 401, code: "unauthorized", handled: 1},
		{name: "right key in api-key, never forwarded",
			raw:    get("/v1/models", "api-key: "+hostileKey+"\r\n"),
			status: 200, handled: 1, upstream: models, check: onlyTheToken},
		{name: "right key in x-api-key, never forwarded",
			raw:    get("/v1/models", "X-Api-Key: "+hostileKey+"\r\n"),
			status: 200, handled: 1, upstream: models, check: onlyTheToken},
		{name: "bearer scheme in any case, key never forwarded",
			raw:    get("/v1/models", "authorization: bEaReR "+hostileKey+"\r\n", "Api-Key: own\r\n"),
			status: 200, handled: 1, upstream: models, check: onlyTheToken},

		// The order of checks.
		{name: "malformed target before method", raw: "BREW /v1/../x HTTP/1.1\r\nHost: x\r\n\r\n",
			status: 400, code: "invalid_request", handled: 1},
		{name: "method before key", raw: "TRACE /v1/models HTTP/1.1\r\nHost: x\r\n\r\n",
			status: 405, code: "method_not_allowed", handled: 1},
		{name: "key before allow list", raw: get("/admin"),
			status: 401, code: "unauthorized", handled: 1},

		// --allow-path.
		{name: "allow-path miss", raw: get("/admin/users", authz),
			status: 404, code: "not_found", handled: 1},
		{name: "allow-path prefix without its slash", raw: get("/v1", authz),
			status: 404, code: "not_found", handled: 1},
		{name: "allow-path lookalike", raw: get("/v10/models", authz),
			status: 404, code: "not_found", handled: 1},
		{name: "health is public and never forwarded", raw: get("/healthz"), status: 200},
		{name: "readiness is public and never forwarded", raw: get("/readyz"), status: 200},
		{name: "metrics need a key on the proxy listener", raw: get("/metrics"),
			status: 401, code: "unauthorized", check: wwwAuthenticate},
		{name: "metrics with a key", raw: get("/metrics", authz), status: 200},

		// Smuggling and framing.
		{name: "CL+TE: the hidden request never runs",
			raw:    smuggle("GET /v1/smuggled HTTP/1.1\r\nHost: x\r\n" + authz + "\r\n"),
			status: 200, closed: true, handled: 1,
			upstream: forwarded("POST", "/llm/v1/chat/completions", ""),
			check:    framedByCerbai},
		{name: "CL+TE: a hidden POST with a body never runs",
			raw:    smuggle(post("/v1/chat/completions", `{"smuggled":true}`, authz)),
			status: 200, closed: true, handled: 1,
			upstream: forwarded("POST", "/llm/v1/chat/completions", "")},
		{name: "TE then CL: the hidden request never runs",
			raw: "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + authz +
				"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n" +
				"5\r\nhello\r\n0\r\n\r\n" + get("/v1/smuggled", authz),
			status: 200, closed: true, handled: 1,
			upstream: forwarded("POST", "/llm/v1/chat/completions", "hello")},
		{name: "chunked request closes its connection, pipelined request unserved",
			raw: chunked("/v1/chat/completions", "3\r\nabc\r\n0\r\n\r\n", authz) +
				get("/v1/pipelined", authz),
			status: 200, closed: true, handled: 1,
			upstream: forwarded("POST", "/llm/v1/chat/completions", "abc"),
			check:    framedByCerbai},
		{name: "unknown transfer coding is refused by Go's server",
			raw: "POST /v1/x HTTP/1.1\r\nHost: x\r\n" + authz +
				"Transfer-Encoding: xchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
			status: 501, closed: true},
		{name: "differing duplicate Content-Length is refused by Go's server",
			raw: "POST /v1/x HTTP/1.1\r\nHost: x\r\n" + authz +
				"Content-Length: 3\r\nContent-Length: 30\r\n\r\nabc",
			status: 400, closed: true},
		{name: "Content-Length list is refused by Go's server",
			raw: "POST /v1/x HTTP/1.1\r\nHost: x\r\n" + authz +
				"Content-Length: 3, 30\r\n\r\nabc",
			status: 400, closed: true},
		{name: "signed Content-Length is refused by Go's server",
			raw: "POST /v1/x HTTP/1.1\r\nHost: x\r\n" + authz +
				"Content-Length: +3\r\n\r\nabc",
			status: 400, closed: true},
		{name: "identical duplicate Content-Length is one length",
			raw: "POST /v1/x HTTP/1.1\r\nHost: x\r\n" + authz +
				"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
			status: 200, handled: 1, upstream: forwarded("POST", "/llm/v1/x", "abc")},
		{name: "obs-folded header is unfolded, never forwarded with a line break",
			raw:    get("/v1/models", authz, "X-Folded: first\r\n \tsecond\r\n"),
			status: 200, handled: 1, upstream: models, check: unfolded},
		{name: "header name with a space is refused by Go's server",
			raw: get("/v1/models", authz, "X Bad: 1\r\n"), status: 400, closed: true},
		{name: "bare CR in a header value is refused by Go's server",
			raw: get("/v1/models", authz, "X-Bad: a\rb\r\n"), status: 400, closed: true},
		{name: "garbage request line is refused by Go's server",
			raw: "HELLO\r\n\r\n", method: "GET", status: 400, closed: true},
		{name: "HTTP/2 preface on the plain listener is a malformed target",
			raw:    "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
			method: "GET", status: 400, code: "invalid_request", handled: 1},

		// Limits.
		{name: "header block over the limit is 431",
			raw:    get("/v1/models", authz, "X-Big: "+strings.Repeat("a", 80<<10)+"\r\n"),
			status: 431, closed: true},
		{name: "request line over the header limit is 431",
			raw: get("/v1/"+strings.Repeat("a", 80<<10), authz), status: 431, closed: true},
		{name: "body over the limit is 413",
			raw:    post("/v1/chat/completions", strings.Repeat("x", 4097), authz),
			status: 413, code: "request_too_large", closed: true, handled: 1},
		{name: "body over the limit with Expect: 100-continue is 413 unread",
			raw: "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + authz +
				"Content-Length: 1000000\r\nExpect: 100-continue\r\n\r\n",
			status: 413, code: "request_too_large", closed: true, handled: 1},
		{name: "chunked body over the limit is 413",
			raw: chunked("/v1/chat/completions",
				"800\r\n"+strings.Repeat("x", 2048)+"\r\n"+
					"801\r\n"+strings.Repeat("y", 2049)+"\r\n0\r\n\r\n", authz),
			status: 413, code: "request_too_large", closed: true, handled: 1},
		{name: "body at the limit is forwarded",
			raw:    post("/v1/chat/completions", strings.Repeat("z", 4096), authz),
			status: 200, handled: 1,
			upstream: forwarded("POST", "/llm/v1/chat/completions", strings.Repeat("z", 4096))},
		{name: "malformed chunk size is 400",
			raw:    chunked("/v1/chat/completions", "zz\r\nabc\r\n0\r\n\r\n", authz),
			status: 400, code: "invalid_request", closed: true, handled: 1},
		{name: "chunked body cut short, client gone",
			raw:    chunked("/v1/chat/completions", "100\r\nonly a little", authz),
			vanish: true, handled: 1},
		{name: "Content-Length body cut short, client gone",
			raw:    post("/v1/chat/completions", strings.Repeat("q", 100), authz)[:150],
			vanish: true, handled: 1},
		{name: "partial header block, client gone",
			raw:    "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + authz + "Content-Le",
			vanish: true},

		// Bodies are opaque: forwarded byte for byte, framed by cerbai.
		{name: "invalid UTF-8 body is forwarded byte for byte",
			raw:    post("/v1/chat/completions", "\xff\xfe\x00{\"a\":\"\xc3\x28\"}", authz),
			status: 200, handled: 1,
			upstream: forwarded("POST", "/llm/v1/chat/completions",
				"\xff\xfe\x00{\"a\":\"\xc3\x28\"}")},
		{name: "invalid JSON body is forwarded byte for byte",
			raw:    post("/v1/chat/completions", `{"model": "x", "messages": [`, authz),
			status: 200, handled: 1,
			upstream: forwarded("POST", "/llm/v1/chat/completions",
				`{"model": "x", "messages": [`)},
		{name: "chunked binary body is forwarded with cerbai's framing",
			raw:    chunked("/v1/files", "4\r\n\x00\x01\r\n\r\n2\r\n\xff\n\r\n0\r\n\r\n", authz),
			status: 200, closed: true, handled: 1,
			upstream: forwarded("POST", "/llm/v1/files", "\x00\x01\r\n\xff\n"),
			check:    framedByCerbai},

		// Forwarding headers.
		{name: "X-Forwarded-For from an untrusted peer is replaced",
			raw: get("/v1/models", authz, "X-Forwarded-For: 10.9.8.7\r\n",
				"Forwarded: for=10.9.8.7\r\n", "X-Real-Ip: 10.9.8.7\r\n"),
			status: 200, handled: 1, upstream: models,
			check: forwardedFor("127.0.0.1", false)},
		{name: "X-Forwarded-For from a trusted peer is kept and appended to",
			raw:  get("/v1/models", authz, "X-Forwarded-For: 10.9.8.7\r\n"),
			from: "127.0.0.2", status: 200, handled: 1, upstream: models,
			check: forwardedFor("10.9.8.7, 127.0.0.2", true)},
		{name: "hop-by-hop and Connection-named headers are dropped",
			raw: get("/v1/models", authz, "Connection: keep-alive, X-Internal\r\n",
				"X-Internal: secret-route\r\n", "Keep-Alive: timeout=5\r\n",
				"Proxy-Connection: keep-alive\r\n", "Proxy-Authorization: Basic eA==\r\n",
				"Upgrade: websocket\r\n", "TE: trailers\r\n", "X-Kept: yes\r\n"),
			status: 200, handled: 1, upstream: models, check: hopByHopDropped},

		// Clients that leave, and the concurrency cap.
		{name: "client vanishes mid-stream: the upstream request is cancelled",
			script: vanishMidStream, handled: 1,
			upstream: forwarded("POST", "/llm/v1/stream", `{"stream":true}`)},
		{name: "over --max-concurrent is 503 with Retry-After",
			script: overMaxConcurrent, handled: 3,
			upstream: append(forwarded("GET", "/llm/v1/hold", ""),
				forwarded("GET", "/llm/v1/hold", "")...)},
		{name: "slow header block held open does not stop others",
			script: slowHeaders, handled: 1, upstream: models},
	}
}

// smuggle hides a second request after an empty chunked body that a
// front proxy framing by Content-Length would count as the first's body.
func smuggle(hidden string) string {
	body := "0\r\n\r\n" + hidden
	return "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + authz +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n" +
		"Transfer-Encoding: chunked\r\n\r\n" + body
}

func upstreamHostIsOwn(t *testing.T, _ rawAnswer, got []upstreamRequest) {
	t.Helper()
	for _, r := range got {
		if want := r.LocalAddr; r.Host != want {
			t.Errorf("upstream got Host %q, want its own %q", r.Host, want)
		}
	}
}

func allowHeader(t *testing.T, a rawAnswer, _ []upstreamRequest) {
	t.Helper()
	want := "GET, POST, PUT, PATCH, DELETE, OPTIONS, HEAD"
	if got := a.resp.Header.Get("Allow"); got != want {
		t.Errorf("got Allow %q, want %q", got, want)
	}
}

func wwwAuthenticate(t *testing.T, a rawAnswer, _ []upstreamRequest) {
	t.Helper()
	if got := a.resp.Header.Get("WWW-Authenticate"); got != "Bearer" {
		t.Errorf("got WWW-Authenticate %q, want Bearer", got)
	}
}

// onlyTheToken checks that the upstream got cerbai's token and none of the
// client's credential headers.
func onlyTheToken(t *testing.T, _ rawAnswer, got []upstreamRequest) {
	t.Helper()
	for _, r := range got {
		if a := r.Header.Values("Authorization"); len(a) != 1 || !strings.HasPrefix(a[0],
			"Bearer tok-") {
			t.Errorf("upstream got Authorization %q, want only cerbai's Bearer tok-N", a)
		}
		for _, h := range []string{"Api-Key", "X-Api-Key", "Proxy-Authorization"} {
			if v, ok := r.Header[h]; ok {
				t.Errorf("upstream got %s %q, want none", h, v)
			}
		}
	}
}

// framedByCerbai checks that the upstream got a request with a declared
// length and no chunked framing of the client's.
func framedByCerbai(t *testing.T, _ rawAnswer, got []upstreamRequest) {
	t.Helper()
	for _, r := range got {
		if len(r.TransferEncoding) != 0 || r.ContentLength != int64(len(r.Body)) ||
			r.BodyErr != nil {
			t.Errorf("upstream got Transfer-Encoding %q, Content-Length %d for %d bytes "+
				"(error %v); want a Content-Length request", r.TransferEncoding,
				r.ContentLength, len(r.Body), r.BodyErr)
		}
	}
}

func unfolded(t *testing.T, _ rawAnswer, got []upstreamRequest) {
	t.Helper()
	for _, r := range got {
		v := r.Header.Get("X-Folded")
		if strings.ContainsAny(v, "\r\n") || !strings.HasPrefix(v, "first") ||
			!strings.HasSuffix(v, "second") {
			t.Errorf("upstream got X-Folded %q, want first…second on one line", v)
		}
	}
}

// forwardedFor checks X-Forwarded-For, and that Forwarded and X-Real-Ip
// pass only from a trusted peer.
func forwardedFor(want string, trusted bool) func(*testing.T, rawAnswer,
	[]upstreamRequest) {
	return func(t *testing.T, _ rawAnswer, got []upstreamRequest) {
		t.Helper()
		for _, r := range got {
			if v := r.Header.Values("X-Forwarded-For"); len(v) != 1 || v[0] != want {
				t.Errorf("upstream got X-Forwarded-For %q, want %q", v, want)
			}
			if !trusted && (r.Header.Get("Forwarded") != "" || r.Header.Get("X-Real-Ip") != "") {
				t.Errorf("upstream got Forwarded %q, X-Real-Ip %q from an untrusted peer",
					r.Header.Get("Forwarded"), r.Header.Get("X-Real-Ip"))
			}
		}
	}
}

func hopByHopDropped(t *testing.T, a rawAnswer, got []upstreamRequest) {
	t.Helper()
	for _, r := range got {
		for _, h := range []string{"Connection", "X-Internal", "Keep-Alive",
			"Proxy-Connection", "Proxy-Authorization", "Upgrade", "Te"} {
			if v, ok := r.Header[h]; ok {
				t.Errorf("upstream got %s %q, want it dropped", h, v)
			}
		}
		if r.Header.Get("X-Kept") != "yes" {
			t.Errorf("upstream got X-Kept %q, want yes", r.Header.Get("X-Kept"))
		}
	}
	// Response headers pass unchanged, Set-Cookie included.
	if got := a.resp.Header.Get("Set-Cookie"); got != "upstream=1; HttpOnly" {
		t.Errorf("client got Set-Cookie %q, want the upstream's", got)
	}
}

// vanishMidStream reads the first event of a stream and hangs up; the
// proxy must cancel the upstream request.
func vanishMidStream(t *testing.T, env *hostileEnv) {
	t.Helper()
	openStream(t, env.run.addr).Close()
	waitChan(t, env.upstream.cancelled, "the upstream stream to be cancelled")
	<-env.upstream.entered
	// A client that hangs up is not an upstream failure: no warn line (a
	// client could flood the log with them) and no upstream error count.
	logs := env.run.stdout.waitFor(t, "the stream's request to complete",
		func(s string) bool { return strings.Contains(s, `"path":"/v1/stream","status"`) })
	if strings.Contains(logs, "upstream body ended early") {
		t.Error("a client hanging up mid-stream was logged as an upstream failure")
	}
}

// openStream posts a streaming request with hostileKey to the proxy at
// addr and reads the answer up to the upstream's first event; the stream
// stays open on the returned connection.
func openStream(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn := dialFrom(t, addr, "")
	_, err := io.WriteString(conn, post("/v1/stream", `{"stream":true}`, authz))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: "POST"})
	if err != nil {
		t.Fatalf("read stream answer: %v", err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "data: one\n" {
		t.Fatalf("got first line %q, %v; want the first event", line, err)
	}
	return conn
}

// overMaxConcurrent fills both --max-concurrent slots, checks that the
// next request gets 503 with Retry-After, then hangs up the two.
func overMaxConcurrent(t *testing.T, env *hostileEnv) {
	t.Helper()
	var held []net.Conn
	for range 2 {
		c := dialFrom(t, env.run.addr, "")
		if _, err := io.WriteString(c, get("/v1/hold", authz)); err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		waitChan(t, env.upstream.entered, "a held request to reach the upstream")
	}
	a := rawSend(t, dialFrom(t, env.run.addr, ""), get("/v1/models", authz), "GET")
	if a.resp == nil {
		t.Fatalf("got no answer (%v), want 503", a.err)
	}
	checkCerbaiError(t, a.resp, a.body, 503, "too_many_requests")
	if got := a.resp.Header.Get("Retry-After"); got != "1" {
		t.Errorf("got Retry-After %q, want 1", got)
	}
	for _, c := range held {
		c.Close()
	}
	for range held {
		waitChan(t, env.upstream.cancelled, "a held request to be cancelled")
	}
}

// slowHeaders holds a half-sent header block open while a normal request
// is served, then hangs up. Limitation: ReadHeaderTimeout is a constant
// (10s), so the timeout itself is not exercised here; what is shown is
// that a slow header block blocks nobody and, once the client goes,
// leaves nothing behind (the goroutine count at the end of the test).
func slowHeaders(t *testing.T, env *hostileEnv) {
	t.Helper()
	slow := dialFrom(t, env.run.addr, "")
	if _, err := io.WriteString(slow, "GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Sl"); err != nil {
		t.Fatal(err)
	}
	a := rawSend(t, dialFrom(t, env.run.addr, ""), get("/v1/models", authz), "GET")
	if a.resp == nil || a.resp.StatusCode != 200 {
		t.Errorf("got %v (%v) beside a slow header block, want 200", a.resp, a.err)
	}
	slow.Close()
}

// waitChan receives one value from ch, or fails the test.
func waitChan[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(guardTimeout):
		t.Fatalf("waited %v for %s", guardTimeout, what)
	}
	panic("unreachable")
}

// TestHostile_ForwardedForNoneSendsNoAddress: with --forwarded-for none,
// no forwarding header reaches the upstream, whatever the client sent and
// even from a trusted peer.
func TestHostile_ForwardedForNoneSendsNoAddress(t *testing.T) {
	pki := testPKI(t)
	ts := newTokenServer(t, pki)
	up := newRecordingUpstream(t)
	run := startProxy(t, []string{"--listen-addr", "127.0.0.1:0", "--forwarded-for", "none",
		"--trust-forwarded", "127.0.0.0/8"}, baseEnv(pki, ts.URL, up.srv.URL))
	a := rawSend(t, dialFrom(t, run.addr, ""), get("/v1/models",
		"X-Forwarded-For: 10.9.8.7\r\n", "Forwarded: for=10.9.8.7\r\n",
		"X-Real-Ip: 10.9.8.7\r\n"), "GET")
	if a.resp == nil || a.resp.StatusCode != 200 {
		t.Fatalf("got %v (%v), want 200", a.resp, a.err)
	}
	got := up.requests()
	if len(got) != 1 {
		t.Fatalf("upstream got %d requests, want 1", len(got))
	}
	for _, h := range []string{"X-Forwarded-For", "Forwarded", "X-Real-Ip"} {
		if v, ok := got[0].Header[h]; ok {
			t.Errorf("upstream got %s %q, want none with --forwarded-for none", h, v)
		}
	}
}

// TestServer_LimitsAreSet: the proxy listener bounds slow header blocks,
// idle keep-alive connections and header size, and has no WriteTimeout
// (it would cut long streams). Limitation: the timeouts are constants of
// minutes and seconds, so they are checked here, not waited out.
func TestServer_LimitsAreSet(t *testing.T) {
	a := &app{s: &settings{Config: Config{ListenAddr: "127.0.0.1:0",
		ReadTimeout: 42 * time.Second}},
		log: slog.New(slog.DiscardHandler)}
	servers, err := a.listen()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { servers[0].ln.Close() })
	h := servers[0].http
	if h.ReadHeaderTimeout <= 0 || h.ReadHeaderTimeout > 30*time.Second {
		t.Errorf("got ReadHeaderTimeout %v, want set and at most 30s", h.ReadHeaderTimeout)
	}
	if h.IdleTimeout <= 0 || h.IdleTimeout > 5*time.Minute {
		t.Errorf("got IdleTimeout %v, want set and at most 5m", h.IdleTimeout)
	}
	if h.MaxHeaderBytes != 64<<10 {
		t.Errorf("got MaxHeaderBytes %d, want 64 KiB", h.MaxHeaderBytes)
	}
	if h.WriteTimeout != 0 {
		t.Errorf("got WriteTimeout %v; want none (streams are long)", h.WriteTimeout)
	}
	// Go lifts the read deadline once the body is read, so it does not
	// cut streams (TestHostile_SlowBodyIsCutAtTheReadTimeout).
	if h.ReadTimeout != 42*time.Second {
		t.Errorf("got ReadTimeout %v, want --request-read-timeout's 42s", h.ReadTimeout)
	}
}

// TestHostile_ListenTLS: with --listen-tls-cert-file the proxy speaks TLS
// 1.2 and 1.3 only; an older client and plain HTTP on the TLS port reach
// nothing upstream.
func TestHostile_ListenTLS(t *testing.T) {
	pki := testPKI(t)
	ts := newTokenServer(t, pki)
	up := newRecordingUpstream(t)
	run := startProxy(t, []string{"--listen-addr", "127.0.0.1:0",
		"--listen-tls-cert-file", pki.ServerCertFile, "--listen-tls-key-file", pki.ServerKeyFile},
		baseEnv(pki, ts.URL, up.srv.URL))
	for _, c := range []struct {
		name     string
		min, max uint16
		wantErr  string // "" → served
	}{
		{"TLS 1.3", tls.VersionTLS13, tls.VersionTLS13, ""},
		{"TLS 1.2", tls.VersionTLS12, tls.VersionTLS12, ""},
		{"TLS 1.1", tls.VersionTLS10, tls.VersionTLS11, "protocol version not supported"},
	} {
		t.Run(c.name, func(t *testing.T) {
			client := &http.Client{Timeout: guardTimeout, Transport: &http.Transport{
				TLSClientConfig: &tls.Config{RootCAs: pki.CAPool, MinVersion: c.min,
					MaxVersion: c.max}}}
			t.Cleanup(client.CloseIdleConnections)
			resp, err := client.Get("https://" + run.addr + "/v1/models")
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("got %v, want an answer", err)
			case c.wantErr == "":
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("got status %d, want 200", resp.StatusCode)
				}
			case err == nil:
				resp.Body.Close()
				t.Errorf("got status %d, want the handshake refused", resp.StatusCode)
			case !strings.Contains(err.Error(), c.wantErr):
				t.Errorf("got %v, want %q", err, c.wantErr)
			}
		})
	}
	a := rawSend(t, dialFrom(t, run.addr, ""), get("/v1/models"), "GET")
	if a.resp != nil && a.resp.StatusCode == 200 {
		t.Error("plain HTTP on the TLS port was served")
	}
	if n := len(up.requests()); n != 2 {
		t.Errorf("upstream got %d requests, want 2 (TLS 1.3 and 1.2)", n)
	}
}

// TestServingCert_ReloadsChangedPair: the inbound certificate is reloaded
// when its files change (checked at most every checkEvery), and a pair
// that does not load keeps the old one.
func TestServingCert_ReloadsChangedPair(t *testing.T) {
	pki := testPKI(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := pki.IssueClient("first", certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	c, err := newServingCert(certFile, keyFile, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	first, _ := c.get(nil)
	leaf := func(cert *tls.Certificate) string {
		t.Helper()
		x, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return x.Subject.CommonName
	}

	if err := pki.IssueClient("second", certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	c.maybeReload(time.Now())
	if got := leaf(c.cur.Load()); got != "first" {
		t.Errorf("within checkEvery: got %q, want the first certificate kept", got)
	}
	now := time.Now().Add(checkEvery)
	c.maybeReload(now)
	if got := leaf(c.cur.Load()); got != "second" {
		t.Errorf("after a change: got %q, want the second certificate", got)
	}

	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.maybeReload(now.Add(checkEvery))
	if got := leaf(c.cur.Load()); got != "second" {
		t.Errorf("after a broken key file: got %q, want the second certificate kept", got)
	}
	if !strings.Contains(logs.String(), "keeping the old one") {
		t.Errorf("no warning for the broken pair:\n%s", logs.String())
	}
	if leaf(first) != "first" {
		t.Error("the first certificate changed under its holder")
	}
}

// TestHostile_SlowBodyIsCutAtTheReadTimeout checks --request-read-timeout
// on the real server: a key holder who stops sending the body gets 408
// and a closed connection, and nothing reaches the upstream; a stream
// that outlives the timeout is not cut by it.
func TestHostile_SlowBodyIsCutAtTheReadTimeout(t *testing.T) {
	pki := testPKI(t)
	ts := newTokenServer(t, pki)
	up := newRecordingUpstream(t)
	const timeout = time.Second // the header block, sent at once, is read well within it
	run := startProxy(t, []string{
		"--listen-addr", "127.0.0.1:0", "--proxy-token", hostileKey,
		"--request-read-timeout", timeout.String(),
	}, baseEnv(pki, ts.URL, up.srv.URL+"/llm"))

	stream := openStream(t, run.addr)
	slow := dialFrom(t, run.addr, "")

	a := rawSend(t, slow, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"+authz+
		"Content-Length: 100\r\n\r\n{\"model\":", "POST")
	if a.resp == nil {
		t.Fatalf("slow body: no answer (%v), want 408", a.err)
	}
	checkCerbaiError(t, a.resp, a.body, http.StatusRequestTimeout, "request_timeout")
	if !closedAfter(t, a) {
		t.Error("slow body: the connection stayed open after the 408")
	}
	for _, r := range up.requests() {
		if r.URI != "/llm/v1/stream" {
			t.Errorf("the upstream got %s %s (body %q, %v), want nothing", r.Method, r.URI,
				r.Body, r.BodyErr)
		}
	}
	// The stream began before the slow request and has now lived past the
	// timeout: it must still be open. Its upstream handler reports when
	// its context ends.
	select {
	case uri := <-up.cancelled:
		t.Fatalf("%s was cut after %v, want it open", uri, timeout)
	default:
	}
	stream.Close()
	select {
	case <-up.cancelled:
	case <-time.After(guardTimeout):
		t.Fatal("closing the client did not end the upstream stream")
	}
}

// TestHostile_RefusedRequestsDoNotWaitForTheirBody: a request cerbai
// refuses without reading its body is answered at once and its connection
// closed. Otherwise Go's server first reads the unread body (up to 256
// KiB) with no deadline, so a client without a key that declares a body
// and never sends it holds a connection and a goroutine for as long as it
// likes.
func TestHostile_RefusedRequestsDoNotWaitForTheirBody(t *testing.T) {
	env, _ := startHostile(t)
	withheld := func(method, target string, headers ...string) string {
		return method + " " + target + " HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n" +
			strings.Join(headers, "") + "\r\n" // and no body
	}
	cases := []struct {
		name, raw string
		status    int
		code      string
	}{
		{"no key", withheld("POST", "/v1/chat/completions"), 401, "unauthorized"},
		{"malformed target", withheld("POST", "/v1/../x", authz), 400, "invalid_request"},
		{"method", withheld("BREW", "/v1/models", authz), 405, "method_not_allowed"},
		{"allow-path miss", withheld("POST", "/admin", authz), 404, "not_found"},
		{"metrics without a key", withheld("POST", "/metrics"), 401, "unauthorized"},
		{"health", withheld("POST", "/healthz"), 200, ""},
	}
	// All requests go out at once and are read at once, so a failure costs
	// one deadline, not one per case.
	type outcome struct {
		a          rawAnswer
		rest       []byte
		restErr    error
		stayedOpen bool
	}
	got := make([]outcome, len(cases))
	var wg sync.WaitGroup
	for i, c := range cases {
		conn := dialFrom(t, env.run.addr, "")
		if _, err := io.WriteString(conn, c.raw); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			o := &got[i]
			if o.a = readAnswer(conn, "POST"); o.a.resp == nil {
				return
			}
			o.rest, o.restErr = io.ReadAll(o.a.br)
			var ne net.Error
			o.stayedOpen = errors.As(o.restErr, &ne) && ne.Timeout()
		})
	}
	wg.Wait()
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := got[i]
			if o.a.resp == nil {
				t.Fatalf("got no answer (%v), want %d at once", o.a.err, c.status)
			}
			if c.code != "" {
				checkCerbaiError(t, o.a.resp, o.a.body, c.status, c.code)
			} else if o.a.resp.StatusCode != c.status {
				t.Errorf("got status %d, want %d", o.a.resp.StatusCode, c.status)
			}
			if o.stayedOpen || len(o.rest) > 0 {
				t.Errorf("after the answer: got %q, %v; want the connection closed",
					o.rest, o.restErr)
			}
		})
	}
}

// TestHostile_HTTP10TransferEncodingClosesConnection: Go's server ignores
// (and removes) Transfer-Encoding on an HTTP/1.0 request and frames it by
// Content-Length, while RFC 9112 §6.1 requires such a message to be
// treated as faulty framing and its connection closed. A front proxy that
// frames it as chunked would send its next request on the connection,
// which cerbai would read as this request's body and forward upstream:
// another client's request, proxy key included, captured into the
// attacker's prompt. cerbai cannot see the removed header, so it must not
// keep any HTTP/1.0 connection open.
func TestHostile_HTTP10TransferEncodingClosesConnection(t *testing.T) {
	env, _ := startHostile(t)
	body := "0\r\n\r\n" + "GET /v1/captured HTTP/1.1\r\nHost: x\r\n"
	raw := "POST /v1/chat/completions HTTP/1.0\r\nHost: x\r\n" + authz +
		"Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	a := rawSend(t, dialFrom(t, env.run.addr, ""), raw, "POST")
	if a.resp == nil {
		t.Fatalf("got no answer (%v)", a.err)
	}
	if a.resp.StatusCode != 200 && a.resp.StatusCode != 400 {
		t.Errorf("got status %d, want 200 (or 400 refusing it)", a.resp.StatusCode)
	}
	if !a.resp.Close {
		t.Error("got a keep-alive answer to HTTP/1.0 with Transfer-Encoding, " +
			"want Connection: close")
	}
}

// TestHostile_ClientThatLeftGetsNoFalseSuccess: a client that sends part
// of a body and then closes its sending side is treated as gone, and its
// request is not forwarded. It must not then read a success: today cerbai
// writes nothing and Go's server fills in an empty 200.
func TestHostile_ClientThatLeftGetsNoFalseSuccess(t *testing.T) {
	env, _ := startHostile(t)
	for _, c := range []struct{ name, raw string }{
		{"chunked", chunked("/v1/chat/completions", "100\r\nonly a little", authz)},
		{"content-length", post("/v1/chat/completions", strings.Repeat("q", 100), authz)[:120]},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn := dialFrom(t, env.run.addr, "")
			if _, err := io.WriteString(conn, c.raw); err != nil {
				t.Fatal(err)
			}
			if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			a := readAnswer(conn, "POST")
			if a.resp != nil && a.resp.StatusCode < 300 {
				t.Errorf("got %d %q for a request that was not forwarded, want no answer "+
					"or an error", a.resp.StatusCode, a.body)
			}
		})
	}
	if got := env.upstream.requests(); len(got) != 0 {
		t.Errorf("upstream got %d requests, want none", len(got))
	}
}
