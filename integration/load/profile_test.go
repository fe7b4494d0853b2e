package load

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"
)

func TestLookupProfile_IssueThresholds(t *testing.T) {
	tests := []struct {
		name     string
		clients  int
		duration time.Duration
		p95      time.Duration
		errRate  float64
		ramp     bool
		memory   bool
	}{
		{"smoke", 2, time.Minute, 500 * time.Millisecond, 0.01, false, false},
		{"load", 50, 2 * time.Minute, time.Second, 0.02, false, false},
		{"stress", 200, 2 * time.Minute, 2 * time.Second, 0.05, true, false},
		{"soak", 20, 30 * time.Minute, time.Second, 0.01, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := LookupProfile(tt.name)
			if err != nil {
				t.Fatalf("LookupProfile: %v", err)
			}
			if p.Clients != tt.clients || p.Duration != tt.duration || p.MaxP95 != tt.p95 ||
				p.MaxErrorRate != tt.errRate || p.Ramp != tt.ramp || p.BoundMemory != tt.memory {
				t.Errorf("got %+v, want clients %d, %v, p95 < %v, errors < %v, ramp %v, "+
					"memory %v", p, tt.clients, tt.duration, tt.p95, tt.errRate, tt.ramp, tt.memory)
			}
			if p.StreamShare <= 0 || p.StreamShare >= 1 {
				t.Errorf("StreamShare = %v, want a mix of streaming and not", p.StreamShare)
			}
		})
	}
	if _, err := LookupProfile("spike"); err == nil {
		t.Error("LookupProfile(spike): got nil error, want unknown profile")
	}
}

func TestEvaluateProfile(t *testing.T) {
	smoke, _ := LookupProfile("smoke")
	soak, _ := LookupProfile("soak")
	flat := []int64{100 << 20, 100 << 20, 101 << 20, 100 << 20}
	tests := []struct {
		name    string
		p       Profile
		r       ProfileResult
		hasProc bool
		want    map[string]Status
	}{
		{
			name: "within thresholds",
			p:    smoke,
			r:    ProfileResult{Requests: 1000, Errors: 9, ErrorRate: 0.009, Latency: p95(499)},
			want: map[string]Status{"requests made": Pass, "latency p95": Pass, "error rate": Pass},
		},
		{
			name: "p95 at the bound misses",
			p:    smoke,
			r:    ProfileResult{Requests: 1000, Latency: p95(500)},
			want: map[string]Status{"requests made": Pass, "latency p95": Miss, "error rate": Pass},
		},
		{
			name: "error rate at the bound misses",
			p:    smoke,
			r:    ProfileResult{Requests: 1000, Errors: 10, ErrorRate: 0.01, Latency: p95(1)},
			want: map[string]Status{"requests made": Pass, "latency p95": Pass, "error rate": Miss},
		},
		{
			name: "no requests misses",
			p:    smoke,
			r:    ProfileResult{},
			want: map[string]Status{"requests made": Miss, "latency p95": Pass, "error rate": Pass},
		},
		{
			name:    "soak with flat memory",
			p:       soak,
			r:       ProfileResult{Requests: 10, Latency: p95(1), RSS: flat},
			hasProc: true,
			want: map[string]Status{"requests made": Pass, "latency p95": Pass,
				"error rate": Pass, "memory growth": Pass},
		},
		{
			name: "soak without a proxy process",
			p:    soak,
			r:    ProfileResult{Requests: 10, Latency: p95(1)},
			want: map[string]Status{"requests made": Pass, "latency p95": Pass,
				"error rate": Pass, "memory growth": NA},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checks := EvaluateProfile(tt.p, &tt.r, tt.hasProc)
			got := map[string]Status{}
			for _, c := range checks {
				got[c.Name] = c.Status
			}
			if len(got) != len(tt.want) {
				t.Errorf("checks = %v, want %v", got, tt.want)
			}
			for name, want := range tt.want {
				if got[name] != want {
					t.Errorf("%s: got %s, want %s", name, got[name], want)
				}
			}
			wantPassed := true
			for _, s := range tt.want {
				wantPassed = wantPassed && s != Miss
			}
			tt.r.Checks = checks
			if tt.r.Passed() != wantPassed {
				t.Errorf("Passed() = %v, want %v", tt.r.Passed(), wantPassed)
			}
		})
	}
}

func p95(msec int) Latency { return Latency{P95: time.Duration(msec) * time.Millisecond} }

func TestMemoryGrowthCheck(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name    string
		samples []int64
		want    Status
	}{
		{"flat", []int64{50 * mib, 50 * mib, 50 * mib, 50 * mib}, Pass},
		{"growth within 20% + 8 MiB", []int64{50 * mib, 60 * mib, 65 * mib, 68 * mib}, Pass},
		{"growth beyond the bound", []int64{50 * mib, 60 * mib, 65 * mib, 68*mib + 1}, Miss},
		{"shrinking", []int64{80 * mib, 70 * mib, 60 * mib, 50 * mib}, Pass},
		// Bound 68 MiB from the first quarter's average 50; single samples would miss.
		{"averages quarters", []int64{40 * mib, 60 * mib, 0, 0, 0, 0, 66 * mib, 70 * mib}, Pass},
		{"too few samples", []int64{1, 1, 1}, Miss},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := MemoryGrowthCheck(tt.samples); got.Status != tt.want {
				t.Errorf("status = %s (%s), want %s", got.Status, got.Got, tt.want)
			}
		})
	}
}

func TestRunProfile_SmokeAgainstFakeLLMDirect(t *testing.T) {
	f := newFake(t)
	p, _ := LookupProfile("smoke")
	p.Duration = 300 * time.Millisecond
	r, err := RunProfile(context.Background(), directTarget(f), p, io.Discard)
	if err != nil {
		t.Fatalf("RunProfile: %v", err)
	}
	checkCleanRun(t, r)
	if r.RSS != nil {
		t.Errorf("RSS samples without a proxy process: %v, want none", r.RSS)
	}
}

// checkCleanRun asserts what does not depend on the machine's speed: the
// run made requests, streamed some, and none failed. Latency is reported,
// not asserted.
func checkCleanRun(t *testing.T, r *ProfileResult) {
	t.Helper()
	if r.Requests == 0 || r.Streams == 0 {
		t.Errorf("requests %d, streams %d; want both > 0", r.Requests, r.Streams)
	}
	if r.Errors != 0 {
		t.Errorf("errors = %d (first %q), want 0", r.Errors, r.FirstError)
	}
	if r.Latency.N != r.Requests {
		t.Errorf("latency samples %d, want one per request (%d)", r.Latency.N, r.Requests)
	}
	for _, c := range r.Checks {
		if c.Name == "error rate" && c.Status != Pass {
			t.Errorf("error-rate check = %s, want PASS", c.Status)
		}
	}
	t.Logf("%d requests, p95 %v", r.Requests, r.Latency.P95)
}

func TestRunProfile_CancelledReturnsResultAndError(t *testing.T) {
	f := newFake(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p, _ := LookupProfile("smoke")
	r, err := RunProfile(ctx, directTarget(f), p, io.Discard)
	if err == nil || !errors.Is(err, context.Canceled) {
		t.Errorf("error = %v, want one wrapping context.Canceled", err)
	}
	if r == nil || r.Profile != "smoke" {
		t.Errorf("result = %+v, want the smoke profile's partial result", r)
	}
}
