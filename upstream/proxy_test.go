package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cerbai/cerbai/integration/golden"
)

// TestProxy_ForwardedRequestGolden pins the whole request the LLM receives
// after header hygiene, token injection and the base-path join.
func TestProxy_ForwardedRequestGolden(t *testing.T) {
	rec := newRecorder(t, nil)
	p := newProxy(t, Config{Target: rec.URL(t, "/openai/deployments/x?api-version=2024-06-01")})
	srv := serveProxy(t, p)

	body := `{"model":"m","stream":true}`
	raw := "POST /v1/chat/completions?stream=true&q=a%20b HTTP/1.1\r\n" +
		"Host: cerbai.internal\r\n" +
		"Accept: application/json\r\n" +
		"Api-Key: client-api-key\r\n" +
		"Authorization: Bearer proxy-key-secret\r\n" +
		"Connection: keep-alive, X-Hop\r\n" +
		"Content-Length: " + fmt.Sprint(len(body)) + "\r\n" +
		"Content-Type: application/json\r\n" +
		"Cookie: a=b\r\n" +
		"Forwarded: for=10.9.9.9\r\n" +
		"Keep-Alive: timeout=5\r\n" +
		"Proxy-Authorization: Basic cHJveHk6cGFzcw==\r\n" +
		"Proxy-Connection: keep-alive\r\n" +
		"Te: trailers\r\n" +
		"Upgrade: websocket\r\n" +
		"User-Agent: OpenAI/Python 1.40.0\r\n" +
		"X-Api-Key: client-x-api-key\r\n" +
		"X-Forwarded-For: 10.1.2.3\r\n" +
		"X-Hop: dropped-because-named-in-connection\r\n" +
		"X-Real-Ip: 10.1.2.3\r\n" +
		"X-Request-Id: has space\r\n" +
		"X-Stainless-Lang: python\r\n" +
		"\r\n" + body
	resp, _, _ := rawExchange(t, addrOf(srv), raw)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("got status %d, want 200", resp.StatusCode)
	}
	seen := rec.Seen()
	if len(seen) != 1 {
		t.Fatalf("got %d upstream requests, want 1", len(seen))
	}
	s := seen[0]
	if id := s.Header.Get("X-Request-Id"); len(id) != 32 {
		t.Errorf("got generated request id %q, want 32 hex digits", id)
	}
	if got, want := resp.Header.Get("X-Request-Id"), s.Header.Get("X-Request-Id"); got != want {
		t.Errorf("got response request id %q, want the forwarded one %q", got, want)
	}
	got := s.Method + " " + s.RequestURI + "\n" +
		"Host: " + strings.ReplaceAll(s.Host, addrOf(rec.srv), "<upstream>") + "\n" +
		formatHeader(s.Header, map[string]string{"X-Request-Id": "<generated>"}) +
		"\n" + s.Body + "\n"
	golden.Check(t, filepath.Join("testdata", "forwarded_request.golden"), []byte(got))
}

// TestProxy_ErrorBodiesGolden pins every answer cerbai produces itself.
func TestProxy_ErrorBodiesGolden(t *testing.T) {
	errDial := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	errHdr := errors.New("net/http: server response headers exceeded 262144 bytes; aborted")
	target, _ := url.Parse("http://llm.test/openai")
	fail := func(err error) http.RoundTripper {
		return roundTripFunc(func(*http.Request) (*http.Response, error) { return nil, err })
	}
	deny := func(*http.Request) (string, bool) { return "", false }
	cases := []struct {
		name   string
		cfg    Config
		method string
		target string
		body   string
	}{
		{"invalid_request", Config{}, "GET", "/v1/../admin", ""},
		{"method_not_allowed", Config{}, "TRACE", "/v1/models", ""},
		{"unauthorized", Config{Authorize: deny}, "GET", "/v1/models", ""},
		{"not_found", Config{AllowPaths: []string{"/v1/"}}, "GET", "/admin", ""},
		{"token_unavailable", Config{Tokens: newFakeTokens()}, "GET", "/v1/models", ""},
		{"upstream_unreachable", Config{Transport: fail(errDial)}, "GET", "/v1/models", ""},
		{"upstream_timeout", Config{Transport: fail(context.DeadlineExceeded)},
			"GET", "/v1/models", ""},
		{"header_too_large", Config{Transport: fail(errHdr)}, "GET", "/v1/models", ""},
		{"request_too_large", Config{MaxRequestBody: 4}, "POST", "/v1/x", "12345"},
	}
	var b strings.Builder
	for _, c := range cases {
		c.cfg.Target = target
		if c.cfg.Transport == nil {
			c.cfg.Transport = fail(errors.New("must not be reached"))
		}
		p := newProxy(t, c.cfg)
		w := httptest.NewRecorder()
		r := httptest.NewRequest(c.method, c.target, strings.NewReader(c.body))
		p.ServeHTTP(w, r)
		fmt.Fprintf(&b, "== %s\n%d\n%s%s\n", c.name, w.Code,
			formatHeader(w.Header(), nil), w.Body.String())
	}
	// MaxConcurrent: one slot, held by a request the upstream keeps waiting.
	b.WriteString(concurrencyAnswer(t))
	golden.Check(t, filepath.Join("testdata", "errors.golden"), []byte(b.String()))
}

