package upstream

import (
	"net/http"
	"strings"
	"testing"
)

func TestCheckTarget(t *testing.T) {
	cases := []struct {
		target    string
		wantErr   error // nil: accepted
		wantPath  string
		wantQuery string
	}{
		{"/v1/chat/completions", nil, "/v1/chat/completions", ""},
		{"/v1/models?limit=5", nil, "/v1/models", "limit=5"},
		{"/", nil, "/", ""},
		{"/v1/files/a%2Fb", nil, "/v1/files/a%2Fb", ""},
		{"/v1/x?q=%0A", nil, "/v1/x", "q=%0A"}, // encoded control in query: allowed
		{"/v1/...", nil, "/v1/...", ""},        // three dots is a name
		{"/v1/.well-known", nil, "/v1/.well-known", ""},
		{"/v1/a..b", nil, "/v1/a..b", ""},
		{"/v1/%2e%2e%2e", nil, "/v1/%2e%2e%2e", ""},
		{"/v1/x?../..", nil, "/v1/x", "../.."}, // the query is not a path
		{"/v1/caf%C3%A9", nil, "/v1/caf%C3%A9", ""},
		{"http://other.example/x?y=1", nil, "/x", "y=1"},
		{"HTTPS://other.example:8443/v1/models", nil, "/v1/models", ""},
		{"http://other.example", nil, "/", ""},
		{"http://other.example?x=1", nil, "/", "x=1"},
		{"/v1/../x", errDotSegment, "", ""},
		{"/v1/..", errDotSegment, "", ""},
		{"/..", errDotSegment, "", ""},
		{"/v1/%2e%2e/x", errDotSegment, "", ""},
		{"/v1/%2E%2E/x", errDotSegment, "", ""},
		{"/v1/.%2e/x", errDotSegment, "", ""},
		{"/%2E/x", errDotSegment, "", ""},
		{"/a/./b", errDotSegment, "", ""},
		{"/a/.", errDotSegment, "", ""},
		{"/v1/..;x=1/admin", errDotSegment, "", ""},
		{"/v1/..%2fadmin", errDotSegment, "", ""},
		{"/v1/x%2F..%2Fadmin", errDotSegment, "", ""},
		{"/v1\\..\\admin", errDotSegment, "", ""},
		{"/v1/..%5cadmin", errDotSegment, "", ""},
		{"http://other.example/v1/../admin", errDotSegment, "", ""},
		{"/v1/x%00", errEncodedCtl, "", ""},
		{"/v1/%0d%0aX-Injected:%201", errEncodedCtl, "", ""},
		{"/v1/%1F", errEncodedCtl, "", ""},
		{"/v1/%7f", errEncodedCtl, "", ""},
		{"/v1/x\x00", errControl, "", ""},
		{"/v1/x\r\nX: y", errControl, "", ""},
		{"/v1/x\t", errControl, "", ""},
		{"/v1/x?q=\x7f", errControl, "", ""},
		{"/v1/x%zz", errBadEscape, "", ""},
		{"/v1/x%2", errBadEscape, "", ""},
		{"", errEmptyTarget, "", ""},
		{"*", errNotPath, "", ""},
		{"v1/models", errNotPath, "", ""},
		{"other.example:443", errNotPath, "", ""},
		{"ftp://other.example/x", errNotPath, "", ""},
		{"http:///x", errAbsoluteNoURL, "", ""},
	}
	for _, c := range cases {
		t.Run(c.target, func(t *testing.T) {
			r := &http.Request{Method: "GET", RequestURI: c.target}
			if err := CheckTarget(r); err != c.wantErr && c.target != "" {
				t.Fatalf("CheckTarget(%q): got %v, want %v", c.target, err, c.wantErr)
			}
			path, query, err := splitTarget(c.target)
			if err != c.wantErr {
				t.Fatalf("splitTarget(%q): got error %v, want %v", c.target, err, c.wantErr)
			}
			if path != c.wantPath || query != c.wantQuery {
				t.Errorf("splitTarget(%q): got %q %q, want %q %q", c.target, path, query,
					c.wantPath, c.wantQuery)
			}
		})
	}
}

func TestCheckTarget_ConnectAuthorityIsWellFormed(t *testing.T) {
	r := &http.Request{Method: http.MethodConnect, RequestURI: "other.example:443"}
	if err := CheckTarget(r); err != nil {
		t.Errorf("got %v, want nil (the method check answers CONNECT)", err)
	}
	r.RequestURI = "other.example:443\x00"
	if err := CheckTarget(r); err == nil {
		t.Error("got nil for a control character, want an error")
	}
}

// FuzzCheckTarget checks that whatever CheckTarget accepts has no dot
// segment and no control character the upstream could act on, and that
// the path it returns is a suffix of the target.
func FuzzCheckTarget(f *testing.F) {
	for _, s := range []string{"/v1/models", "/v1/../x", "/v1/%2e%2e/x", "/%2E/x",
		"http://h/x?y", "/v1/x%00", "/a/./b", "/v1/..;/x", "/v1\\..\\x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		path, query, err := splitTarget(target)
		if err != nil {
			return
		}
		if !strings.HasPrefix(path, "/") {
			t.Fatalf("accepted %q with path %q, want a path starting with /", target, path)
		}
		if hasControl(path) || hasControl(query) {
			t.Fatalf("accepted %q with a control character", target)
		}
		// Decode the separators and dots an upstream might decode and look
		// for a dot segment.
		dec := strings.NewReplacer("%2e", ".", "%2E", ".", "%2f", "/", "%2F", "/",
			"%5c", "/", "%5C", "/", "\\", "/").Replace(path)
		for _, seg := range strings.Split(dec, "/") {
			seg, _, _ = strings.Cut(seg, ";")
			if seg == "." || seg == ".." {
				t.Fatalf("accepted %q, which holds a dot segment", target)
			}
		}
		for i := 0; i+2 < len(path); i++ {
			if path[i] == '%' && (path[i+1] == '0' || path[i+1] == '1') {
				t.Fatalf("accepted %q, which holds an encoded control", target)
			}
		}
	})
}
