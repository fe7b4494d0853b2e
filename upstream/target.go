package upstream

import (
	"errors"
	"net/http"
	"strings"
)

var (
	errEmptyTarget   = errors.New("check target: empty request target")
	errNotPath       = errors.New("check target: request target is not a path")
	errControl       = errors.New("check target: control character in request target")
	errEncodedCtl    = errors.New("check target: encoded control character in path")
	errBadEscape     = errors.New("check target: malformed percent-encoding in path")
	errDotSegment    = errors.New("check target: dot segment in path")
	errAbsoluteNoURL = errors.New("check target: absolute-form target without authority")
)

// CheckTarget validates the raw request target (r.RequestURI) before any
// router sees it; nil when it may be forwarded. It refuses "." and ".."
// segments, raw or percent-encoded (%2e, any case), also when separated by
// "\", %2f or %5c (some servers treat those as "/") or followed by ";params";
// raw control characters anywhere; percent-encoded control characters
// (%00-%1f, %7f) and malformed escapes in the path; and targets that are
// neither a path nor an http(s) absolute-form URL. Only the path and query of
// an absolute-form target are used, so its host never routes anything.
// CONNECT's authority-form target is well formed (the method check refuses
// CONNECT itself).
//
// Encoded control characters in the query are allowed: the query stays
// percent-encoded on its way upstream and a prompt may legitimately hold a
// newline.
//
// When RequestURI is empty (a request built in-process rather than read by
// a server) the target is taken from r.URL.
func CheckTarget(r *http.Request) error {
	if r.Method == http.MethodConnect && r.RequestURI != "" &&
		!strings.HasPrefix(r.RequestURI, "/") {
		if hasControl(r.RequestURI) {
			return errControl
		}
		return nil
	}
	_, _, err := splitTarget(requestTarget(r))
	return err
}

// requestTarget is the target as the client sent it.
func requestTarget(r *http.Request) string {
	if r.RequestURI != "" || r.URL == nil {
		return r.RequestURI
	}
	return r.URL.RequestURI()
}

// splitTarget checks a raw request target and returns its path and query
// exactly as received (path "/" for an absolute-form target without one).
func splitTarget(t string) (path, query string, err error) {
	if t == "" {
		return "", "", errEmptyTarget
	}
	if hasControl(t) {
		return "", "", errControl
	}
	if t[0] != '/' {
		if t, err = absolutePath(t); err != nil {
			return "", "", err
		}
	}
	path, query = t, ""
	if i := strings.IndexByte(t, '?'); i >= 0 {
		path, query = t[:i], t[i+1:]
	}
	if path == "" {
		path = "/"
	}
	if err := checkPath(path); err != nil {
		return "", "", err
	}
	return path, query, nil
}

// absolutePath returns the path and query of an absolute-form target
// ("http://host/x?y" → "/x?y"); the authority is thrown away.
func absolutePath(t string) (string, error) {
	var rest string
	switch {
	case hasPrefixFold(t, "http://"):
		rest = t[len("http://"):]
	case hasPrefixFold(t, "https://"):
		rest = t[len("https://"):]
	default:
		return "", errNotPath
	}
	i := strings.IndexAny(rest, "/?")
	switch {
	case i == 0:
		return "", errAbsoluteNoURL
	case i < 0:
		return "/", nil
	case rest[i] == '?':
		return "/" + rest[i:], nil
	}
	return rest[i:], nil
}

// checkPath refuses dot segments, encoded control characters and malformed
// escapes in a raw path.
func checkPath(p string) error {
	segStart := 0
	for i := 0; i <= len(p); {
		sep := 0 // length of the separator at i, 0 when none
		switch {
		case i == len(p):
			sep = 1
		case p[i] == '/' || p[i] == '\\':
			sep = 1
		case p[i] == '%':
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return errBadEscape
			}
			c := unhex(p[i+1])<<4 | unhex(p[i+2])
			if c < 0x20 || c == 0x7f {
				return errEncodedCtl
			}
			if c == '/' || c == '\\' {
				sep = 3
			}
		}
		if sep == 0 {
			i++
			continue
		}
		if isDotSegment(p[segStart:i]) {
			return errDotSegment
		}
		i += sep
		segStart = i
	}
	return nil
}

// isDotSegment reports whether seg, up to any ";params", is "." or ".."
// with each dot raw or written %2e.
func isDotSegment(seg string) bool {
	if i := strings.IndexByte(seg, ';'); i >= 0 {
		seg = seg[:i]
	}
	dots := 0
	for len(seg) > 0 {
		switch {
		case seg[0] == '.':
			seg = seg[1:]
		case hasPrefixFold(seg, "%2e"):
			seg = seg[3:]
		default:
			return false
		}
		dots++
	}
	return dots == 1 || dots == 2
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}
