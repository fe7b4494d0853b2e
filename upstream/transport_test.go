package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cerbai/cerbai/integration/fake"
)

func TestNewTransport_Defaults(t *testing.T) {
	tr, err := NewTransport(TransportConfig{})
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"MaxIdleConnsPerHost", tr.std.MaxIdleConnsPerHost, 1024},
		{"MaxIdleConns", tr.std.MaxIdleConns, 1024},
		{"IdleConnTimeout", tr.std.IdleConnTimeout, 90 * time.Second},
		{"TLSHandshakeTimeout", tr.std.TLSHandshakeTimeout, 10 * time.Second},
		{"ResponseHeaderTimeout", tr.std.ResponseHeaderTimeout, 10 * time.Minute},
		{"MaxResponseHeaderBytes", tr.std.MaxResponseHeaderBytes, int64(256 << 10)},
		{"DisableCompression", tr.std.DisableCompression, true},
		{"ForceAttemptHTTP2", tr.std.ForceAttemptHTTP2, true},
		{"MinVersion", tr.std.TLSClientConfig.MinVersion, uint16(tls.VersionTLS12)},
		{"Proxy set", tr.std.Proxy != nil, true},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestNewTransport_BadFiles(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		cfg  TransportConfig
		want string
	}{
		{"missing ca", TransportConfig{CAFile: filepath.Join(dir, "none.pem")}, "read llm ca file"},
		{"ca without pem", TransportConfig{CAFile: notPEM}, "no PEM certificate"},
		{"cert without key", TransportConfig{CertFile: notPEM}, "go together"},
		{"bad pair", TransportConfig{CertFile: notPEM, KeyFile: notPEM},
			"load llm client certificate"},
	}
	for _, c := range cases {
		if _, err := NewTransport(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", c.name, err, c.want)
		}
	}
}

// newTestPKI is the shared test PKI: a CA, a server certificate for
// 127.0.0.1 and a client certificate, PEM files in t.TempDir().
func newTestPKI(t *testing.T) *fake.PKI {
	t.Helper()
	p, err := fake.NewPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestNewTransport_PrivateCAAndClientCert checks an upstream behind a
// private CA that wants mutual TLS: reachable with the CA file and client
// certificate, 502 upstream_unreachable without.
func TestNewTransport_PrivateCAAndClientCert(t *testing.T) {
	pki := newTestPKI(t)
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter,
		r *http.Request) {
		_, _ = io.WriteString(w, r.TLS.PeerCertificates[0].Subject.CommonName)
	}))
	serverTLS, err := pki.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	up.TLS = serverTLS                              // requires and verifies a client certificate
	up.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	up.StartTLS()
	t.Cleanup(up.Close)
	target, _ := url.Parse(up.URL)

	cases := []struct {
		name     string
		cfg      TransportConfig
		wantCode int
	}{
		{"ca and client cert", TransportConfig{CAFile: pki.CAFile,
			CertFile: pki.ClientCertFile, KeyFile: pki.ClientKeyFile}, 200},
		{"no ca file", TransportConfig{CertFile: pki.ClientCertFile,
			KeyFile: pki.ClientKeyFile}, 502},
		{"no client cert", TransportConfig{CAFile: pki.CAFile}, 502},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr, err := NewTransport(c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(tr.CloseIdleConnections)
			p := newProxy(t, Config{Target: target, Transport: tr})
			w := httptest.NewRecorder()
			p.ServeHTTP(w, httptest.NewRequest("GET", "/v1/models", nil))
			if w.Code != c.wantCode {
				t.Fatalf("got %d %q, want %d", w.Code, w.Body, c.wantCode)
			}
			if c.wantCode == 502 && p.Stats().Snapshot().UpstreamErrors[ErrKindConnect] != 1 {
				t.Errorf("got errors %v, want one connect", p.Stats().Snapshot().UpstreamErrors)
			}
		})
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string { return "net/http: timeout awaiting response headers" }
func (timeoutErr) Timeout() bool { return true }

