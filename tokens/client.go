package tokens

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Auth methods of ClientConfig.AuthMethod.
const (
	AuthBasic = "basic" // client_secret_basic, RFC 6749 §2.3.1
	AuthPost  = "post"  // client_secret_post
	AuthTLS   = "tls"   // tls_client_auth, RFC 8705
)

const (
	defaultTimeout = 10 * time.Second
	// maxResponseBody bounds how much of a token response is read.
	maxResponseBody = 1 << 20
)

// ClientConfig configures a Client. Zero values mean the stated defaults.
type ClientConfig struct {
	Endpoint     string // --token-endpoint (https URL)
	ClientID     string
	ClientSecret Secret  // unused with AuthMethod "tls"
	AuthMethod   string  // "basic" (default when empty), "post", "tls"
	Scope        string  // space-separated
	Audience     string  // sent as the audience form field when not empty
	Params       []Param // extra form fields, in order

	// Client certificate and key (PEM); both or neither. CAFile is added
	// to the system roots to verify the token service.
	CertFile, KeyFile, CAFile string

	TTL         time.Duration // --token-cache-ttl; 0 → 5m
	Timeout     time.Duration // one token request; 0 → 10s
	DialTimeout time.Duration // TCP+TLS; 0 → 10s
	Logger      *slog.Logger  // nil → discard
	Clock       Clock         // nil → real time
	Stats       *Stats        // counts FetchOK/FetchError; nil → not counted
}

// Client performs the client_credentials request against the token service.
// It is safe for concurrent use; it does not cache (see Cache).
type Client struct {
	cfg       ClientConfig
	endpoint  string
	http      *http.Client
	transport *http.Transport
	certs     *certReloader // nil without a client certificate
	log       *slog.Logger
	clock     Clock
	stats     *Stats
	identity  string
}

// NewClient checks cfg, loads the client certificate and CA file and
// returns a Client. Errors name the flag to fix.
func NewClient(cfg ClientConfig) (*Client, error) {
	c := &Client{
		cfg:   cfg,
		log:   loggerOrDiscard(cfg.Logger).With("component", "token_client"),
		clock: clockOrReal(cfg.Clock),
		stats: cfg.Stats,
	}
	if c.cfg.AuthMethod == "" {
		c.cfg.AuthMethod = AuthBasic
	}
	c.cfg.TTL = cmpOr(c.cfg.TTL, DefaultTTL)
	c.cfg.Timeout = cmpOr(c.cfg.Timeout, defaultTimeout)
	c.cfg.DialTimeout = cmpOr(c.cfg.DialTimeout, defaultTimeout)
	if err := c.check(); err != nil {
		return nil, err
	}
	tc, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	c.transport = newTransport(tc, c.cfg.DialTimeout)
	c.http = &http.Client{
		Transport: c.transport,
		// A redirect would carry the credentials elsewhere; the 3xx answer
		// is reported as an error instead.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	c.endpoint = c.cfg.Endpoint
	c.identity = identity(c.cfg)
	return c, nil
}

func (c *Client) check() error {
	u, err := url.Parse(c.cfg.Endpoint)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return errors.New("token client: --token-endpoint (CERBAI_TOKEN_ENDPOINT) " +
			"must be an http(s) URL")
	}
	switch c.cfg.AuthMethod {
	case AuthBasic, AuthPost:
	case AuthTLS:
		if c.cfg.CertFile == "" {
			return errors.New("token client: --token-auth-method tls needs --tls-cert-file " +
				"(CERBAI_TLS_CERT_FILE) and --tls-key-file (CERBAI_TLS_KEY_FILE)")
		}
	default:
		return fmt.Errorf("token client: --token-auth-method (CERBAI_TOKEN_AUTH_METHOD) %q: "+
			"want basic, post or tls", c.cfg.AuthMethod)
	}
	if (c.cfg.CertFile == "") != (c.cfg.KeyFile == "") {
		return errors.New("token client: --tls-cert-file (CERBAI_TLS_CERT_FILE) and " +
			"--tls-key-file (CERBAI_TLS_KEY_FILE) go together")
	}
	return nil
}

// tlsConfig trusts the system roots plus CAFile and presents the current
// client certificate, which Fetch reloads when its files change.
func (c *Client) tlsConfig() (*tls.Config, error) {
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool() // no system pool (e.g. a bare container): CAFile only
	}
	if c.cfg.CAFile != "" {
		pem, err := os.ReadFile(c.cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("token client: read --tls-ca-file (CERBAI_TLS_CA_FILE): %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, errors.New("token client: --tls-ca-file (CERBAI_TLS_CA_FILE): " +
				"no PEM certificate found")
		}
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
	if c.cfg.CertFile != "" {
		c.certs, err = newCertReloader(c.cfg.CertFile, c.cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("token client: load --tls-cert-file (CERBAI_TLS_CERT_FILE) "+
				"and --tls-key-file (CERBAI_TLS_KEY_FILE): %w", err)
		}
		tc.GetClientCertificate = c.certs.get
	}
	return tc, nil
}

func newTransport(tc *tls.Config, dialTimeout time.Duration) *http.Transport {
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         d.DialContext,
		TLSClientConfig:     tc,
		TLSHandshakeTimeout: dialTimeout,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     90 * time.Second,
	}
}

