package upstream

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// These tests speak raw HTTP/1.1 to the proxy, so the bytes on the wire
// are exactly the hostile ones, not what Go's client would make of them.

func TestRaw_AbsoluteFormGoesToConfiguredUpstream(t *testing.T) {
	rec := newRecorder(t, nil)
	srv := serveProxy(t, newProxy(t, Config{Target: rec.URL(t, "/base")}))
	resp, _, _ := rawExchange(t, addrOf(srv),
		"GET http://evil.example/v1/models?x=1 HTTP/1.1\r\nHost: evil.example\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("got status %d, want 200", resp.StatusCode)
	}
	seen := rec.Seen()
	if len(seen) != 1 || seen[0].RequestURI != "/base/v1/models?x=1" ||
		seen[0].Host != addrOf(rec.srv) {
		t.Fatalf("got upstream requests %+v, want one for /base/v1/models?x=1 on %s",
			seen, addrOf(rec.srv))
	}
}

func TestRaw_HostHeaderDoesNotRoute(t *testing.T) {
	rec := newRecorder(t, nil)
	srv := serveProxy(t, newProxy(t, Config{Target: rec.URL(t, "")}))
	resp, _, _ := rawExchange(t, addrOf(srv),
		"GET /v1/models HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n")
	seen := rec.Seen()
	if resp.StatusCode != 200 || len(seen) != 1 || seen[0].Host != addrOf(rec.srv) {
		t.Fatalf("got %d and upstream requests %+v, want 200 and one to %s",
			resp.StatusCode, seen, addrOf(rec.srv))
	}
}

func TestRaw_ConnectIs405(t *testing.T) {
	rec := newRecorder(t, nil)
	srv := serveProxy(t, newProxy(t, Config{Target: rec.URL(t, "")}))
	resp, body, _ := rawExchange(t, addrOf(srv),
		"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n")
	if resp.StatusCode != http.StatusMethodNotAllowed ||
		!strings.Contains(body, `"code":"method_not_allowed"`) {
		t.Errorf("got %d %q, want 405 method_not_allowed", resp.StatusCode, body)
	}
	if n := len(rec.Seen()); n != 0 {
		t.Errorf("got %d upstream requests, want 0", n)
	}
}

// TestRaw_SmuggledRequestNeverReachesUpstream sends a request with both
// Content-Length and Transfer-Encoding; a front proxy framing by
// Content-Length would see one request, Go's server sees a chunked one
// followed by a second. The connection must close before the second.
func TestRaw_SmuggledRequestNeverReachesUpstream(t *testing.T) {
	rec := newRecorder(t, nil)
	srv := serveProxy(t, newProxy(t, Config{Target: rec.URL(t, ""), ReplayMaxBody: 1 << 20}))
	smuggled := "GET /v1/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	body := "0\r\n\r\n" + smuggled
	raw := "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n" +
		"Transfer-Encoding: chunked\r\n\r\n" + body
	resp, _, br := rawExchange(t, addrOf(srv), raw)
	if resp.StatusCode != 200 {
		t.Fatalf("got status %d, want 200", resp.StatusCode)
	}
	if !resp.Close { // ReadResponse turns "Connection: close" into Close
		t.Error("got a keep-alive answer, want Connection: close")
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Errorf("got %q, %v after the answer; want the connection closed", rest, err)
	}
	seen := rec.Seen()
	if len(seen) != 1 || seen[0].RequestURI != "/v1/chat/completions" || seen[0].Body != "" {
		t.Errorf("got upstream requests %+v, want only the first, with an empty body", seen)
	}
}

func TestRaw_DuplicateDifferingContentLengthIs400(t *testing.T) {
	rec := newRecorder(t, nil)
	srv := serveProxy(t, newProxy(t, Config{Target: rec.URL(t, "")}))
	resp, _, _ := rawExchange(t, addrOf(srv), "POST /v1/x HTTP/1.1\r\nHost: x\r\n"+
		"Content-Length: 3\r\nContent-Length: 30\r\n\r\nabc")
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("got status %d, want 400", resp.StatusCode)
	}
	if n := len(rec.Seen()); n != 0 {
		t.Errorf("got %d upstream requests, want 0", n)
	}
}

// TestRaw_ObsFoldIsUnfolded checks that a folded header line reaches the
// upstream as one line: Go's server joins the lines with a space.
func TestRaw_ObsFoldIsUnfolded(t *testing.T) {
	rec := newRecorder(t, nil)
	srv := serveProxy(t, newProxy(t, Config{Target: rec.URL(t, "")}))
	resp, _, _ := rawExchange(t, addrOf(srv), "GET /v1/x HTTP/1.1\r\nHost: x\r\n"+
		"X-Folded: first\r\n second\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("got status %d, want 200", resp.StatusCode)
	}
	seen := rec.Seen()
	if len(seen) != 1 {
		t.Fatalf("got %d upstream requests, want 1", len(seen))
	}
	if got := seen[0].Header.Get("X-Folded"); got != "first second" {
		t.Errorf("got X-Folded %q, want %q", got, "first second")
	}
}

