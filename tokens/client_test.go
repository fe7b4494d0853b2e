package tokens

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

func newTestClient(t *testing.T, cfg ClientConfig) *Client {
	t.Helper()
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c
}

func TestClient_FetchSetsTimesAndSource(t *testing.T) {
	ts := newTokenServer(t, newTestPKI(t))
	clk := newFakeClock()
	cfg := ts.clientConfig(t, "cerbai-client")
	cfg.Clock, cfg.TTL = clk, 2*time.Minute
	stats := new(Stats)
	cfg.Stats = stats
	tok, err := newTestClient(t, cfg).Fetch(context.Background(), Token{})
	if err != nil {
		t.Fatal(err)
	}
	want := NewToken("token-1", clk.Now(), time.Hour, 2*time.Minute)
	want.Source = SourceTokenService
	if tok != want {
		t.Errorf("got %+v, want %+v", tok, want)
	}
	if got := tok.Value.Reveal(); got != "token-1" {
		t.Errorf("got value %q, want token-1", got)
	}
	if stats.FetchOK.Load() != 1 || stats.FetchError.Load() != 0 {
		t.Errorf("got FetchOK %d FetchError %d, want 1 and 0",
			stats.FetchOK.Load(), stats.FetchError.Load())
	}
}

func TestClient_AcceptsOtherTokenTypes(t *testing.T) {
	ts := newTokenServer(t, newTestPKI(t))
	ts.setRespond(func(w http.ResponseWriter, _ int) {
		_, _ = w.Write([]byte(`{"access_token":"pop-token","token_type":"DPoP","expires_in":"60"}`))
	})
	var logs bytes.Buffer
	cfg := ts.clientConfig(t, "c")
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tok, err := newTestClient(t, cfg).Fetch(context.Background(), Token{})
	if err != nil || tok.Value.Reveal() != "pop-token" || tok.Lifetime != time.Minute {
		t.Fatalf("got %q lifetime %s, %v; want pop-token for 1m", tok.Value.Reveal(),
			tok.Lifetime, err)
	}
	if want := `"level":"DEBUG","msg":"token type is not bearer; using it as is",` +
		`"component":"token_client","token_type":"DPoP"`; !strings.Contains(logs.String(), want) {
		t.Errorf("logs lack %s; got %s", want, logs.String())
	}
}

