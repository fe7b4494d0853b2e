// Package health answers the operational endpoints: /healthz (Liveness),
// /readyz (Readiness) and /metrics (Metrics, which serves the Prometheus
// text format 0.0.4 through a Writer, without a client library). It renders
// what its caller hands it (a hasToken func, a collect func) and imports no
// other cerbai package.
package health
