package tokens

import (
	"cmp"
	"context"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cerbai/cerbai/integration/golden"
)

// render prints a token request as the server saw it, form fields sorted
// by name (values of one name in the order sent).
func (s seenRequest) render() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s\n", s.Method, s.Path)
	fmt.Fprintf(&b, "Content-Type: %s\n", s.ContentType)
	auth := cmp.Or(s.Authorization, "(none)")
	fmt.Fprintf(&b, "Authorization: %s\n", auth)
	if enc, ok := strings.CutPrefix(s.Authorization, "Basic "); ok {
		dec, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			dec = []byte("(not base64)")
		}
		fmt.Fprintf(&b, "Authorization, decoded: %s\n", dec)
	}
	fmt.Fprintf(&b, "Client certificate CN: %s\n", s.ClientCN)
	b.WriteString("Form:\n")
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range s.Form {
			if !yield(k) {
				return
			}
		}
	}) {
		for _, v := range s.Form[k] {
			fmt.Fprintf(&b, "  %s = %q\n", k, v)
		}
	}
	return b.String()
}

func TestClient_TokenRequestGolden(t *testing.T) {
	p := newTestPKI(t)
	ts := newTokenServer(t, p)
	base := ts.clientConfig(t, "cerbai-client")
	// An id and secret with characters that RFC 6749 §2.3.1 encodes.
	base.ClientID, base.ClientSecret = "cerbai client:1", "s3cr/t+:&ö"
	tests := []struct {
		name   string
		change func(*ClientConfig)
	}{
		{"token_request_basic", func(c *ClientConfig) {}},
		{"token_request_post", func(c *ClientConfig) { c.AuthMethod = AuthPost }},
		{"token_request_tls", func(c *ClientConfig) { c.AuthMethod = AuthTLS }},
		{"token_request_extras", func(c *ClientConfig) {
			c.Scope = "models.read chat.write"
			c.Audience = "https://llm.internal.example"
			c.Params = []Param{{"resource", "urn:b"}, {"tenant", "a&b=c"}, {"resource", "urn:a"}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.change(&cfg)
			c, err := NewClient(cfg)
			if err != nil {
				t.Fatal(err)
			}
			before := len(ts.requests())
			if _, err := c.Fetch(context.Background(), Token{}); err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			reqs := ts.requests()
			if len(reqs) != before+1 {
				t.Fatalf("token server saw %d requests, want 1", len(reqs)-before)
			}
			golden.Check(t, filepath.Join("testdata", tt.name+".golden"),
				[]byte(reqs[len(reqs)-1].render()))
		})
	}
}
