package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cerbai/cerbai/integration/fake"
	"github.com/cerbai/cerbai/tokens"
)

// These tests point a running cerbai at upstreams that misbehave: token
// endpoints that answer garbage, too much, too little or never, and LLM
// endpoints that cut streams, never end their headers, or send a huge
// one. Each gets its documented answer, and the proxy keeps serving.

// hostileTokenEndpoint is an mTLS token endpoint whose answers a test
// chooses; good makes it answer properly from then on.
type hostileTokenEndpoint struct {
	url  string
	good atomic.Bool
	quit chan struct{} // closed at the end of the test: handlers return
}

// goodToken is what a hostileTokenEndpoint answers once good.
const goodToken = `{"access_token":"tok-good","token_type":"Bearer","expires_in":3600}`

func newHostileTokenEndpoint(t *testing.T, pki *fake.PKI,
	bad http.HandlerFunc) *hostileTokenEndpoint {
	t.Helper()
	e := &hostileTokenEndpoint{quit: make(chan struct{})}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(
		func(w http.ResponseWriter, r *http.Request) {
			if e.good.Load() {
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, goodToken)
				return
			}
			bad(w, r)
		}))
	tc, err := pki.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = tc
	srv.StartTLS()
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(e.quit) }) // runs first: handlers return, Close returns
	e.url = srv.URL + "/oauth2/token"
	return e
}

// lazyBody is n bytes of 'a', produced as they are read: a 2 GiB answer
// without 2 GiB of memory.
type lazyBody struct{ left int64 }

func (b *lazyBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), b.left))
	for i := range p[:n] {
		p[i] = 'a'
	}
	b.left -= int64(n)
	return n, nil
}

