package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/cerbai/cerbai/tokens"
)

// envPrefix starts every environment variable cerbai reads.
const envPrefix = "CERBAI_"

// Config is cerbai's whole configuration. Each field is one option: the flag
// named by the `flag` tag and the environment variable CERBAI_ + the `env`
// tag. A flag beats its variable, which beats the default from
// defaultConfig. optionHelp has each option's -h text, which states what
// zero or empty means.
type Config struct {
	ListenAddr   string          `flag:"listen-addr" env:"LISTEN_ADDR"`
	AdminAddr    string          `flag:"admin-addr" env:"ADMIN_ADDR"`
	DebugAddr    string          `flag:"debug-addr" env:"DEBUG_ADDR"`
	ListenCert   string          `flag:"listen-tls-cert-file" env:"LISTEN_TLS_CERT_FILE"`
	ListenKey    string          `flag:"listen-tls-key-file" env:"LISTEN_TLS_KEY_FILE"`
	LLMURL       string          `flag:"llm-url" env:"LLM_URL"`
	LLMCAFile    string          `flag:"llm-ca-file" env:"LLM_CA_FILE"`
	LLMCertFile  string          `flag:"llm-tls-cert-file" env:"LLM_TLS_CERT_FILE"`
	LLMKeyFile   string          `flag:"llm-tls-key-file" env:"LLM_TLS_KEY_FILE"`
	TokenURL     string          `flag:"token-endpoint" env:"TOKEN_ENDPOINT"`
	ClientID     string          `flag:"client-id" env:"CLIENT_ID"`
	ClientSecret tokens.Secret   `flag:"client-secret" env:"CLIENT_SECRET"`
	SecretFile   string          `flag:"client-secret-file" env:"CLIENT_SECRET_FILE"`
	AuthMethod   string          `flag:"token-auth-method" env:"TOKEN_AUTH_METHOD"`
	Scope        string          `flag:"token-scope" env:"TOKEN_SCOPE"`
	Audience     string          `flag:"token-audience" env:"TOKEN_AUDIENCE"`
	TokenParams  []string        `flag:"token-param" env:"TOKEN_PARAM"`
	CertFile     string          `flag:"tls-cert-file" env:"TLS_CERT_FILE"`
	KeyFile      string          `flag:"tls-key-file" env:"TLS_KEY_FILE"`
	CAFile       string          `flag:"tls-ca-file" env:"TLS_CA_FILE"`
	TokenTTL     time.Duration   `flag:"token-cache-ttl" env:"TOKEN_CACHE_TTL"`
	TokenTimeout time.Duration   `flag:"token-timeout" env:"TOKEN_TIMEOUT"`
	TokenWait    time.Duration   `flag:"token-wait" env:"TOKEN_WAIT"`
	TokenHeader  string          `flag:"token-header" env:"TOKEN_HEADER"`
	TokenPrefix  string          `flag:"token-prefix" env:"TOKEN_PREFIX"`
	DialTimeout  time.Duration   `flag:"dial-timeout" env:"DIAL_TIMEOUT"`
	ProxyTokens  []tokens.Secret `flag:"proxy-token" env:"PROXY_TOKEN"`
	ProxyFile    string          `flag:"proxy-token-file" env:"PROXY_TOKEN_FILE"`
	RedisURL     redisURL        `flag:"redis-url" env:"REDIS_URL"`
	RedisCAFile  string          `flag:"redis-ca-file" env:"REDIS_CA_FILE"`
	RedisPrefix  string          `flag:"redis-key-prefix" env:"REDIS_KEY_PREFIX"`
	UpstreamWait time.Duration   `flag:"upstream-timeout" env:"UPSTREAM_TIMEOUT"`
	IdleTimeout  time.Duration   `flag:"stream-idle-timeout" env:"STREAM_IDLE_TIMEOUT"`
	MaxBody      size            `flag:"max-request-body" env:"MAX_REQUEST_BODY"`
	ReadTimeout  time.Duration   `flag:"request-read-timeout" env:"REQUEST_READ_TIMEOUT"`
	ReplayBody   size            `flag:"replay-max-body" env:"REPLAY_MAX_BODY"`
	PurgeStatus  []int           `flag:"purge-on-status" env:"PURGE_ON_STATUS"`
	AllowPaths   []string        `flag:"allow-path" env:"ALLOW_PATH"`
	MaxConc      int             `flag:"max-concurrent" env:"MAX_CONCURRENT"`
	TrustFwd     []string        `flag:"trust-forwarded" env:"TRUST_FORWARDED"`
	ForwardedFor string          `flag:"forwarded-for" env:"FORWARDED_FOR"`
	ShutdownWait time.Duration   `flag:"shutdown-delay" env:"SHUTDOWN_DELAY"`
	ShutdownMax  time.Duration   `flag:"shutdown-timeout" env:"SHUTDOWN_TIMEOUT"`
	AccessLog    bool            `flag:"access-log" env:"ACCESS_LOG"`
	LogLevel     string          `flag:"log-level" env:"LOG_LEVEL"`
}

