package fake

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// PKI is a throwaway certificate authority with one server and one client
// certificate, all ECDSA P-256, written as PEM files in Dir. The server
// certificate is valid for 127.0.0.1, ::1 and localhost.
type PKI struct {
	Dir                                   string
	CAFile, ServerCertFile, ServerKeyFile string
	ClientCertFile, ClientKeyFile         string
	CAPool                                *x509.CertPool

	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
}

// ClientCN is the common name of the client certificate NewPKI issues.
const ClientCN = "cerbai-client"

// NewPKI creates the CA and the server and client pairs in dir, which must
// exist. File names: ca.pem, server.pem, server-key.pem, client.pem,
// client-key.pem.
func NewPKI(dir string) (*PKI, error) {
	p := &PKI{
		Dir:            dir,
		CAFile:         filepath.Join(dir, "ca.pem"),
		ServerCertFile: filepath.Join(dir, "server.pem"),
		ServerKeyFile:  filepath.Join(dir, "server-key.pem"),
		ClientCertFile: filepath.Join(dir, "client.pem"),
		ClientKeyFile:  filepath.Join(dir, "client-key.pem"),
	}
	if err := p.newCA(); err != nil {
		return nil, fmt.Errorf("create ca: %w", err)
	}
	server := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if err := p.issue(server, p.ServerCertFile, p.ServerKeyFile); err != nil {
		return nil, fmt.Errorf("issue server certificate: %w", err)
	}
	if err := p.IssueClient(ClientCN, p.ClientCertFile, p.ClientKeyFile); err != nil {
		return nil, err
	}
	return p, nil
}

// IssueClient writes another client pair signed by the CA. Each file is
// written to a temporary name and renamed into place, the key first, so a
// reader sees either the old or the new content of each file, never a
// partial one (the pair may be mismatched for a moment, as with a real
// secret-volume swap).
func (p *PKI) IssueClient(cn, certFile, keyFile string) error {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if err := p.issue(tmpl, certFile, keyFile); err != nil {
		return fmt.Errorf("issue client certificate %q: %w", cn, err)
	}
	return nil
}

// ServerTLS is a TLS config presenting the server certificate and requiring
// a client certificate signed by the CA.
func (p *PKI) ServerTLS() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(p.ServerCertFile, p.ServerKeyFile)
	if err != nil {
		return nil, fmt.Errorf("load server certificate: %w", err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.CAPool,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// ClientTLS is a TLS config presenting the client certificate and trusting
// only the CA: what a test uses to talk to the token server directly.
func (p *PKI) ClientTLS() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(p.ClientCertFile, p.ClientKeyFile)
	if err != nil {
		return nil, fmt.Errorf("load client certificate: %w", err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      p.CAPool,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

func (p *PKI) newCA() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "cerbai fake CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	if p.caCert, err = x509.ParseCertificate(der); err != nil {
		return err
	}
	p.caKey = key
	p.CAPool = x509.NewCertPool()
	p.CAPool.AddCert(p.caCert)
	return writeAtomic(p.CAFile, pemBlock("CERTIFICATE", der), 0o644)
}

// issue signs tmpl with the CA and writes key then certificate.
func (p *PKI) issue(tmpl *x509.Certificate, certFile, keyFile string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl.SerialNumber = serial()
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeAtomic(keyFile, pemBlock("PRIVATE KEY", keyDER), 0o600); err != nil {
		return err
	}
	return writeAtomic(certFile, pemBlock("CERTIFICATE", der), 0o644)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return n
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// writeAtomic writes data beside name and renames it into place.
func writeAtomic(name string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(name), ".tmp-"+filepath.Base(name)+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), perm)
	}
	if err == nil {
		err = os.Rename(f.Name(), name)
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}
