package upstream

import (
	"sync"
	"sync/atomic"
	"time"
)

// Methods counted by name; any other method is counted as "other".
var statMethods = [...]string{
	"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "other",
}

var statClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// durationBounds are the histogram's upper bounds in seconds. LLM requests
// range from milliseconds (models list) to minutes (long completions).
var durationBounds = [...]float64{
	.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300,
}

// Kinds of upstream failure, the keys of Snapshot.UpstreamErrors.
const (
	ErrKindConnect          = "connect"
	ErrKindTimeout          = "timeout"
	ErrKindHeaderTooLarge   = "header_too_large"
	ErrKindReset            = "reset"
	ErrKindIdleTimeout      = "idle_timeout"
	ErrKindTokenUnavailable = "token_unavailable"
)

var errKinds = [...]string{
	ErrKindConnect, ErrKindTimeout, ErrKindHeaderTooLarge, ErrKindReset,
	ErrKindIdleTimeout, ErrKindTokenUnavailable,
}

// Stats counts what the forwarder does. All fields are atomics, so
// counting never takes a lock; the zero value is ready to use and one
// Stats may be shared by several proxies.
type Stats struct {
	requests       [len(statMethods)][len(statClasses)]atomic.Uint64
	durations      [len(durationBounds) + 1]atomic.Uint64
	durationSumNs  atomic.Int64
	bytesIn        atomic.Uint64
	bytesOut       atomic.Uint64
	activeStreams  atomic.Int64
	upstreamErrors [len(errKinds)]atomic.Uint64
	retries        atomic.Uint64
	connsOpened    atomic.Uint64 // by the Transport given these Stats
	keyRequests    sync.Map      // key name → *atomic.Uint64
}

// Snapshot is a copy of the counters at one moment.
type Snapshot struct {
	// Requests holds every (method, class) pair seen with a count above 0.
	// Methods are GET POST PUT PATCH DELETE OPTIONS HEAD and "other";
	// classes "1xx" to "5xx". A client that left before any answer is
	// counted as 499 (class "4xx").
	Requests       []RequestCount
	DurationBounds []float64 // histogram upper bounds, seconds
	DurationCounts []uint64  // per bucket, not cumulative; len(bounds)+1
	DurationSum    float64   // seconds
	BytesIn        uint64    // request body bytes read
	BytesOut       uint64    // response body bytes written
	ActiveStreams  int64     // responses being copied right now
	// UpstreamErrors holds every kind (connect, timeout, header_too_large,
	// reset, idle_timeout, token_unavailable), zero or not.
	UpstreamErrors map[string]uint64
	Retries        uint64            // requests sent again after a purge status
	KeyRequests    map[string]uint64 // requests by proxy key name
	// ConnsOpened counts connections the Transport opened to the upstream.
	// Far fewer than requests means keep-alive works; close to one per
	// request means connections are being closed under load.
	ConnsOpened uint64
}

// RequestCount is the number of requests of one method answered with a
// status of one class.
type RequestCount struct {
	Method, Class string
	Count         uint64
}

// Snapshot copies the counters. Each counter is read atomically; the set is
// not one atomic picture, which is fine for metrics.
func (s *Stats) Snapshot() Snapshot {
	snap := Snapshot{
		DurationBounds: append([]float64(nil), durationBounds[:]...),
		DurationCounts: make([]uint64, len(s.durations)),
		DurationSum:    time.Duration(s.durationSumNs.Load()).Seconds(),
		BytesIn:        s.bytesIn.Load(),
		BytesOut:       s.bytesOut.Load(),
		ActiveStreams:  s.activeStreams.Load(),
		UpstreamErrors: make(map[string]uint64, len(errKinds)),
		Retries:        s.retries.Load(),
		KeyRequests:    map[string]uint64{},
		ConnsOpened:    s.connsOpened.Load(),
	}
	for m := range s.requests {
		for c := range s.requests[m] {
			if n := s.requests[m][c].Load(); n > 0 {
				snap.Requests = append(snap.Requests, RequestCount{
					Method: statMethods[m], Class: statClasses[c], Count: n,
				})
			}
		}
	}
	for i := range s.durations {
		snap.DurationCounts[i] = s.durations[i].Load()
	}
	for i, k := range errKinds {
		snap.UpstreamErrors[k] = s.upstreamErrors[i].Load()
	}
	s.keyRequests.Range(func(k, v any) bool {
		snap.KeyRequests[k.(string)] = v.(*atomic.Uint64).Load()
		return true
	})
	return snap
}

// observe counts one finished request.
func (s *Stats) observe(method string, status int, d time.Duration) {
	c := status/100 - 1
	if c < 0 || c >= len(statClasses) {
		c = len(statClasses) - 1 // a status outside 100-599 is an error of ours
	}
	s.requests[methodIndex(method)][c].Add(1)
	s.durationSumNs.Add(int64(d))
	sec := d.Seconds()
	i := 0
	for i < len(durationBounds) && sec > durationBounds[i] {
		i++
	}
	s.durations[i].Add(1)
}

func (s *Stats) upstreamError(kind string) {
	for i, k := range errKinds {
		if k == kind {
			s.upstreamErrors[i].Add(1)
			return
		}
	}
}

func (s *Stats) keyRequest(name string) {
	if name == "" {
		return
	}
	v, ok := s.keyRequests.Load(name)
	if !ok {
		v, _ = s.keyRequests.LoadOrStore(name, new(atomic.Uint64))
	}
	v.(*atomic.Uint64).Add(1)
}

func methodIndex(m string) int {
	for i, name := range statMethods[:len(statMethods)-1] {
		if m == name {
			return i
		}
	}
	return len(statMethods) - 1
}
