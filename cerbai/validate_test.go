package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cerbai/cerbai/integration/fake"
)

// testPKI writes a CA, server and client certificates into a temp dir.
func testPKI(t *testing.T) *fake.PKI {
	t.Helper()
	p, err := fake.NewPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// validEnv is a complete, valid configuration.
func validEnv(p *fake.PKI) map[string]string {
	return map[string]string{
		"CERBAI_LLM_URL":        "https://llm.example/openai",
		"CERBAI_TOKEN_ENDPOINT": "https://token.example/oauth2/token",
		"CERBAI_CLIENT_ID":      "cerbai",
		"CERBAI_CLIENT_SECRET":  "s3cret",
		"CERBAI_TLS_CERT_FILE":  p.ClientCertFile,
		"CERBAI_TLS_KEY_FILE":   p.ClientKeyFile,
		"CERBAI_TLS_CA_FILE":    p.CAFile,
	}
}

func check(t *testing.T, args []string, environ map[string]string) (*settings, []string) {
	t.Helper()
	cfg, problems, err := loadConfig(args, environ)
	if err != nil {
		t.Fatalf("loadConfig: %v", err)
	}
	s, more := validate(cfg, func(k string) string { return environ[k] })
	return s, append(problems, more...)
}

func TestValidate_ValidConfigHasNoProblem(t *testing.T) {
	p := testPKI(t)
	s, problems := check(t, nil, validEnv(p))
	if len(problems) > 0 {
		t.Fatalf("problems: %q", problems)
	}
	if got := s.llmURL.String(); got != "https://llm.example/openai" {
		t.Errorf("llm url = %q", got)
	}
}

// TestValidate_Messages is the table of every validation message: each
// case changes a valid configuration and names the problems it must give.
func TestValidate_Messages(t *testing.T) {
	p := testPKI(t)
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	empty := filepath.Join(dir, "empty")
	for name, body := range map[string]string{garbage: "not a pem", empty: " \n"} {
		if err := os.WriteFile(name, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	missing := filepath.Join(dir, "missing")
	tests := []struct {
		name string
		args []string
		env  map[string]string // merged over the valid environment; "" deletes
		want []string
	}{
		{"required values", nil,
			map[string]string{"CERBAI_LLM_URL": "", "CERBAI_TOKEN_ENDPOINT": "",
				"CERBAI_CLIENT_ID": "", "CERBAI_CLIENT_SECRET": ""},
			[]string{
				"--llm-url / CERBAI_LLM_URL: required",
				"--token-endpoint / CERBAI_TOKEN_ENDPOINT: required",
				"--client-id / CERBAI_CLIENT_ID: required",
				"--client-secret / CERBAI_CLIENT_SECRET: required with " +
					"--token-auth-method basic (or --client-secret-file)",
			}},
		{"non-http url", []string{"--llm-url", "ftp://x/"}, nil,
			[]string{`--llm-url / CERBAI_LLM_URL: want an http:// or https:// URL, got scheme "ftp"`}},
		{"url without host", []string{"--token-endpoint", "https:///x"}, nil,
			[]string{"--token-endpoint / CERBAI_TOKEN_ENDPOINT: the URL has no host"}},
		{"credentials in url", []string{"--llm-url", "https://u:p@h/"}, nil,
			[]string{"--llm-url / CERBAI_LLM_URL: credentials inside the URL are not supported"}},
		{"bad duration from env", nil, map[string]string{"CERBAI_TOKEN_TIMEOUT": "soon"},
			[]string{`--token-timeout / CERBAI_TOKEN_TIMEOUT: time: invalid duration "soon"`}},
		{"bad duration from flag", []string{"--dial-timeout", "x"}, nil,
			[]string{`--dial-timeout / CERBAI_DIAL_TIMEOUT: time: invalid duration "x"`}},
		{"non-positive durations", []string{"--token-cache-ttl", "0s", "--token-wait", "-1s"},
			map[string]string{"CERBAI_REQUEST_READ_TIMEOUT": "0s"},
			[]string{
				"--token-cache-ttl / CERBAI_TOKEN_CACHE_TTL: must be positive, got 0s",
				"--token-wait / CERBAI_TOKEN_WAIT: must be positive, got -1s",
				"--request-read-timeout / CERBAI_REQUEST_READ_TIMEOUT: must be positive, got 0s",
			}},
		{"negative shutdown delay", []string{"--shutdown-delay", "-1s"}, nil,
			[]string{"--shutdown-delay / CERBAI_SHUTDOWN_DELAY: must not be negative, got -1s"}},
		{"bad header name", []string{"--token-header", "X Token"}, nil,
			[]string{`--token-header / CERBAI_TOKEN_HEADER: "X Token" is not a valid header name`}},
		{"unknown log level", []string{"--log-level", "loud"}, nil,
			[]string{`--log-level / CERBAI_LOG_LEVEL: unknown level "loud" ` +
				"(want debug, info, warn or error)"}},
		{"unknown auth method", []string{"--token-auth-method", "jwt"}, nil,
			[]string{`--token-auth-method / CERBAI_TOKEN_AUTH_METHOD: unknown method "jwt" ` +
				"(want basic, post or tls)"}},
		{"tls auth needs no secret", []string{"--token-auth-method", "tls"},
			map[string]string{"CERBAI_CLIENT_SECRET": ""}, nil},
		{"tls auth needs a certificate", []string{"--token-auth-method", "tls"},
			map[string]string{"CERBAI_TLS_CERT_FILE": "", "CERBAI_TLS_KEY_FILE": ""},
			[]string{"--token-auth-method / CERBAI_TOKEN_AUTH_METHOD: tls needs " +
				"--tls-cert-file and --tls-key-file"}},
		{"secret twice", []string{"--client-secret-file", p.CAFile}, nil,
			[]string{"--client-secret / CERBAI_CLIENT_SECRET: give --client-secret or " +
				"--client-secret-file, not both"}},
		{"unreadable secret file", []string{"--client-secret-file", missing},
			map[string]string{"CERBAI_CLIENT_SECRET": ""},
			[]string{"--client-secret-file / CERBAI_CLIENT_SECRET_FILE: cannot read: " +
				missing + ": no such file or directory"}},
		{"empty secret file", []string{"--client-secret-file", empty},
			map[string]string{"CERBAI_CLIENT_SECRET": ""},
			[]string{"--client-secret-file / CERBAI_CLIENT_SECRET_FILE: " + empty + " is empty"}},
		{"key without certificate", nil, map[string]string{"CERBAI_TLS_CERT_FILE": ""},
			[]string{"--tls-cert-file / CERBAI_TLS_CERT_FILE: required with --tls-key-file"}},
		{"certificate and key do not match", []string{"--tls-key-file", p.ServerKeyFile}, nil,
			[]string{"--tls-cert-file / CERBAI_TLS_CERT_FILE: certificate and key do not " +
				"load as a pair: tls: private key does not match public key"}},
		{"unreadable certificate", []string{"--tls-cert-file", missing}, nil,
			[]string{"--tls-cert-file / CERBAI_TLS_CERT_FILE: cannot read: " + missing +
				": no such file or directory"}},
		{"ca file without pem", []string{"--tls-ca-file", garbage}, nil,
			[]string{"--tls-ca-file / CERBAI_TLS_CA_FILE: " + garbage + " holds no PEM certificate"}},
		{"bad token param", []string{"--token-param", "novalue", "--token-param", "grant_type=x"},
			nil, []string{
				`--token-param / CERBAI_TOKEN_PARAM: "novalue" is not key=value`,
				`--token-param / CERBAI_TOKEN_PARAM: "grant_type" is set by cerbai itself`,
			}},
		{"bad size", []string{"--max-request-body", "lots"}, nil,
			[]string{`--max-request-body / CERBAI_MAX_REQUEST_BODY: invalid size "lots" ` +
				"(bytes, optionally with KiB, MiB or GiB)"}},
		{"bad purge status", []string{"--purge-on-status", "401,200"}, nil,
			[]string{"--purge-on-status / CERBAI_PURGE_ON_STATUS: 200 is not an error " +
				"status (400-599)"}},
		{"bad redis url", []string{"--redis-url", "http://cache:6379"}, nil,
			[]string{"--redis-url / CERBAI_REDIS_URL: want a redis:// or rediss:// URL with a host"}},
		{"public debug listener", []string{"--debug-addr", ":6060"}, nil,
			[]string{`--debug-addr / CERBAI_DEBUG_ADDR: ":6060" is not a loopback address ` +
				"(pprof must not be exposed)"}},
		{"bad listen address", []string{"--listen-addr", "8085"}, nil,
			[]string{`--listen-addr / CERBAI_LISTEN_ADDR: want host:port, got "8085"`}},
		{"admin on the proxy address", []string{"--admin-addr", ":8085"}, nil,
			[]string{"--admin-addr / CERBAI_ADMIN_ADDR: must differ from --listen-addr"}},
		{"bad cidr and mode", []string{"--trust-forwarded", "10.0.0.0/33",
			"--forwarded-for", "maybe"}, nil, []string{
			`--trust-forwarded / CERBAI_TRUST_FORWARDED: "10.0.0.0/33" is not a CIDR`,
			`--forwarded-for / CERBAI_FORWARDED_FOR: unknown mode "maybe" (want set or none)`,
		}},
		{"allow path without slash", []string{"--allow-path", "v1"}, nil,
			[]string{`--allow-path / CERBAI_ALLOW_PATH: "v1" must start with /`}},
		{"empty proxy key", []string{"--proxy-token", "team="}, nil,
			[]string{"--proxy-token / CERBAI_PROXY_TOKEN: entry 1 has an empty key"}},
		{"unknown flag", []string{"--llm-uri", "x"}, nil,
			[]string{"flag provided but not defined: -llm-uri"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			environ := validEnv(p)
			for k, v := range tt.env {
				if v == "" {
					delete(environ, k)
				} else {
					environ[k] = v
				}
			}
			_, got := check(t, tt.args, environ)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidate_CredentialsDirectory(t *testing.T) {
	p := testPKI(t)
	creds := t.TempDir()
	if err := os.WriteFile(filepath.Join(creds, "client-secret"), []byte("from-creds\n"),
		0o600); err != nil {
		t.Fatal(err)
	}
	environ := validEnv(p)
	delete(environ, "CERBAI_CLIENT_SECRET")
	environ["CERBAI_CLIENT_SECRET_FILE"] = "client-secret"
	environ["CREDENTIALS_DIRECTORY"] = creds
	s, problems := check(t, nil, environ)
	if len(problems) > 0 {
		t.Fatalf("problems: %q", problems)
	}
	if got := s.ClientSecret.Reveal(); got != "from-creds" {
		t.Errorf("client secret = %q, want the file's trimmed content", got)
	}
}

func TestValidate_Warnings(t *testing.T) {
	p := testPKI(t)
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	environ := validEnv(p)
	delete(environ, "CERBAI_CLIENT_SECRET")
	s, problems := check(t, []string{"--client-secret-file", secret}, environ)
	if len(problems) > 0 {
		t.Fatalf("problems: %q", problems)
	}
	want := []string{
		"secret file " + secret + " is readable by every user (mode -rw-r--r--)",
		"no proxy key is configured and --listen-addr is not loopback: anyone who " +
			"reaches the port spends the credential",
	}
	if diff := cmp.Diff(want, s.warnings); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
	s, _ = check(t, []string{"--listen-addr", "127.0.0.1:0"}, validEnv(p))
	if len(s.warnings) != 0 {
		t.Errorf("loopback listener without keys: warnings %q, want none", s.warnings)
	}
}

func TestRun_ConfigErrorsExitTwoListingAll(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--log-level", "loud"},
		map[string]string{"CERBAI_TOKEN_TIMEOUT": "never"}, &stdout, &stderr)
	if code != exitConfig {
		t.Errorf("exit status %d, want %d", code, exitConfig)
	}
	for _, want := range []string{"CERBAI_LLM_URL", "--log-level / CERBAI_LOG_LEVEL",
		"--token-timeout / CERBAI_TOKEN_TIMEOUT", "--client-id / CERBAI_CLIENT_ID"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr does not name %s:\n%s", want, stderr.String())
		}
	}
}

func TestRun_VersionAndHelpExitZero(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"-h"}, {"--help"}} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, nil, &stdout, &stderr); code != exitOK {
			t.Errorf("%v: exit status %d, want 0 (stderr %q)", args, code, stderr.String())
		}
		if stdout.Len() == 0 {
			t.Errorf("%v printed nothing", args)
		}
	}
}

func TestHealthURL(t *testing.T) {
	tests := []struct{ addr, want string }{
		{":8085", "http://127.0.0.1:8085/healthz"},
		{"0.0.0.0:9085", "http://127.0.0.1:9085/healthz"},
		{"[::]:9085", "http://[::1]:9085/healthz"},
		{"10.1.2.3:80", "http://10.1.2.3:80/healthz"},
	}
	for _, tt := range tests {
		got, err := healthURL("http", tt.addr)
		if err != nil || got != tt.want {
			t.Errorf("healthURL(%q) = %q, %v; want %q", tt.addr, got, err, tt.want)
		}
	}
}
