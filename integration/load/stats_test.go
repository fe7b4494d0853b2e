package load

import (
	"testing"
	"time"
)

func TestPercentile_NearestRank(t *testing.T) {
	ten := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"single", []time.Duration{7}, 99, 7},
		{"median of ten is the fifth", ten, 50, 5},
		{"p90 of ten is the ninth", ten, 90, 9},
		{"p91 of ten rounds up to the tenth", ten, 91, 10},
		{"p99 of ten is the largest", ten, 99, 10},
		{"p100 is the largest", ten, 100, 10},
		{"tiny p is the smallest", ten, 0.1, 1},
		{"p50 of two is the lower", []time.Duration{1, 2}, 50, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("Percentile(%v, %v) = %v, want %v", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarize_SortsAndReportsPercentiles(t *testing.T) {
	d := make([]time.Duration, 0, 100)
	for i := 100; i >= 1; i-- { // descending, so Summarize must sort
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	got := Summarize(d)
	want := Latency{N: 100, P50: 50 * time.Millisecond, P95: 95 * time.Millisecond,
		P99: 99 * time.Millisecond, Max: 100 * time.Millisecond}
	if got != want {
		t.Errorf("Summarize = %+v, want %+v", got, want)
	}
}

func TestMedian_LowerMiddleAndNoSideEffect(t *testing.T) {
	v := []float64{4, 1, 3, 2}
	if got := median(v); got != 2 {
		t.Errorf("median(%v) = %v, want 2", v, got)
	}
	if v[0] != 4 {
		t.Errorf("median sorted its argument: %v", v)
	}
	if got := median(nil); got != 0 {
		t.Errorf("median(nil) = %v, want 0", got)
	}
}
