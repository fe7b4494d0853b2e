package upstream

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// Config configures New. Every field documents its zero value.
type Config struct {
	// Target is the LLM endpoint (--llm-url): http or https, with an
	// optional base path that is kept (https://h/openai + /v1/x →
	// https://h/openai/v1/x) and an optional query put before the
	// client's. Required.
	Target *url.URL
	// Tokens gives the access token for each request. Required.
	Tokens TokenSource
	// Transport sends the requests. nil → NewTransport(TransportConfig{}).
	Transport http.RoundTripper
	// TokenHeader is the header the token goes in (--token-header).
	// "" → "Authorization".
	TokenHeader string
	// TokenPrefix is put before the token, as given (--token-prefix);
	// "" means none.
	TokenPrefix string
	// StreamIdleTimeout ends a response body that delivers nothing for this
	// long (--stream-idle-timeout). 0 → no limit. A flowing stream is never
	// cut.
	StreamIdleTimeout time.Duration
	// MaxRequestBody bounds the request body (--max-request-body), counted
	// while it streams, chunked or not; beyond it the answer is 413.
	// 0 → unlimited.
	MaxRequestBody int64
	// ReplayMaxBody is the largest body that is read fully before sending,
	// so the request can be sent again after a purge status
	// (--replay-max-body). Larger bodies stream through. 0 → only requests
	// without a body are replayed.
	ReplayMaxBody int64
	// PurgeOnStatus lists the upstream statuses that mean "this token was
	// rejected" (--purge-on-status). nil → none; the caller's default is
	// [401].
	PurgeOnStatus []int
	// ForwardedFor is "" or "set" (X-Forwarded-For is the client's
	// address) or "none" (no X-Forwarded-For at all).
	ForwardedFor string
	// TrustForwarded lists peers whose X-Forwarded-For, Forwarded and
	// X-Real-Ip are kept, X-Forwarded-For appended to. nil → none: the
	// client's forwarding headers are replaced or dropped.
	TrustForwarded []netip.Prefix
	// AllowPaths lists path prefixes that may be forwarded (--allow-path);
	// other paths get 404. nil → all paths.
	AllowPaths []string
	// MaxConcurrent caps requests in flight; beyond it the answer is 503
	// with Retry-After. 0 → no cap.
	MaxConcurrent int
	// Authorize checks the client's proxy key after the target and method
	// checks and returns the key's name for logs and counts; !ok → 401.
	// nil → no proxy keys.
	Authorize func(r *http.Request) (keyName string, ok bool)
	// AccessLog logs "request completed" at info; otherwise at debug.
	AccessLog bool
	// Logger receives the proxy's logs. nil → discarded.
	Logger *slog.Logger
	// Stats receives the counts. nil → a private one (see Proxy.Stats).
	Stats *Stats
}

// Proxy is the forwarding handler built by New.
//
// Limitations: informational (1xx) answers other than 100 Continue are
// not passed on; protocol upgrades (WebSocket) are refused, since Upgrade
// is hop-by-hop; trailers a client sends with a chunked request body are
// dropped.
type Proxy struct {
	scheme, host   string
	basePath       string // decoded, without trailing "/"
	baseRawPath    string // escaped, without trailing "/"
	baseEscaped    bool   // baseRawPath holds a percent escape
	baseQuery      string
	tokens         TokenSource
	transport      http.RoundTripper
	tokenHeader    string // canonical
	tokenPrefix    string
	tokenVal       atomic.Pointer[tokenValue]
	idle           time.Duration
	maxBody        int64
	replayMax      int64
	purge          []int
	forwardNone    bool
	trusted        []netip.Prefix
	allow          []string
	maxConcurrent  int64
	inflight       atomic.Int64
	authorize      func(*http.Request) (string, bool)
	log            *slog.Logger
	warnings       *LimitedLog // the upstream can cause one per request
	completedLevel slog.Level
	stats          *Stats
}

// tokenValue caches the token header's value for the current token, so
// the common case builds no string and no slice.
type tokenValue struct {
	token string
	value []string
}

