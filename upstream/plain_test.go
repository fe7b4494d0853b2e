package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// rawUpstream is a TCP server that runs serve on each accepted
// connection, for answers net/http's server would not give.
type rawUpstream struct {
	l        net.Listener
	accepted atomic.Int32
}

func newRawUpstream(t *testing.T, serve func(n int, c net.Conn, br *bufio.Reader)) *rawUpstream {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{l: l}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n := int(u.accepted.Add(1))
			go func() {
				defer c.Close()
				serve(n, c, bufio.NewReader(c))
			}()
		}
	}()
	return u
}

func (u *rawUpstream) url(path string) string { return "http://" + u.l.Addr().String() + path }

// newPlainTransport returns a Transport whose requests to loopback go
// through the plain pool.
func newPlainTransport(t *testing.T, cfg TransportConfig) *Transport {
	t.Helper()
	tr, err := NewTransport(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

func mustRequest(t *testing.T, ctx context.Context, method, url, body string) *http.Request {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return string(b)
}

// poolOf returns the plain pool that served url's host.
func poolOf(t *testing.T, tr *Transport, rawURL string) *plainPool {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	tr.mu.RLock()
	defer tr.mu.RUnlock()
	p := tr.plain[u.Host]
	if p == nil {
		t.Fatalf("no plain pool for %s", u.Host)
	}
	return p
}

func TestPlainPool_KeepsOneConnectionAlive(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter,
		r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/chunked":
			w.Header().Set("Trailer", "X-T")
			_, _ = io.WriteString(w, "a")
			http.NewResponseController(w).Flush()
			_, _ = io.WriteString(w, "b")
			w.Header().Set("X-T", "done")
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		default:
			_, _ = io.WriteString(w, r.Method+":"+string(b))
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	stats := new(Stats)
	tr := newPlainTransport(t, TransportConfig{Stats: stats})

	steps := []struct{ method, path, body, want string }{
		{"GET", "/a", "", "GET:"},
		{"POST", "/b", `{"x":1}`, `POST:{"x":1}`},
		{"GET", "/chunked", "", "ab"},
		{"HEAD", "/a", "", ""},
		{"GET", "/empty", "", ""},
		{"POST", "/c", "", "POST:"},
	}
	for _, s := range steps {
		resp, err := tr.RoundTrip(mustRequest(t, context.Background(), s.method,
			srv.URL+s.path, s.body))
		if err != nil {
			t.Fatalf("%s %s: %v", s.method, s.path, err)
		}
		if got := readAll(t, resp); got != s.want {
			t.Errorf("%s %s: body %q, want %q", s.method, s.path, got, s.want)
		}
		if s.path == "/chunked" && resp.Trailer.Get("X-T") != "done" {
			t.Errorf("chunked: trailer %q, want done", resp.Trailer.Get("X-T"))
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for %d sequential requests, want 1", n, len(steps))
	}
	if n := stats.Snapshot().ConnsOpened; n != 1 {
		t.Errorf("ConnsOpened %d, want the 1 connection the upstream saw", n)
	}
}

// TestPlainPool_ConnectionClosedWhileIdleIsReplaced checks that a POST,
// which is never sent twice, does not meet a connection the upstream
// closed while it sat in the pool.
func TestPlainPool_ConnectionClosedWhileIdleIsReplaced(t *testing.T) {
	up := newRawUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		// Keep-alive as far as the client knows, then gone.
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	tr := newPlainTransport(t, TransportConfig{})
	for i := range 2 {
		resp, err := tr.RoundTrip(mustRequest(t, context.Background(), "POST", up.url("/v1"),
			"{}"))
		if err != nil {
			t.Fatalf("POST %d: %v", i+1, err)
		}
		if got := readAll(t, resp); got != "ok" {
			t.Fatalf("POST %d: body %q", i+1, got)
		}
		if i == 0 {
			waitClosedInPool(t, poolOf(t, tr, up.url("")))
		}
	}
	if n := up.accepted.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (the closed one replaced)", n)
	}
}

// waitClosedInPool waits until the pool's one idle connection has seen
// the upstream close it, so the next request is sure to find it closed.
func waitClosedInPool(t *testing.T, p *plainPool) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for {
		p.mu.Lock()
		if len(p.idle) != 1 {
			p.mu.Unlock()
			t.Fatalf("%d idle connections, want 1", len(p.idle))
		}
		alive := p.idle[0].peekAlive()
		p.mu.Unlock()
		if !alive {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the pooled connection never saw the upstream close it")
		}
		runtime.Gosched()
	}
}

// TestPlainPool_UnansweredRetryRules: a reused connection closed without
// a byte of answer is retried once on a new connection for a GET, and
// never for a POST, which the upstream may have acted on.
func TestPlainPool_UnansweredRetryRules(t *testing.T) {
	cases := []struct {
		method      string
		wantErr     bool
		wantReceive int32 // requests the upstream read
	}{
		{"GET", false, 3},
		{"POST", true, 2},
	}
	for _, c := range cases {
		t.Run(c.method, func(t *testing.T) {
			var received atomic.Int32
			up := newRawUpstream(t, func(n int, conn net.Conn, br *bufio.Reader) {
				for i := 0; ; i++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					received.Add(1)
					if n == 1 && i == 1 {
						return // the second request on the first connection: no answer
					}
					_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			})
			tr := newPlainTransport(t, TransportConfig{})
			resp, err := tr.RoundTrip(mustRequest(t, context.Background(), c.method,
				up.url("/"), ""))
			if err != nil {
				t.Fatal(err)
			}
			readAll(t, resp)
			resp, err = tr.RoundTrip(mustRequest(t, context.Background(), c.method,
				up.url("/"), ""))
			if (err != nil) != c.wantErr {
				t.Fatalf("second %s: err %v, want error %v", c.method, err, c.wantErr)
			}
			if err == nil {
				if got := readAll(t, resp); got != "ok" {
					t.Errorf("body %q, want ok", got)
				}
			}
			if got := received.Load(); got != c.wantReceive {
				t.Errorf("upstream read %d requests, want %d", got, c.wantReceive)
			}
		})
	}
}

// TestPlainPool_CancelEndsWaitingBody checks that a client leaving ends
// the read of a stream that is waiting for its next event, and that the
// connection is not reused.
func TestPlainPool_CancelEndsWaitingBody(t *testing.T) {
	upstreamSawClose := make(chan struct{})
	up := newRawUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"+
			"Transfer-Encoding: chunked\r\n\r\n7\r\ndata: 1\r\n")
		_, _ = br.ReadByte() // waits for the client to close
		close(upstreamSawClose)
	})
	tr := newPlainTransport(t, TransportConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := tr.RoundTrip(mustRequest(t, ctx, "GET", up.url("/stream"), ""))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := resp.Body.Read(buf); err != nil || string(buf[:n]) != "data: 1" {
		t.Fatalf("first read: %q %v", buf[:n], err)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := resp.Body.Read(buf)
		readErr <- err
	}()
	cancel()
	if err := waitFor(t, readErr, "the waiting read to end"); !errors.Is(err, context.Canceled) {
		t.Errorf("read after cancel: %v, want context.Canceled", err)
	}
	resp.Body.Close()
	waitFor(t, upstreamSawClose, "the upstream to see the connection closed")
	if n := len(poolOf(t, tr, up.url("")).idle); n != 0 {
		t.Errorf("%d idle connections after a cancelled stream, want 0", n)
	}
}