// optionHelp is the -h text of each option: a placeholder for its value
// and what it does, with what zero or empty means.
var optionHelp = map[string]struct{ meta, text string }{
	"listen-addr": {"ADDR",
		"address the proxy listens on"},
	"admin-addr": {"ADDR",
		"separate listener for /healthz, /readyz and /metrics (none: they are on the proxy listener)"},
	"debug-addr": {"ADDR",
		"loopback listener for pprof (none: off)"},
	"listen-tls-cert-file": {"FILE",
		"serve the proxy over TLS with this certificate (reloaded on change)"},
	"listen-tls-key-file": {"FILE",
		"private key for --listen-tls-cert-file"},
	"llm-url": {"URL",
		"OpenAI-compatible LLM endpoint; its base path is kept (required)"},
	"llm-ca-file": {"FILE",
		"CA certificates trusted for the LLM endpoint, added to the system roots"},
	"llm-tls-cert-file": {"FILE",
		"client certificate presented to the LLM endpoint (mTLS)"},
	"llm-tls-key-file": {"FILE",
		"private key for --llm-tls-cert-file"},
	"token-endpoint": {"URL",
		"OAuth2 token endpoint (required)"},
	"client-id": {"ID",
		"OAuth2 client id (required)"},
	"client-secret": {"SECRET",
		"OAuth2 client secret (required unless --client-secret-file or --token-auth-method tls)"},
	"client-secret-file": {"FILE",
		"read the client secret from this file (relative: inside $CREDENTIALS_DIRECTORY)"},
	"token-auth-method": {"METHOD",
		"client authentication: basic, post or tls"},
	"token-scope": {"SCOPES",
		"space-separated scopes to request (none: no scope parameter)"},
	"token-audience": {"AUDIENCE",
		"audience parameter for the token request (none: not sent)"},
	"token-param": {"KEY=VALUE",
		"extra token request parameter (list)"},
	"tls-cert-file": {"FILE",
		"client certificate for mutual TLS with the token endpoint"},
	"tls-key-file": {"FILE",
		"private key for --tls-cert-file (relative: inside $CREDENTIALS_DIRECTORY)"},
	"tls-ca-file": {"FILE",
		"CA certificates trusted for the token endpoint, added to the system roots"},
	"token-cache-ttl": {"DURATION",
		"longest a token is served before a refresh; " +
			"also its lifetime when the token service gives none"},
	"token-timeout": {"DURATION",
		"time limit for one token request"},
	"token-wait": {"DURATION",
		"longest a request waits for a token when none is usable"},
	"token-header": {"NAME",
		"header that carries the token upstream"},
	"token-prefix": {"PREFIX",
		"text before the token in --token-header (empty: the bare token)"},
	"dial-timeout": {"DURATION",
		"time limit for TCP and TLS set-up to any upstream"},
	"proxy-token": {"[NAME=]KEY",
		"proxy key a client must present (list; none: no key needed)"},
	"proxy-token-file": {"FILE",
		"proxy keys from this file, one per line or comma-separated; re-read on change"},
	"redis-url": {"URL",
		"redis:// or rediss:// URL of the cache shared by replicas (none: per-replica only)"},
	"redis-ca-file": {"FILE",
		"CA certificates trusted for rediss://, added to the system roots"},
	"redis-key-prefix": {"PREFIX",
		"prefix of every Redis key cerbai writes"},
	"upstream-timeout": {"DURATION",
		"longest wait for the LLM's response headers"},
	"stream-idle-timeout": {"DURATION",
		"a response body that sends nothing this long is ended"},
	"max-request-body": {"SIZE",
		"largest request body accepted (413 beyond)"},
	"request-read-timeout": {"DURATION",
		"longest time to receive a request's headers and body (408 beyond)"},
	"replay-max-body": {"SIZE",
		"largest body kept to resend after an upstream 401 (0: never resend)"},
	"purge-on-status": {"CODES",
		"upstream statuses that discard the token and resend once (list)"},
	"allow-path": {"PREFIX",
		"path prefixes that are forwarded; others get 404 (list; none: all)"},
	"max-concurrent": {"N",
		"most requests served at once; beyond it 503 (0: no cap)"},
	"trust-forwarded": {"CIDR",
		"peers whose X-Forwarded-For is kept and appended to (list)"},
	"forwarded-for": {"MODE",
		"X-Forwarded-For sent upstream: set or none"},
	"shutdown-delay": {"DURATION",
		"after SIGTERM, keep accepting requests this long while not ready"},
	"shutdown-timeout": {"DURATION",
		"longest wait for in-flight requests and streams to finish"},
	"access-log": {"",
		"log one info line per request"},
	"log-level": {"LEVEL",
		"debug, info, warn or error"},
}

