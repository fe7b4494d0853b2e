package load

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestReadStream(t *testing.T) {
	now := time.Unix(1700000000, 0)
	stamp := func(d time.Duration) string {
		return strconv.FormatInt(now.Add(-d).UnixNano(), 10)
	}
	tests := []struct {
		name       string
		body       string
		want       StreamStats
		wantDelays []time.Duration
	}{
		{
			name: "complete stream",
			body: `data: {"t":` + stamp(2*time.Millisecond) + `,"x":1}` + "\n\n" +
				`data: {"t":` + stamp(5*time.Millisecond) + `}` + "\n\n" +
				"data: [DONE]\n\n",
			want:       StreamStats{Events: 2, Done: true},
			wantDelays: []time.Duration{2 * time.Millisecond, 5 * time.Millisecond},
		},
		{
			name:       "closed before DONE is cut",
			body:       `data: {"t":` + stamp(time.Millisecond) + `}` + "\n\n",
			want:       StreamStats{Events: 1, Done: false},
			wantDelays: []time.Duration{time.Millisecond},
		},
		{
			name: "events without a stamp count but add no delay",
			body: "event: ping\ndata: {\"a\":1}\n\n: comment\n\ndata:[DONE]\n\n",
			want: StreamStats{Events: 1, Done: true},
		},
		{
			name: "DONE on a last line without newline",
			body: "data: {\"a\":1}\n\ndata: [DONE]",
			want: StreamStats{Events: 1, Done: true},
		},
		{
			name: "a line longer than the buffer is skipped",
			body: "data: " + strings.Repeat("x", 10000) + "\n\ndata: [DONE]\n\n",
			want: StreamStats{Events: 0, Done: true},
		},
		{name: "empty body is cut", body: "", want: StreamStats{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			delays, got, err := ReadStream(strings.NewReader(tt.body),
				func() time.Time { return now }, nil)
			if err != nil {
				t.Fatalf("ReadStream: %v", err)
			}
			if got != tt.want {
				t.Errorf("stats = %+v, want %+v", got, tt.want)
			}
			if len(delays) != len(tt.wantDelays) {
				t.Fatalf("delays = %v, want %v", delays, tt.wantDelays)
			}
			for i := range delays {
				if delays[i] != tt.wantDelays[i] {
					t.Errorf("delay[%d] = %v, want %v", i, delays[i], tt.wantDelays[i])
				}
			}
		})
	}
}

func TestMeasureSSE_CompleteStreamsFromFakeLLM(t *testing.T) {
	f := newFake(t)
	cfg := SSEConfig{Streams: 5, Events: 4, Interval: time.Millisecond} // one stream each
	r, err := MeasureSSE(context.Background(), NewClient(5, time.Minute, nil), directTarget(f), cfg)
	if err != nil {
		t.Fatalf("MeasureSSE: %v", err)
	}
	if r.Streams != 5 || r.Cut != 0 || r.Errors != 0 {
		t.Errorf("streams/cut/errors = %d/%d/%d, want 5/0/0 (first error %q)",
			r.Streams, r.Cut, r.Errors, r.FirstError)
	}
	if r.Events != 20 || r.Delay.N != 20 {
		t.Errorf("events = %d, delays = %d, want 20 and 20", r.Events, r.Delay.N)
	}
}

func TestMeasureSSE_StreamClosedBeforeDoneIsCut(t *testing.T) {
	tests := []struct {
		name       string
		handler    http.HandlerFunc
		wantErrors int
	}{
		{
			name: "response ends cleanly without DONE",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				_, _ = w.Write(appendChunk(nil, 0, time.Now().UnixNano()))
			},
		},
		{
			name: "connection dropped mid-stream",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				_, _ = w.Write(appendChunk(nil, 0, time.Now().UnixNano()))
				http.NewResponseController(w).Flush()
				panic(http.ErrAbortHandler) // closes the connection mid-body
			},
			wantErrors: 3,
		},
		{
			name: "error status",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "upstream gone", http.StatusBadGateway)
			},
			wantErrors: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			t.Cleanup(srv.Close)
			cfg := SSEConfig{Streams: 3, Events: 5, Interval: time.Millisecond}
			r, err := MeasureSSE(context.Background(), NewClient(3, time.Minute, nil),
				Target{Name: "broken", URL: srv.URL}, cfg)
			if err != nil {
				t.Fatalf("MeasureSSE: %v", err)
			}
			if r.Streams != 3 || r.Cut != 3 {
				t.Errorf("streams/cut = %d/%d, want 3/3", r.Streams, r.Cut)
			}
			if r.Errors != tt.wantErrors {
				t.Errorf("errors = %d (first %q), want %d", r.Errors, r.FirstError,
					tt.wantErrors)
			}
		})
	}
}

// newFake starts a FakeLLM closed at the end of the test.
func newFake(t *testing.T) *FakeLLM {
	t.Helper()
	f, err := NewFakeLLM()
	if err != nil {
		t.Fatalf("NewFakeLLM: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func directTarget(f *FakeLLM) Target { return Target{Name: "direct", URL: f.URL} }
