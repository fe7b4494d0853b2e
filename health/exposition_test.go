package health

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file is a strict, independent reader of the Prometheus text format
// 0.0.4. The tests run the Writer's output through it, so it must not share
// code with the Writer: it is the other side of the wire.

// expSample is one parsed sample line.
type expSample struct {
	name   string
	labels map[string]string
	value  float64
}

// exposition is a parsed, validated exposition.
type exposition struct {
	samples []expSample
	types   map[string]string // family -> counter, gauge, histogram, summary, untyped
	help    map[string]string // family -> unescaped help text
}

// parseExposition checks text line by line against the format and returns
// what it holds, or the first problem found with its line number.
func parseExposition(text string) (*exposition, error) {
	e := &exposition{types: map[string]string{}, help: map[string]string{}}
	if text != "" && !strings.HasSuffix(text, "\n") {
		return nil, errors.New("exposition does not end with a newline")
	}
	p := parser{e: e, closed: map[string]bool{}, sampled: map[string]bool{},
		seen: map[string]bool{}}
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if err := p.line(line); err != nil {
			return nil, fmt.Errorf("line %d %q: %w", i+1, line, err)
		}
	}
	if err := checkHistograms(e); err != nil {
		return nil, err
	}
	return e, nil
}

type parser struct {
	e       *exposition
	current string          // family of the line before
	closed  map[string]bool // families whose lines have ended
	sampled map[string]bool // families that have samples
	seen    map[string]bool // name + label set, to find duplicate samples
}

func (p *parser) line(line string) error {
	switch {
	case line == "":
		return nil // the format ignores empty lines
	case strings.HasPrefix(line, "# HELP "):
		return p.helpLine(strings.TrimPrefix(line, "# HELP "))
	case strings.HasPrefix(line, "# TYPE "):
		return p.typeLine(strings.TrimPrefix(line, "# TYPE "))
	case strings.HasPrefix(line, "#"):
		return nil // any other comment
	}
	return p.sampleLine(line)
}

// enter moves to family's lines and fails if they already ended.
func (p *parser) enter(family string) error {
	if family == p.current {
		return nil
	}
	if p.closed[family] {
		return fmt.Errorf("family %q continues after another family", family)
	}
	if p.current != "" {
		p.closed[p.current] = true
	}
	p.current = family
	return nil
}

func (p *parser) helpLine(rest string) error {
	name, text, _ := strings.Cut(rest, " ")
	if !isMetricName(name) {
		return fmt.Errorf("HELP: invalid metric name %q", name)
	}
	if _, dup := p.e.help[name]; dup {
		return fmt.Errorf("HELP for %q twice", name)
	}
	if p.sampled[name] {
		return fmt.Errorf("HELP for %q after its samples", name)
	}
	help, err := unescape(text, false)
	if err != nil {
		return fmt.Errorf("HELP: %w", err)
	}
	p.e.help[name] = help
	return p.enter(name)
}

func (p *parser) typeLine(rest string) error {
	name, kind, ok := strings.Cut(rest, " ")
	if !ok || !isMetricName(name) {
		return fmt.Errorf("TYPE: invalid metric name %q", name)
	}
	if !slices.Contains([]string{"counter", "gauge", "histogram", "summary", "untyped"}, kind) {
		return fmt.Errorf("TYPE: unknown type %q", kind)
	}
	if _, dup := p.e.types[name]; dup {
		return fmt.Errorf("TYPE for %q twice", name)
	}
	if p.sampled[name] {
		return fmt.Errorf("TYPE for %q after its samples", name)
	}
	p.e.types[name] = kind
	return p.enter(name)
}

func (p *parser) sampleLine(line string) error {
	s, err := parseSample(line)
	if err != nil {
		return err
	}
	family, err := p.familyOf(s)
	if err != nil {
		return err
	}
	if err := p.enter(family); err != nil {
		return err
	}
	key := s.name + "{" + labelKey(s.labels, "") + "}"
	if p.seen[key] {
		return fmt.Errorf("sample %s twice", key)
	}
	p.seen[key] = true
	p.sampled[family] = true
	p.e.samples = append(p.e.samples, s)
	return nil
}

// familyOf finds the family a sample belongs to and checks the sample's name
// and value against the family's type.
func (p *parser) familyOf(s expSample) (string, error) {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(s.name, suffix)
		if !ok {
			continue
		}
		switch p.e.types[base] {
		case "histogram":
			if _, le := s.labels["le"]; le != (suffix == "_bucket") {
				return "", fmt.Errorf("histogram sample %q: le label only on _bucket", s.name)
			}
			return base, nil
		case "summary":
			if suffix != "_bucket" {
				return base, nil
			}
		}
	}
	switch p.e.types[s.name] {
	case "histogram", "summary":
		return "", fmt.Errorf("sample %q without a suffix of its %s family", s.name,
			p.e.types[s.name])
	case "counter":
		if s.value < 0 {
			return "", fmt.Errorf("counter %q is negative: %v", s.name, s.value)
		}
	}
	return s.name, nil
}