// concurrencyAnswer renders the answer to a request over MaxConcurrent.
func concurrencyAnswer(t *testing.T) string {
	t.Helper()
	entered, release := make(chan struct{}), make(chan struct{})
	tr := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		close(entered)
		<-release
		return &http.Response{StatusCode: 200, Body: http.NoBody, Header: http.Header{}}, nil
	})
	target, _ := url.Parse("http://llm.test")
	p := newProxy(t, Config{Target: target, Transport: tr, MaxConcurrent: 1})
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/a", nil))
	}()
	waitFor(t, entered, "the first request to reach the upstream")
	w := httptest.NewRecorder()
	p.ServeHTTP(w, httptest.NewRequest("GET", "/v1/b", nil))
	close(release)
	waitFor(t, done, "the first request to finish")
	return fmt.Sprintf("== too_many_requests\n%d\n%s%s\n", w.Code,
		formatHeader(w.Header(), nil), w.Body.String())
}

// TestProxy_HeaderHygiene checks, header by header, what reaches the
// upstream for the headers a client may send.
func TestProxy_HeaderHygiene(t *testing.T) {
	cases := []struct {
		name    string
		cfg     Config
		remote  string
		in      http.Header
		want    map[string]string // header → value; "" means absent
		wantLen int               // number of values of the token header, 1 unless 0
	}{
		{
			name: "connection names authorization",
			in:   http.Header{"Connection": {"Authorization"}, "Authorization": {"Bearer pk"}},
			want: map[string]string{"Authorization": "Bearer tok-1", "Connection": ""},
		},
		{
			name: "connection names x-foo",
			in:   http.Header{"Connection": {"keep-alive, X-Foo"}, "X-Foo": {"1"}, "X-Bar": {"2"}},
			want: map[string]string{"X-Foo": "", "X-Bar": "2"},
		},
		{
			name: "connection token case and spaces",
			in:   http.Header{"Connection": {" x-FOO ,close"}, "X-Foo": {"1"}},
			want: map[string]string{"X-Foo": ""},
		},
		{
			name: "hop-by-hop dropped",
			in: http.Header{"Keep-Alive": {"5"}, "Te": {"trailers"}, "Trailer": {"X"},
				"Upgrade": {"h2c"}, "Proxy-Connection": {"keep-alive"}},
			want: map[string]string{"Keep-Alive": "", "Te": "", "Trailer": "",
				"Upgrade": "", "Proxy-Connection": ""},
		},
		{
			name: "client credentials dropped",
			in: http.Header{"Api-Key": {"a"}, "X-Api-Key": {"b"},
				"Proxy-Authorization": {"Basic c"}, "Authorization": {"Bearer pk"}},
			want: map[string]string{"Api-Key": "", "X-Api-Key": "",
				"Proxy-Authorization": "", "Authorization": "Bearer tok-1"},
		},
		{
			name: "custom token header: credentials still dropped",
			cfg:  Config{TokenHeader: "api-key", TokenPrefix: "-"},
			in: http.Header{"Api-Key": {"client"}, "X-Api-Key": {"b"},
				"Authorization": {"Bearer proxy-key"}},
			want: map[string]string{"Api-Key": "-tok-1", "X-Api-Key": "",
				"Authorization": ""},
		},
		{
			name: "client cannot override custom token header",
			cfg:  Config{TokenHeader: "X-Goog-Api-Key", TokenPrefix: "-"},
			in:   http.Header{"X-Goog-Api-Key": {"mine", "also-mine"}},
			want: map[string]string{"X-Goog-Api-Key": "-tok-1"},
		},
		{
			name: "request id kept when valid",
			in:   http.Header{"X-Request-Id": {"abc-123_XYZ"}},
			want: map[string]string{"X-Request-Id": "abc-123_XYZ"},
		},
		{
			name: "request id too long replaced",
			in:   http.Header{"X-Request-Id": {strings.Repeat("a", 129)}},
			want: map[string]string{"X-Request-Id": "<generated>"},
		},
		{
			name: "request id of 128 kept",
			in:   http.Header{"X-Request-Id": {strings.Repeat("a", 128)}},
			want: map[string]string{"X-Request-Id": strings.Repeat("a", 128)},
		},
		{
			name: "request id non-ascii replaced",
			in:   http.Header{"X-Request-Id": {"idé"}},
			want: map[string]string{"X-Request-Id": "<generated>"},
		},
		{
			name: "forwarded-for replaced for untrusted peer",
			in: http.Header{"X-Forwarded-For": {"10.0.0.1"}, "Forwarded": {"for=x"},
				"X-Real-Ip": {"10.0.0.1"}},
			want: map[string]string{"X-Forwarded-For": "192.0.2.7", "Forwarded": "",
				"X-Real-Ip": ""},
		},
		{
			name: "forwarded-for appended for trusted peer",
			cfg:  Config{TrustForwarded: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}},
			in: http.Header{"X-Forwarded-For": {"10.0.0.1", "10.0.0.2"},
				"X-Real-Ip": {"10.0.0.1"}},
			want: map[string]string{"X-Forwarded-For": "10.0.0.1, 10.0.0.2, 192.0.2.7",
				"X-Real-Ip": "10.0.0.1"},
		},
		{
			name: "forwarded-for none",
			cfg: Config{ForwardedFor: "none",
				TrustForwarded: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}},
			in:   http.Header{"X-Forwarded-For": {"10.0.0.1"}},
			want: map[string]string{"X-Forwarded-For": ""},
		},
		{
			name:   "forwarded-for ipv6 peer",
			remote: "[2001:db8::1]:5555",
			want:   map[string]string{"X-Forwarded-For": "2001:db8::1"},
		},
		{
			name: "no user agent: none added",
			want: map[string]string{"User-Agent": ""},
		},
		{
			name: "end-to-end headers pass",
			in:   http.Header{"Openai-Organization": {"org"}, "Cookie": {"a=b"}},
			want: map[string]string{"Openai-Organization": "org", "Cookie": "a=b"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got *http.Request
			c.cfg.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
				got = r
				return &http.Response{StatusCode: 200, Body: http.NoBody, Header: http.Header{}}, nil
			})
			c.cfg.Target, _ = url.Parse("http://llm.test")
			p := newProxy(t, c.cfg)
			r := httptest.NewRequest("GET", "/v1/models", nil)
			r.RemoteAddr = "192.0.2.7:1234"
			if c.remote != "" {
				r.RemoteAddr = c.remote
			}
			r.Header = c.in.Clone()
			if r.Header == nil {
				r.Header = http.Header{}
			}
			p.ServeHTTP(httptest.NewRecorder(), r)
			if got == nil {
				t.Fatal("the request never reached the upstream")
			}
			for k, want := range c.want {
				vv, ok := got.Header[http.CanonicalHeaderKey(k)]
				switch {
				case want == "" && ok && !(k == "User-Agent" && len(vv) == 1 && vv[0] == ""):
					t.Errorf("%s: got %q, want absent", k, vv)
				case want == "<generated>":
					if len(vv) != 1 || len(vv[0]) != 32 {
						t.Errorf("%s: got %q, want one generated id", k, vv)
					}
				case want != "" && (len(vv) != 1 || vv[0] != want):
					t.Errorf("%s: got %q, want [%q]", k, vv, want)
				}
			}
			tokenHeader := http.CanonicalHeaderKey(c.cfg.TokenHeader)
			if tokenHeader == "" {
				tokenHeader = "Authorization"
			}
			if n := len(got.Header[tokenHeader]); n != 1 {
				t.Errorf("got %d values of %s, want 1", n, tokenHeader)
			}
		})
	}
}

