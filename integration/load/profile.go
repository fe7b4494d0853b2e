package load

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Profile is one of cerbai's load profiles: how many clients for how long,
// and the thresholds the run must meet.
type Profile struct {
	Name     string
	Clients  int           // steady clients, or the peak with Ramp
	Duration time.Duration // the whole run
	// Ramp starts clients one by one over the first three quarters of
	// Duration, so the peak holds for the last quarter.
	Ramp bool
	// MaxP95 and MaxErrorRate are strict upper bounds: p95 < MaxP95.
	MaxP95       time.Duration
	MaxErrorRate float64 // fraction of requests, 0.01 = 1%
	// StreamShare is the fraction of requests that stream (SSE); Events
	// events Interval apart each.
	StreamShare float64
	Events      int
	Interval    time.Duration
	// BoundMemory checks that the proxy's RSS does not grow: the average
	// of the last quarter's samples must stay within 1.2× the first
	// quarter's plus 8 MiB.
	BoundMemory bool
}

// ProfileNames lists the profiles in order of weight.
var ProfileNames = []string{"smoke", "load", "stress", "soak"}

// LookupProfile returns the named profile with issue 5's defaults.
func LookupProfile(name string) (Profile, error) {
	p := Profile{Name: name, StreamShare: 0.3, Events: 10, Interval: 10 * time.Millisecond}
	switch name {
	case "smoke":
		p.Clients, p.Duration, p.MaxP95, p.MaxErrorRate = 2, time.Minute, 500*time.Millisecond, 0.01
	case "load":
		p.Clients, p.Duration, p.MaxP95, p.MaxErrorRate = 50, 2*time.Minute, time.Second, 0.02
	case "stress":
		p.Clients, p.Duration, p.MaxP95, p.MaxErrorRate = 200, 2*time.Minute, 2*time.Second, 0.05
		p.Ramp = true
	case "soak":
		p.Clients, p.Duration, p.MaxP95, p.MaxErrorRate = 20, 30*time.Minute, time.Second, 0.01
		p.BoundMemory = true
	default:
		return Profile{}, fmt.Errorf("look up profile: unknown name %q (want one of %v)",
			name, ProfileNames)
	}
	return p, nil
}

// ProfileResult is what a profile run measured and how it fared.
type ProfileResult struct {
	Profile    string        `json:"profile"`
	Target     string        `json:"target"`
	Clients    int           `json:"clients"`
	Duration   time.Duration `json:"duration_ns"`
	Requests   int           `json:"requests"` // streams included
	Streams    int           `json:"streams"`
	Errors     int           `json:"errors"` // failed requests and cut streams
	ErrorRate  float64       `json:"error_rate"`
	Latency    Latency       `json:"latency"` // whole exchanges, streams to [DONE]
	RSS        []int64       `json:"rss,omitempty"`
	FirstError string        `json:"first_error,omitempty"`
	Checks     []Check       `json:"checks"`
}

// Passed reports whether every check passed.
func (r *ProfileResult) Passed() bool { return AllPassed(r.Checks) }

// RunProfile runs p against t and evaluates its thresholds. Progress
// lines (about one per 10% of the run) go to progress. When ctx ends early
// it returns what was measured so far with an error.
func RunProfile(ctx context.Context, t Target, p Profile, progress io.Writer) (
	*ProfileResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := NewClient(p.Clients, 30*time.Second, nil) // cerbai listens on plain HTTP
	defer c.CloseIdleConnections()
	start := time.Now()
	deadline := start.Add(p.Duration)
	var live liveCounts

	// The memory sampler and the progress reporter run beside the clients.
	rssDone := make(chan []int64, 1)
	go func() { rssDone <- sampleRSS(ctx, t.Proc, p.Duration, deadline) }()
	go reportProgress(ctx, progress, &live, p.Duration)

	tallies := make([]clientTally, p.Clients)
	var wg sync.WaitGroup
	for i := range tallies {
		wg.Go(func() {
			delay := time.Duration(0)
			if p.Ramp {
				delay = p.Duration * 3 / 4 * time.Duration(i) / time.Duration(p.Clients)
			}
			runClient(ctx, c, t, p, start.Add(delay), deadline, &tallies[i], &live)
		})
	}
	wg.Wait()
	interrupted := ctx.Err()
	cancel()

	r := &ProfileResult{Profile: p.Name, Target: t.Name, Clients: p.Clients,
		Duration: time.Since(start), RSS: <-rssDone}
	var all []time.Duration
	for _, tl := range tallies {
		all = append(all, tl.lat...)
		r.Requests += tl.requests
		r.Streams += tl.streams
		r.Errors += tl.errors
		if tl.first != nil && r.FirstError == "" {
			r.FirstError = tl.first.Error()
		}
	}
	r.Latency = Summarize(all)
	if r.Requests > 0 {
		r.ErrorRate = float64(r.Errors) / float64(r.Requests)
	}
	r.Checks = EvaluateProfile(p, r, t.Proc != nil)
	if interrupted != nil {
		return r, fmt.Errorf("run profile %s: interrupted: %w", p.Name, interrupted)
	}
	return r, nil
}

