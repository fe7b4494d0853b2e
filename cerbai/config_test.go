package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cerbai/cerbai/tokens"

	"github.com/cerbai/cerbai/integration/golden"
)

func TestConfig_EnvNameIsPrefixPlusFlag(t *testing.T) {
	seen := map[string]bool{}
	for _, o := range options() {
		if want := "CERBAI_" + envName(o.flag); o.env != want {
			t.Errorf("flag --%s: env %s, want %s", o.flag, o.env, want)
		}
		if o.help == "" || seen[o.flag] {
			t.Errorf("flag --%s: missing help text or declared twice", o.flag)
		}
		seen[o.flag] = true
	}
	if len(optionHelp) != len(seen) {
		t.Errorf("optionHelp has %d entries for %d options", len(optionHelp), len(seen))
	}
}

func TestConfig_FlagBeatsEnvBeatsDefault(t *testing.T) {
	environ := map[string]string{
		"CERBAI_LLM_URL":       "http://from-env",
		"CERBAI_TOKEN_TIMEOUT": "3s",
		"CERBAI_ALLOW_PATH":    "/env/, /also-env/",
		"CERBAI_ACCESS_LOG":    "true",
	}
	args := []string{"--llm-url", "http://from-flag", "--allow-path", "/a/",
		"--allow-path=/b/,/c/", "--max-request-body", "2MiB"}
	cfg, problems, err := loadConfig(args, environ)
	if err != nil || len(problems) > 0 {
		t.Fatalf("loadConfig: %v %v", err, problems)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"flag beats env", cfg.LLMURL, "http://from-flag"},
		{"env beats default", cfg.TokenTimeout, 3 * time.Second},
		{"default", cfg.TokenWait, 10 * time.Second},
		{"repeated list flag replaces env list", cfg.AllowPaths, []string{"/a/", "/b/", "/c/"}},
		{"bool from env", cfg.AccessLog, true},
		{"size", cfg.MaxBody, size(2 << 20)},
		{"default list", cfg.PurgeStatus, []int{401}},
	}
	for _, c := range checks {
		if diff := cmp.Diff(c.want, c.got); diff != "" {
			t.Errorf("%s: (-want +got)\n%s", c.name, diff)
		}
	}
}

func TestConfig_ListsFromEnvAreTrimmed(t *testing.T) {
	cfg, _, err := loadConfig(nil, map[string]string{
		"CERBAI_PROXY_TOKEN":     "team-a=k1, k2 ,",
		"CERBAI_PURGE_ON_STATUS": "401,403",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []tokens.Secret{"team-a=k1", "k2"}
	if diff := cmp.Diff(want, cfg.ProxyTokens); diff != "" {
		t.Errorf("proxy tokens (-want +got)\n%s", diff)
	}
	if diff := cmp.Diff([]int{401, 403}, cfg.PurgeStatus); diff != "" {
		t.Errorf("purge statuses (-want +got)\n%s", diff)
	}
}

func TestSize_Parse(t *testing.T) {
	tests := []struct {
		in      string
		want    size
		wantErr bool
	}{
		{"0", 0, false}, {"512", 512, false}, {"1KiB", 1024, false},
		{"32MiB", 32 << 20, false}, {"2 GiB", 2 << 30, false}, {"10B", 10, false},
		{"1.5MiB", 0, true}, {"-1", 0, true}, {"1MB", 0, true}, {"", 0, true},
		{"99999999999GiB", 0, true},
	}
	for _, tt := range tests {
		var s size
		err := s.UnmarshalText([]byte(tt.in))
		if (err != nil) != tt.wantErr || (!tt.wantErr && s != tt.want) {
			t.Errorf("size %q: got %d, %v; want %d, error %v", tt.in, s, err, tt.want, tt.wantErr)
		}
	}
	if got := size(32 << 20).String(); got != "32MiB" {
		t.Errorf("String() = %q, want 32MiB", got)
	}
}

func TestUsage_Golden(t *testing.T) {
	var buf bytes.Buffer
	writeUsage(&buf)
	for _, o := range options() {
		if !strings.Contains(buf.String(), "--"+o.flag) ||
			!strings.Contains(buf.String(), o.env) {
			t.Errorf("-h does not list --%s with %s", o.flag, o.env)
		}
	}
	golden.Check(t, filepath.Join("..", "testdata", "usage.golden"), buf.Bytes())
}

func TestGoMod_OnlyAllowedModules(t *testing.T) {
	b, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{
		"github.com/caarlos0/env/v11": true, "github.com/gomodule/redigo": true,
		"github.com/google/go-cmp": true,
	}
	inRequire := false
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
		case f[0] == "require" && len(f) > 1 && f[1] == "(":
			inRequire = true
		case f[0] == ")":
			inRequire = false
		case f[0] == "require" && len(f) >= 3:
			if !allowed[f[1]] {
				t.Errorf("go.mod requires %s, which is not one of the allowed modules", f[1])
			}
		case inRequire:
			if !allowed[f[0]] {
				t.Errorf("go.mod requires %s, which is not one of the allowed modules", f[0])
			}
		}
	}
}

func TestREADME_ListsEveryOption(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range options() {
		row := "| `--" + o.flag
		if !strings.Contains(string(b), row) || !strings.Contains(string(b), "`"+o.env+"`") {
			t.Errorf("README's configuration table has no row for --%s / %s", o.flag, o.env)
		}
	}
}
