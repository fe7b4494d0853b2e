package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/cerbai/cerbai/tokens"
)

// settings is a checked Config turned into what the components take.
type settings struct {
	Config
	llmURL   *url.URL
	level    slog.Level
	params   []tokens.Param
	trust    []netip.Prefix
	keys     []proxyKey // from --proxy-token; the file's keys are read by keyStore
	warnings []string   // problems that do not stop cerbai, logged at start
}

// checker collects config problems so that all are reported at once.
type checker struct {
	problems []string
	credDir  string // $CREDENTIALS_DIRECTORY, where relative secret files are found
}

func (c *checker) addf(flag, format string, args ...any) {
	o, _ := optionByFlag(flag)
	c.problems = append(c.problems, o.where()+": "+fmt.Sprintf(format, args...))
}

// optionByFlag finds an option by its flag name.
func optionByFlag(name string) (option, bool) {
	for _, o := range options() {
		if o.flag == name {
			return o, true
		}
	}
	return option{flag: name, env: envPrefix + envName(name)}, false
}

// envName is the environment name of a flag without the prefix:
// "llm-url" → "LLM_URL".
func envName(flag string) string {
	return strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// validate checks cfg as a whole and returns every problem it finds, each
// naming the flag and the environment variable to fix.
func validate(cfg Config, getenv func(string) string) (*settings, []string) {
	c := &checker{credDir: getenv("CREDENTIALS_DIRECTORY")}
	s := &settings{Config: cfg}

	s.llmURL = c.httpURL("llm-url", cfg.LLMURL, true)
	c.httpURL("token-endpoint", cfg.TokenURL, true)
	if cfg.ClientID == "" {
		c.addf("client-id", "required")
	}
	c.authMethod(s)
	c.tokenParams(s)
	c.files(s)
	c.durations(cfg)
	c.listeners(s)
	c.proxy(s)

	if !validHeaderName(cfg.TokenHeader) {
		c.addf("token-header", "%q is not a valid header name", cfg.TokenHeader)
	}
	lvl, err := parseLevel(cfg.LogLevel)
	if err != nil {
		c.addf("log-level", "%v", err)
	}
	s.level = lvl
	if cfg.RedisURL != "" {
		u, err := url.Parse(string(cfg.RedisURL))
		if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
			c.addf("redis-url", "want a redis:// or rediss:// URL with a host")
		}
	}
	if cfg.RedisPrefix == "" {
		c.addf("redis-key-prefix", "must not be empty")
	}
	return s, c.problems
}

// httpURL checks an http(s) URL option.
func (c *checker) httpURL(flag, raw string, required bool) *url.URL {
	if raw == "" {
		if required {
			c.addf(flag, "required")
		}
		return nil
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		c.addf(flag, "not a URL")
		return nil
	case u.Scheme != "http" && u.Scheme != "https":
		c.addf(flag, "want an http:// or https:// URL, got scheme %q", u.Scheme)
		return nil
	case u.Host == "":
		c.addf(flag, "the URL has no host")
		return nil
	case u.User != nil:
		c.addf(flag, "credentials inside the URL are not supported")
		return nil
	}
	return u
}

func (c *checker) authMethod(s *settings) {
	switch s.AuthMethod {
	case "basic", "post":
		if s.ClientSecret != "" && s.SecretFile != "" {
			c.addf("client-secret", "give --client-secret or --client-secret-file, not both")
		}
		if s.ClientSecret == "" && s.SecretFile == "" {
			c.addf("client-secret", "required with --token-auth-method %s "+
				"(or --client-secret-file)", s.AuthMethod)
		}
	case "tls":
		if s.CertFile == "" || s.KeyFile == "" {
			c.addf("token-auth-method", "tls needs --tls-cert-file and --tls-key-file")
		}
	default:
		c.addf("token-auth-method", "unknown method %q (want basic, post or tls)",
			s.AuthMethod)
	}
}

