package upstream

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLimitedLog_CountsSuppressed(t *testing.T) {
	var buf bytes.Buffer
	l := NewLimitedLog(slog.New(slog.NewJSONHandler(&buf, nil)), time.Second, 3)
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	for range 100 {
		l.Log(context.Background(), slog.LevelWarn, "flood")
	}
	if got := strings.Count(buf.String(), "\n"); got != 3 {
		t.Fatalf("100 lines in one period wrote %d, want 3", got)
	}
	now = now.Add(time.Second)
	l.Log(context.Background(), slog.LevelWarn, "flood")
	if !strings.Contains(buf.String(), `"suppressed":97`) {
		t.Errorf("next period's line does not count the 97 suppressed:\n%s", buf.String())
	}
}

func TestLimitedLog_DisabledLevelCountsNothing(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelError}))
	l := NewLimitedLog(log, time.Second, 1)
	for range 5 {
		l.Log(context.Background(), slog.LevelWarn, "hidden")
	}
	l.Log(context.Background(), slog.LevelError, "shown")
	if got := buf.String(); strings.Contains(got, "hidden") || strings.Contains(got, "suppressed") ||
		!strings.Contains(got, "shown") {
		t.Errorf("got %q, want only the error line, with no suppressed count", got)
	}
}

func TestProxy_UpstreamFailureWarningsAreRateLimited(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens: every request fails to connect
	var buf bytes.Buffer
	var mu sync.Mutex
	p := newProxy(t, Config{Target: &url.URL{Scheme: "http", Host: addr},
		Logger: slog.New(slog.NewJSONHandler(lockedWriter{&buf, &mu}, nil))})

	start := time.Now()
	const n = 200
	for range n {
		w := httptest.NewRecorder()
		p.ServeHTTP(w, httptest.NewRequest("GET", "/v1/models", nil))
		if w.Code != http.StatusBadGateway {
			t.Fatalf("got %d, want 502", w.Code)
		}
	}
	// At most warnBurst lines in each second the run touched, whatever
	// the machine's speed.
	seconds := int(time.Since(start)/time.Second) + 1
	mu.Lock()
	lines := strings.Count(buf.String(), `"msg":"upstream request failed"`)
	mu.Unlock()
	if lines == 0 || lines > warnBurst*seconds || lines >= n {
		t.Errorf("%d failures over %ds wrote %d warnings, want 1 to %d", n, seconds, lines,
			warnBurst*seconds)
	}
}