// New checks cfg and builds the handler.
func New(cfg Config) (*Proxy, error) {
	if err := checkConfig(&cfg); err != nil {
		return nil, fmt.Errorf("new proxy: %w", err)
	}
	p := &Proxy{
		scheme:        cfg.Target.Scheme,
		host:          cfg.Target.Host,
		basePath:      strings.TrimRight(cfg.Target.Path, "/"),
		baseRawPath:   strings.TrimRight(cfg.Target.EscapedPath(), "/"),
		baseQuery:     cfg.Target.RawQuery,
		tokens:        cfg.Tokens,
		transport:     cfg.Transport,
		tokenHeader:   http.CanonicalHeaderKey(cfg.TokenHeader),
		tokenPrefix:   cfg.TokenPrefix,
		idle:          cfg.StreamIdleTimeout,
		maxBody:       cfg.MaxRequestBody,
		replayMax:     cfg.ReplayMaxBody,
		purge:         append([]int(nil), cfg.PurgeOnStatus...),
		forwardNone:   cfg.ForwardedFor == "none",
		trusted:       append([]netip.Prefix(nil), cfg.TrustForwarded...),
		allow:         append([]string(nil), cfg.AllowPaths...),
		maxConcurrent: int64(cfg.MaxConcurrent),
		authorize:     cfg.Authorize,
		log:           cfg.Logger,
		stats:         cfg.Stats,
	}
	p.baseEscaped = strings.Contains(p.baseRawPath, "%")
	if p.transport == nil {
		t, err := NewTransport(TransportConfig{})
		if err != nil {
			return nil, fmt.Errorf("new proxy: %w", err)
		}
		p.transport = t
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.warnings = NewLimitedLog(p.log, time.Second, warnBurst)
	if p.stats == nil {
		p.stats = new(Stats)
	}
	p.completedLevel = slog.LevelDebug
	if cfg.AccessLog {
		p.completedLevel = slog.LevelInfo
	}
	return p, nil
}

// checkConfig validates cfg and fills the defaults New does not keep
// elsewhere.
func checkConfig(cfg *Config) error {
	var errs []error
	t := cfg.Target
	switch {
	case t == nil:
		errs = append(errs, errors.New("target (--llm-url) is required"))
	case t.Scheme != "http" && t.Scheme != "https":
		errs = append(errs, fmt.Errorf("target (--llm-url) must be http or https, got %q",
			t.Scheme))
	case t.Host == "":
		errs = append(errs, errors.New("target (--llm-url) has no host"))
	}
	if cfg.Tokens == nil {
		errs = append(errs, errors.New("token source is required"))
	}
	if cfg.TokenHeader == "" {
		cfg.TokenHeader = "Authorization"
	}
	if !validHeaderName(cfg.TokenHeader) {
		errs = append(errs, fmt.Errorf("--token-header %q is not a valid header name",
			cfg.TokenHeader))
	}
	if cfg.ForwardedFor != "" && cfg.ForwardedFor != "set" && cfg.ForwardedFor != "none" {
		errs = append(errs, fmt.Errorf("--forwarded-for must be set or none, got %q",
			cfg.ForwardedFor))
	}
	if cfg.MaxRequestBody < 0 || cfg.ReplayMaxBody < 0 || cfg.MaxConcurrent < 0 ||
		cfg.StreamIdleTimeout < 0 {
		errs = append(errs, errors.New("limits and timeouts must not be negative"))
	}
	for _, a := range cfg.AllowPaths {
		if !strings.HasPrefix(a, "/") {
			errs = append(errs, fmt.Errorf("--allow-path %q must start with /", a))
		}
	}
	return errors.Join(errs...)
}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() *Stats { return p.stats }

// ServeHTTP checks the request, forwards it and streams the answer back.
// Every answer cerbai produces itself is OpenAI-shaped JSON.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ex := p.newExchange(w, r)
	defer p.finish(ex)

	// Bytes a front proxy framed differently must never be served as a
	// second request on this connection.
	CloseIfAmbiguous(w, r)
	if p.log.Enabled(r.Context(), slog.LevelDebug) {
		p.log.LogAttrs(r.Context(), slog.LevelDebug, "incoming request",
			slog.String("request_id", ex.reqID), slog.String("method", r.Method),
			slog.String("path", ex.rawPath), slog.String("remote", r.RemoteAddr))
	}
	if p.admit(ex) {
		p.forward(ex)
	}
	if ex.status == statusClientGone {
		// Nothing was answered: without this the server would complete
		// an empty 200 for a request that was never forwarded.
		panic(http.ErrAbortHandler)
	}
}

