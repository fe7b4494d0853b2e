package health

import (
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cerbai/cerbai/integration/golden"
)

// fixedExposition writes one of everything the Writer can write, with the
// awkward values (escapes, infinities, NaN, empty histogram) included.
func fixedExposition(w *Writer) {
	w.Counter("cerbai_requests_total", "Requests answered, by method and status class.")
	w.Sample("cerbai_requests_total", 12, Label{"method", "GET"}, Label{"class", "2xx"})
	w.Sample("cerbai_requests_total", 3, Label{"method", "POST"}, Label{"class", "5xx"})

	w.Gauge("cerbai_token_usable_seconds", "Seconds until the token stops being usable.\n"+
		`A backslash \ and a quote " in help.`)
	w.Sample("cerbai_token_usable_seconds", 1234.5)

	w.Gauge("cerbai_odd_values", "Values that need spelling out.")
	w.Sample("cerbai_odd_values", math.Inf(1), Label{"case", "plus_inf"})
	w.Sample("cerbai_odd_values", math.Inf(-1), Label{"case", "minus_inf"})
	w.Sample("cerbai_odd_values", math.NaN(), Label{"case", "nan"})
	w.Sample("cerbai_odd_values", 1e21, Label{"case", "huge"})
	w.Sample("cerbai_odd_values", 0.000125, Label{"case", "small"})
	w.Sample("cerbai_odd_values", 0, Label{"case", "escapes"},
		Label{"value", "back\\slash \"quoted\"\nnew line ünïcödé"})

	bounds := []float64{0.005, 0.1, 1, 10}
	w.Histogram("cerbai_request_duration_seconds", "Time to answer a request.",
		bounds, []uint64{4, 0, 7, 1, 2}, 42.75, Label{"method", "POST"})
	w.HistogramSeries("cerbai_request_duration_seconds",
		bounds, []uint64{0, 0, 0, 0, 0}, 0, Label{"method", "GET"})

	w.Gauge("cerbai_build_info", "Build information; the value is always 1.")
	w.Sample("cerbai_build_info", 1, Label{"version", "v0.1.0"}, Label{"commit", "abc1234"},
		Label{"goversion", "go1.26.8"})
}

func TestWriter_GoldenExposition(t *testing.T) {
	var w Writer
	fixedExposition(&w)
	golden.Check(t, filepath.Join("testdata", "metrics.golden"), w.Bytes())
}

func TestWriter_OutputPassesFormatValidator(t *testing.T) {
	var w Writer
	fixedExposition(&w)
	e, err := parseExposition(string(w.Bytes()))
	if err != nil {
		t.Fatalf("exposition invalid: %v\n%s", err, w.Bytes())
	}
	wantTypes := map[string]string{
		"cerbai_requests_total":           "counter",
		"cerbai_token_usable_seconds":     "gauge",
		"cerbai_odd_values":               "gauge",
		"cerbai_request_duration_seconds": "histogram",
		"cerbai_build_info":               "gauge",
	}
	if diff := cmp.Diff(wantTypes, e.types); diff != "" {
		t.Errorf("TYPE lines (-want +got):\n%s", diff)
	}
	for family := range wantTypes {
		if _, ok := e.help[family]; !ok {
			t.Errorf("family %q has no HELP line", family)
		}
	}
	wantHelp := "Seconds until the token stops being usable.\n" +
		`A backslash \ and a quote " in help.`
	if got := e.help["cerbai_token_usable_seconds"]; got != wantHelp {
		t.Errorf("got help %q, want %q", got, wantHelp)
	}
}

