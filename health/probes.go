package health

import (
	"net/http"
	"sync/atomic"
)

// Liveness answers /healthz: 200 with the text body "ok" for as long as the
// process serves HTTP at all. It checks nothing else on purpose: a liveness
// failure makes the kubelet restart the container, and a restart cures
// neither a token service outage nor a drain.
//
// It answers every method; mount it with a method pattern to restrict that.
func Liveness() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		_, _ = w.Write([]byte("ok"))
	})
}

// Reasons a Readiness reports in its 503 body.
const (
	ReasonDraining = "draining" // SetDraining was called: shutdown has begun
	ReasonNoToken  = "no_token" // no usable access token is held
)

// Readiness answers /readyz. It reports ready while the process is not
// draining and hasToken reports a usable token; draining wins over
// everything, so a replica leaving the load balancer stays out even if its
// token is fine.
//
// The zero value is not usable; call NewReadiness.
type Readiness struct {
	draining atomic.Bool
	hasToken func() bool // called on every probe; must be cheap and safe for concurrent use
}

// NewReadiness returns a Readiness that asks hasToken whether a usable token
// is held. A nil hasToken means no token is ever held (always no_token).
func NewReadiness(hasToken func() bool) *Readiness {
	return &Readiness{hasToken: hasToken}
}

// SetDraining makes every later probe answer 503 "draining". It cannot be
// undone: a draining process only exits. Safe for concurrent use.
func (r *Readiness) SetDraining() { r.draining.Store(true) }

// Ready reports whether the process is ready and, when it is not, the reason
// (ReasonDraining or ReasonNoToken).
func (r *Readiness) Ready() (ready bool, reason string) {
	switch {
	case r.draining.Load():
		return false, ReasonDraining
	case r.hasToken == nil || !r.hasToken():
		return false, ReasonNoToken
	}
	return true, ""
}

// Bodies are constants so a probe allocates nothing to build them.
var (
	bodyReady    = []byte(`{"status":"ready"}` + "\n")
	bodyDraining = []byte(`{"status":"not_ready","reason":"draining"}` + "\n")
	bodyNoToken  = []byte(`{"status":"not_ready","reason":"no_token"}` + "\n")
)

// ServeHTTP answers 200 {"status":"ready"} or 503
// {"status":"not_ready","reason":...} as JSON that no cache may keep.
func (r *Readiness) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")

	ready, reason := r.Ready()
	if ready {
		_, _ = w.Write(bodyReady)
		return
	}
	body := bodyNoToken
	if reason == ReasonDraining {
		body = bodyDraining
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write(body)
}