// TestHostileUpstream_TokenEndpoint: whatever the token endpoint does, a
// request gets 503 token_unavailable within --token-wait (or is served,
// for an absurdly long but valid lifetime), and once the endpoint behaves
// the proxy serves again.
func TestHostileUpstream_TokenEndpoint(t *testing.T) {
	const twoGiB = 2 << 30
	var sentOfTwoGiB atomic.Int64       // what the 2 GiB answer got written
	hugeDone := make(chan struct{})     // closed when the 2 GiB handler returns
	abandoned := make(chan struct{}, 1) // the unanswered request's context ended
	// The redirect target counts what reaches it: nothing may.
	var stolen atomic.Int32
	steal := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		stolen.Add(1)
	}))
	t.Cleanup(steal.Close)

	cases := []struct {
		name   string
		bad    func(e *hostileTokenEndpoint, w http.ResponseWriter, r *http.Request)
		status int    // of the first request
		code   string // cerbai's error code when not 200
		after  func(t *testing.T, run *proxyRun)
	}{
		{name: "garbage", status: 503, code: "token_unavailable",
			bad: func(_ *hostileTokenEndpoint, w http.ResponseWriter, _ *http.Request) {
				_, _ = io.WriteString(w, "<html>\x00\xff{not json")
			}},
		{name: "2 GiB body", status: 503, code: "token_unavailable",
			bad: func(e *hostileTokenEndpoint, w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Content-Length", fmt.Sprint(twoGiB))
				n, _ := io.Copy(w, &lazyBody{left: twoGiB})
				sentOfTwoGiB.Store(n)
				close(hugeDone)
			},
			after: func(t *testing.T, _ *proxyRun) {
				waitChan(t, hugeDone, "the 2 GiB answer to end")
				// The handler returns once cerbai hangs up: it read its
				// bounded 1 MiB and closed. Socket buffers hold a few MiB.
				if n := sentOfTwoGiB.Load(); n <= 0 || n >= 256<<20 {
					t.Errorf("token endpoint wrote %d bytes before cerbai hung up, "+
						"want under 256 MiB", n)
				}
			}},
		{name: "expires_in -5", status: 503, code: "token_unavailable",
			bad: func(_ *hostileTokenEndpoint, w http.ResponseWriter, _ *http.Request) {
				_, _ = io.WriteString(w, `{"access_token":"tok-neg","expires_in":-5}`)
			}},
		{name: "expires_in 10^12 is clamped to a year", status: 200,
			bad: func(_ *hostileTokenEndpoint, w http.ResponseWriter, _ *http.Request) {
				_, _ = io.WriteString(w,
					`{"access_token":"tok-forever","expires_in":1000000000000}`)
			},
			after: checkClampedTTL},
		{name: "never answers", status: 503, code: "token_unavailable",
			bad: func(e *hostileTokenEndpoint, _ http.ResponseWriter, r *http.Request) {
				// With the body read, the server watches the connection
				// and ends the context when cerbai hangs up.
				_, _ = io.Copy(io.Discard, r.Body)
				select {
				case <-r.Context().Done():
					// cerbai gave up on its own: --token-timeout bounds a fetch.
					select {
					case abandoned <- struct{}{}:
					default:
					}
				case <-e.quit:
				}
			},
			after: func(t *testing.T, _ *proxyRun) {
				waitChan(t, abandoned, "cerbai to abandon the unanswered token request")
			}},
		{name: "redirect is not followed", status: 503, code: "token_unavailable",
			bad: func(_ *hostileTokenEndpoint, w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, steal.URL+"/steal", http.StatusTemporaryRedirect)
			}},
		{name: "HTML error page", status: 503, code: "token_unavailable",
			bad: func(_ *hostileTokenEndpoint, w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(http.StatusBadGateway)
				_, _ = io.WriteString(w, "<html><body>502 Bad Gateway</body></html>")
			}},
	}

	pki := testPKI(t)
	up := newRecordingUpstream(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var e *hostileTokenEndpoint
			e = newHostileTokenEndpoint(t, pki, func(w http.ResponseWriter, r *http.Request) {
				c.bad(e, w, r)
			})
			run := startProxy(t, []string{"--listen-addr", "127.0.0.1:0",
				"--token-timeout", "300ms", "--token-wait", "300ms"},
				baseEnv(pki, e.url, up.srv.URL))
			client := &http.Client{Timeout: guardTimeout}
			t.Cleanup(client.CloseIdleConnections)
			base := "http://" + run.addr

			resp, body := doGet(t, client, base+"/v1/models")
			if c.code != "" {
				checkCerbaiError(t, resp, body, c.status, c.code)
			} else if resp.StatusCode != c.status {
				t.Errorf("got %d %q, want %d", resp.StatusCode, body, c.status)
			}
			if c.after != nil {
				c.after(t, run)
			}
			checkStillServes(t, client, base, e, run)
		})
	}
	t.Cleanup(func() { // after every case
		if n := stolen.Load(); n != 0 {
			t.Errorf("the redirect target got %d requests, want 0", n)
		}
		// Only requests with a valid token were forwarded: one per case
		// once the endpoint recovered, and the first of the clamped case.
		got := up.requests()
		if len(got) != len(cases)+1 {
			t.Errorf("the LLM got %d requests, want %d", len(got), len(cases)+1)
		}
		for _, r := range got {
			if a := r.Header.Get("Authorization"); a != "Bearer tok-good" &&
				a != "Bearer tok-forever" {
				t.Errorf("the LLM got Authorization %q, want a valid token", a)
			}
		}
	})
}

// checkClampedTTL checks that the token's usable life was clamped to
// tokens.MaxLifetime (a year).
func checkClampedTTL(t *testing.T, run *proxyRun) {
	t.Helper()
	for _, r := range run.stdout.records(t) {
		if r["msg"] != "token refreshed" {
			continue
		}
		ttl, err := time.ParseDuration(fmt.Sprint(r["ttl"]))
		if err != nil || ttl > tokens.MaxLifetime || ttl < tokens.MaxLifetime-time.Hour {
			t.Errorf("got token ttl %v (%v), want just under %v", r["ttl"], err,
				tokens.MaxLifetime)
		}
		return
	}
	t.Error("no token refreshed line")
}

// checkStillServes checks /healthz, then makes the token endpoint good and
// waits for the background refresh to pick it up (after its backoff), then
// expects a forwarded request to succeed.
func checkStillServes(t *testing.T, c *http.Client, base string, e *hostileTokenEndpoint,
	run *proxyRun) {
	t.Helper()
	if status, body := getStatus(t, c, "GET", base+"/healthz", ""); status != 200 ||
		body != "ok" {
		t.Errorf("got /healthz %d %q, want 200 ok", status, body)
	}
	if e == nil {
		return
	}
	e.good.Store(true)
	run.stdout.waitFor(t, "a token from the recovered endpoint", func(s string) bool {
		return strings.Contains(s, `"msg":"token refreshed"`)
	})
	if status, body := getStatus(t, c, "GET", base+"/v1/models", ""); status != 200 {
		t.Errorf("after the endpoint recovered: got %d %q, want 200", status, body)
	}
}