func TestPlainPool_AnswerEdges(t *testing.T) {
	cases := []struct {
		name     string
		answer   string
		wantBody string
		wantErr  string
		reused   bool // the connection goes back to the pool
	}{
		{"informational answers skipped",
			"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" +
				"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "ok", "", true},
		{"informational answers without end",
			strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", 6) +
				"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "", "too many 1xx", false},
		{"bytes past the body", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", "ok",
			"", false},
		{"connection close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
			"ok", "", false},
		{"unasked upgrade", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", "",
			"unexpected 101", false},
		{"cut body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok", "",
			"unexpected EOF", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			up := newRawUpstream(t, func(_ int, conn net.Conn, br *bufio.Reader) {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				_, _ = io.WriteString(conn, c.answer)
				if strings.Contains(c.name, "cut") {
					return
				}
				_, _ = br.ReadByte() // hold the connection until the client closes it
			})
			tr := newPlainTransport(t, TransportConfig{})
			resp, err := tr.RoundTrip(mustRequest(t, context.Background(), "GET", up.url("/"), ""))
			var body []byte
			if err == nil {
				body, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			switch {
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Errorf("err %v, want one with %q", err, c.wantErr)
			case c.wantErr == "" && err != nil:
				t.Errorf("err %v", err)
			case c.wantErr == "" && string(body) != c.wantBody:
				t.Errorf("body %q, want %q", body, c.wantBody)
			}
			p := poolOf(t, tr, up.url(""))
			if got := len(p.idle) == 1; got != c.reused {
				t.Errorf("reused %v, want %v", got, c.reused)
			}
		})
	}
}

func TestPlainPool_EarlyCloseIsNotReused(t *testing.T) {
	rec := newRecorder(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		_, _ = io.WriteString(w, strings.Repeat("x", 64<<10))
	})
	tr := newPlainTransport(t, TransportConfig{})
	resp, err := tr.RoundTrip(mustRequest(t, context.Background(), "GET", rec.srv.URL, ""))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resp.Body.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := len(poolOf(t, tr, rec.srv.URL).idle); n != 0 {
		t.Errorf("%d idle connections after a body closed early, want 0", n)
	}
}

func TestPlainPool_IdleConnectionsExpire(t *testing.T) {
	closed := make(chan struct{}, 1)
	up := newRawUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		_, _ = br.ReadByte() // EOF when the client closes
		closed <- struct{}{}
	})
	tr := newPlainTransport(t, TransportConfig{})
	// The pool is made by the first request; shorten its timeout for the
	// connection that request leaves behind.
	tr.plain[strings.TrimPrefix(up.url(""), "http://")] = newPlainPool(
		up.l.Addr().String(), tr.cfg, tr.dial)
	p := poolOf(t, tr, up.url(""))
	p.idleTimeout = 10 * time.Millisecond
	resp, err := tr.RoundTrip(mustRequest(t, context.Background(), "GET", up.url("/"), ""))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	waitFor(t, closed, "the idle connection to be closed")
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) != 0 || !p.sweepAt.IsZero() {
		t.Errorf("after expiry: %d idle, sweep armed %v; want 0, false", len(p.idle),
			!p.sweepAt.IsZero())
	}
}

