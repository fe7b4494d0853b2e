package upstream

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// guard bounds how long a test waits for something that must happen. It
// only turns a hang into a failure; no assertion depends on it.
const guard = 10 * time.Second

var errNoToken = errors.New("fetch token: token service down")

// fakeTokens hands out tokens in order: Invalidate of the current one moves
// to the next; past the end, Token fails.
type fakeTokens struct {
	mu          sync.Mutex
	tokens      []string
	cur         int
	calls       int
	invalidated []string
}

func newFakeTokens(tokens ...string) *fakeTokens { return &fakeTokens{tokens: tokens} }

func (f *fakeTokens) Token(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.cur >= len(f.tokens) {
		return "", errNoToken
	}
	return f.tokens[f.cur], nil
}

func (f *fakeTokens) Invalidate(tok string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.invalidated = append(f.invalidated, tok)
	if f.cur < len(f.tokens) && f.tokens[f.cur] == tok {
		f.cur++
	}
}

func (f *fakeTokens) Invalidated() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.invalidated...)
}

// seenRequest is what the fake upstream received.
type seenRequest struct {
	Method, RequestURI, Host string
	Header                   http.Header
	Body                     string
	BodyErr                  error
}

// recorder is a fake LLM that records every request and answers with
// handle (200 "ok" when nil).
type recorder struct {
	mu     sync.Mutex
	seen   []seenRequest
	handle func(w http.ResponseWriter, r *http.Request, n int)
	srv    *httptest.Server
}

func newRecorder(t *testing.T,
	handle func(w http.ResponseWriter, r *http.Request, n int)) *recorder {
	t.Helper()
	rec := &recorder{handle: handle}
	rec.srv = httptest.NewServer(http.HandlerFunc(rec.serve))
	t.Cleanup(rec.srv.Close)
	return rec
}

func (rec *recorder) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	rec.mu.Lock()
	rec.seen = append(rec.seen, seenRequest{r.Method, r.RequestURI, r.Host,
		r.Header.Clone(), string(body), err})
	n := len(rec.seen)
	rec.mu.Unlock()
	if rec.handle != nil {
		rec.handle(w, r, n)
		return
	}
	_, _ = io.WriteString(w, "ok")
}

func (rec *recorder) Seen() []seenRequest {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]seenRequest(nil), rec.seen...)
}

func (rec *recorder) URL(t *testing.T, path string) *url.URL {
	t.Helper()
	u, err := url.Parse(rec.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// newProxy builds a proxy from cfg with test defaults filled in.
func newProxy(t *testing.T, cfg Config) *Proxy {
	t.Helper()
	if cfg.Tokens == nil {
		cfg.Tokens = newFakeTokens("tok-1", "tok-2")
	}
	if cfg.TokenPrefix == "" {
		cfg.TokenPrefix = "Bearer "
	}
	if cfg.PurgeOnStatus == nil {
		cfg.PurgeOnStatus = []int{http.StatusUnauthorized}
	}
	if cfg.Transport == nil {
		tr, err := NewTransport(TransportConfig{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(tr.CloseIdleConnections)
		cfg.Transport = tr
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

// serveProxy runs p on a loopback test server.
func serveProxy(t *testing.T, p http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return srv
}

// rawExchange sends raw bytes to addr and reads one response.
func rawExchange(t *testing.T, addr, raw string) (*http.Response, string, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(guard))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatalf("write raw request: %v", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read response body: %v", err)
	}
	return resp, string(body), br
}

// addrOf is a test server's host:port.
func addrOf(srv *httptest.Server) string { return strings.TrimPrefix(srv.URL, "http://") }

// roundTripFunc is a transport in a function.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// formatHeader renders headers one per line, sorted, for golden files.
func formatHeader(h http.Header, normalise map[string]string) string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		for _, v := range h[k] {
			if n, ok := normalise[k]; ok {
				v = n
			}
			b.WriteString(k + ": " + v + "\n")
		}
	}
	return b.String()
}

// waitFor fails the test when ch does not deliver within the guard.
func waitFor[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(guard):
		t.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}
