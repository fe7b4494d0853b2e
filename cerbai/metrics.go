package main

import (
	"runtime"
	"sort"
	"time"

	"github.com/cerbai/cerbai/health"
)

// collect writes cerbai's metrics. Every label takes a fixed set of values
// (methods, status classes, error kinds, configured key names): nothing a
// client chooses becomes a label.
func (a *app) collect(w *health.Writer) {
	snap := a.proxy.Stats().Snapshot()
	l := func(name, value string) health.Label { return health.Label{Name: name, Value: value} }

	w.Counter("cerbai_requests_total", "Requests answered, by method and status class.")
	for _, rc := range snap.Requests {
		w.Sample("cerbai_requests_total", float64(rc.Count),
			l("method", rc.Method), l("class", rc.Class))
	}
	w.Histogram("cerbai_request_duration_seconds",
		"Time from request to the end of the response body.",
		snap.DurationBounds, snap.DurationCounts, snap.DurationSum)

	w.Counter("cerbai_request_bytes_total", "Request body bytes read from clients.")
	w.Sample("cerbai_request_bytes_total", float64(snap.BytesIn))
	w.Counter("cerbai_response_bytes_total", "Response body bytes written to clients.")
	w.Sample("cerbai_response_bytes_total", float64(snap.BytesOut))
	w.Gauge("cerbai_active_streams", "Responses being copied to clients right now.")
	w.Sample("cerbai_active_streams", float64(snap.ActiveStreams))

	w.Counter("cerbai_upstream_errors_total", "Requests that failed upstream, by kind.")
	for _, kind := range sortedKeys(snap.UpstreamErrors) {
		w.Sample("cerbai_upstream_errors_total", float64(snap.UpstreamErrors[kind]),
			l("kind", kind))
	}
	w.Counter("cerbai_upstream_retries_total",
		"Requests sent again with a new token after a purge status.")
	w.Sample("cerbai_upstream_retries_total", float64(snap.Retries))
	w.Counter("cerbai_upstream_connections_opened_total",
		"Connections opened to the LLM endpoint; far fewer than requests when kept alive.")
	w.Sample("cerbai_upstream_connections_opened_total", float64(snap.ConnsOpened))

	w.Counter("cerbai_proxy_key_requests_total", "Requests by proxy key name.")
	for _, name := range a.keys.names() {
		w.Sample("cerbai_proxy_key_requests_total", float64(snap.KeyRequests[name]),
			l("key", name))
	}

	a.collectTokens(w, l)

	w.Gauge("cerbai_build_info", "Build information; the value is always 1.")
	w.Sample("cerbai_build_info", 1, l("version", version), l("commit", commit),
		l("build_date", buildDate), l("go_version", runtime.Version()))
}

func (a *app) collectTokens(w *health.Writer, l func(string, string) health.Label) {
	ts := a.tstats
	w.Counter("cerbai_token_fetches_total", "Requests to the token service, by result.")
	w.Sample("cerbai_token_fetches_total", float64(ts.FetchOK.Load()), l("result", "ok"))
	w.Sample("cerbai_token_fetches_total", float64(ts.FetchError.Load()), l("result", "error"))

	w.Counter("cerbai_token_cache_lookups_total", "Token cache lookups, by layer and result.")
	for _, c := range []struct {
		layer, result string
		n             uint64
	}{
		{"local", "hit", ts.LocalHits.Load()}, {"local", "miss", ts.LocalMisses.Load()},
		{"redis", "hit", ts.RedisHits.Load()}, {"redis", "miss", ts.RedisMisses.Load()},
	} {
		w.Sample("cerbai_token_cache_lookups_total", float64(c.n),
			l("layer", c.layer), l("result", c.result))
	}

	w.Gauge("cerbai_token_usable_seconds",
		"Seconds until the current token stops being usable (0: none).")
	left := 0.0
	if until, ok := a.cache.Usable(); ok {
		left = max(0, time.Until(until).Seconds())
	}
	w.Sample("cerbai_token_usable_seconds", left)

	w.Gauge("cerbai_redis_up", "1 when the shared cache answered last, 0 when it did not "+
		"or none is configured.")
	up := 0.0
	if a.shared != nil && ts.RedisUp.Load() {
		up = 1
	}
	w.Sample("cerbai_redis_up", up)
}

func sortedKeys(m map[string]uint64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
