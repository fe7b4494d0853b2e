package main

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/cerbai/cerbai/health"
	"github.com/cerbai/cerbai/tokens"
	"github.com/cerbai/cerbai/upstream"
)

// Server limits. There is no WriteTimeout: it would cut long streams.
const (
	maxHeaderBytes  = 64 << 10
	keyFileInterval = 2 * time.Second
)

// Time limits of the listeners: a client gets this long to send a request's
// headers, and an idle keep-alive connection is closed after idleTimeout.
// Variables only so that tests can watch them act without waiting minutes.
var (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
)

// app is cerbai wired together.
type app struct {
	s       *settings
	log     *slog.Logger
	cache   *tokens.Cache
	shared  *tokens.Shared
	tstats  *tokens.Stats
	keys    *keyStore
	proxy   *upstream.Proxy
	ready   *health.Readiness
	notify  *notifier
	metrics http.Handler
}

// serve runs cerbai until ctx is done, then drains; it returns the exit
// status.
func serve(ctx context.Context, s *settings, environ map[string]string, stdout io.Writer) int {
	log := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: s.level}))
	log.Info("starting cerbai", "version", version, "commit", commit, "build_date", buildDate)
	logConfig(log, s)
	for _, w := range s.warnings {
		log.Warn(w)
	}

	// Tokens keep refreshing until the drain is over, so streams and
	// requests accepted during the shutdown delay still get one.
	bg, stopBackground := context.WithCancel(context.Background())
	defer stopBackground()

	a, err := build(bg, s, log)
	if err != nil {
		log.Error("cannot start", "error", err)
		return exitConfig
	}
	a.notify = newNotifier(func(k string) string { return environ[k] })
	if a.shared != nil {
		defer a.shared.Close()
	}
	a.cache.Start(bg)
	go a.keys.watch(bg, keyFileInterval)

	servers, err := a.listen()
	if err != nil {
		log.Error("cannot listen", "error", err)
		return exitFail
	}
	attrs := []any{"addr", servers[0].addr, "tls", s.ListenCert != ""}
	for _, srv := range servers[1:] {
		attrs = append(attrs, srv.role+"_addr", srv.addr)
	}
	log.Info("starting proxy server", attrs...)
	if err := a.notify.notify("READY=1"); err != nil {
		log.Warn("systemd notify failed", "error", err)
	}
	go a.notify.watchdog(bg)

	failed := make(chan error, len(servers))
	for _, srv := range servers {
		go func() { failed <- srv.serve() }()
	}
	select {
	case <-ctx.Done():
	case err := <-failed:
		if !errors.Is(err, http.ErrServerClosed) {
			log.Error("server failed", "error", err)
			return exitFail
		}
	}
	return a.drain(servers)
}

// drain reports not-ready, keeps serving for the shutdown delay, then stops
// accepting and waits for in-flight requests and streams.
func (a *app) drain(servers []*server) int {
	a.ready.SetDraining()
	_ = a.notify.notify("STOPPING=1")
	a.log.Info("shutting down", "delay", a.s.ShutdownWait.String(),
		"timeout", a.s.ShutdownMax.String())
	time.Sleep(a.s.ShutdownWait) // keep accepting while load balancers catch up

	ctx, cancel := context.WithTimeout(context.Background(), a.s.ShutdownMax)
	defer cancel()
	for _, srv := range servers {
		if err := srv.http.Shutdown(ctx); err != nil {
			a.log.Warn("drain timed out, closing open connections", "addr", srv.addr,
				"error", err)
			_ = srv.http.Close()
		}
	}
	a.log.Info("stopped")
	return exitOK
}