// TestPlainPool_SweepKeepsEachConnectionsLimit: a connection whose
// upstream announced a short Keep-Alive timeout is closed at its own
// limit, not left half-closed until the pool's idle timeout, and the
// sweep is moved earlier for it.
func TestPlainPool_SweepKeepsEachConnectionsLimit(t *testing.T) {
	closed := make(chan int, 2)
	up := newRawUpstream(t, func(n int, c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		keepAlive := ""
		if n == 2 {
			keepAlive = "Keep-Alive: timeout=4\r\n" // a limit of 3s
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\n"+keepAlive+"Content-Length: 2\r\n\r\nok")
		_, _ = br.ReadByte() // EOF when the client closes
		closed <- n
	})
	tr := newPlainTransport(t, TransportConfig{})
	ctx := context.Background()
	// Two requests at once, so they take two connections: the first
	// accepted (n == 1) has the pool's limit, the second a short one.
	first, err := tr.RoundTrip(mustRequest(t, ctx, "GET", up.url("/"), ""))
	if err != nil {
		t.Fatal(err)
	}
	second, err := tr.RoundTrip(mustRequest(t, ctx, "GET", up.url("/"), ""))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, first)
	p := poolOf(t, tr, up.url(""))
	p.mu.Lock()
	longAt := p.sweepAt
	p.mu.Unlock()
	readAll(t, second)

	p.mu.Lock()
	if len(p.idle) != 2 {
		p.mu.Unlock()
		t.Fatalf("%d idle connections, want 2", len(p.idle))
	}
	short := p.idle[1]
	if got, want := p.sweepAt, short.idleAt.Add(3*time.Second); !got.Equal(want) ||
		!got.Before(longAt) {
		t.Errorf("sweep at %v after the short-lived connection, want %v (before %v)",
			got, want, longAt)
	}
	// As if 3 seconds had passed: the short one is due, the other is not.
	short.idleAt = short.idleAt.Add(-3 * time.Second)
	p.mu.Unlock()
	p.expire()

	if n := waitFor(t, closed, "the short-lived connection to be closed"); n != 2 {
		t.Errorf("connection %d closed, want 2 (the one with Keep-Alive: timeout=4)", n)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) != 1 || p.idle[0] == short {
		t.Fatalf("after the sweep: %d idle, want the long-lived one", len(p.idle))
	}
	if want := p.idle[0].idleAt.Add(p.idleTimeout); !p.sweepAt.Equal(want) {
		t.Errorf("sweep re-armed for %v, want %v", p.sweepAt, want)
	}
}

