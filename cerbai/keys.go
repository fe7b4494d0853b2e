package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cerbai/cerbai/tokens"
	"github.com/cerbai/cerbai/upstream"
)

// proxyKey is one key a client may present. Only its name is ever logged.
type proxyKey struct {
	name string // "" for a key given without a name
	sum  [sha256.Size]byte
}

var keyName = regexp.MustCompile(`^[a-z0-9_-]{1,32}$`)

// parseKeys reads proxy key entries: "key" or "name=key". The text before
// the first "=" is a name only when it looks like one, so a key that holds
// "=" itself still reads as a key.
func parseKeys(entries []tokens.Secret) ([]proxyKey, error) {
	keys := make([]proxyKey, 0, len(entries))
	var errs []error
	for i, e := range entries {
		raw := strings.TrimSpace(e.Reveal())
		name, key := "", raw
		if n, k, ok := strings.Cut(raw, "="); ok && keyName.MatchString(n) {
			name, key = n, k
		}
		if key == "" {
			// The entry's text is never quoted: it may be a key.
			errs = append(errs, fmt.Errorf("entry %d has an empty key", i+1))
			continue
		}
		keys = append(keys, proxyKey{name: name, sum: sha256.Sum256([]byte(key))})
	}
	return keys, errors.Join(errs...)
}

// readKeyFile reads proxy keys from a file: one entry per line or
// comma-separated; blank lines and lines starting with # are skipped.
func readKeyFile(path string) ([]proxyKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read: %w", pathErr(err))
	}
	var entries []tokens.Secret
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		for part := range strings.SplitSeq(line, ",") {
			if part = strings.TrimSpace(part); part != "" {
				entries = append(entries, tokens.Secret(part))
			}
		}
	}
	keys, err := parseKeys(entries)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s holds no key", path)
	}
	return keys, nil
}

// keyStore checks the proxy keys clients present. Keys from flags and the
// environment are fixed; keys from --proxy-token-file are re-read when the
// file changes, so keys rotate without a restart.
type keyStore struct {
	fixed  []proxyKey
	file   string
	keys   atomic.Pointer[[]proxyKey] // fixed + the file's current keys
	log    *slog.Logger
	denied *upstream.LimitedLog

	mu       sync.Mutex // guards fileStat
	fileStat fileVersion
}

func newKeyStore(fixed []proxyKey, file string, log *slog.Logger) (*keyStore, error) {
	ks := &keyStore{fixed: fixed, file: file, log: log,
		denied: upstream.NewLimitedLog(log, time.Second, 5)}
	all := fixed
	if file != "" {
		fromFile, err := readKeyFile(file)
		if err != nil {
			return nil, fmt.Errorf("proxy keys: %w", err)
		}
		ks.fileStat = statVersion(file)
		all = append(append([]proxyKey(nil), fixed...), fromFile...)
	}
	ks.keys.Store(&all)
	return ks, nil
}

// enabled reports whether clients must present a key.
func (ks *keyStore) enabled() bool { return len(*ks.keys.Load()) > 0 }

// names returns the configured key names, for metrics labels.
func (ks *keyStore) names() []string {
	var names []string
	seen := map[string]bool{}
	for _, k := range *ks.keys.Load() {
		if k.name != "" && !seen[k.name] {
			seen[k.name] = true
			names = append(names, k.name)
		}
	}
	return names
}

// watch re-reads the key file every interval until ctx is done.
func (ks *keyStore) watch(ctx context.Context, interval time.Duration) {
	if ks.file == "" {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			ks.reload()
		}
	}
}

// reload reads the key file again if it changed. A file that cannot be read
// or holds no valid key keeps the old keys: a rotation half done must not
// lock every client out.
func (ks *keyStore) reload() {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	v := statVersion(ks.file)
	if v == ks.fileStat {
		return
	}
	fromFile, err := readKeyFile(ks.file)
	if err != nil {
		ks.log.Warn("proxy key file not reloaded, keeping the old keys", "error", err)
		return
	}
	ks.fileStat = v
	all := append(append([]proxyKey(nil), ks.fixed...), fromFile...)
	ks.keys.Store(&all)
	ks.log.Info("proxy keys reloaded", "file", ks.file, "keys", len(all))
}

// authorize checks the key r presents: "Authorization: Bearer <key>" (any
// case of the scheme), "api-key" or "x-api-key". Every configured key is
// compared, in constant time, whether or not one matched already.
func (ks *keyStore) authorize(r *http.Request) (string, bool) {
	presented, ok := presentedKey(r.Header)
	if ok {
		sum := sha256.Sum256([]byte(presented))
		name, found := "", false
		for _, k := range *ks.keys.Load() {
			if subtle.ConstantTimeCompare(sum[:], k.sum[:]) == 1 && !found {
				name, found = k.name, true
			}
		}
		if found {
			return name, true
		}
	}
	ks.denied.Log(r.Context(), slog.LevelWarn, "auth failed",
		slog.String("remote_addr", r.RemoteAddr), slog.Bool("key_presented", ok))
	return "", false
}

// presentedKey finds the key a client sent, without copying it.
func presentedKey(h http.Header) (string, bool) {
	if v := h.Get("Authorization"); v != "" {
		scheme, key, ok := strings.Cut(v, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			key = strings.TrimSpace(key)
			return key, key != ""
		}
	}
	for _, name := range []string{"Api-Key", "X-Api-Key"} {
		if v := strings.TrimSpace(h.Get(name)); v != "" {
			return v, true
		}
	}
	return "", false
}

// fileVersion tells whether a file changed: Kubernetes and cert-manager
// replace files through a symlink swap, which changes all three.
type fileVersion struct {
	modTime time.Time
	size    int64
	ok      bool
}

func statVersion(path string) fileVersion {
	fi, err := os.Stat(path)
	if err != nil {
		return fileVersion{}
	}
	return fileVersion{modTime: fi.ModTime(), size: fi.Size(), ok: true}
}
