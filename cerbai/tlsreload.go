package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// servingCert is the inbound TLS certificate, reloaded when its files
// change. Files are checked at most once per checkEvery, on a handshake.
type servingCert struct {
	certFile, keyFile string
	log               *slog.Logger
	cur               atomic.Pointer[tls.Certificate]

	mu      sync.Mutex // guards the fields below
	checked time.Time
	version [2]fileVersion
}

const checkEvery = 5 * time.Second

func newServingCert(certFile, keyFile string, log *slog.Logger) (*servingCert, error) {
	c := &servingCert{certFile: certFile, keyFile: keyFile, log: log}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load listen certificate: %w", err)
	}
	c.cur.Store(&pair)
	c.version = [2]fileVersion{statVersion(certFile), statVersion(keyFile)}
	c.checked = time.Now()
	return c, nil
}

// get implements tls.Config.GetCertificate.
func (c *servingCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.maybeReload(time.Now())
	return c.cur.Load(), nil
}

// maybeReload loads the pair again when a file changed. A pair that does
// not load (half written, mismatched) keeps the old one.
func (c *servingCert) maybeReload(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.Sub(c.checked) < checkEvery {
		return
	}
	c.checked = now
	v := [2]fileVersion{statVersion(c.certFile), statVersion(c.keyFile)}
	if v == c.version {
		return
	}
	pair, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		c.log.Warn("listen certificate not reloaded, keeping the old one", "error", err)
		return
	}
	c.version = v
	c.cur.Store(&pair)
	c.log.Info("listen certificate reloaded", "file", c.certFile)
}