func TestClassify(t *testing.T) {
	dialTimeout := &net.OpError{Op: "dial", Net: "tcp", Err: timeoutErr{}}
	cases := []struct {
		name string
		err  error
		want failure
	}{
		{"dial refused", &url.Error{Op: "Get", Err: &net.OpError{Op: "dial",
			Err: errors.New("connection refused")}}, failConnect},
		{"dial timeout is unreachable", dialTimeout, failConnect},
		{"dns", &net.DNSError{Err: "no such host", Name: "llm"}, failConnect},
		{"proxy connect", &net.OpError{Op: "proxyconnect", Err: io.EOF}, failConnect},
		{"tls handshake timeout", errors.New("net/http: TLS handshake timeout"), failConnect},
		{"tls alert", &net.OpError{Op: "remote error", Err: errors.New("tls: certificate required")},
			failConnect},
		{"certificate", &tls.CertificateVerificationError{Err: errors.New("x509")}, failConnect},
		{"response header timeout", timeoutErr{}, failTimeout},
		{"deadline", context.DeadlineExceeded, failTimeout},
		{"header too large", errors.New("net/http: server response headers exceeded " +
			"262144 bytes; aborted"), failHeaderTooLarge},
		{"plain pool header too large", errRespHeaderTooLarge, failHeaderTooLarge},
		{"eof", io.ErrUnexpectedEOF, failReset},
		{"read reset", &net.OpError{Op: "read", Err: errors.New("connection reset")}, failReset},
	}
	for _, c := range cases {
		if got := classify(c.err); got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestProxy_UpstreamClosedPortIs502(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	p := newProxy(t, Config{Target: &url.URL{Scheme: "http", Host: addr}})
	w := httptest.NewRecorder()
	p.ServeHTTP(w, httptest.NewRequest("GET", "/v1/models", nil))
	if w.Code != 502 || !strings.Contains(w.Body.String(), CodeUpstreamUnreachable) {
		t.Errorf("got %d %q, want 502 upstream_unreachable", w.Code, w.Body)
	}
}

func TestProxy_ResponseHeaderTimeoutIs504(t *testing.T) {
	rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		<-r.Context().Done() // never answers
	})
	tr, err := NewTransport(TransportConfig{ResponseHeaderTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	p := newProxy(t, Config{Target: rec.URL(t, ""), Transport: tr})
	w := httptest.NewRecorder()
	p.ServeHTTP(w, httptest.NewRequest("GET", "/v1/models", nil))
	if w.Code != 504 || !strings.Contains(w.Body.String(), CodeUpstreamTimeout) {
		t.Errorf("got %d %q, want 504 upstream_timeout", w.Code, w.Body)
	}
	if got := p.Stats().Snapshot().UpstreamErrors[ErrKindTimeout]; got != 1 {
		t.Errorf("got %d timeouts, want 1", got)
	}
}

// TestTransport_HTTP2AsksForLargeFrames reads the client's first SETTINGS
// frame off the wire (RFC 9113 §3.4, §6.5): cerbai tells a TLS upstream
// it accepts DATA frames of h2MaxReadFrameSize, not the default 16 KiB.
func TestTransport_HTTP2AsksForLargeFrames(t *testing.T) {
	pki := newTestPKI(t)
	serverTLS, err := pki.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	serverTLS.NextProtos = []string{"h2"}
	l, err := tls.Listen("tcp", "127.0.0.1:0", serverTLS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	got := make(chan map[uint16]uint32, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		got <- readClientSettings(c)
	}()

	tr, err := NewTransport(TransportConfig{CAFile: pki.CAFile,
		CertFile: pki.ClientCertFile, KeyFile: pki.ClientKeyFile})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+l.Addr().String()+"/", nil)
	go func() {
		if resp, err := tr.RoundTrip(req); err == nil {
			resp.Body.Close()
		}
	}()

	var settings map[uint16]uint32
	select {
	case settings = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("no SETTINGS frame from the client")
	}
	const maxFrameSize = 0x5
	if v := settings[maxFrameSize]; v != h2MaxReadFrameSize {
		t.Errorf("SETTINGS_MAX_FRAME_SIZE: got %d, want %d (settings %v)", v,
			h2MaxReadFrameSize, settings)
	}
}

// readClientSettings reads an HTTP/2 client preface and the SETTINGS
// frame after it; nil when the bytes are not that.
func readClientSettings(c net.Conn) map[uint16]uint32 {
	const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	buf := make([]byte, len(preface)+9)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf[:len(preface)]) != preface {
		return nil
	}
	h := buf[len(preface):]
	length := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
	if h[3] != 0x4 || length%6 != 0 { // type SETTINGS, 6-byte entries
		return nil
	}
	payload := make([]byte, length)
	if _, err := io.ReadFull(c, payload); err != nil {
		return nil
	}
	settings := map[uint16]uint32{}
	for p := payload; len(p) >= 6; p = p[6:] {
		settings[uint16(p[0])<<8|uint16(p[1])] = uint32(p[2])<<24 | uint32(p[3])<<16 |
			uint32(p[4])<<8 | uint32(p[5])
	}
	return settings
}