// admit runs the checks in their fixed order, so each hostile request gets
// one predictable answer, and answers the first that fails.
func (p *Proxy) admit(ex *exchange) bool {
	r := ex.r
	if ex.targetErr != nil {
		return ex.fail(http.StatusBadRequest, CodeInvalidRequest, "invalid request target")
	}
	if !allowedMethod(r.Method) {
		ex.w.Header().Set("Allow", "GET, POST, PUT, PATCH, DELETE, OPTIONS, HEAD")
		return ex.fail(http.StatusMethodNotAllowed, CodeMethodNotAllowed,
			"method not allowed")
	}
	if p.authorize != nil {
		name, ok := p.authorize(r)
		if !ok {
			ex.w.Header().Set("WWW-Authenticate", "Bearer")
			return ex.fail(http.StatusUnauthorized, CodeUnauthorized,
				"missing or invalid proxy key")
		}
		ex.key = name
		p.stats.keyRequest(name)
	}
	if !p.pathAllowed(ex.rawPath) {
		return ex.fail(http.StatusNotFound, CodeNotFound, "path not found")
	}
	if p.maxConcurrent > 0 {
		if p.inflight.Add(1) > p.maxConcurrent {
			p.inflight.Add(-1)
			ex.w.Header().Set("Retry-After", "1")
			return ex.fail(http.StatusServiceUnavailable, CodeTooManyRequests,
				"too many concurrent requests")
		}
		ex.slot = true
	}
	return true
}

func allowedMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodHead:
		return true
	}
	return false
}

func (p *Proxy) pathAllowed(path string) bool {
	if len(p.allow) == 0 {
		return true
	}
	for _, a := range p.allow {
		if strings.HasPrefix(path, a) {
			return true
		}
	}
	return false
}

// finish counts and logs the request once it is done, however it ended
// (a stream cut by the upstream ends in a panic; see copyResponse).
func (p *Proxy) finish(ex *exchange) {
	ex.stop()
	if ex.slot {
		p.inflight.Add(-1)
	}
	d := time.Since(ex.start)
	in := ex.body.n.Load()
	p.stats.bytesIn.Add(uint64(in))
	p.stats.bytesOut.Add(uint64(ex.bytesOut))
	p.stats.observe(ex.r.Method, ex.status, d)
	ctx := ex.r.Context()
	if !p.log.Enabled(ctx, p.completedLevel) {
		return
	}
	p.log.LogAttrs(ctx, p.completedLevel, "request completed",
		slog.String("request_id", ex.reqID), slog.String("key", ex.key),
		slog.String("method", ex.r.Method), slog.String("path", ex.rawPath),
		slog.Int("status", ex.status), slog.Int64("bytes_in", in),
		slog.Int64("bytes_out", ex.bytesOut),
		slog.Float64("duration_ms", float64(d.Microseconds())/1000))
}

// warnBurst is how many upstream-caused warnings a second are written; the
// rest are counted in the next line's "suppressed".
const warnBurst = 10

// warn logs an upstream or token failure, rate-limited. The error's URL,
// when it has one, is left out: it would carry the client's query.
func (p *Proxy) warn(ex *exchange, msg string, err error, attrs ...slog.Attr) {
	ctx := ex.r.Context()
	if !p.log.Enabled(ctx, slog.LevelWarn) {
		return
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	attrs = append(attrs, slog.String("request_id", ex.reqID),
		slog.String("upstream", p.host))
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	p.warnings.Log(ctx, slog.LevelWarn, msg, attrs...)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