// TestPlainPool_NoGoroutinesPerStream is the reason the pool exists:
// open streams cost the server's goroutines only, where http.Transport
// adds a read and a write loop for each.
func TestPlainPool_NoGoroutinesPerStream(t *testing.T) {
	const streams = 20
	release := make(chan struct{})
	rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: 1\n\n")
		http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	tr := newPlainTransport(t, TransportConfig{})
	before := runtime.NumGoroutine()
	for range streams {
		resp, err := tr.RoundTrip(mustRequest(t, context.Background(), "GET", rec.srv.URL, ""))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if _, err := resp.Body.Read(make([]byte, 16)); err != nil {
			t.Fatal(err)
		}
	}
	// The test server runs a connection goroutine and a background read
	// for each stream; anything beyond is the client's.
	if added := runtime.NumGoroutine() - before; added > 2*streams {
		t.Errorf("%d goroutines for %d open streams, want at most %d (the server's)",
			added, streams, 2*streams)
	}
}

// TestTransport_ProxiedPlainHTTPStaysOnStd checks that an upstream the
// environment sends through an HTTP proxy is not given a plain pool: the
// request goes to the proxy, in absolute form.
func TestTransport_ProxiedPlainHTTPStaysOnStd(t *testing.T) {
	gotURI := make(chan string, 1)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter,
		r *http.Request) {
		gotURI <- r.RequestURI
		_, _ = io.WriteString(w, "via proxy")
	}))
	t.Cleanup(proxy.Close)
	tr := newPlainTransport(t, TransportConfig{})
	proxyURL, _ := url.Parse(proxy.URL)
	tr.std.Proxy = http.ProxyURL(proxyURL)
	resp, err := tr.RoundTrip(mustRequest(t, context.Background(), "GET",
		"http://llm.internal.example/v1/models", ""))
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); got != "via proxy" {
		t.Errorf("body %q, want via proxy", got)
	}
	if uri := waitFor(t, gotURI, "the proxy"); uri != "http://llm.internal.example/v1/models" {
		t.Errorf("proxy saw %q, want the absolute URL", uri)
	}
	if p, ok := tr.plain["llm.internal.example"]; !ok || p != nil {
		t.Errorf("plain pool entry %v (present %v), want a nil entry", p, ok)
	}
}