func TestWriter_LabelValuesRoundTrip(t *testing.T) {
	values := []string{
		"", "plain", `back\slash`, `"quoted"`, "new\nline", `\n literally`, `\"`,
		"trailing backslash\\", "ünïcödé ✓", "{braces}, commas=and \"equals\"",
	}
	for _, v := range values {
		t.Run(fmt.Sprintf("%q", v), func(t *testing.T) {
			var w Writer
			w.Gauge("g", "h")
			w.Sample("g", 1, Label{"v", v}, Label{"after", "x"})
			e, err := parseExposition(string(w.Bytes()))
			if err != nil {
				t.Fatalf("exposition invalid: %v\n%s", err, w.Bytes())
			}
			if got := e.samples[0].labels["v"]; got != v {
				t.Errorf("got label value %q back, want %q", got, v)
			}
			if got := e.samples[0].labels["after"]; got != "x" {
				t.Errorf("got next label %q, want %q (escaping leaked)", got, "x")
			}
		})
	}
}

func TestWriter_InvalidUTF8LabelBecomesReplacementChar(t *testing.T) {
	var w Writer
	w.Gauge("g", "h")
	w.Sample("g", 1, Label{"v", "a\xffb"})
	e, err := parseExposition(string(w.Bytes()))
	if err != nil {
		t.Fatalf("exposition invalid: %v\n%s", err, w.Bytes())
	}
	if got, want := e.samples[0].labels["v"], "a\uFFFDb"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestWriter_FormatsValues(t *testing.T) {
	tests := []struct {
		value float64
		want  string
	}{
		{0, "0"},
		{42, "42"},
		{-7, "-7"},
		{0.5, "0.5"},
		{1234.5, "1234.5"},
		{123456789012345, "123456789012345"},
		{1e15, "1e+15"},
		{1.5e-7, "1.5e-07"},
		{math.MaxFloat64, "1.7976931348623157e+308"},
		{math.Inf(1), "+Inf"},
		{math.Inf(-1), "-Inf"},
		{math.NaN(), "NaN"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			var w Writer
			w.Gauge("g", "h")
			w.Sample("g", tt.value)
			lines := strings.Split(strings.TrimSpace(string(w.Bytes())), "\n")
			if got, want := lines[len(lines)-1], "g "+tt.want; got != want {
				t.Errorf("got line %q, want %q", got, want)
			}
			e, err := parseExposition(string(w.Bytes()))
			if err != nil {
				t.Fatalf("exposition invalid: %v", err)
			}
			got := e.samples[0].value
			if got != tt.value && !(math.IsNaN(got) && math.IsNaN(tt.value)) {
				t.Errorf("value read back as %v, want %v", got, tt.value)
			}
		})
	}
}

func TestWriter_HistogramBucketsAreCumulative(t *testing.T) {
	var w Writer
	w.Histogram("h", "help", []float64{1, 2.5, 10}, []uint64{1, 2, 0, 3}, 30.5,
		Label{"kind", "x"})
	want := `# HELP h help
# TYPE h histogram
h_bucket{kind="x",le="1"} 1
h_bucket{kind="x",le="2.5"} 3
h_bucket{kind="x",le="10"} 3
h_bucket{kind="x",le="+Inf"} 6
h_sum{kind="x"} 30.5
h_count{kind="x"} 6
`
	if diff := cmp.Diff(want, string(w.Bytes())); diff != "" {
		t.Errorf("histogram (-want +got):\n%s", diff)
	}
}

