package tokens

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestSecret_NeverPrints(t *testing.T) {
	const value = "s3cr3t-value"
	s := Secret(value)
	type wrapper struct{ S Secret }
	outputs := []string{
		fmt.Sprint(s), fmt.Sprintf("%v %s %q %x %X %#v %+v", s, s, s, s, s, s, s),
		fmt.Sprintf("%v %+v %#v", wrapper{s}, wrapper{s}, wrapper{s}),
		fmt.Sprint(&s), fmt.Errorf("wrap: %w", fmt.Errorf("%v", s)).Error(),
	}
	js, err := json.Marshal(wrapper{s})
	if err != nil {
		t.Fatal(err)
	}
	outputs = append(outputs, string(js))
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("msg", "secret", s, "w", wrapper{s})
	outputs = append(outputs, buf.String())
	for _, out := range outputs {
		if strings.Contains(out, "s3cr3t") || !strings.Contains(out, Redacted) {
			t.Errorf("output %q: want %q and no part of the value", out, Redacted)
		}
	}
	if got := s.Reveal(); got != value {
		t.Errorf("Reveal() = %q, want %q", got, value)
	}
}
