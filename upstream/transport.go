package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// TransportConfig tunes the transport from NewTransport.
type TransportConfig struct {
	// DialTimeout bounds TCP connect and, separately, the TLS handshake.
	// 0 → 10s.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the upstream's response
	// headers after the request is sent (--upstream-timeout). 0 → 10m,
	// as long as the OpenAI SDKs wait for a long non-streaming completion.
	ResponseHeaderTimeout time.Duration
	// CAFile is a PEM bundle added to the system roots (--llm-ca-file).
	// "" → system roots only.
	CAFile string
	// CertFile and KeyFile are an optional client certificate for an
	// upstream that wants mutual TLS (--llm-tls-cert-file,
	// --llm-tls-key-file). Both or neither.
	CertFile, KeyFile string
	// MaxResponseHeaderBytes bounds the upstream's response header block.
	// 0 → 256 KiB.
	MaxResponseHeaderBytes int64
	// Stats counts the connections opened (Snapshot.ConnsOpened); give the
	// proxy the same Stats. nil → a private Stats that nothing reads.
	Stats *Stats
}

const (
	defaultDialTimeout    = 10 * time.Second
	defaultHeaderTimeout  = 10 * time.Minute
	defaultMaxRespHeaders = 256 << 10
	// Sized for hundreds of concurrent streams to the one upstream host:
	// Go's default of 2 idle connections per host would close and redial
	// under load.
	idlePoolSize = 1024
)

// h2MaxReadFrameSize is the largest HTTP/2 frame cerbai accepts from a
// TLS upstream (RFC 9113 §6.5.2 SETTINGS_MAX_FRAME_SIZE).
const h2MaxReadFrameSize = 256 << 10

// connBufSize is the read and write buffer of each upstream connection.
const connBufSize = 1 << 10

// idleConnTimeout closes upstream connections idle this long.
const idleConnTimeout = 90 * time.Second

// Transport is the one shared transport the proxy sends on. Plain-HTTP
// upstreams reached without an HTTP proxy go through cerbai's own
// keep-alive pool (plainPool), which needs no goroutines of its own;
// everything else (TLS with HTTP/2, HTTP_PROXY/HTTPS_PROXY) goes through
// a tuned http.Transport.
type Transport struct {
	std  *http.Transport
	cfg  TransportConfig
	dial dialFunc // shared by std and every plain pool

	mu    sync.RWMutex
	plain map[string]*plainPool // by request host; nil: std's (proxied)
}

// NewTransport builds the shared transport: a keep-alive pool sized for
// a proxy, dial, TLS and response-header timeouts, HTTP/2 to TLS
// upstreams, proxy from the environment, and no overall timeout, so long
// streams live. Compression is left to the client and upstream: the body
// passes through as sent.
func NewTransport(cfg TransportConfig) (*Transport, error) {
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = defaultDialTimeout
	}
	if cfg.ResponseHeaderTimeout <= 0 {
		cfg.ResponseHeaderTimeout = defaultHeaderTimeout
	}
	if cfg.MaxResponseHeaderBytes <= 0 {
		cfg.MaxResponseHeaderBytes = defaultMaxRespHeaders
	}
	tlsConf, err := transportTLS(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Stats == nil {
		cfg.Stats = new(Stats)
	}
	dial := newDial(cfg)
	std := &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            dial,
		TLSClientConfig:        tlsConf,
		TLSHandshakeTimeout:    cfg.DialTimeout,
		ForceAttemptHTTP2:      true, // needed with a custom dialer and TLS config
		MaxIdleConns:           idlePoolSize,
		MaxIdleConnsPerHost:    idlePoolSize,
		IdleConnTimeout:        idleConnTimeout,
		ResponseHeaderTimeout:  cfg.ResponseHeaderTimeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: cfg.MaxResponseHeaderBytes,
		// Small connection buffers: each open stream holds both for its
		// whole life. Bodies bypass them (the copy loop reads with a
		// larger buffer), so they cost at most an extra system call for
		// long response headers or a mid-sized request; measured with the
		// load tool, they cut memory per idle stream by about 6 KiB.
		ReadBufferSize:  connBufSize,
		WriteBufferSize: connBufSize,
		// Without this Go asks for gzip itself and unpacks the answer,
		// changing the bytes and dropping Content-Length.
		DisableCompression: true,
		// HTTP/2 peers send DATA frames no larger than the receiver allows,
		// 16 KiB unless told otherwise. Larger frames cut the per-frame work
		// of a bulk body: with the load tool's -llm-tls, 64 MiB bodies
		// went from 0.46–0.53× to 0.58–0.64× direct. The frame buffer is
		// per connection and grows only when such a frame arrives.
		HTTP2: &http.HTTP2Config{MaxReadFrameSize: h2MaxReadFrameSize},
	}
	return &Transport{std: std, cfg: cfg, dial: dial, plain: map[string]*plainPool{}}, nil
}