// parseSample reads: name [ "{" label="value" { "," label="value" } [ "," ] "}" ]
// value [ timestamp ].
func parseSample(line string) (expSample, error) {
	s := expSample{labels: map[string]string{}}
	end := strings.IndexAny(line, "{ ")
	if end < 0 {
		return s, errors.New("sample without a value")
	}
	s.name, line = line[:end], line[end:]
	if !isMetricName(s.name) {
		return s, fmt.Errorf("invalid metric name %q", s.name)
	}
	if strings.HasPrefix(line, "{") {
		var err error
		if line, err = parseLabels(line[1:], s.labels); err != nil {
			return s, err
		}
	}
	fields := strings.Fields(line)
	if len(fields) < 1 || len(fields) > 2 || !strings.HasPrefix(line, " ") {
		return s, errors.New("want a space, a value and an optional timestamp")
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return s, fmt.Errorf("value: %w", err)
	}
	s.value = v
	if len(fields) == 2 {
		if _, err := strconv.ParseInt(fields[1], 10, 64); err != nil {
			return s, fmt.Errorf("timestamp: %w", err)
		}
	}
	return s, nil
}

// parseLabels reads the label pairs after "{" into into and returns what
// follows the closing "}".
func parseLabels(line string, into map[string]string) (string, error) {
	for {
		if rest, ok := strings.CutPrefix(line, "}"); ok {
			return rest, nil
		}
		name, rest, ok := strings.Cut(line, `="`)
		if !ok || !isLabelName(name) {
			return "", fmt.Errorf("invalid label name in %q", line)
		}
		if _, dup := into[name]; dup {
			return "", fmt.Errorf("label %q twice", name)
		}
		raw, rest, err := cutQuoted(rest)
		if err != nil {
			return "", fmt.Errorf("label %q: %w", name, err)
		}
		if into[name], err = unescape(raw, true); err != nil {
			return "", fmt.Errorf("label %q: %w", name, err)
		}
		switch {
		case strings.HasPrefix(rest, ","):
			line = rest[1:] // a trailing comma before "}" is allowed
		case strings.HasPrefix(rest, "}"):
			line = rest
		default:
			return "", fmt.Errorf("after label %q: want , or }", name)
		}
	}
}

// cutQuoted splits s at the first unescaped double quote.
func cutQuoted(s string) (raw, rest string, err error) {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return s[:i], s[i+1:], nil
		}
	}
	return "", "", errors.New("unterminated label value")
}

// unescape undoes the format's escapes: \\ and \n, and \" in label values.
func unescape(s string, quoted bool) (string, error) {
	if !utf8.ValidString(s) {
		return "", errors.New("invalid UTF-8")
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '"' && quoted {
			return "", errors.New("unescaped double quote")
		}
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		if i++; i == len(s) {
			return "", errors.New("backslash at the end")
		}
		switch s[i] {
		case '\\':
			b.WriteByte('\\')
		case 'n':
			b.WriteByte('\n')
		case '"':
			if !quoted {
				return "", errors.New(`\" outside a label value`)
			}
			b.WriteByte('"')
		default:
			return "", fmt.Errorf("unknown escape \\%c", s[i])
		}
	}
	return b.String(), nil
}

// checkHistograms checks every histogram series: buckets with increasing
// bounds and non-decreasing cumulative counts, the last one le="+Inf" equal
// to _count, and a _sum.
func checkHistograms(e *exposition) error {
	type series struct {
		les, counts []float64
		sum, count  *float64
	}
	all := map[string]*series{}
	var order []string
	for _, s := range e.samples {
		base := strings.TrimSuffix(strings.TrimSuffix(
			strings.TrimSuffix(s.name, "_bucket"), "_sum"), "_count")
		if e.types[base] != "histogram" || base == s.name {
			continue
		}
		key := base + "{" + labelKey(s.labels, "le") + "}"
		sr := all[key]
		if sr == nil {
			sr = &series{}
			all[key] = sr
			order = append(order, key)
		}
		v := s.value
		switch {
		case strings.HasSuffix(s.name, "_bucket"):
			le, err := strconv.ParseFloat(s.labels["le"], 64)
			if err != nil {
				return fmt.Errorf("histogram %s: le: %w", key, err)
			}
			sr.les, sr.counts = append(sr.les, le), append(sr.counts, v)
		case strings.HasSuffix(s.name, "_sum"):
			sr.sum = &v
		default:
			sr.count = &v
		}
	}
	for _, key := range order {
		sr := all[key]
		n := len(sr.les)
		switch {
		case n == 0 || !math.IsInf(sr.les[n-1], 1):
			return fmt.Errorf("histogram %s: buckets do not end with le=\"+Inf\"", key)
		case sr.sum == nil:
			return fmt.Errorf("histogram %s: no _sum", key)
		case sr.count == nil:
			return fmt.Errorf("histogram %s: no _count", key)
		case *sr.count != sr.counts[n-1]:
			return fmt.Errorf("histogram %s: _count %v, +Inf bucket %v", key, *sr.count,
				sr.counts[n-1])
		}
		for i := 1; i < n; i++ {
			if sr.les[i] <= sr.les[i-1] {
				return fmt.Errorf("histogram %s: le %v after %v", key, sr.les[i], sr.les[i-1])
			}
			if sr.counts[i] < sr.counts[i-1] {
				return fmt.Errorf("histogram %s: bucket count %v after %v (not cumulative)",
					key, sr.counts[i], sr.counts[i-1])
			}
		}
	}
	return nil
}

// labelKey renders labels, less the one named skip, in a canonical order.
func labelKey(labels map[string]string, skip string) string {
	var parts []string
	for n, v := range labels {
		if n != skip {
			parts = append(parts, n+"="+strconv.Quote(v))
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

func isMetricName(s string) bool {
	for i, c := range s {
		ok := c == '_' || c == ':' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') ||
			(i > 0 && '0' <= c && c <= '9')
		if !ok {
			return false
		}
	}
	return s != ""
}

func isLabelName(s string) bool { return isMetricName(s) && !strings.Contains(s, ":") }
