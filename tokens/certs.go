package tokens

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
)

// certReloader holds the client certificate pair and reloads it when the
// files' contents change. Contents are hashed rather than stat'ed because
// Kubernetes and cert-manager swap files through a symlink, which can keep
// sizes and times alike; the files are small and read only before a fetch.
type certReloader struct {
	certFile, keyFile string
	cur               atomic.Pointer[loadedPair]

	mu   sync.Mutex // guards seen and serializes reloads
	seen [sha256.Size]byte
}

type loadedPair struct {
	cert    tls.Certificate
	keyPEM  []byte
	subject string
}

func newCertReloader(certFile, keyFile string) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile}
	if _, err := r.reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// reload loads the pair if the files changed since the last look. A pair
// that does not load (half written, key and cert from different pairs)
// leaves the current one in place; its error is reported once per change.
func (r *certReloader) reload() (changed bool, err error) {
	certPEM, err := os.ReadFile(r.certFile)
	if err != nil {
		return false, err
	}
	keyPEM, err := os.ReadFile(r.keyFile)
	if err != nil {
		return false, err
	}
	sum := sha256.Sum256(append(append([]byte{}, certPEM...), keyPEM...))
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur.Load() != nil && sum == r.seen {
		return false, nil
	}
	r.seen = sum
	pair, err := loadPair(certPEM, keyPEM)
	if err != nil {
		return false, err
	}
	r.cur.Store(pair)
	return true, nil
}

func loadPair(certPEM, keyPEM []byte) (*loadedPair, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM) // also checks that key and cert match
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	cert.Leaf = leaf
	return &loadedPair{cert: cert, keyPEM: bytes.Clone(keyPEM),
		subject: leaf.Subject.String()}, nil
}

// get is tls.Config.GetClientCertificate: every handshake presents the
// current pair.
func (r *certReloader) get(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return &r.cur.Load().cert, nil
}

func (r *certReloader) keyPEM() []byte  { return r.cur.Load().keyPEM }
func (r *certReloader) subject() string { return r.cur.Load().subject }