// defaultConfig holds every default; a field not set here defaults to zero.
func defaultConfig() Config {
	return Config{
		ListenAddr:   ":8085",
		AuthMethod:   "basic",
		TokenTTL:     5 * time.Minute,
		TokenTimeout: 10 * time.Second,
		TokenWait:    10 * time.Second,
		TokenHeader:  "Authorization",
		TokenPrefix:  "Bearer ",
		DialTimeout:  10 * time.Second,
		RedisPrefix:  "cerbai:",
		UpstreamWait: 10 * time.Minute,
		IdleTimeout:  5 * time.Minute,
		MaxBody:      32 << 20,
		ReadTimeout:  2 * time.Minute,
		ReplayBody:   1 << 20,
		PurgeStatus:  []int{401},
		ForwardedFor: "set",
		ShutdownMax:  30 * time.Second,
		LogLevel:     "info",
	}
}

// option is one Config field seen through its tags.
type option struct {
	flag, env, meta, help string
	field                 int
}

// options lists Config's options in declaration order.
func options() []option {
	t := reflect.TypeFor[Config]()
	opts := make([]option, 0, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		opts = append(opts, option{
			flag: f.Tag.Get("flag"), env: envPrefix + f.Tag.Get("env"),
			meta: optionHelp[f.Tag.Get("flag")].meta, help: optionHelp[f.Tag.Get("flag")].text,
			field: i,
		})
	}
	return opts
}

// optionByField maps a Config field name to its option, for env errors.
func optionByField(name string) (option, bool) {
	f, ok := reflect.TypeFor[Config]().FieldByName(name)
	if !ok {
		return option{}, false
	}
	return option{flag: f.Tag.Get("flag"), env: envPrefix + f.Tag.Get("env")}, true
}

// where names an option the way every config message does.
func (o option) where() string { return "--" + o.flag + " / " + o.env }

// errHelp is returned by loadConfig when -h or --help was given.
var errHelp = flag.ErrHelp

// errVersion is returned by loadConfig when --version was given.
var errVersion = errors.New("version requested")