// build creates the components from the checked settings.
func build(ctx context.Context, s *settings, log *slog.Logger) (*app, error) {
	a := &app{s: s, log: log, tstats: &tokens.Stats{}}
	client, err := tokens.NewClient(tokens.ClientConfig{
		Endpoint: s.TokenURL, ClientID: s.ClientID, ClientSecret: s.ClientSecret,
		AuthMethod: s.AuthMethod, Scope: s.Scope, Audience: s.Audience, Params: s.params,
		CertFile: s.CertFile, KeyFile: s.KeyFile, CAFile: s.CAFile,
		TTL: s.TokenTTL, Timeout: s.TokenTimeout, DialTimeout: s.DialTimeout,
		Logger: log, Stats: a.tstats,
	})
	if err != nil {
		return nil, err
	}
	var fetcher tokens.Fetcher = client
	if s.RedisURL != "" {
		a.shared, err = tokens.NewShared(tokens.SharedConfig{
			URL: string(s.RedisURL), CAFile: s.RedisCAFile, KeyPrefix: s.RedisPrefix,
			Wait: s.TokenWait, Logger: log, Stats: a.tstats,
		}, client)
		if err != nil {
			return nil, err
		}
		fetcher = a.shared
	}
	a.cache = tokens.NewCache(tokens.CacheConfig{
		Fetcher: fetcher, Wait: s.TokenWait, Logger: log,
		Stats: a.tstats,
	})

	a.keys, err = newKeyStore(s.keys, s.ProxyFile, log)
	if err != nil {
		return nil, err
	}
	stats := new(upstream.Stats) // the proxy's counts and the transport's
	transport, err := upstream.NewTransport(upstream.TransportConfig{
		DialTimeout: s.DialTimeout, ResponseHeaderTimeout: s.UpstreamWait,
		CAFile: s.LLMCAFile, CertFile: s.LLMCertFile, KeyFile: s.LLMKeyFile,
		Stats: stats,
	})
	if err != nil {
		return nil, err
	}
	var authorize func(*http.Request) (string, bool)
	if a.keys.enabled() {
		authorize = a.keys.authorize
	}
	a.proxy, err = upstream.New(upstream.Config{
		Target: s.llmURL, Tokens: a.cache, Transport: transport,
		TokenHeader: s.TokenHeader, TokenPrefix: s.TokenPrefix,
		StreamIdleTimeout: s.IdleTimeout, MaxRequestBody: int64(s.MaxBody),
		ReplayMaxBody: int64(s.ReplayBody), PurgeOnStatus: s.PurgeStatus,
		ForwardedFor: s.ForwardedFor, TrustForwarded: s.trust, AllowPaths: s.AllowPaths,
		MaxConcurrent: s.MaxConc, Authorize: authorize, AccessLog: s.AccessLog,
		Logger: log.With("component", "proxy"), Stats: stats,
	})
	if err != nil {
		return nil, err
	}
	a.ready = health.NewReadiness(func() bool { _, ok := a.cache.Usable(); return ok })
	a.metrics = health.Metrics(a.collect)
	return a, nil
}

// server is one listener and the http.Server on it.
type server struct {
	role string // "proxy", "admin" or "debug"
	addr string
	ln   net.Listener
	http *http.Server
}

// serve returns when the listener fails, or with http.ErrServerClosed once
// the drain has begun.
func (s *server) serve() error { return s.http.Serve(s.ln) }

// listen opens the proxy listener and the optional admin and debug ones.
// The proxy listener comes first.
func (a *app) listen() ([]*server, error) {
	var servers []*server
	open := func(role, addr string, h http.Handler, tlsConf *tls.Config) error {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		if tlsConf != nil {
			ln = tls.NewListener(ln, tlsConf)
		}
		servers = append(servers, &server{role: role, addr: ln.Addr().String(), ln: ln,
			http: &http.Server{
				Handler:           h,
				ReadHeaderTimeout: readHeaderTimeout,
				// The whole request, body included: a client with a key
				// cannot hold a --max-concurrent slot by sending slowly.
				// The deadline is lifted once the body is read, so long
				// streams back are not cut.
				ReadTimeout:    a.s.ReadTimeout,
				IdleTimeout:    idleTimeout,
				MaxHeaderBytes: maxHeaderBytes,
				// Lines Go's server logs (bad handshakes, say) are client-caused.
				ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
			}})
		return nil
	}
	var tlsConf *tls.Config
	if a.s.ListenCert != "" {
		r, err := newServingCert(a.s.ListenCert, a.s.ListenKey, a.log)
		if err != nil {
			return nil, err
		}
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.get}
	}
	err := open("proxy", a.s.ListenAddr, a.routes(a.s.AdminAddr == ""), tlsConf)
	if err == nil && a.s.AdminAddr != "" {
		err = open("admin", a.s.AdminAddr, a.adminRoutes(), nil)
	}
	if err == nil && a.s.DebugAddr != "" {
		err = open("debug", a.s.DebugAddr, debugRoutes(), nil)
	}
	if err != nil {
		for _, s := range servers {
			s.ln.Close()
		}
		return nil, err
	}
	return servers, nil
}