// Identity is a hex hash of what makes one token request differ from
// another (endpoint, client id, auth method, scope, audience, params); two
// configurations with the same Identity may share tokens.
func (c *Client) Identity() string { return c.identity }

func identity(cfg ClientConfig) string {
	h := sha256.New()
	field := func(s string) { // length-prefixed, so fields cannot run into each other
		_ = binary.Write(h, binary.BigEndian, uint64(len(s)))
		_, _ = io.WriteString(h, s)
	}
	field("cerbai token identity v1")
	field(cfg.Endpoint)
	field(cfg.ClientID)
	field(cfg.AuthMethod)
	field(cfg.Scope)
	field(cfg.Audience)
	for _, p := range cfg.Params {
		field(p.Key)
		field(p.Value)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// sealMaterial is the secret the shared cache derives its sealing key from:
// the client secret, or with tls auth the client private key in use.
func (c *Client) sealMaterial() []byte {
	if c.cfg.AuthMethod == AuthTLS {
		return c.certs.keyPEM()
	}
	return []byte(c.cfg.ClientSecret.Reveal())
}

// Fetch requests a new token. have is ignored. The request runs on its own
// context bounded by the configured Timeout, so a caller that gives up does
// not abort a fetch that other callers wait on; ctx only passes its values.
func (c *Client) Fetch(ctx context.Context, have Token) (Token, error) {
	c.reloadCert()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.Timeout)
	defer cancel()
	tok, err := c.fetch(ctx)
	if c.stats != nil {
		if err != nil {
			c.stats.FetchError.Add(1)
		} else {
			c.stats.FetchOK.Add(1)
		}
	}
	if err != nil {
		return Token{}, fmt.Errorf("fetch token: %w", err)
	}
	return tok, nil
}

func (c *Client) fetch(ctx context.Context) (Token, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint,
		strings.NewReader(c.form()))
	if err != nil {
		return Token{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if c.cfg.AuthMethod == AuthBasic {
		// RFC 6749 §2.3.1: id and secret are form-encoded before Basic.
		req.SetBasicAuth(url.QueryEscape(c.cfg.ClientID),
			url.QueryEscape(c.cfg.ClientSecret.Reveal()))
	}

	sentAt := c.clock.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		return Token{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody+1))
	if err != nil {
		return Token{}, fmt.Errorf("read response: %w", err)
	}
	if len(body) > maxResponseBody {
		return Token{}, fmt.Errorf("read response: body over %d bytes", maxResponseBody)
	}

	r, err := parseTokenResponse(resp.StatusCode, body)
	if err != nil {
		var oe *OAuthError
		if errors.As(err, &oe) {
			oe.scrub(c.secretForms()...)
		}
		return Token{}, err
	}
	if r.tokenType != "" && !strings.EqualFold(r.tokenType, "bearer") {
		c.log.Debug("token type is not bearer; using it as is", "token_type", r.tokenType)
	}
	tok := NewToken(r.accessToken, sentAt, r.expiresIn, c.cfg.TTL)
	tok.Source = SourceTokenService
	return tok, nil
}

// form is the token request body, fields in a fixed order.
// secretForms lists the client secret as it may come back in an error
// body: as sent in the form, the Basic credential, and raw.
func (c *Client) secretForms() []string {
	secret := c.cfg.ClientSecret.Reveal()
	if secret == "" {
		return nil
	}
	basic := url.QueryEscape(c.cfg.ClientID) + ":" + url.QueryEscape(secret)
	return []string{
		base64.StdEncoding.EncodeToString([]byte(basic)),
		base64.RawStdEncoding.EncodeToString([]byte(basic)),
		url.QueryEscape(secret),
		secret,
	}
}

func (c *Client) form() string {
	var b strings.Builder
	add := func(k, v string) {
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(k))
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(v))
	}
	add("grant_type", "client_credentials")
	switch c.cfg.AuthMethod {
	case AuthPost:
		add("client_id", c.cfg.ClientID)
		add("client_secret", c.cfg.ClientSecret.Reveal())
	case AuthTLS:
		add("client_id", c.cfg.ClientID)
	}
	if c.cfg.Scope != "" {
		add("scope", c.cfg.Scope)
	}
	if c.cfg.Audience != "" {
		add("audience", c.cfg.Audience)
	}
	for _, p := range c.cfg.Params {
		add(p.Key, p.Value)
	}
	return b.String()
}

// reloadCert picks up rotated certificate files before a fetch. On a
// change, idle connections are closed so the next handshake presents the
// new pair.
func (c *Client) reloadCert() {
	if c.certs == nil {
		return
	}
	changed, err := c.certs.reload()
	switch {
	case err != nil:
		c.log.Warn("client certificate files changed but do not load; keeping the previous pair",
			"cert_file", c.cfg.CertFile, "key_file", c.cfg.KeyFile, "error", err.Error())
	case changed:
		c.transport.CloseIdleConnections()
		c.log.Info("client certificate reloaded", "cert_file", c.cfg.CertFile,
			"subject", c.certs.subject())
	}
}

func loggerOrDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

func cmpOr(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