// TestProxy_BasePathJoin checks the URL the upstream is asked for.
func TestProxy_BasePathJoin(t *testing.T) {
	cases := []struct{ target, in, want string }{
		{"http://h", "/v1/models", "/v1/models"},
		{"http://h/", "/v1/models", "/v1/models"},
		{"http://h/openai", "/v1/chat/completions", "/openai/v1/chat/completions"},
		{"http://h/openai/", "/v1/chat/completions", "/openai/v1/chat/completions"},
		{"http://h/openai//", "/v1/x", "/openai/v1/x"},
		{"http://h/openai/deployments/gpt", "/v1/x?a=1&b=%20", "/openai/deployments/gpt/v1/x?a=1&b=%20"},
		{"http://h/openai", "/", "/openai/"},
		{"http://h/openai", "/v1/files/a%2Fb", "/openai/v1/files/a%2Fb"},
		{"http://h/openai", "/v1/files/a%2fb%20c", "/openai/v1/files/a%2fb%20c"},
		{"http://h/a%20b", "/v1/x%2Fy", "/a%20b/v1/x%2Fy"},
		{"http://h/a%20b", "/v1/x", "/a%20b/v1/x"},
		{"http://h/base", "/v1/x?", "/base/v1/x"},
		{"http://h/base?api-version=1", "/v1/x", "/base/v1/x?api-version=1"},
		{"http://h/base?api-version=1", "/v1/x?y=2", "/base/v1/x?api-version=1&y=2"},
		{"http://h", "/v1//x", "/v1//x"},
		{"http://h", "/v1/x;p=1", "/v1/x;p=1"},
		{"http://h", "/v1/caf%C3%A9", "/v1/caf%C3%A9"},
	}
	for _, c := range cases {
		t.Run(c.target+c.in, func(t *testing.T) {
			rec := newRecorder(t, nil)
			target, err := url.Parse(c.target)
			if err != nil {
				t.Fatal(err)
			}
			target.Host = addrOf(rec.srv)
			p := newProxy(t, Config{Target: target})
			srv := serveProxy(t, p)
			resp, _, _ := rawExchange(t, addrOf(srv),
				"GET "+c.in+" HTTP/1.1\r\nHost: x\r\n\r\n")
			if resp.StatusCode != 200 {
				t.Fatalf("got status %d, want 200", resp.StatusCode)
			}
			seen := rec.Seen()
			if len(seen) != 1 || seen[0].RequestURI != c.want {
				t.Fatalf("got upstream requests %+v, want one for %q", seen, c.want)
			}
		})
	}
}

