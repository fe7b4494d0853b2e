package main

import (
	"bytes"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cerbai/cerbai/tokens"
)

func newTestStore(t *testing.T, entries []tokens.Secret, file string) (*keyStore, *bytes.Buffer) {
	t.Helper()
	keys, err := parseKeys(entries)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	ks, err := newKeyStore(keys, file, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return ks, &logs
}

func TestKeyStore_Authorize(t *testing.T) {
	ks, logs := newTestStore(t, []tokens.Secret{"team-a=sk-alpha", "sk-plain", "x=y=z"}, "")
	tests := []struct {
		name     string
		header   http.Header
		wantName string
		wantOK   bool
	}{
		{"bearer", http.Header{"Authorization": {"Bearer sk-alpha"}}, "team-a", true},
		{"scheme in any case", http.Header{"Authorization": {"bEaReR sk-alpha"}}, "team-a", true},
		{"unnamed key", http.Header{"Authorization": {"Bearer sk-plain"}}, "", true},
		{"key holding =", http.Header{"Authorization": {"Bearer y=z"}}, "x", true},
		{"api-key", http.Header{"Api-Key": {"sk-alpha"}}, "team-a", true},
		{"x-api-key", http.Header{"X-Api-Key": {"sk-plain"}}, "", true},
		{"wrong key", http.Header{"Authorization": {"Bearer sk-alph"}}, "", false},
		{"name is not a key", http.Header{"Authorization": {"Bearer team-a"}}, "", false},
		{"basic scheme", http.Header{"Authorization": {"Basic sk-alpha"}}, "", false},
		{"no key", http.Header{}, "", false},
		{"empty bearer", http.Header{"Authorization": {"Bearer "}}, "", false},
	}
	for _, tt := range tests {
		r := &http.Request{Header: tt.header, RemoteAddr: "192.0.2.7:5555"}
		name, ok := ks.authorize(r)
		if name != tt.wantName || ok != tt.wantOK {
			t.Errorf("%s: got (%q, %v), want (%q, %v)", tt.name, name, ok, tt.wantName, tt.wantOK)
		}
	}
	out := logs.String()
	if !strings.Contains(out, `"msg":"auth failed"`) || !strings.Contains(out, "192.0.2.7") {
		t.Errorf("failed attempts not logged with the remote address:\n%s", out)
	}
	for _, part := range []string{"sk-alph", "team-a", "Basic"} {
		if strings.Contains(out, part) {
			t.Errorf("log holds %q, part of a presented credential:\n%s", part, out)
		}
	}
}

func TestKeyStore_NamesAreConfiguredOnly(t *testing.T) {
	ks, _ := newTestStore(t, []tokens.Secret{"b=1", "a=2", "3", "b=4"}, "")
	if got := strings.Join(ks.names(), ","); got != "b,a" {
		t.Errorf("names = %q, want b,a", got)
	}
}

func TestKeyStore_FileReloadsOnChange(t *testing.T) {
	file := filepath.Join(t.TempDir(), "keys")
	write := func(body string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		// Set the time explicitly: two writes within the file system's
		// time resolution would otherwise look unchanged.
		if err := os.Chtimes(file, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	base := time.Now().Add(-time.Hour)
	write("# rotated keys\nold=sk-old\n", base)
	ks, logs := newTestStore(t, []tokens.Secret{"flag=sk-flag"}, file)
	allowed := func(key string) bool {
		_, ok := ks.authorize(&http.Request{Header: http.Header{"X-Api-Key": {key}}})
		return ok
	}
	if !allowed("sk-old") || !allowed("sk-flag") {
		t.Fatal("keys from the file and the flag are not both accepted")
	}

	write("new=sk-new, other=sk-other\n", base.Add(time.Minute))
	ks.reload()
	if allowed("sk-old") || !allowed("sk-new") || !allowed("sk-other") || !allowed("sk-flag") {
		t.Error("after rotation: want sk-new, sk-other and sk-flag accepted, sk-old refused")
	}

	write("broken=\n", base.Add(2*time.Minute))
	ks.reload()
	if !allowed("sk-new") {
		t.Error("a broken key file replaced the working keys")
	}
	if !strings.Contains(logs.String(), "keeping the old keys") {
		t.Errorf("no warning for the broken file:\n%s", logs.String())
	}
}
