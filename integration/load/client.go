package load

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Target is one way to reach the fake LLM: directly or through a proxy.
type Target struct {
	Name string // "direct", "cerbai", "nginx"
	URL  string // base URL without a trailing slash
	// Proc is the proxy's process, sampled for CPU and memory; nil when
	// nothing stands between the client and the fake.
	Proc *Proc
}

// Request bodies: a small chat request and its streaming twin. The fake
// decides on SSE from the query, so a proxy sees realistic bodies either
// way.
var (
	chatBody   = []byte(`{"model":"bench","messages":[{"role":"user","content":"Say hi."}]}`)
	streamBody = []byte(`{"model":"bench","stream":true,` +
		`"messages":[{"role":"user","content":"Say hi."}]}`)
)

// NewClient returns an HTTP client for loopback load: keep-alive pool sized
// for conns connections, no compression, no proxy from the environment, and
// timeout as the limit for one whole exchange. roots, when not nil, is
// what it trusts for https targets (Env.RootCAs).
func NewClient(conns int, timeout time.Duration, roots *x509.CertPool) *http.Client {
	return &http.Client{Transport: newTransport(conns, roots), Timeout: timeout}
}

func newTransport(conns int, roots *x509.CertPool) *http.Transport {
	return &http.Transport{
		TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		Proxy:                 nil, // loopback only, whatever HTTP_PROXY says
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:          conns * 2,
		MaxIdleConnsPerHost:   conns,
		IdleConnTimeout:       time.Minute,
		ResponseHeaderTimeout: time.Minute,
		DisableCompression:    true,
		ReadBufferSize:        64 << 10, // large bodies read in fewer syscalls
	}
}

// chat sends one small non-streaming request and reads the answer.
func chat(ctx context.Context, c *http.Client, base string) error {
	resp, err := post(ctx, c, base+PathChat, chatBody)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("read chat answer: %w", err)
	}
	return nil
}

// stream sends one streaming request and reads it to its end. It returns
// the stream's stats; a status other than 200 is an error.
func stream(ctx context.Context, c *http.Client, base string, events int,
	interval time.Duration, delays []time.Duration) ([]time.Duration, StreamStats, error) {
	url := base + PathChat + "?events=" + strconv.Itoa(events) + "&interval=" + interval.String()
	resp, err := post(ctx, c, url, streamBody)
	if err != nil {
		return delays, StreamStats{}, err
	}
	defer resp.Body.Close()
	return ReadStream(resp.Body, time.Now, delays)
}

// post sends body and returns a 200 response (any other status is drained,
// closed and reported as an error).
func post(ctx context.Context, c *http.Client, url string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header["Content-Type"] = []string{"application/json"}
	return do(c, req)
}

func do(c *http.Client, req *http.Request) (*http.Response, error) {
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		resp.Body.Close()
		return nil, fmt.Errorf("%s %s: %w %d: %s", req.Method, req.URL.Path, errStatus,
			resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return resp, nil
}

// errStatus reports a response status other than 200.
var errStatus = errors.New("unexpected status")