// TestNew_RejectsBadConfig checks that New refuses what it cannot run.
func TestNew_RejectsBadConfig(t *testing.T) {
	good, _ := url.Parse("https://llm.test/openai")
	tok := newFakeTokens("t")
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"nil target", Config{Tokens: tok}, "target (--llm-url) is required"},
		{"nil tokens", Config{Target: good}, "token source is required"},
		{"ftp target", Config{Target: &url.URL{Scheme: "ftp", Host: "h"}, Tokens: tok},
			"must be http or https"},
		{"no host", Config{Target: &url.URL{Scheme: "https"}, Tokens: tok}, "has no host"},
		{"bad header", Config{Target: good, Tokens: tok, TokenHeader: "Bad Header"},
			"--token-header"},
		{"bad forwarded-for", Config{Target: good, Tokens: tok, ForwardedFor: "append"},
			"--forwarded-for"},
		{"negative limit", Config{Target: good, Tokens: tok, MaxRequestBody: -1},
			"must not be negative"},
		{"allow path", Config{Target: good, Tokens: tok, AllowPaths: []string{"v1/"}},
			"--allow-path"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(c.cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got error %v, want one containing %q", err, c.want)
			}
			if !strings.HasPrefix(err.Error(), "new proxy: ") {
				t.Errorf("got error %q, want it to start with the operation", err)
			}
		})
	}
	if _, err := New(Config{Target: good, Tokens: tok}); err != nil {
		t.Errorf("got error %v for a good config, want nil", err)
	}
}

// TestProxy_StatsCountRequests checks the counters after a few requests.
func TestProxy_StatsCountRequests(t *testing.T) {
	rec := newRecorder(t, nil)
	allow := func(r *http.Request) (string, bool) { return "team-a", true }
	p := newProxy(t, Config{Target: rec.URL(t, ""), Authorize: allow})
	srv := serveProxy(t, p)
	for _, path := range []string{"/v1/a", "/v1/b", "/v1/../c"} {
		resp, err := http.Post(srv.URL+path, "text/plain", strings.NewReader("hello"))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	s := p.Stats().Snapshot()
	wantReq := []RequestCount{{"POST", "2xx", 2}, {"POST", "4xx", 1}}
	if diff := cmp.Diff(wantReq, s.Requests); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
	if s.BytesIn != 10 || s.BytesOut != 4 {
		t.Errorf("got bytes in/out %d/%d, want 10/4", s.BytesIn, s.BytesOut)
	}
	var total uint64
	for _, n := range s.DurationCounts {
		total += n
	}
	if total != 3 || len(s.DurationCounts) != len(s.DurationBounds)+1 {
		t.Errorf("got %d observations in %d buckets, want 3 in %d", total,
			len(s.DurationCounts), len(s.DurationBounds)+1)
	}
	if len(s.UpstreamErrors) != 6 {
		t.Errorf("got error kinds %v, want all 6 present", s.UpstreamErrors)
	}
	// The /../ request is refused before the key check.
	if got := s.KeyRequests["team-a"]; got != 2 {
		t.Errorf("got %d requests for key team-a, want 2", got)
	}
}
