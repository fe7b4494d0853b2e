package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// memHandler keeps the records it is given.
type memHandler struct {
	level slog.Level
	mu    sync.Mutex
	recs  []slog.Record
}

func (h *memHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }
func (h *memHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r)
	return nil
}
func (h *memHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *memHandler) WithGroup(string) slog.Handler      { return h }

// summary is "level message key1,key2,…" per record.
func (h *memHandler) summary() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.recs {
		var keys []string
		r.Attrs(func(a slog.Attr) bool { keys = append(keys, a.Key); return true })
		sort.Strings(keys)
		out = append(out, r.Level.String()+" "+r.Message+" "+strings.Join(keys, ","))
	}
	return out
}

// okTransport answers every request 200 with a small JSON body.
func okTransport() http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Header: http.Header{}, ContentLength: 2,
			Body: io.NopCloser(strings.NewReader("{}"))}, nil
	})
}

func TestProxy_LogLines(t *testing.T) {
	target, _ := url.Parse("http://llm.test")
	completed := "duration_ms,bytes_in,bytes_out,key,method,path,request_id,status"
	completedKeys := strings.Split(completed, ",")
	sort.Strings(completedKeys)
	want := func(level string) string {
		return level + " request completed " + strings.Join(completedKeys, ",")
	}
	cases := []struct {
		name      string
		level     slog.Level
		accessLog bool
		want      []string
	}{
		{"info: nothing per request", slog.LevelInfo, false, nil},
		{"info with access log", slog.LevelInfo, true, []string{want("INFO")}},
		{"debug", slog.LevelDebug, false, []string{
			"DEBUG incoming request method,path,remote,request_id", want("DEBUG")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := &memHandler{level: c.level}
			p := newProxy(t, Config{Target: target, Transport: okTransport(),
				Logger: slog.New(h), AccessLog: c.accessLog,
				Authorize: func(*http.Request) (string, bool) { return "team-a", true }})
			p.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/models", nil))
			if diff := cmp.Diff(c.want, h.summary()); diff != "" {
				t.Errorf("log records (-want +got):\n%s", diff)
			}
		})
	}
}

// TestProxy_InfoLevelDoesNoLoggingWork checks that a logger at info costs
// a request no allocation compared with no logger at all.
func TestProxy_InfoLevelDoesNoLoggingWork(t *testing.T) {
	target, _ := url.Parse("http://llm.test")
	allocs := func(logger *slog.Logger) float64 {
		p := newProxy(t, Config{Target: target, Transport: okTransport(), Logger: logger})
		r := httptest.NewRequest("GET", "/v1/models", nil)
		r.Header.Set("X-Request-Id", "fixed-id")
		w := &benchWriter{h: http.Header{}}
		return testing.AllocsPerRun(200, func() {
			clear(w.h)
			p.ServeHTTP(w, r)
		})
	}
	info := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if none, atInfo := allocs(nil), allocs(info); atInfo != none {
		t.Errorf("got %v allocations per request at info, want %v as without a logger",
			atInfo, none)
	}
}

// TestProxy_LogsHoldNoSecrets runs the failure paths at debug and looks
// for the token, the proxy key and the client's query in the output.
func TestProxy_LogsHoldNoSecrets(t *testing.T) {
	const token, proxyKey, query = "tok-SECRET-abc", "pk-SECRET-xyz", "key=query-SECRET"
	var buf bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewJSONHandler(lockedWriter{&buf, &mu},
		&slog.HandlerOptions{Level: slog.LevelDebug}))
	rec := newRecorder(t, rejectFirst)
	auth := func(r *http.Request) (string, bool) {
		return "team-a", r.Header.Get("Authorization") == "Bearer "+proxyKey
	}
	p := newProxy(t, Config{Target: rec.URL(t, ""), Logger: logger, AccessLog: true,
		Tokens: newFakeTokens(token), Authorize: auth, ReplayMaxBody: 1 << 20})
	srv := serveProxy(t, p)
	for _, key := range []string{proxyKey, "wrong-" + proxyKey} {
		req, _ := http.NewRequest("POST", srv.URL+"/v1/x?"+query, strings.NewReader("{}"))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	if !strings.Contains(out, "upstream rejected token") || !strings.Contains(out, "no token") {
		t.Fatalf("got logs %s, want the rejection and the missing token logged", out)
	}
	for _, secret := range []string{token, proxyKey, "SECRET"} {
		if strings.Contains(out, secret) {
			t.Errorf("logs hold %q:\n%s", secret, out)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("got log line %q, want JSON", line)
		}
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
