// Package health answers the operational endpoints: /healthz (liveness),
// /readyz (readiness) and /metrics (Prometheus text format 0.0.4, written
// without a client library). It renders what its caller hands it through
// small interfaces and imports no other cerbai package.
package health