func TestWriter_HistogramWithoutBoundsHasOnlyInfBucket(t *testing.T) {
	var w Writer
	w.Histogram("h", "help", nil, []uint64{5}, 2)
	want := "# HELP h help\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 5\nh_sum 2\nh_count 5\n"
	if got := string(w.Bytes()); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// Programming errors panic (see the Writer's doc); each case names the
// panic's message so a panic for another reason does not pass.
func TestWriter_PanicsOnProgrammingErrors(t *testing.T) {
	tests := []struct {
		name  string
		write func(w *Writer)
		want  string
	}{
		{"empty metric name", func(w *Writer) { w.Counter("", "h") }, "invalid metric name"},
		{"metric name starts with digit", func(w *Writer) { w.Gauge("1g", "h") },
			"invalid metric name"},
		{"metric name with dash", func(w *Writer) { w.Gauge("a-b", "h") },
			"invalid metric name"},
		{"family twice", func(w *Writer) { w.Gauge("g", "h"); w.Counter("g", "h") },
			"declared twice"},
		{"sample before any family", func(w *Writer) { w.Sample("g", 1) },
			"outside its family"},
		{"sample of another family", func(w *Writer) {
			w.Gauge("a", "h")
			w.Gauge("b", "h")
			w.Sample("a", 1)
		}, "outside its family"},
		{"sample of a histogram", func(w *Writer) {
			w.Histogram("h", "h", nil, []uint64{0}, 0)
			w.Sample("h", 1)
		}, "outside its family"},
		{"histogram series of a gauge", func(w *Writer) {
			w.Gauge("g", "h")
			w.HistogramSeries("g", nil, []uint64{0}, 0)
		}, "outside its family"},
		{"label name with colon", func(w *Writer) {
			w.Gauge("g", "h")
			w.Sample("g", 1, Label{"a:b", "x"})
		}, "invalid label name"},
		{"empty label name", func(w *Writer) {
			w.Gauge("g", "h")
			w.Sample("g", 1, Label{"", "x"})
		}, "invalid label name"},
		{"reserved label name", func(w *Writer) {
			w.Gauge("g", "h")
			w.Sample("g", 1, Label{"__name__", "x"})
		}, "invalid label name"},
		{"label twice", func(w *Writer) {
			w.Gauge("g", "h")
			w.Sample("g", 1, Label{"a", "x"}, Label{"a", "y"})
		}, "twice"},
		{"le on a histogram", func(w *Writer) {
			w.Histogram("h", "h", nil, []uint64{0}, 0, Label{"le", "1"})
		}, "le is reserved"},
		{"too few counts", func(w *Writer) {
			w.Histogram("h", "h", []float64{1, 2}, []uint64{0, 0}, 0)
		}, "2 counts for 2 bounds"},
		{"bounds not increasing", func(w *Writer) {
			w.Histogram("h", "h", []float64{2, 1}, []uint64{0, 0, 0}, 0)
		}, "increasing"},
		{"infinite bound", func(w *Writer) {
			w.Histogram("h", "h", []float64{1, math.Inf(1)}, []uint64{0, 0, 0}, 0)
		}, "finite"},
		{"NaN bound", func(w *Writer) {
			w.Histogram("h", "h", []float64{math.NaN()}, []uint64{0, 0}, 0)
		}, "finite"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				r := recover()
				if r == nil {
					t.Fatalf("no panic, want one containing %q", tt.want)
				}
				if msg := fmt.Sprint(r); !strings.Contains(msg, tt.want) {
					t.Errorf("panic %q, want it to contain %q", msg, tt.want)
				}
			}()
			var w Writer
			tt.write(&w)
		})
	}
}

func TestMetrics_ServesCollectedExposition(t *testing.T) {
	calls := 0
	h := Metrics(func(w *Writer) {
		calls++
		w.Counter("scrapes_total", "Scrapes so far.")
		w.Sample("scrapes_total", float64(calls))
	})
	for want := 1; want <= 2; want++ {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))

		if rec.Code != http.StatusOK {
			t.Errorf("got status %d, want 200", rec.Code)
		}
		if got := rec.Header().Get("Content-Type"); got != ContentType {
			t.Errorf("got Content-Type %q, want %q", got, ContentType)
		}
		wantBody := fmt.Sprintf(
			"# HELP scrapes_total Scrapes so far.\n# TYPE scrapes_total counter\n"+
				"scrapes_total %d\n", want)
		if diff := cmp.Diff(wantBody, rec.Body.String()); diff != "" {
			t.Errorf("scrape %d body (-want +got):\n%s", want, diff)
		}
	}
}

func TestMetrics_ContentTypeIsPrometheusText004(t *testing.T) {
	if want := "text/plain; version=0.0.4; charset=utf-8"; ContentType != want {
		t.Errorf("got ContentType %q, want %q", ContentType, want)
	}
}
