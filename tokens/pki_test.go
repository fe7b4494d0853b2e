package tokens

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/cerbai/cerbai/integration/fake"
)

// testPKI is the shared test PKI (a throwaway CA, a server certificate for
// 127.0.0.1 and client certificates, ECDSA P-256, PEM files in
// t.TempDir()), with the helpers these tests use.
type testPKI struct {
	*fake.PKI
	dir    string
	pool   *x509.CertPool
	caFile string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p, err := fake.NewPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{PKI: p, dir: p.Dir, pool: p.CAPool, caFile: p.CAFile}
}

// issue returns a certificate and key (PEM) for cn: a client certificate,
// or with server the PKI's certificate for 127.0.0.1.
func (p *testPKI) issue(t *testing.T, cn string, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	if server {
		return readFile(t, p.ServerCertFile), readFile(t, p.ServerKeyFile)
	}
	// Files of their own, so issuing never touches a pair a client uses.
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := p.IssueClient(cn, certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	return readFile(t, certFile), readFile(t, keyFile)
}

// clientFiles issues a client certificate for cn and writes it to
// cn.crt and cn.key, returning the paths.
func (p *testPKI) clientFiles(t *testing.T, cn string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(p.dir, cn+".crt"), filepath.Join(p.dir, cn+".key")
	if err := p.IssueClient(cn, certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func (p *testPKI) write(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// seenRequest is a token request as the token server received it.
type seenRequest struct {
	Method, Path, ContentType, Authorization string
	Form                                     url.Values
	ClientCN                                 string
}

// tokenServer is an httptest TLS token service that requires and verifies
// a client certificate from the test CA and records what it receives.
type tokenServer struct {
	*httptest.Server
	pki *testPKI

	mu      sync.Mutex
	seen    []seenRequest
	respond func(w http.ResponseWriter, n int) // writes the n-th answer (1-based)
}

func newTokenServer(t *testing.T, p *testPKI) *tokenServer {
	t.Helper()
	ts := &tokenServer{pki: p, respond: respondToken(3600)}
	certPEM, keyPEM := p.issue(t, "", true)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ts.Server = httptest.NewUnstartedServer(http.HandlerFunc(ts.handle))
	ts.TLS = &tls.Config{
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.pool,
		MinVersion:   tls.VersionTLS12,
	}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return ts
}

func (ts *tokenServer) handle(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	s := seenRequest{
		Method: r.Method, Path: r.URL.Path, ContentType: r.Header.Get("Content-Type"),
		Authorization: r.Header.Get("Authorization"), Form: r.PostForm,
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		s.ClientCN = r.TLS.PeerCertificates[0].Subject.CommonName
	}
	ts.mu.Lock()
	ts.seen = append(ts.seen, s)
	n, respond := len(ts.seen), ts.respond
	ts.mu.Unlock()
	respond(w, n)
}

func (ts *tokenServer) setRespond(f func(w http.ResponseWriter, n int)) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.respond = f
}

func (ts *tokenServer) requests() []seenRequest {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]seenRequest(nil), ts.seen...)
}

// respondToken answers token-N with the given expires_in.
func respondToken(expiresIn int) func(http.ResponseWriter, int) {
	return func(w http.ResponseWriter, n int) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"access_token": "token-" + itoa(n), "token_type": "Bearer", "expires_in": expiresIn,
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// clientConfig is a ClientConfig for ts with a fresh client certificate.
func (ts *tokenServer) clientConfig(t *testing.T, cn string) ClientConfig {
	t.Helper()
	certFile, keyFile := ts.pki.clientFiles(t, cn)
	return ClientConfig{
		Endpoint: ts.URL + "/oauth2/token", ClientID: "cerbai-client",
		ClientSecret: "client-secret", CertFile: certFile, KeyFile: keyFile,
		CAFile: ts.pki.caFile,
	}
}