func TestClient_FetchIgnoresCallerCancellation(t *testing.T) {
	ts := newTokenServer(t, newTestPKI(t))
	c := newTestClient(t, ts.clientConfig(t, "cerbai-client"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the request that started the fetch has gone away
	if _, err := c.Fetch(ctx, Token{}); err != nil {
		t.Errorf("Fetch with a cancelled caller: got %v, want a token", err)
	}
}

func TestClient_FetchTimesOut(t *testing.T) {
	ts := newTokenServer(t, newTestPKI(t))
	release := make(chan struct{})
	defer close(release)
	ts.setRespond(func(http.ResponseWriter, int) { <-release })
	cfg := ts.clientConfig(t, "cerbai-client")
	cfg.Timeout = 50 * time.Millisecond
	_, err := newTestClient(t, cfg).Fetch(context.Background(), Token{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want a deadline error", err)
	}
}

func TestClient_FetchErrors(t *testing.T) {
	const secret = "client-secret"
	tests := []struct {
		name    string
		respond func(w http.ResponseWriter, n int)
		want    string
	}{
		{"oauth error echoing the secret", func(w http.ResponseWriter, _ int) {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"invalid_client","error_description":"bad ` +
				secret + `"}`))
		}, `token service error "invalid_client" (status 401): bad [redacted]`},
		{"server error", func(w http.ResponseWriter, _ int) {
			http.Error(w, "boom", http.StatusBadGateway)
		}, "token service answered status 502"},
		{"redirect not followed", func(w http.ResponseWriter, _ int) {
			w.Header().Set("Location", "https://127.0.0.1:1/elsewhere")
			w.WriteHeader(http.StatusTemporaryRedirect)
		}, "token service answered status 307"},
		{"huge body", func(w http.ResponseWriter, _ int) {
			_, _ = w.Write([]byte(`{"access_token":"`))
			_, _ = w.Write(bytes.Repeat([]byte("a"), 2<<20))
			_, _ = w.Write([]byte(`"}`))
		}, "body over 1048576 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTokenServer(t, newTestPKI(t))
			ts.setRespond(tt.respond)
			var logs bytes.Buffer
			cfg := ts.clientConfig(t, "cerbai-client")
			cfg.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			cfg.Stats = new(Stats)
			_, err := newTestClient(t, cfg).Fetch(context.Background(), Token{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %v, want one containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(logs.String(), secret) {
				t.Errorf("error %q or logs %q hold the client secret", err, logs.String())
			}
			if got := cfg.Stats.FetchError.Load(); got != 1 {
				t.Errorf("got FetchError %d, want 1", got)
			}
		})
	}
}

func TestClient_OAuthErrorIsTyped(t *testing.T) {
	ts := newTokenServer(t, newTestPKI(t))
	ts.setRespond(func(w http.ResponseWriter, _ int) {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"invalid_scope","error_description":"no\nsuch"}`))
	})
	_, err := newTestClient(t, ts.clientConfig(t, "c")).Fetch(context.Background(), Token{})
	var oe *OAuthError
	if !errors.As(err, &oe) {
		t.Fatalf("got %T %v, want an *OAuthError", err, err)
	}
	want := OAuthError{Status: 400, Code: "invalid_scope", Description: "nosuch"}
	if *oe != want {
		t.Errorf("got %+v, want %+v", *oe, want)
	}
}

func TestNewClient_RejectsBadConfig(t *testing.T) {
	p := newTestPKI(t)
	certFile, keyFile := p.clientFiles(t, "c")
	otherCert, _ := p.clientFiles(t, "other")
	garbage := p.write(t, "garbage.pem", []byte("not pem"))
	ok := ClientConfig{Endpoint: "https://127.0.0.1:1/token", ClientID: "id",
		ClientSecret: "s", CertFile: certFile, KeyFile: keyFile, CAFile: p.caFile}
	tests := []struct {
		name   string
		change func(*ClientConfig)
		want   string
	}{
		{"endpoint not a URL", func(c *ClientConfig) { c.Endpoint = "token-service:443" },
			"--token-endpoint (CERBAI_TOKEN_ENDPOINT) must be an http(s) URL"},
		{"endpoint ftp", func(c *ClientConfig) { c.Endpoint = "ftp://h/x" },
			"--token-endpoint (CERBAI_TOKEN_ENDPOINT)"},
		{"auth method", func(c *ClientConfig) { c.AuthMethod = "jwt" },
			`--token-auth-method (CERBAI_TOKEN_AUTH_METHOD) "jwt"`},
		{"tls auth without cert", func(c *ClientConfig) {
			c.AuthMethod, c.CertFile, c.KeyFile = AuthTLS, "", ""
		}, "--token-auth-method tls needs --tls-cert-file"},
		{"cert without key", func(c *ClientConfig) { c.KeyFile = "" }, "go together"},
		{"CA missing", func(c *ClientConfig) { c.CAFile = p.dir + "/nope.pem" },
			"read --tls-ca-file (CERBAI_TLS_CA_FILE)"},
		{"CA not PEM", func(c *ClientConfig) { c.CAFile = garbage },
			"--tls-ca-file (CERBAI_TLS_CA_FILE): no PEM certificate"},
		{"key of another cert", func(c *ClientConfig) { c.CertFile = otherCert },
			"load --tls-cert-file (CERBAI_TLS_CERT_FILE)"},
	}
	if _, err := NewClient(ok); err != nil {
		t.Fatalf("base config: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			tt.change(&cfg)
			_, err := NewClient(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestClient_IdentityCoversRequestFields(t *testing.T) {
	base := ClientConfig{Endpoint: "https://h/t", ClientID: "id", ClientSecret: "s",
		Scope: "a b", Audience: "aud", Params: []Param{{"k", "v"}}}
	changes := map[string]func(*ClientConfig){
		"endpoint":  func(c *ClientConfig) { c.Endpoint = "https://h/u" },
		"client id": func(c *ClientConfig) { c.ClientID = "id2" },
		"auth":      func(c *ClientConfig) { c.AuthMethod = AuthPost },
		"scope":     func(c *ClientConfig) { c.Scope = "a" },
		"audience":  func(c *ClientConfig) { c.Audience = "" },
		"params":    func(c *ClientConfig) { c.Params = []Param{{"k", "w"}} },
		"boundary":  func(c *ClientConfig) { c.Scope, c.Audience = "a baud", "" },
	}
	want := newTestClient(t, base).Identity()
	if again := newTestClient(t, base).Identity(); again != want {
		t.Errorf("identity not stable: got %s, want %s", again, want)
	}
	secretless := base
	secretless.ClientSecret = "other"
	if got := newTestClient(t, secretless).Identity(); got != want {
		t.Errorf("identity depends on the secret: got %s, want %s", got, want)
	}
	for name, change := range changes {
		cfg := base
		change(&cfg)
		if got := newTestClient(t, cfg).Identity(); got == want {
			t.Errorf("changing %s kept identity %s", name, got)
		}
	}
}

func TestClient_CertificateRotation(t *testing.T) {
	p := newTestPKI(t)
	ts := newTokenServer(t, p)
	var logs bytes.Buffer
	cfg := ts.clientConfig(t, "cert-one")
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	c := newTestClient(t, cfg)
	fetchCN := func(want string) {
		t.Helper()
		if _, err := c.Fetch(context.Background(), Token{}); err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		reqs := ts.requests()
		if got := reqs[len(reqs)-1].ClientCN; got != want {
			t.Errorf("token server saw client CN %q, want %q", got, want)
		}
	}
	replace := func(certPEM, keyPEM []byte) {
		t.Helper()
		if err := os.WriteFile(cfg.CertFile, certPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cfg.KeyFile, keyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	fetchCN("cert-one") // also leaves an idle keep-alive connection behind

	twoCert, twoKey := p.issue(t, "cert-two", false)
	replace(twoCert, twoKey)
	fetchCN("cert-two")

	replace([]byte("-----BEGIN CERTIF"), []byte("half written"))
	fetchCN("cert-two")
	if !strings.Contains(logs.String(), "keeping the previous pair") {
		t.Errorf("no warning for unloadable files; logs: %s", logs.String())
	}

	threeCert, _ := p.issue(t, "cert-three", false)
	replace(threeCert, twoKey) // a new certificate with the old key: mismatched
	fetchCN("cert-two")

	fourCert, fourKey := p.issue(t, "cert-four", false)
	replace(fourCert, fourKey)
	fetchCN("cert-four")
	if n := strings.Count(logs.String(), "client certificate reloaded"); n != 2 {
		t.Errorf("got %d reload messages, want 2; logs: %s", n, logs.String())
	}
}

func TestClient_OAuthErrorMasksTheBasicCredential(t *testing.T) {
	ts := newTokenServer(t, newTestPKI(t))
	cfg := ts.clientConfig(t, "cerbai-client")
	cfg.ClientSecret = "s3cret with spaces&="
	basic := url.QueryEscape(cfg.ClientID) + ":" + url.QueryEscape(cfg.ClientSecret.Reveal())
	echoed := []string{
		base64.StdEncoding.EncodeToString([]byte(basic)),
		url.QueryEscape(cfg.ClientSecret.Reveal()),
	}
	ts.setRespond(func(w http.ResponseWriter, _ int) {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":"invalid_client","error_description":"rejected Basic ` +
			echoed[0] + ` and form secret ` + echoed[1] + `"}`))
	})
	_, err := newTestClient(t, cfg).Fetch(context.Background(), Token{})
	if err == nil {
		t.Fatal("got no error, want the token service's")
	}
	for _, e := range echoed {
		if strings.Contains(err.Error(), e) {
			t.Errorf("error %q holds %q, a form of the client secret", err, e)
		}
	}
	if !strings.Contains(err.Error(), "rejected Basic [redacted]") {
		t.Errorf("error %q: want the credential replaced by [redacted]", err)
	}
}