// TestTransport_LargeOrUnsizedBodiesGoToStd checks the split by body: no
// body and small bodies of known length go on the plain pool; a body over
// plainBodyMax or of unknown length goes through http.Transport, which
// reads an early answer while the body is still being sent.
func TestTransport_LargeOrUnsizedBodiesGoToStd(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter,
		r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d", n)
	}))
	t.Cleanup(srv.Close)
	stats := new(Stats)
	tr := newPlainTransport(t, TransportConfig{Stats: stats})
	var stdDials atomic.Int32
	dial := tr.std.DialContext
	tr.std.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		stdDials.Add(1)
		return dial(ctx, network, addr)
	}
	large := strings.Repeat("x", plainBodyMax+1)
	cases := []struct {
		name    string
		body    io.Reader
		length  int64 // as the forwarder sets it; -1: unknown
		size    int   // what the upstream must read
		wantStd bool
	}{
		{"no body", nil, 0, 0, false},
		{"small, known length", strings.NewReader(`{"x":1}`), 7, 7, false},
		{"at the bound", strings.NewReader(large[1:]), plainBodyMax, plainBodyMax, false},
		{"over the bound", strings.NewReader(large), plainBodyMax + 1, plainBodyMax + 1, true},
		{"unknown length", strings.NewReader("abc"), -1, 3, true}, // sent chunked
	}
	for _, c := range cases {
		before := stdDials.Load()
		req, err := http.NewRequest("POST", srv.URL, c.body)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = c.length
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := readAll(t, resp); got != fmt.Sprint(c.size) {
			t.Errorf("%s: upstream read %s bytes, want %d", c.name, got, c.size)
		}
		if gotStd := stdDials.Load() > before; gotStd != c.wantStd {
			t.Errorf("%s: through http.Transport %v, want %v", c.name, gotStd, c.wantStd)
		}
		// A fresh connection each time, so a dial shows the transport used.
		tr.CloseIdleConnections()
	}
	if got := stats.Snapshot().ConnsOpened; got != uint64(len(cases)) {
		t.Errorf("ConnsOpened %d, want %d: one per case, by either pool", got, len(cases))
	}
}

func TestKeepAliveLimit(t *testing.T) {
	def := 90 * time.Second
	cases := []struct {
		name   string
		values []string
		want   time.Duration
	}{
		{"none", nil, def},
		{"node's", []string{"timeout=5"}, 3750 * time.Millisecond},
		{"with max", []string{"timeout=4, max=1000"}, 3 * time.Second},
		{"spaces and case", []string{"max=5 , Timeout = 8"}, 6 * time.Second},
		{"longer than ours", []string{"timeout=600"}, def},
		{"zero: do not reuse", []string{"timeout=0"}, 0},
		{"not a number", []string{"timeout=soon"}, def},
		{"negative", []string{"timeout=-3"}, def},
		{"no timeout", []string{"max=100"}, def},
	}
	for _, c := range cases {
		h := http.Header{}
		if c.values != nil {
			h["Keep-Alive"] = c.values
		}
		if got := keepAliveLimit(h, def); got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}

// TestPlainPool_UpstreamKeepAliveTimeoutIsHonoured: a connection idle for
// longer than three quarters of the upstream's announced timeout is not
// taken again; one idle for less is.
func TestPlainPool_UpstreamKeepAliveTimeoutIsHonoured(t *testing.T) {
	cases := []struct {
		idle      time.Duration
		wantConns int32
	}{
		{500 * time.Millisecond, 1},
		{800 * time.Millisecond, 2},
	}
	for _, c := range cases {
		up := newRawUpstream(t, func(_ int, conn net.Conn, br *bufio.Reader) {
			for {
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1\r\n"+
					"Content-Length: 2\r\n\r\nok")
			}
		})
		tr := newPlainTransport(t, TransportConfig{})
		for i := range 2 {
			resp, err := tr.RoundTrip(mustRequest(t, context.Background(), "POST",
				up.url("/"), "{}"))
			if err != nil {
				t.Fatal(err)
			}
			readAll(t, resp)
			if i == 0 {
				// As if the connection had sat idle this long.
				p := poolOf(t, tr, up.url(""))
				p.mu.Lock()
				n := len(p.idle)
				if n == 1 {
					p.idle[0].idleAt = time.Now().Add(-c.idle)
				}
				p.mu.Unlock()
				if n != 1 {
					t.Fatalf("%d idle connections after the first answer, want 1", n)
				}
			}
		}
		if got := up.accepted.Load(); got != c.wantConns {
			t.Errorf("idle %v with timeout=1: %d connections, want %d", c.idle, got,
				c.wantConns)
		}
	}
}
