package load

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

func TestMeasureThroughput_CountsRequestsWithoutErrors(t *testing.T) {
	f := newFake(t)
	r, err := MeasureThroughput(context.Background(), NewClient(4, time.Minute, nil),
		directTarget(f), 4, 50*time.Millisecond)
	if err != nil {
		t.Fatalf("MeasureThroughput: %v", err)
	}
	if r.Requests == 0 || r.Errors != 0 {
		t.Fatalf("requests/errors = %d/%d (first %q), want >0/0", r.Requests, r.Errors,
			r.FirstError)
	}
	if r.Latency.N != r.Requests {
		t.Errorf("latency samples = %d, want one per request (%d)", r.Latency.N, r.Requests)
	}
	if r.CPU != 0 || r.CPUPer1000 != 0 {
		t.Errorf("CPU without a proxy process = %v, want 0", r.CPU)
	}
}

func TestMeasureThroughput_FailingTargetCountsErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no token", http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	r, err := MeasureThroughput(context.Background(), NewClient(2, time.Minute, nil),
		Target{Name: "failing", URL: srv.URL}, 2, 20*time.Millisecond)
	if err != nil {
		t.Fatalf("MeasureThroughput: %v", err)
	}
	if r.Requests != 0 || r.Errors == 0 || !strings.Contains(r.FirstError, "503") {
		t.Errorf("requests/errors = %d/%d (first %q), want 0/>0 with a 503 error",
			r.Requests, r.Errors, r.FirstError)
	}
}

func TestMeasureIdleStreams_HoldsEveryStreamAndReadsRSS(t *testing.T) {
	f := newFake(t)
	target := directTarget(f)
	target.Proc = &Proc{PID: os.Getpid()} // the fake runs in this process
	r, err := MeasureIdleStreams(context.Background(), target, 50)
	if err != nil {
		t.Fatalf("MeasureIdleStreams: %v", err)
	}
	if r.Opened != 50 || r.RSSBefore <= 0 || r.RSSAfter <= 0 {
		t.Errorf("opened %d, rss %d → %d; want 50 and positive RSS", r.Opened,
			r.RSSBefore, r.RSSAfter)
	}
}

func TestMeasureIdleStreams_NoProcessNoMeasurement(t *testing.T) {
	r, err := MeasureIdleStreams(context.Background(), Target{URL: "http://127.0.0.1:1"}, 10)
	if err != nil || r != (IdleResult{}) {
		t.Errorf("got %+v, %v; want zero result, nil", r, err)
	}
}

func TestMeasureLarge_DownloadsAtLeastTwoBodies(t *testing.T) {
	f := newFake(t)
	r, err := MeasureLarge(context.Background(), NewClient(1, time.Minute, nil), directTarget(f),
		1<<20, 0)
	if err != nil {
		t.Fatalf("MeasureLarge: %v", err)
	}
	if r.Bodies != 2 || r.Bytes != 2<<20 || r.MBps <= 0 {
		t.Errorf("bodies %d, bytes %d, MB/s %v; want 2, %d, > 0", r.Bodies, r.Bytes, r.MBps,
			2<<20)
	}
}
