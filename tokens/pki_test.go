package tokens

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testPKI is a throwaway CA that issues the token server's and the
// clients' certificates (ECDSA P-256), written as PEM into t.TempDir().
type testPKI struct {
	dir    string
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	pool   *x509.CertPool
	caFile string
	serial atomic.Int64
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	p.key = newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "cerbai test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &p.key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	if p.cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	p.pool = x509.NewCertPool()
	p.pool.AddCert(p.cert)
	p.caFile = p.write(t, "ca.pem", pemBlock("CERTIFICATE", der))
	p.serial.Store(1)
	return p
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// issue returns a certificate and key (PEM) for cn, for a server on
// 127.0.0.1 or for a client.
func (p *testPKI) issue(t *testing.T, cn string, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.serial.Add(1)),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", keyDER)
}

// clientFiles issues a client certificate for cn and writes it to
// cn.crt and cn.key, returning the paths.
func (p *testPKI) clientFiles(t *testing.T, cn string) (certFile, keyFile string) {
	t.Helper()
	c, k := p.issue(t, cn, false)
	return p.write(t, cn+".crt", c), p.write(t, cn+".key", k)
}

func (p *testPKI) write(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
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
	certPEM, keyPEM := p.issue(t, "token-server", true)
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