// loadConfig reads the environment, then the flags, into a Config. It
// returns every problem it met (errors naming the flag and the variable),
// not only the first; validation of the values comes after, in validate.
func loadConfig(args []string, environ map[string]string) (Config, []string, error) {
	cfg := defaultConfig()
	var problems []string

	err := env.ParseWithOptions(&cfg, env.Options{
		Prefix:      envPrefix,
		Environment: environ,
		FuncMap: map[reflect.Type]env.ParserFunc{
			reflect.TypeFor[tokens.Secret](): func(v string) (any, error) {
				return tokens.Secret(v), nil
			},
			reflect.TypeFor[redisURL](): func(v string) (any, error) { return redisURL(v), nil },
			// The same message as a bad flag value gives.
			reflect.TypeFor[time.Duration](): func(v string) (any, error) {
				return time.ParseDuration(v)
			},
		},
	})
	var agg env.AggregateError
	if errors.As(err, &agg) {
		for _, e := range agg.Errors {
			problems = append(problems, envProblem(e))
		}
	} else if err != nil {
		return cfg, nil, fmt.Errorf("read environment: %w", err)
	}

	fs := flag.NewFlagSet("cerbai", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	version := fs.Bool("version", false, "print the version and exit")
	v := reflect.ValueOf(&cfg).Elem()
	for _, o := range options() {
		fs.Var(&fieldValue{v: v.Field(o.field), opt: o, problems: &problems}, o.flag, o.help)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, nil, errHelp
		}
		problems = append(problems, err.Error())
	} else if fs.NArg() > 0 {
		problems = append(problems, fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	if *version {
		return cfg, nil, errVersion
	}
	normalizeLists(&cfg)
	return cfg, problems, nil
}

// envProblem turns one error of the env module into a message naming the
// variable and the flag.
func envProblem(err error) string {
	var pe env.ParseError
	if errors.As(err, &pe) {
		if o, ok := optionByField(pe.Name); ok {
			return fmt.Sprintf("%s: %v", o.where(), pe.Err)
		}
	}
	return err.Error()
}

// normalizeLists trims list entries and drops empty ones, so that
// "a, b," reads the same from a flag and from the environment.
func normalizeLists(cfg *Config) {
	trim := func(in []string) []string {
		out := in[:0]
		for _, s := range in {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	cfg.TokenParams = trim(cfg.TokenParams)
	cfg.AllowPaths = trim(cfg.AllowPaths)
	cfg.TrustFwd = trim(cfg.TrustFwd)
	keys := cfg.ProxyTokens[:0]
	for _, k := range cfg.ProxyTokens {
		if s := strings.TrimSpace(k.Reveal()); s != "" {
			keys = append(keys, tokens.Secret(s))
		}
	}
	cfg.ProxyTokens = keys
}

// fieldValue is the flag.Value of one Config field. A bad value is recorded
// as a problem and parsing goes on, so every problem is reported at once. A
// list flag replaces the environment's list on first use and appends after.
type fieldValue struct {
	v        reflect.Value
	opt      option
	problems *[]string
	used     bool
}

func (f *fieldValue) String() string { return "" }

// IsBoolFlag lets a bool option be given as a bare --access-log.
func (f *fieldValue) IsBoolFlag() bool { return f.v.IsValid() && f.v.Kind() == reflect.Bool }

func (f *fieldValue) Set(s string) error {
	if err := f.set(s); err != nil {
		*f.problems = append(*f.problems, fmt.Sprintf("%s: %v", f.opt.where(), err))
	}
	f.used = true
	return nil
}

func (f *fieldValue) set(s string) error {
	switch p := f.v.Addr().Interface().(type) {
	case *time.Duration:
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*p = d
	case *size:
		return p.UnmarshalText([]byte(s))
	case *bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("invalid boolean %q", s)
		}
		*p = b
	case *int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("invalid number %q", s)
		}
		*p = n
	case *string:
		*p = s
	case *tokens.Secret:
		*p = tokens.Secret(s)
	case *redisURL:
		*p = redisURL(s)
	case *[]string:
		*p = appendList(*p, !f.used, s, func(s string) (string, error) { return s, nil })
	case *[]tokens.Secret:
		*p = appendList(*p, !f.used, s, func(s string) (tokens.Secret, error) {
			return tokens.Secret(s), nil
		})
	case *[]int:
		var err error
		*p = appendList(*p, !f.used, s, func(s string) (int, error) {
			n, e := strconv.Atoi(strings.TrimSpace(s))
			if e != nil && err == nil {
				err = fmt.Errorf("invalid number %q", s)
			}
			return n, e
		})
		return err
	default:
		return fmt.Errorf("no parser for %s", f.v.Type())
	}
	return nil
}

// appendList splits s at commas and appends the parsed parts to list,
// starting from an empty list when fresh is set.
func appendList[T any](list []T, fresh bool, s string, parse func(string) (T, error)) []T {
	if fresh {
		list = nil
	}
	for _, part := range strings.Split(s, ",") {
		if v, err := parse(part); err == nil {
			list = append(list, v)
		}
	}
	return list
}

// size is a byte count read as a number with an optional KiB, MiB or GiB
// suffix.
type size int64

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *size) UnmarshalText(b []byte) error {
	text := strings.TrimSpace(string(b))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(text, u.suffix) {
			text, mult = strings.TrimSpace(strings.TrimSuffix(text, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return fmt.Errorf("invalid size %q (bytes, optionally with KiB, MiB or GiB)", string(b))
	}
	*s = size(n * mult)
	return nil
}

// String prints the size the way it is read.
func (s size) String() string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if s != 0 && int64(s)%u.mult == 0 {
			return strconv.FormatInt(int64(s)/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(s), 10)
}
