package integration

import (
	"strings"
	"testing"
)

func TestConfig_ErrorsListedAtOnceWithExitStatus2(t *testing.T) {
	// A base that is valid except for what each case breaks.
	valid := []string{
		"--token-endpoint", "https://127.0.0.1:1/oauth2/token",
		"--client-id", "id", "--client-secret", "secret",
	}
	tests := []struct {
		name string
		env  []string
		args []string
		want []string // each must appear in stderr
	}{{
		name: "missing llm url and bad log level",
		args: append([]string{"--log-level", "loud"}, valid...),
		want: []string{"--llm-url", "CERBAI_LLM_URL", "--log-level", "CERBAI_LOG_LEVEL"},
	}, {
		name: "bad values from the environment and a flag",
		env:  []string{"CERBAI_TOKEN_CACHE_TTL=-5s", "CERBAI_TOKEN_AUTH_METHOD=magic"},
		args: append([]string{"--llm-url", "ftp://127.0.0.1/"}, valid...),
		want: []string{"--token-cache-ttl", "CERBAI_TOKEN_CACHE_TTL", "--llm-url",
			"CERBAI_LLM_URL", "--token-auth-method", "CERBAI_TOKEN_AUTH_METHOD"},
	}, {
		name: "unreadable files and a bad header name",
		args: append([]string{"--llm-url", "http://127.0.0.1:1",
			"--tls-cert-file", "/nonexistent/cert.pem", "--tls-key-file", "/nonexistent/key.pem",
			"--token-header", "Bad Header"}, valid...),
		want: []string{"--tls-cert-file", "CERBAI_TLS_CERT_FILE", "--token-header",
			"CERBAI_TOKEN_HEADER"},
	}, {
		name: "nothing set",
		want: []string{"--llm-url", "--token-endpoint", "--client-id", "CERBAI_CLIENT_ID"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCerbai(t, tt.env, tt.args...)
			if code != 2 {
				t.Errorf("got exit status %d, want 2; stderr:\n%s", code, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not name %s:\n%s", w, stderr)
				}
			}
		})
	}
}

func TestConfig_SecretNotEchoedInErrors(t *testing.T) {
	code, stdout, stderr := runCerbai(t, nil,
		"--client-secret", "hunter2-secret", "--proxy-token", "sk-leak-me", "--log-level", "x")
	if code != 2 {
		t.Errorf("got exit status %d, want 2", code)
	}
	for _, s := range []string{"hunter2", "sk-leak-me"} {
		if strings.Contains(stdout+stderr, s) {
			t.Errorf("output contains the secret %q:\n%s%s", s, stdout, stderr)
		}
	}
}

func TestCLI_VersionAndHelp(t *testing.T) {
	code, stdout, stderr := runCerbai(t, nil, "--version")
	if code != 0 || !strings.Contains(stdout+stderr, testVersion) {
		t.Errorf("--version: got status %d and %q, want 0 and %s", code, stdout+stderr,
			testVersion)
	}
	code, stdout, stderr = runCerbai(t, nil, "-h")
	help := stdout + stderr
	if code != 0 {
		t.Errorf("-h: got exit status %d, want 0", code)
	}
	for _, w := range []string{"CERBAI_LLM_URL", "--llm-url", "CERBAI_PROXY_TOKEN",
		"--token-cache-ttl", "5m", ":8085"} {
		if !strings.Contains(help, w) {
			t.Errorf("-h output does not mention %s:\n%s", w, help)
		}
	}
}
