package health

import (
	"strings"
	"testing"
)

// The validator is what the Writer's tests trust, so it is tested first:
// each case is a small exposition a real scrape would reject or misread.
func TestParseExposition_RejectsInvalidText(t *testing.T) {
	tests := []struct {
		name, text, want string
	}{
		{"no final newline", "a 1", "newline"},
		{"bad metric name", "1a 1\n", "invalid metric name"},
		{"bad metric name in TYPE", "# TYPE a-b counter\n", "invalid metric name"},
		{"unknown type", "# TYPE a countr\n", "unknown type"},
		{"TYPE twice", "# TYPE a counter\n# TYPE a counter\n", "TYPE for \"a\" twice"},
		{"HELP twice", "# HELP a x\n# HELP a y\n", "HELP for \"a\" twice"},
		{"TYPE after samples", "a 1\n# TYPE a counter\n", "after its samples"},
		{"HELP after samples", "a 1\n# HELP a x\n", "after its samples"},
		{"family split", "a 1\nb 1\na{x=\"1\"} 2\n", "continues after another"},
		{"duplicate sample", "a{x=\"1\"} 1\na{x=\"1\"} 2\n", "twice"},
		{"no value", "a\n", "without a value"},
		{"bad value", "a one\n", "value"},
		{"bad timestamp", "a 1 soon\n", "timestamp"},
		{"extra field", "a 1 2 3\n", "optional timestamp"},
		{"bad label name", "a{1x=\"1\"} 1\n", "invalid label name"},
		{"colon in label name", "a{x:y=\"1\"} 1\n", "invalid label name"},
		{"label twice", "a{x=\"1\",x=\"2\"} 1\n", "label \"x\" twice"},
		{"unterminated value", "a{x=\"1} 1\n", "unterminated"},
		{"unknown escape", "a{x=\"\\t\"} 1\n", "unknown escape"},
		{"missing comma", "a{x=\"1\" y=\"2\"} 1\n", "want , or }"},
		{"negative counter", "# TYPE a counter\na -1\n", "negative"},
		{"bad help escape", "# HELP a x\\q\n", "unknown escape"},
		{"histogram without suffix", "# TYPE h histogram\nh 1\n", "without a suffix"},
		{"le outside bucket", "# TYPE h histogram\nh_sum{le=\"1\"} 1\n", "le label"},
		{"no +Inf bucket", "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
			"+Inf"},
		{"no _sum", "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n", "no _sum"},
		{"no _count", "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\n", "no _count"},
		{"count differs from +Inf", "# TYPE h histogram\n" +
			"h_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n", "_count 3"},
		{"not cumulative", "# TYPE h histogram\nh_bucket{le=\"1\"} 2\n" +
			"h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n", "not cumulative"},
		{"bounds out of order", "# TYPE h histogram\nh_bucket{le=\"2\"} 1\n" +
			"h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n", "le 1 after 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseExposition(tt.text)
			if err == nil {
				t.Fatalf("parseExposition(%q) = nil error, want one containing %q",
					tt.text, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("parseExposition(%q) error = %q, want it to contain %q",
					tt.text, err, tt.want)
			}
		})
	}
}

func TestParseExposition_AcceptsValidText(t *testing.T) {
	text := "# HELP a Help with \\\\ and \\n.\n# TYPE a counter\n" +
		"a{x=\"q\\\"\\\\\\n\",y=\"\",} 1 1700000000000\n" +
		"# some comment\n\n" +
		"# TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 1\n" +
		"h_sum 0.25\nh_count 1\n" +
		"untyped_metric NaN\n"
	e, err := parseExposition(text)
	if err != nil {
		t.Fatalf("parseExposition: %v", err)
	}
	if got, want := len(e.samples), 6; got != want {
		t.Errorf("got %d samples, want %d", got, want)
	}
	if got, want := e.help["a"], "Help with \\ and \n."; got != want {
		t.Errorf("got help %q, want %q", got, want)
	}
	if got, want := e.samples[0].labels["x"], "q\"\\\n"; got != want {
		t.Errorf("got label x = %q, want %q", got, want)
	}
}
