package upstream

import (
	"bufio"
	"net/http"
	"net/textproto"
	"strings"
	"testing"
)

func TestValidRequestID(t *testing.T) {
	cases := []struct {
		id   string
		want bool
	}{
		{"a", true},
		{"req_123-ABC.x:y/z", true},
		{strings.Repeat("z", 128), true},
		{"", false},
		{strings.Repeat("z", 129), false},
		{"has space", false},
		{"tab\there", false},
		{"del\x7f", false},
		{"é", false},
	}
	for _, c := range cases {
		if got := validRequestID(c.id); got != c.want {
			t.Errorf("validRequestID(%q): got %v, want %v", c.id, got, c.want)
		}
	}
}

func TestNewRequestID_HexAndDistinct(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := newRequestID()
		if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
			t.Fatalf("got id %q, want 32 lowercase hex digits", id)
		}
		if seen[id] {
			t.Fatalf("got id %q twice in 1000", id)
		}
		seen[id] = true
	}
}

func TestCopyResponseHeaders(t *testing.T) {
	src := http.Header{
		"Connection":         {"close, X-Internal"},
		"X-Internal":         {"secret-topology"},
		"Keep-Alive":         {"timeout=5"},
		"Transfer-Encoding":  {"chunked"},
		"Upgrade":            {"h2c"},
		"Proxy-Authenticate": {"Basic"},
		"Set-Cookie":         {"a=1", "b=2"},
		"Content-Type":       {"application/json"},
		"Openai-Processing":  {"12"},
		"Www-Authenticate":   {"Bearer"},
	}
	dst := http.Header{}
	copyResponseHeaders(dst, src)
	want := http.Header{
		"Set-Cookie":        {"a=1", "b=2"},
		"Content-Type":      {"application/json"},
		"Openai-Processing": {"12"},
		"Www-Authenticate":  {"Bearer"},
	}
	if len(dst) != len(want) {
		t.Errorf("got headers %v, want %v", dst, want)
	}
	for k, vv := range want {
		if strings.Join(dst[k], "|") != strings.Join(vv, "|") {
			t.Errorf("%s: got %q, want %q", k, dst[k], vv)
		}
	}
}

// sdkHeaders is what an OpenAI SDK sends on a chat completion.
func sdkHeaders() http.Header {
	return http.Header{
		"Accept":                      {"application/json"},
		"Accept-Encoding":             {"gzip, deflate"},
		"Authorization":               {"Bearer proxy-key"},
		"Connection":                  {"keep-alive"},
		"Content-Length":              {"123"},
		"Content-Type":                {"application/json"},
		"User-Agent":                  {"OpenAI/Python 1.40.0"},
		"X-Stainless-Arch":            {"x64"},
		"X-Stainless-Lang":            {"python"},
		"X-Stainless-Os":              {"Linux"},
		"X-Stainless-Package-Version": {"1.40.0"},
		"X-Stainless-Runtime":         {"CPython"},
		"X-Stainless-Retry-Count":     {"0"},
	}
}

func BenchmarkRewriteHeaders(b *testing.B) {
	src := sdkHeaders()
	o := &outboundHeaders{
		tokenHeader:  "Authorization",
		tokenValue:   []string{"Bearer token"},
		requestID:    []string{"0123456789abcdef0123456789abcdef"},
		forwardedFor: []string{"10.0.0.1"},
	}
	b.ReportAllocs()
	for b.Loop() {
		dst := make(http.Header, len(src)+3)
		rewriteHeaders(dst, src, o)
	}
}

// FuzzRewriteHeaders checks, for any header block a client can send and
// any token header name, the rules the upstream relies on.
func FuzzRewriteHeaders(f *testing.F) {
	f.Add("Connection: Authorization\r\nAuthorization: Bearer k\r\n", "Authorization")
	f.Add("Connection: X-Foo, keep-alive\r\nX-Foo: 1\r\nApi-Key: k\r\n", "Api-Key")
	f.Add("X-Goog-Api-Key: mine\r\nX-Request-Id: x\r\nTe: trailers\r\n", "X-Goog-Api-Key")
	f.Add("Connection: X-Request-Id, X-Forwarded-For\r\nX-Forwarded-For: 1.2.3.4\r\n", "x-api-key")
	f.Fuzz(func(t *testing.T, block, tokenHeader string) {
		if !validHeaderName(tokenHeader) {
			return
		}
		tr := textproto.NewReader(bufio.NewReader(strings.NewReader(block + "\r\n\r\n")))
		mh, err := tr.ReadMIMEHeader()
		if err != nil {
			return
		}
		src := http.Header(mh)
		o := &outboundHeaders{
			tokenHeader:  http.CanonicalHeaderKey(tokenHeader),
			tokenValue:   []string{"Bearer the-token"},
			requestID:    []string{"rid"},
			forwardedFor: []string{"192.0.2.1"},
		}
		dst := http.Header{}
		rewriteHeaders(dst, src, o)

		if got := dst[o.tokenHeader]; len(got) != 1 || got[0] != "Bearer the-token" {
			t.Fatalf("token header %s: got %q, want the token only", o.tokenHeader, got)
		}
		if got := dst[hdrRequestID]; len(got) != 1 || got[0] != "rid" {
			t.Fatalf("request id: got %q, want rid", got)
		}
		if got := dst[hdrForwardedFor]; len(got) != 1 || got[0] != "192.0.2.1" {
			t.Fatalf("X-Forwarded-For: got %q, want the peer", got)
		}
		ours := map[string]bool{o.tokenHeader: true, hdrRequestID: true,
			hdrForwardedFor: true, hdrUserAgent: true}
		for k, vv := range dst {
			if ours[k] {
				continue
			}
			if isHopByHop(k) || isCredential(k) || k == "Content-Length" {
				t.Fatalf("forwarded %s: %q", k, vv)
			}
			if namedIn(src["Connection"], k) {
				t.Fatalf("forwarded %s although Connection names it", k)
			}
			for _, v := range vv {
				if strings.ContainsAny(v, "\r\n") {
					t.Fatalf("forwarded %s with a line break: %q", k, v)
				}
			}
		}
	})
}