// plainBodyMax is the largest request body sent on the plain pool. The
// pool writes the whole request before it reads the answer. A longer
// body, or one of unknown length, is streamed from a client and can take
// long to send; an upstream may answer it early (a 413, say), stop
// reading and close, and the reset that follows can erase an answer not
// yet read (RFC 9112 §9.6). http.Transport reads the answer while the
// body is still being sent, so such requests go through it.
const plainBodyMax = 1 << 20

type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// newDial returns the dial function of both pools: TCP with keep-alive
// probes, counted in cfg.Stats.
func newDial(cfg TransportConfig) dialFunc {
	d := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err == nil {
			cfg.Stats.connsOpened.Add(1)
		}
		return c, err
	}
}

// RoundTrip sends req on the plain pool for its host when it has one and
// the body is small and of known length, else on http.Transport.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && smallBody(req) {
		if p := t.plainPool(req); p != nil {
			return p.RoundTrip(req)
		}
	}
	return t.std.RoundTrip(req)
}

// smallBody reports whether req has no body or one of known length up to
// plainBodyMax.
func smallBody(req *http.Request) bool {
	if req.Body == nil || req.Body == http.NoBody {
		return true
	}
	return req.ContentLength > 0 && req.ContentLength <= plainBodyMax
}

// plainPool returns the pool for req's host, made on first use; nil when
// the environment sends that host through an HTTP proxy.
func (t *Transport) plainPool(req *http.Request) *plainPool {
	host := req.URL.Host
	t.mu.RLock()
	p, ok := t.plain[host]
	t.mu.RUnlock()
	if ok {
		return p
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if p, ok := t.plain[host]; ok {
		return p
	}
	if proxy, err := t.std.Proxy(req); err == nil && proxy == nil {
		port := req.URL.Port()
		if port == "" {
			port = "80"
		}
		p = newPlainPool(net.JoinHostPort(req.URL.Hostname(), port), t.cfg, t.dial)
	}
	t.plain[host] = p
	return p
}

// CloseIdleConnections closes every idle upstream connection.
func (t *Transport) CloseIdleConnections() {
	t.std.CloseIdleConnections()
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, p := range t.plain {
		if p != nil {
			p.closeIdle()
		}
	}
}

// transportTLS is the client TLS config: system roots plus CAFile, TLS 1.2
// at least, and the optional client certificate.
func transportTLS(cfg TransportConfig) (*tls.Config, error) {
	conf := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ClientSessionCache: tls.NewLRUClientSessionCache(0),
	}
	if cfg.CAFile != "" {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool() // no system roots here; the file still counts
		}
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read llm ca file: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("read llm ca file %s: no PEM certificate found", cfg.CAFile)
		}
		conf.RootCAs = pool
	}
	switch {
	case cfg.CertFile != "" && cfg.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load llm client certificate: %w", err)
		}
		conf.Certificates = []tls.Certificate{cert}
	case cfg.CertFile != "" || cfg.KeyFile != "":
		return nil, errors.New("load llm client certificate: " +
			"--llm-tls-cert-file and --llm-tls-key-file go together")
	}
	return conf, nil
}

// failure is how one upstream error is answered and counted.
type failure struct {
	kind   string // a key of Snapshot.UpstreamErrors
	status int
	code   string
	msg    string
}

var (
	failConnect = failure{ErrKindConnect, http.StatusBadGateway,
		CodeUpstreamUnreachable, "the upstream could not be reached"}
	failTimeout = failure{ErrKindTimeout, http.StatusGatewayTimeout,
		CodeUpstreamTimeout, "the upstream did not answer in time"}
	failHeaderTooLarge = failure{ErrKindHeaderTooLarge, http.StatusBadGateway,
		CodeUpstreamUnreachable, "the upstream sent an invalid response"}
	failReset = failure{ErrKindReset, http.StatusBadGateway,
		CodeUpstreamUnreachable, "the upstream closed the connection"}
)

// classify maps an error from RoundTrip to its answer. Dialing (TCP, TLS,
// an HTTP proxy) comes first, so a dial timeout is "unreachable" rather
// than "timed out": the upstream never got the request. A TLS alert from
// the upstream ("remote error") counts as connecting too: with TLS 1.3 a
// refused client certificate arrives as one after the handshake.
func classify(err error) failure {
	var op *net.OpError
	var dns *net.DNSError
	var certErr *tls.CertificateVerificationError
	var alert tls.AlertError
	var recErr tls.RecordHeaderError
	switch {
	case errors.As(err, &op) &&
		(op.Op == "dial" || op.Op == "proxyconnect" || op.Op == "remote error"),
		errors.As(err, &dns), errors.As(err, &certErr), errors.As(err, &alert),
		errors.As(err, &recErr):
		return failConnect
	// The transport's header-size and TLS-timeout errors have no exported
	// type; their text is stable across Go releases.
	case errors.Is(err, errRespHeaderTooLarge),
		strings.Contains(err.Error(), "server response headers exceeded"):
		return failHeaderTooLarge
	case strings.Contains(err.Error(), "TLS handshake timeout"):
		return failConnect
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return failTimeout
	}
	return failReset
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}
