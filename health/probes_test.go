package health

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

func TestLiveness_AnswersOK(t *testing.T) {
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		t.Run(method, func(t *testing.T) {
			rec := httptest.NewRecorder()
			Liveness().ServeHTTP(rec, httptest.NewRequest(method, "/healthz", nil))

			if rec.Code != http.StatusOK {
				t.Errorf("got status %d, want 200", rec.Code)
			}
			got, want := rec.Header().Get("Content-Type"), "text/plain; charset=utf-8"
			if got != want {
				t.Errorf("got Content-Type %q, want %q", got, want)
			}
			// The recorder keeps a HEAD body; a real server drops it.
			if got := rec.Body.String(); got != "ok" {
				t.Errorf("got body %q, want %q", got, "ok")
			}
		})
	}
}

// probe asks r once and checks the whole answer.
func probe(t *testing.T, r *Readiness, wantStatus int, wantBody string) {
	t.Helper()
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != wantStatus {
		t.Errorf("got status %d, want %d", rec.Code, wantStatus)
	}
	if got := rec.Body.String(); got != wantBody+"\n" {
		t.Errorf("got body %q, want %q", got, wantBody+"\n")
	}
	if got := rec.Header().Get("Content-Type"); got != "application/json" {
		t.Errorf("got Content-Type %q, want application/json", got)
	}
	if got := rec.Header().Get("Cache-Control"); got != "no-store" {
		t.Errorf("got Cache-Control %q, want no-store", got)
	}
}

const (
	ready    = `{"status":"ready"}`
	noToken  = `{"status":"not_ready","reason":"no_token"}`
	draining = `{"status":"not_ready","reason":"draining"}`
)

func TestReadiness_NoTokenThenReadyThenDraining(t *testing.T) {
	var hasToken atomic.Bool
	r := NewReadiness(hasToken.Load)

	probe(t, r, http.StatusServiceUnavailable, noToken)

	hasToken.Store(true)
	probe(t, r, http.StatusOK, ready)

	r.SetDraining()
	probe(t, r, http.StatusServiceUnavailable, draining)
}

func TestReadiness_DrainingWinsOverNoToken(t *testing.T) {
	var hasToken atomic.Bool
	r := NewReadiness(hasToken.Load)
	r.SetDraining()
	probe(t, r, http.StatusServiceUnavailable, draining)

	// Draining cannot be undone by a token arriving.
	hasToken.Store(true)
	probe(t, r, http.StatusServiceUnavailable, draining)
}

func TestReadiness_LosingTheTokenMakesItNotReady(t *testing.T) {
	var hasToken atomic.Bool
	hasToken.Store(true)
	r := NewReadiness(hasToken.Load)
	probe(t, r, http.StatusOK, ready)

	hasToken.Store(false)
	probe(t, r, http.StatusServiceUnavailable, noToken)
}

func TestReadiness_NilHasTokenIsNoToken(t *testing.T) {
	probe(t, NewReadiness(nil), http.StatusServiceUnavailable, noToken)
}

func TestReadiness_ReadyReportsReason(t *testing.T) {
	r := NewReadiness(func() bool { return true })
	if ok, reason := r.Ready(); !ok || reason != "" {
		t.Errorf("got Ready() = %v, %q, want true, \"\"", ok, reason)
	}
	r.SetDraining()
	if ok, reason := r.Ready(); ok || reason != ReasonDraining {
		t.Errorf("got Ready() = %v, %q, want false, %q", ok, reason, ReasonDraining)
	}
}