func (c *checker) tokenParams(s *settings) {
	for _, p := range s.TokenParams {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			c.addf("token-param", "%q is not key=value", p)
			continue
		}
		switch k {
		case "grant_type", "client_id", "client_secret":
			c.addf("token-param", "%q is set by cerbai itself", k)
			continue
		}
		s.params = append(s.params, tokens.Param{Key: k, Value: v})
	}
}

// files resolves the file options, reads the client secret, and checks
// that every file can be read and every certificate pair loads.
func (c *checker) files(s *settings) {
	s.SecretFile = c.credPath(s.SecretFile)
	s.ProxyFile = c.credPath(s.ProxyFile)
	s.KeyFile = c.credPath(s.KeyFile)
	s.LLMKeyFile = c.credPath(s.LLMKeyFile)
	s.ListenKey = c.credPath(s.ListenKey)

	if s.SecretFile != "" {
		b, err := os.ReadFile(s.SecretFile)
		switch {
		case err != nil:
			c.addf("client-secret-file", "cannot read: %v", pathErr(err))
		case strings.TrimSpace(string(b)) == "":
			c.addf("client-secret-file", "%s is empty", s.SecretFile)
		default:
			s.ClientSecret = tokens.Secret(strings.TrimSpace(string(b)))
			s.warnings = append(s.warnings, worldReadable(s.SecretFile)...)
		}
	}
	if s.ProxyFile != "" {
		if _, err := readKeyFile(s.ProxyFile); err != nil {
			c.addf("proxy-token-file", "%v", err)
		}
		s.warnings = append(s.warnings, worldReadable(s.ProxyFile)...)
	}
	for _, f := range []struct{ flag, path string }{
		{"tls-ca-file", s.CAFile}, {"llm-ca-file", s.LLMCAFile}, {"redis-ca-file", s.RedisCAFile},
	} {
		c.caFile(f.flag, f.path)
	}
	c.keyPair("tls-cert-file", "tls-key-file", s.CertFile, s.KeyFile)
	c.keyPair("llm-tls-cert-file", "llm-tls-key-file", s.LLMCertFile, s.LLMKeyFile)
	c.keyPair("listen-tls-cert-file", "listen-tls-key-file", s.ListenCert, s.ListenKey)
	for _, f := range []string{s.KeyFile, s.LLMKeyFile, s.ListenKey} {
		if f != "" {
			s.warnings = append(s.warnings, worldReadable(f)...)
		}
	}
}

// credPath takes a relative secret file path inside $CREDENTIALS_DIRECTORY
// (systemd's LoadCredential=) when that is set.
func (c *checker) credPath(p string) string {
	if p == "" || c.credDir == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.credDir, p)
}

func (c *checker) caFile(flag, path string) {
	if path == "" {
		return
	}
	b, err := os.ReadFile(path)
	if err != nil {
		c.addf(flag, "cannot read: %v", pathErr(err))
		return
	}
	if !strings.Contains(string(b), "-----BEGIN CERTIFICATE-----") {
		c.addf(flag, "%s holds no PEM certificate", path)
	}
}

// keyPair checks that a certificate and its key are given together, load,
// and match.
func (c *checker) keyPair(certFlag, keyFlag, certFile, keyFile string) {
	switch {
	case certFile == "" && keyFile == "":
		return
	case keyFile == "":
		c.addf(keyFlag, "required with --%s", certFlag)
		return
	case certFile == "":
		c.addf(certFlag, "required with --%s", keyFlag)
		return
	}
	ok := true
	for _, f := range []struct{ flag, path string }{{certFlag, certFile}, {keyFlag, keyFile}} {
		if _, err := os.Stat(f.path); err != nil {
			c.addf(f.flag, "cannot read: %v", pathErr(err))
			ok = false
		}
	}
	if !ok {
		return
	}
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		// The error text of crypto/tls names no key material.
		c.addf(certFlag, "certificate and key do not load as a pair: %v", err)
	}
}

// pathErr keeps the operation and path of a file error, not its wrapping.
func pathErr(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return fmt.Errorf("%s: %w", pe.Path, pe.Err)
	}
	return err
}

