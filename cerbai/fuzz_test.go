package main

import (
	"strings"
	"testing"
)

// FuzzLoadConfig feeds arbitrary flag and environment text to the config
// reader and checker: they must report problems, never panic, and never
// echo the client secret in a message.
func FuzzLoadConfig(f *testing.F) {
	f.Add("--llm-url=http://h/x", "5m", "32MiB", "401,403", "a=b,c")
	f.Add("--token-param", "0s", "1.5GiB", "x", "=")
	f.Add("-h=1", "-1h", "KiB", ",,,", "team-a=")
	f.Fuzz(func(t *testing.T, arg, dur, size, list, keys string) {
		const secret = "fuzz-secret-value"
		environ := map[string]string{
			"CERBAI_TOKEN_TTL": dur, "CERBAI_TOKEN_CACHE_TTL": dur,
			"CERBAI_MAX_REQUEST_BODY": size, "CERBAI_PURGE_ON_STATUS": list,
			"CERBAI_PROXY_TOKEN": keys, "CERBAI_CLIENT_SECRET": secret,
		}
		args := []string{arg, "--token-wait", dur, "--allow-path", list}
		cfg, problems, err := loadConfig(args, environ)
		if err != nil || strings.Contains(arg+dur+size+list+keys, secret) {
			return // the fuzzer may type the secret into an echoed value itself
		}
		_, more := validate(cfg, func(string) string { return "" })
		for _, p := range append(problems, more...) {
			if strings.Contains(p, secret) {
				t.Fatalf("a problem message holds the client secret: %q", p)
			}
		}
	})
}
