package upstream

import (
	"encoding/hex"
	"math/rand/v2"
	"net/http"
	"strings"
)

// hopByHop lists the headers that describe one connection, not the
// message (RFC 9110 §7.6.1), plus Proxy-Connection, which old clients send.
var hopByHop = [...]string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// clientCredentials are the headers a client may carry a proxy key or its
// own provider key in. None of them is ever forwarded.
var clientCredentials = [...]string{
	"Authorization", "Api-Key", "X-Api-Key", "Proxy-Authorization",
}

// Headers cerbai sets itself on the outbound request.
const (
	hdrRequestID    = "X-Request-Id"
	hdrForwardedFor = "X-Forwarded-For"
	hdrUserAgent    = "User-Agent"
)

// noUserAgent stops Go's client from adding its own User-Agent when the
// client sent none: a present but empty value is not written.
var noUserAgent = []string{""}

// outboundHeaders says what rewriteHeaders sets besides the client's
// headers. The slices are shared, never modified.
type outboundHeaders struct {
	tokenHeader  string   // canonical name
	tokenValue   []string // prefix + token
	requestID    []string
	forwardedFor []string // nil: no X-Forwarded-For
	keepForward  bool     // trusted peer: keep the client's forwarding headers
}

// rewriteHeaders fills dst with the headers to send upstream: the client's
// headers without hop-by-hop ones, those named in Connection, framing
// headers, client credentials and forwarding headers, then cerbai's own.
// Value slices are shared with src, not copied.
func rewriteHeaders(dst, src http.Header, o *outboundHeaders) {
	conn := src["Connection"]
	for k, vv := range src {
		if dropOutbound(k, o) || namedIn(conn, k) {
			continue
		}
		dst[k] = vv
	}
	if _, ok := dst[hdrUserAgent]; !ok {
		dst[hdrUserAgent] = noUserAgent
	}
	dst[hdrRequestID] = o.requestID
	if o.forwardedFor != nil {
		dst[hdrForwardedFor] = o.forwardedFor
	}
	// Last, so no client header can remove or replace the token.
	dst[o.tokenHeader] = o.tokenValue
}

// dropOutbound reports whether the client's header k must not be copied.
func dropOutbound(k string, o *outboundHeaders) bool {
	if isHopByHop(k) || isCredential(k) {
		return true
	}
	switch k {
	case "Content-Length", "Expect", hdrRequestID:
		// Framing is cerbai's; the request id is set afterwards.
		return true
	case hdrForwardedFor, "Forwarded", "X-Real-Ip":
		return !o.keepForward
	}
	return k == o.tokenHeader
}

// copyResponseHeaders copies the upstream's response headers to dst,
// without hop-by-hop ones and those named in Connection. Everything else,
// Set-Cookie included, passes unchanged.
func copyResponseHeaders(dst, src http.Header) {
	conn := src["Connection"]
	for k, vv := range src {
		if isHopByHop(k) || namedIn(conn, k) {
			continue
		}
		dst[k] = vv
	}
}

func isHopByHop(k string) bool {
	for _, h := range hopByHop {
		if k == h {
			return true
		}
	}
	return false
}

func isCredential(k string) bool {
	for _, h := range clientCredentials {
		if k == h {
			return true
		}
	}
	return false
}

// namedIn reports whether header k is listed in the Connection values.
// It scans the comma-separated tokens in place, so it allocates nothing.
func namedIn(conn []string, k string) bool {
	for _, v := range conn {
		for v != "" {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(tok), k) {
				return true
			}
		}
	}
	return false
}

// validRequestID reports whether a client's X-Request-Id may be kept:
// 1 to 128 visible ASCII characters.
func validRequestID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// newRequestID returns 32 hex digits. math/rand/v2's global source is a
// per-thread ChaCha8 seeded by the runtime: unique enough for an id, not
// meant to be secret, and far cheaper than crypto/rand per request.
func newRequestID() string {
	var b [16]byte
	var out [32]byte
	for i := 0; i < 16; i += 8 {
		u := rand.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(u >> (8 * j))
		}
	}
	hex.Encode(out[:], b[:])
	return string(out[:])
}

// validHeaderName reports whether s is an RFC 9110 token, usable as a
// header name.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
