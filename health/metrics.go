package health

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ContentType is the media type of the Prometheus text exposition format
// 0.0.4, which Metrics serves.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Label is one name="value" pair on a sample.
type Label struct{ Name, Value string }

// Writer buffers one exposition in the Prometheus text format 0.0.4.
//
// A family is declared first (Counter, Gauge, or Histogram, which declares
// and writes one series), then its samples follow; the format wants a
// family's samples together, so a Sample must name the family declared last.
//
// Metric and label names, the pairing of samples with their family and the
// shape of histogram data are fixed by the program, not by its input, so a
// mistake in them is a programming error and Writer panics. Label values and
// help texts are data: they are escaped, never rejected.
//
// The zero value is an empty exposition ready to use. A Writer is not safe
// for concurrent use.
type Writer struct {
	buf      []byte
	families map[string]bool // every family declared so far
	family   string          // the family declared last; samples must belong to it
	kind     string          // its type: counter, gauge or histogram
}

// Counter declares a counter family: it writes the # HELP and # TYPE lines.
func (w *Writer) Counter(name, help string) { w.declare(name, help, "counter") }

// Gauge declares a gauge family: it writes the # HELP and # TYPE lines.
func (w *Writer) Gauge(name, help string) { w.declare(name, help, "gauge") }

// Sample writes one sample of the counter or gauge family declared last.
func (w *Writer) Sample(name string, value float64, labels ...Label) {
	if name != w.family || w.kind == "histogram" {
		panic(fmt.Sprintf("health: sample %q outside its family (last declared %q %s)",
			name, w.family, w.kind))
	}
	w.sample(name, labels, "", value)
}

// Histogram declares a histogram family and writes one series of it. bounds
// are the finite upper bounds in increasing order; counts holds how many
// observations fell in each bucket, not cumulated, with len(bounds)+1
// entries (the last one counts those above every bound). It writes the
// cumulative name_bucket lines ending with le="+Inf", then name_sum and
// name_count.
func (w *Writer) Histogram(name, help string, bounds []float64, counts []uint64, sum float64,
	labels ...Label) {
	w.declare(name, help, "histogram")
	w.HistogramSeries(name, bounds, counts, sum, labels...)
}

// HistogramSeries writes one more series, with other labels, of the
// histogram family that Histogram declared last. Its arguments mean what
// they mean for Histogram.
func (w *Writer) HistogramSeries(name string, bounds []float64, counts []uint64, sum float64,
	labels ...Label) {
	if name != w.family || w.kind != "histogram" {
		panic(fmt.Sprintf("health: histogram series %q outside its family (last declared %q %s)",
			name, w.family, w.kind))
	}
	checkBuckets(name, bounds, counts)
	for _, l := range labels {
		if l.Name == "le" {
			panic(fmt.Sprintf("health: histogram %q: label name le is reserved", name))
		}
	}

	var total uint64
	for i, c := range counts {
		total += c
		le := "+Inf"
		if i < len(bounds) {
			le = formatFloat(bounds[i])
		}
		w.sample(name+"_bucket", labels, le, float64(total))
	}
	w.sample(name+"_sum", labels, "", sum)
	w.sample(name+"_count", labels, "", float64(total))
}

// Bytes returns the exposition written so far. The slice aliases the
// Writer's buffer until the next write.
func (w *Writer) Bytes() []byte { return w.buf }

// Metrics serves the exposition that collect writes into a fresh Writer on
// every scrape. collect runs on the scraping request's goroutine and must
// be safe for concurrent use when scrapes overlap.
func Metrics(collect func(w *Writer)) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		var w Writer
		collect(&w)
		h := rw.Header()
		h.Set("Content-Type", ContentType)
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Length", strconv.Itoa(len(w.buf)))
		_, _ = rw.Write(w.buf)
	})
}