func doGet(t *testing.T, c *http.Client, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp, body
}

// rawLLM is an LLM endpoint written at the byte level, so it can break
// HTTP in ways net/http will not. It answers by path (under /llm/v1/):
// ok, reset, forever, huge, silent, idle, garbage, close.
type rawLLM struct {
	ln          net.Listener
	step        chan struct{} // the reset stream's go-ahead to reset
	quit        chan struct{}
	wg          sync.WaitGroup
	mu          sync.Mutex // guards conns
	conns       []net.Conn
	forever     atomic.Int64  // header bytes the endless-headers answer wrote
	foreverDone chan struct{} // closed when it stops writing
	foreverOnce sync.Once
}

func newRawLLM(t *testing.T) *rawLLM {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &rawLLM{ln: ln, step: make(chan struct{}), quit: make(chan struct{}),
		foreverDone: make(chan struct{})}
	l.wg.Add(1)
	go l.accept()
	t.Cleanup(l.close)
	return l
}

func (l *rawLLM) url() string { return "http://" + l.ln.Addr().String() + "/llm" }

func (l *rawLLM) close() {
	close(l.quit)
	l.ln.Close()
	l.mu.Lock()
	for _, c := range l.conns {
		c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

func (l *rawLLM) accept() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(2 * guardTimeout))
			l.serveConn(c)
		}()
	}
}

// serveConn answers requests on c until one of them breaks it.
func (l *rawLLM) serveConn(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		if !l.answer(c, br, strings.TrimPrefix(req.URL.Path, "/llm/v1/")) {
			return
		}
	}
}

// answer writes the answer for path; false when the connection is done.
func (l *rawLLM) answer(c net.Conn, br *bufio.Reader, path string) bool {
	const sseHead = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n" +
		"Transfer-Encoding: chunked\r\n\r\n"
	const event = "b\r\ndata: one\n\n\r\n" // one 11-byte chunk
	switch path {
	case "ok":
		_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"+
			"Content-Length: 11\r\n\r\n{\"ok\":true}")
		return err == nil
	case "reset": // one event, then a TCP reset once the client has it
		_, _ = io.WriteString(c, sseHead+event)
		select {
		case <-l.step:
		case <-l.quit:
		}
		_ = c.(*net.TCPConn).SetLinger(0)
	case "forever": // a header line per write, never ending
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\n")
		for i := 0; ; i++ {
			n, err := fmt.Fprintf(c, "X-Forever-%d: a\r\n", i)
			l.forever.Add(int64(n))
			if err != nil {
				break
			}
		}
		l.foreverOnce.Do(func() { close(l.foreverDone) })
	case "huge": // one 1 MiB header line
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Huge: "+strings.Repeat("a", 1<<20)+
			"\r\nContent-Length: 0\r\n\r\n")
	case "idle": // one event, then silence
		_, _ = io.WriteString(c, sseHead+event)
		waitClosed(br, l.quit)
	case "silent": // no answer at all
		waitClosed(br, l.quit)
	case "garbage":
		_, _ = io.WriteString(c, "HTTP/1.1 two hundred\r\n\r\n")
	case "close":
	}
	return false
}

// waitClosed returns when the peer closes the connection (or the test
// ends): the read fails.
func waitClosed(br *bufio.Reader, quit chan struct{}) {
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, br)
		close(done)
	}()
	select {
	case <-done:
	case <-quit:
	}
}