func TestRaw_BodyOverLimitIs413(t *testing.T) {
	big := strings.Repeat("x", 100)
	chunked := "64\r\n" + big + "\r\n0\r\n\r\n"
	cases := []struct {
		name         string
		replayMax    int64
		headers      string
		body         string
		wantUpstream bool // the upstream may see a cut request, never a whole one
	}{
		{"content-length", 1 << 20, "Content-Length: 100\r\n", big, false},
		{"content-length, no replay", 0, "Content-Length: 100\r\n", big, false},
		{"chunked, read for replay", 1 << 20, "Transfer-Encoding: chunked\r\n", chunked, false},
		{"chunked, streamed", 0, "Transfer-Encoding: chunked\r\n", chunked, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := newRecorder(t, nil)
			p := newProxy(t, Config{Target: rec.URL(t, ""), MaxRequestBody: 10,
				ReplayMaxBody: c.replayMax})
			srv := serveProxy(t, p)
			resp, body, _ := rawExchange(t, addrOf(srv),
				"POST /v1/x HTTP/1.1\r\nHost: x\r\n"+c.headers+"\r\n"+c.body)
			if resp.StatusCode != http.StatusRequestEntityTooLarge ||
				!strings.Contains(body, `"code":"request_too_large"`) {
				t.Errorf("got %d %q, want 413 request_too_large", resp.StatusCode, body)
			}
			for _, s := range rec.Seen() {
				if !c.wantUpstream || s.BodyErr == nil {
					t.Errorf("upstream got %+v, want no complete request", s)
				}
			}
		})
	}
}

// TestRaw_SlowBodyIs408 checks that a body still unsent at the server's
// read deadline (cerbai's --request-read-timeout) gets 408 and a closed
// connection, never a whole request upstream, whether the body was being
// read for replay or streamed.
func TestRaw_SlowBodyIs408(t *testing.T) {
	cases := []struct {
		name      string
		replayMax int64
		headers   string
		sent      string // then nothing more
	}{
		{"content-length, read for replay", 1 << 20, "Content-Length: 100\r\n", "0123456789"},
		{"content-length, streamed", 0, "Content-Length: 100\r\n", "0123456789"},
		{"chunked, streamed", 0, "Transfer-Encoding: chunked\r\n", "64\r\n0123456789"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			rec := newRecorder(t, nil)
			p := newProxy(t, Config{Target: rec.URL(t, ""), ReplayMaxBody: c.replayMax})
			srv := httptest.NewUnstartedServer(p)
			// Long enough that the header block, sent at once, is always
			// read in time on a loaded machine.
			srv.Config.ReadTimeout = time.Second
			srv.Start()
			t.Cleanup(srv.Close)
			resp, body, br := rawExchange(t, addrOf(srv),
				"POST /v1/x HTTP/1.1\r\nHost: x\r\n"+c.headers+"\r\n"+c.sent)
			if resp.StatusCode != http.StatusRequestTimeout ||
				!strings.Contains(body, `"code":"request_timeout"`) {
				t.Errorf("got %d %q, want 408 request_timeout", resp.StatusCode, body)
			}
			if !resp.Close {
				t.Error("the answer does not close the connection")
			}
			if rest, err := io.ReadAll(br); len(rest) > 0 || err != nil {
				t.Errorf("after the answer: %q, %v; want the connection closed", rest, err)
			}
			for _, s := range rec.Seen() {
				if s.BodyErr == nil {
					t.Errorf("upstream got %+v, want no complete request", s)
				}
			}
		})
	}
}

func TestRaw_UpstreamHugeHeaderIs502(t *testing.T) {
	rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		w.Header().Set("X-Huge", strings.Repeat("a", 1<<20))
	})
	p := newProxy(t, Config{Target: rec.URL(t, "")})
	srv := serveProxy(t, p)
	resp, body, _ := rawExchange(t, addrOf(srv), "GET /v1/x HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("X-Huge") != "" {
		t.Errorf("got %d %q, want 502 without the header", resp.StatusCode, body)
	}
	if got := p.Stats().Snapshot().UpstreamErrors[ErrKindHeaderTooLarge]; got != 1 {
		t.Errorf("got %d header_too_large, want 1", got)
	}
}

func TestRaw_OverMaxConcurrentIs503(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			close(entered)
			<-release
		}
	})
	srv := serveProxy(t, newProxy(t, Config{Target: rec.URL(t, ""), MaxConcurrent: 1}))
	first := make(chan int)
	go func() {
		resp, err := http.Get(srv.URL + "/v1/slow")
		if err != nil {
			first <- 0
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	waitFor(t, entered, "the first request to reach the upstream")
	resp, body, _ := rawExchange(t, addrOf(srv), "GET /v1/x HTTP/1.1\r\nHost: x\r\n\r\n")
	close(release)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" ||
		!strings.Contains(body, `"code":"too_many_requests"`) {
		t.Errorf("got %d Retry-After %q %q, want 503 with Retry-After 1",
			resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if got := waitFor(t, first, "the first request"); got != 200 {
		t.Errorf("got %d for the first request, want 200", got)
	}
	// The slot is free again.
	resp, _, _ = rawExchange(t, addrOf(srv), "GET /v1/x HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Errorf("got %d after the first finished, want 200", resp.StatusCode)
	}
}

func TestRaw_DotSegmentsRefusedBeforeAnyRouter(t *testing.T) {
	rec := newRecorder(t, nil)
	srv := serveProxy(t, newProxy(t, Config{Target: rec.URL(t, "")}))
	for _, target := range []string{"/v1/../admin", "/v1/%2e%2e/admin", "/%2E/x", "/v1/x%00"} {
		resp, body, _ := rawExchange(t, addrOf(srv), "GET "+target+" HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp.StatusCode != http.StatusBadRequest ||
			!strings.Contains(body, `"code":"invalid_request"`) {
			t.Errorf("%s: got %d %q, want 400 invalid_request", target, resp.StatusCode, body)
		}
	}
	if n := len(rec.Seen()); n != 0 {
		t.Errorf("got %d upstream requests, want 0", n)
	}
}