// declare writes the HELP and TYPE lines of a new family.
func (w *Writer) declare(name, help, kind string) {
	if !validMetricName(name) {
		panic(fmt.Sprintf("health: invalid metric name %q", name))
	}
	if w.families[name] {
		// The format allows one TYPE line per family, and a family's
		// samples must be together.
		panic(fmt.Sprintf("health: metric family %q declared twice", name))
	}
	if w.families == nil {
		w.families = make(map[string]bool)
	}
	w.families[name] = true
	w.family, w.kind = name, kind

	w.buf = append(w.buf, "# HELP "...)
	w.buf = append(w.buf, name...)
	w.buf = append(w.buf, ' ')
	w.buf = appendEscaped(w.buf, help, false)
	w.buf = append(w.buf, "\n# TYPE "...)
	w.buf = append(w.buf, name...)
	w.buf = append(w.buf, ' ')
	w.buf = append(w.buf, kind...)
	w.buf = append(w.buf, '\n')
}

// sample writes one sample line; le, when not empty, is added as the last
// label (a histogram bucket's bound).
func (w *Writer) sample(name string, labels []Label, le string, value float64) {
	w.buf = append(w.buf, name...)
	if len(labels) > 0 || le != "" {
		w.buf = append(w.buf, '{')
		for i, l := range labels {
			checkLabelName(name, l.Name, labels[:i])
			w.buf = appendLabel(w.buf, l.Name, l.Value)
			w.buf = append(w.buf, ',')
		}
		if le != "" {
			w.buf = appendLabel(w.buf, "le", le)
			w.buf = append(w.buf, ',')
		}
		w.buf[len(w.buf)-1] = '}' // replaces the trailing comma
	}
	w.buf = append(w.buf, ' ')
	w.buf = append(w.buf, formatFloat(value)...)
	w.buf = append(w.buf, '\n')
}

func appendLabel(b []byte, name, value string) []byte {
	b = append(b, name...)
	b = append(b, `="`...)
	b = appendEscaped(b, value, true)
	return append(b, '"')
}

// appendEscaped escapes backslash and newline, and the double quote too in
// a label value: the format's escapes for HELP text and label values.
// Invalid UTF-8, which Prometheus rejects, becomes U+FFFD.
func appendEscaped(b []byte, s string, quote bool) []byte {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			b = append(b, `\\`...)
		case c == '\n':
			b = append(b, `\n`...)
		case c == '"' && quote:
			b = append(b, `\"`...)
		default:
			b = append(b, c)
		}
	}
	return b
}

// formatFloat writes integers without an exponent (counters read better)
// and anything else in the shortest form that parses back to the same value.
func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

func checkLabelName(metric, name string, before []Label) {
	if !validLabelName(name) || strings.HasPrefix(name, "__") {
		// Names starting with __ are reserved for Prometheus itself.
		panic(fmt.Sprintf("health: metric %q: invalid label name %q", metric, name))
	}
	for _, l := range before {
		if l.Name == name {
			panic(fmt.Sprintf("health: metric %q: label %q twice", metric, name))
		}
	}
}

func checkBuckets(name string, bounds []float64, counts []uint64) {
	if len(counts) != len(bounds)+1 {
		panic(fmt.Sprintf("health: histogram %q: %d counts for %d bounds, want %d",
			name, len(counts), len(bounds), len(bounds)+1))
	}
	for i, b := range bounds {
		if math.IsNaN(b) || math.IsInf(b, 0) || (i > 0 && b <= bounds[i-1]) {
			panic(fmt.Sprintf("health: histogram %q: bounds must be finite and increasing: %v",
				name, bounds))
		}
	}
}

// validMetricName reports whether s matches [a-zA-Z_:][a-zA-Z0-9_:]*.
func validMetricName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isLetter(c) || c == '_' || c == ':' || (i > 0 && isDigit(c))) {
			return false
		}
	}
	return s != ""
}

// validLabelName reports whether s matches [a-zA-Z_][a-zA-Z0-9_]*.
func validLabelName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isLetter(c) || c == '_' || (i > 0 && isDigit(c))) {
			return false
		}
	}
	return s != ""
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isDigit(c byte) bool  { return '0' <= c && c <= '9' }