// TestHostileUpstream_LLM: a cut stream ends without hanging, headers
// that never end or a 1 MiB header line get 502, silence gets 504, and
// the proxy keeps serving.
func TestHostileUpstream_LLM(t *testing.T) {
	pki := testPKI(t)
	ts := newTokenServer(t, pki)
	llm := newRawLLM(t)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	unreachable := "http://" + closed.Addr().String()
	closed.Close() // nothing listens there any more: connection refused

	cases := []struct {
		name   string
		path   string
		llmURL string   // "" → the raw LLM
		args   []string // added to the run's
		status int
		code   string                           // cerbai's error code, or "" for a stream
		stream func(t *testing.T, br io.Reader) // reads a stream answer
		after  func(t *testing.T)
	}{
		{name: "resets mid-stream", path: "/v1/reset", status: 200,
			stream: func(t *testing.T, body io.Reader) {
				cutAfterFirstEvent(t, body, func() {
					waitSend(t, llm.step, "the reset stream to take the go-ahead")
				})
			}},
		{name: "stream goes idle", path: "/v1/idle", status: 200,
			args:   []string{"--stream-idle-timeout", "300ms"},
			stream: func(t *testing.T, body io.Reader) { cutAfterFirstEvent(t, body, nil) }},
		{name: "headers forever", path: "/v1/forever", status: 502,
			code: "upstream_unreachable", after: func(t *testing.T) {
				// cerbai stopped reading at its 256 KiB limit and hung up;
				// socket buffers hold a few MiB more.
				waitChan(t, llm.foreverDone, "the endless headers to stop")
				if n := llm.forever.Load(); n < 256<<10 || n > 64<<20 {
					t.Errorf("the endless headers ran to %d bytes, want 256 KiB to 64 MiB", n)
				}
			}},
		{name: "1 MiB header line", path: "/v1/huge", status: 502, code: "upstream_unreachable"},
		{name: "garbage status line", path: "/v1/garbage", status: 502,
			code: "upstream_unreachable"},
		{name: "closes without answering", path: "/v1/close", status: 502,
			code: "upstream_unreachable"},
		{name: "never answers", path: "/v1/silent", status: 504, code: "upstream_timeout",
			args: []string{"--upstream-timeout", "300ms"}},
		{name: "connection refused", path: "/v1/models", llmURL: unreachable, status: 502,
			code: "upstream_unreachable"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			llmURL := cmpOrString(c.llmURL, llm.url())
			run := startProxy(t, append([]string{"--listen-addr", "127.0.0.1:0"}, c.args...),
				baseEnv(pki, ts.URL, llmURL))
			client := &http.Client{Timeout: guardTimeout}
			t.Cleanup(client.CloseIdleConnections)
			base := "http://" + run.addr

			resp, err := client.Get(base + c.path)
			if err != nil {
				t.Fatalf("GET %s: %v", c.path, err)
			}
			if c.stream != nil {
				if resp.StatusCode != c.status {
					t.Errorf("got status %d, want %d", resp.StatusCode, c.status)
				}
				c.stream(t, resp.Body)
				resp.Body.Close()
			} else {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				checkCerbaiError(t, resp, body, c.status, c.code)
			}
			if c.after != nil {
				c.after(t)
			}

			checkStillServes(t, client, base, nil, run)
			if c.llmURL == "" {
				if status, body := getStatus(t, client, "GET", base+"/v1/ok", ""); status != 200 ||
					body != `{"ok":true}` {
					t.Errorf("after the hostile answer: got %d %q, want 200", status, body)
				}
			}
		})
	}
}

// cutAfterFirstEvent reads the first event, calls then (when not nil),
// and expects the body to end with an error: never a clean end that would
// make a cut answer look whole, never a hang.
func cutAfterFirstEvent(t *testing.T, body io.Reader, then func()) {
	t.Helper()
	br := bufio.NewReader(body)
	line, err := br.ReadString('\n')
	if err != nil || line != "data: one\n" {
		t.Fatalf("got first line %q, %v; want the first event", line, err)
	}
	if then != nil {
		then()
	}
	rest, err := io.ReadAll(br)
	var ne net.Error
	switch {
	case err == nil:
		t.Errorf("the cut stream ended cleanly after %q, want an error", rest)
	case errors.As(err, &ne) && ne.Timeout():
		t.Errorf("the cut stream hung until the client timed out: %v", err)
	}
}

func cmpOrString(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// waitSend sends on ch, or fails the test.
func waitSend(t *testing.T, ch chan<- struct{}, what string) {
	t.Helper()
	select {
	case ch <- struct{}{}:
	case <-time.After(guardTimeout):
		t.Fatalf("waited %v for %s", guardTimeout, what)
	}
}