// routes is the proxy listener's handler. The operational paths are
// matched exactly; everything else goes to the forwarder, which checks the
// raw request target itself (no ServeMux: it would clean paths first).
func (a *app) routes(withMetrics bool) http.Handler {
	live := health.Liveness()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.RequestURI {
		case "/healthz", "/readyz", "/metrics":
			// Answered here without reading a body: the same framing
			// rules as the forwarder's.
			upstream.CloseIfAmbiguous(w, r)
			upstream.RefuseBody(w, r)
		}
		switch r.RequestURI {
		case "/healthz":
			live.ServeHTTP(w, r)
		case "/readyz":
			a.ready.ServeHTTP(w, r)
		case "/metrics":
			if !withMetrics {
				upstream.WriteError(w, http.StatusNotFound, "not_found",
					"metrics are served on the admin listener")
				return
			}
			if a.keys.enabled() {
				if _, ok := a.keys.authorize(r); !ok {
					w.Header().Set("WWW-Authenticate", "Bearer")
					upstream.WriteError(w, http.StatusUnauthorized, "unauthorized",
						"a valid proxy key is required")
					return
				}
			}
			a.metrics.ServeHTTP(w, r)
		default:
			a.proxy.ServeHTTP(w, r)
		}
	})
}

// adminRoutes serves the operational paths without a key, and nothing else.
func (a *app) adminRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/healthz", health.Liveness())
	mux.Handle("/readyz", a.ready)
	mux.Handle("/metrics", a.metrics)
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		upstream.WriteError(w, http.StatusNotFound, "not_found", "not found")
	})
	return mux
}

// debugRoutes serves pprof; validation keeps it on loopback.
func debugRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// logConfig logs the configuration without a secret: secrets are named by
// where they come from, never shown.
func logConfig(log *slog.Logger, s *settings) {
	secretFrom := "flag or environment"
	if s.SecretFile != "" {
		secretFrom = s.SecretFile
	}
	if s.AuthMethod == "tls" {
		secretFrom = "none (tls_client_auth)"
	}
	paramKeys := make([]string, 0, len(s.params))
	for _, p := range s.params {
		paramKeys = append(paramKeys, p.Key)
	}
	log.Info("config loaded",
		"listen_addr", s.ListenAddr, "admin_addr", s.AdminAddr, "llm_url", s.llmURL.String(),
		"token_endpoint", s.TokenURL, "client_id", s.ClientID, "client_secret_from", secretFrom,
		"token_auth_method", s.AuthMethod, "token_scope", s.Scope,
		"token_audience", s.Audience, "token_params", paramKeys,
		"tls_cert_file", s.CertFile, "tls_key_file", s.KeyFile, "tls_ca_file", s.CAFile,
		"token_cache_ttl", s.TokenTTL.String(), "token_wait", s.TokenWait.String(),
		"token_header", s.TokenHeader, "proxy_keys", len(s.keys),
		"proxy_token_file", s.ProxyFile, "redis_url", s.RedisURL,
		"upstream_timeout", s.UpstreamWait.String(),
		"stream_idle_timeout", s.IdleTimeout.String(),
		"max_request_body", s.MaxBody.String(),
		"request_read_timeout", s.ReadTimeout.String(), "allow_paths", s.AllowPaths,
		"max_concurrent", s.MaxConc, "access_log", s.AccessLog, "log_level", s.LogLevel)
}