// worldReadable warns about a secret file anyone on the machine can read.
// Group-readable is normal for Kubernetes secret volumes and passes.
func worldReadable(path string) []string {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm()&0o004 == 0 {
		return nil
	}
	return []string{fmt.Sprintf("secret file %s is readable by every user (mode %v)",
		path, fi.Mode().Perm())}
}

func (c *checker) durations(cfg Config) {
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{
		{"token-cache-ttl", cfg.TokenTTL}, {"token-timeout", cfg.TokenTimeout},
		{"token-wait", cfg.TokenWait}, {"dial-timeout", cfg.DialTimeout},
		{"upstream-timeout", cfg.UpstreamWait}, {"stream-idle-timeout", cfg.IdleTimeout},
		{"request-read-timeout", cfg.ReadTimeout}, {"shutdown-timeout", cfg.ShutdownMax},
	} {
		if d.v <= 0 {
			c.addf(d.flag, "must be positive, got %v", d.v)
		}
	}
	if cfg.ShutdownWait < 0 {
		c.addf("shutdown-delay", "must not be negative, got %v", cfg.ShutdownWait)
	}
}

func (c *checker) listeners(s *settings) {
	if _, _, err := net.SplitHostPort(s.ListenAddr); err != nil {
		c.addf("listen-addr", "want host:port, got %q", s.ListenAddr)
	}
	if s.AdminAddr != "" {
		if _, _, err := net.SplitHostPort(s.AdminAddr); err != nil {
			c.addf("admin-addr", "want host:port, got %q", s.AdminAddr)
		} else if _, port, _ := net.SplitHostPort(s.AdminAddr); s.AdminAddr == s.ListenAddr &&
			port != "0" {
			c.addf("admin-addr", "must differ from --listen-addr")
		}
	}
	if s.DebugAddr != "" && !isLoopback(s.DebugAddr) {
		c.addf("debug-addr", "%q is not a loopback address (pprof must not be exposed)",
			s.DebugAddr)
	}
}

func (c *checker) proxy(s *settings) {
	if s.MaxBody <= 0 {
		c.addf("max-request-body", "must be positive")
	}
	if s.MaxConc < 0 {
		c.addf("max-concurrent", "must not be negative")
	}
	for _, code := range s.PurgeStatus {
		if code < 400 || code > 599 {
			c.addf("purge-on-status", "%d is not an error status (400-599)", code)
		}
	}
	for _, p := range s.AllowPaths {
		if !strings.HasPrefix(p, "/") {
			c.addf("allow-path", "%q must start with /", p)
		}
	}
	for _, t := range s.TrustFwd {
		p, err := netip.ParsePrefix(t)
		if err != nil {
			c.addf("trust-forwarded", "%q is not a CIDR", t)
			continue
		}
		s.trust = append(s.trust, p.Masked())
	}
	switch s.ForwardedFor {
	case "set", "none":
	default:
		c.addf("forwarded-for", "unknown mode %q (want set or none)", s.ForwardedFor)
	}
	keys, err := parseKeys(s.ProxyTokens)
	if err != nil {
		c.addf("proxy-token", "%v", err)
	}
	s.keys = keys
	if len(keys) == 0 && s.ProxyFile == "" && !isLoopback(s.ListenAddr) {
		s.warnings = append(s.warnings, "no proxy key is configured and --listen-addr "+
			"is not loopback: anyone who reaches the port spends the credential")
	}
}

// isLoopback reports whether a host:port names only the loopback interface.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

var headerName = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

// validHeaderName reports whether s is an RFC 9110 field name.
func validHeaderName(s string) bool { return headerName.MatchString(s) }

func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return slog.LevelInfo, fmt.Errorf("unknown level %q (want debug, info, warn or error)", s)
}

// redisURL is a Redis URL that may hold a password; it prints with the
// password replaced by xxxxx, as url.URL.Redacted does.
type redisURL string

func (r redisURL) String() string {
	if r == "" {
		return ""
	}
	u, err := url.Parse(string(r))
	if err != nil {
		return tokens.Redacted
	}
	return u.Redacted()
}

// LogValue implements slog.LogValuer.
func (r redisURL) LogValue() slog.Value { return slog.StringValue(r.String()) }