type clientTally struct {
	lat                       []time.Duration
	requests, streams, errors int
	first                     error
}

type liveCounts struct{ requests, errors atomic.Int64 }

// runClient sends requests back to back from start until deadline, a
// StreamShare of them streaming, spread evenly by an accumulator.
func runClient(ctx context.Context, c *http.Client, t Target, p Profile,
	start, deadline time.Time, tl *clientTally, live *liveCounts) {
	if !waitUntil(ctx, start) {
		return
	}
	var acc float64
	var delays []time.Duration
	for i := 0; i < maxPerWorker && time.Now().Before(deadline); i++ {
		acc += p.StreamShare
		streaming := acc >= 1
		t0 := time.Now()
		var err error
		if streaming {
			acc--
			var st StreamStats
			delays, st, err = stream(ctx, c, t.URL, p.Events, p.Interval, delays[:0])
			if err == nil && !st.Done {
				err = fmt.Errorf("stream cut after %d of %d events", st.Events, p.Events)
			}
			tl.streams++
		} else {
			err = chat(ctx, c, t.URL)
		}
		if ctx.Err() != nil {
			return // cancelled: the last exchange is not counted
		}
		tl.requests++
		live.requests.Add(1)
		tl.lat = append(tl.lat, time.Since(t0))
		if err != nil {
			tl.errors++
			live.errors.Add(1)
			if tl.first == nil {
				tl.first = err
			}
		}
	}
}

func waitUntil(ctx context.Context, at time.Time) bool {
	d := time.Until(at)
	if d <= 0 {
		return true
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// sampleRSS samples p's RSS about 120 times over the run (every 100 ms to
// 10 s). It returns nil without a process.
func sampleRSS(ctx context.Context, p *Proc, d time.Duration, deadline time.Time) []int64 {
	if p == nil {
		return nil
	}
	every := min(max(d/120, 100*time.Millisecond), 10*time.Second)
	tick := time.NewTicker(every)
	defer tick.Stop()
	var samples []int64
	for len(samples) < 10_000 && time.Now().Before(deadline) {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return samples
		}
		if rss, err := p.RSS(); err == nil {
			samples = append(samples, rss)
		}
	}
	return samples
}

func reportProgress(ctx context.Context, w io.Writer, live *liveCounts, d time.Duration) {
	start := time.Now()
	tick := time.NewTicker(max(d/10, time.Second))
	defer tick.Stop()
	for range 20 {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
		fmt.Fprintf(w, "%s: %d requests, %d errors\n", time.Since(start).Round(time.Second),
			live.requests.Load(), live.errors.Load())
	}
}

// EvaluateProfile checks r against p's thresholds. hasProc says whether
// the proxy's memory was sampled; without it the memory bound is n/a.
func EvaluateProfile(p Profile, r *ProfileResult, hasProc bool) []Check {
	out := []Check{
		check("requests made", r.Requests > 0, "> 0", strconv.Itoa(r.Requests)),
		check("latency p95", r.Latency.P95 < p.MaxP95, "< "+p.MaxP95.String(),
			r.Latency.P95.Round(10*time.Microsecond).String()),
		check("error rate", r.ErrorRate < p.MaxErrorRate,
			"< "+percent(p.MaxErrorRate), percent(r.ErrorRate)),
	}
	if p.BoundMemory {
		if hasProc {
			out = append(out, MemoryGrowthCheck(r.RSS))
		} else {
			out = append(out, notApplicable("memory growth", memoryWant, "no proxy process"))
		}
	}
	return out
}

const memoryWant = "last-quarter RSS ≤ 1.2× first quarter + 8 MiB"

// MemoryGrowthCheck compares the average of the last quarter of RSS
// samples with that of the first quarter. Fewer than 4 samples miss.
func MemoryGrowthCheck(samples []int64) Check {
	const name = "memory growth"
	if len(samples) < 4 {
		return check(name, false, memoryWant, strconv.Itoa(len(samples))+" samples, need 4")
	}
	q := len(samples) / 4
	first, last := avg(samples[:q]), avg(samples[len(samples)-q:])
	bound := first*1.2 + 8<<20
	return check(name, last <= bound, memoryWant,
		fmt.Sprintf("%.1f MiB → %.1f MiB", first/(1<<20), last/(1<<20)))
}

func avg(v []int64) float64 {
	var sum float64
	for _, x := range v {
		sum += float64(x)
	}
	return sum / float64(len(v))
}

func percent(f float64) string { return strconv.FormatFloat(f*100, 'f', 2, 64) + "%" }
