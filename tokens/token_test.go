package tokens

import (
	"testing"
	"time"
)

func TestNewToken_TimeRules(t *testing.T) {
	sent := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name          string
		lifetime, ttl time.Duration
		wantLifetime  time.Duration
		fresh, usable time.Duration // after sent
	}{
		{"no expires_in: ttl is the lifetime", 0, 5 * time.Minute,
			5 * time.Minute, 270 * time.Second, 270 * time.Second},
		{"negative lifetime treated as absent", -time.Second, time.Minute,
			time.Minute, 54 * time.Second, 54 * time.Second},
		{"zero ttl means 5m", time.Hour, 0, time.Hour, 5 * time.Minute, time.Hour - 30*time.Second},
		{"hour with 5m ttl: ttl caps freshness", time.Hour, 5 * time.Minute,
			time.Hour, 5 * time.Minute, time.Hour - 30*time.Second},
		{"10s lifetime: 1s skew", 10 * time.Second, 5 * time.Minute,
			10 * time.Second, 9 * time.Second, 9 * time.Second},
		{"300s lifetime: skew exactly 30s", 300 * time.Second, time.Hour,
			300 * time.Second, 270 * time.Second, 270 * time.Second},
		{"301s lifetime: skew capped at 30s", 301 * time.Second, time.Hour,
			301 * time.Second, 271 * time.Second, 271 * time.Second},
		{"ttl above lifetime-skew does not extend", 60 * time.Second, 58 * time.Second,
			60 * time.Second, 54 * time.Second, 54 * time.Second},
		{"century lifetime clamped to a year", 100 * 365 * 24 * time.Hour, time.Minute,
			MaxLifetime, time.Minute, MaxLifetime - 30*time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := NewToken("v", sent, tt.lifetime, tt.ttl)
			if tok.Lifetime != tt.wantLifetime {
				t.Errorf("got lifetime %s, want %s", tok.Lifetime, tt.wantLifetime)
			}
			if got := tok.FreshUntil.Sub(sent); got != tt.fresh {
				t.Errorf("got fresh for %s, want %s", got, tt.fresh)
			}
			if got := tok.UsableUntil.Sub(sent); got != tt.usable {
				t.Errorf("got usable for %s, want %s", got, tt.usable)
			}
			if !tok.SentAt.Equal(sent) || tok.Value.Reveal() != "v" {
				t.Errorf("got sent %v value %q, want %v and v", tok.SentAt, tok.Value.Reveal(), sent)
			}
		})
	}
}

func TestToken_FreshAndUsableBoundaries(t *testing.T) {
	sent := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tok := NewToken("v", sent, 10*time.Minute, time.Minute) // fresh 1m, usable 9m30s
	tests := []struct {
		at            time.Duration
		fresh, usable bool
	}{
		{0, true, true},
		{time.Minute - time.Nanosecond, true, true},
		{time.Minute, false, true},
		{9*time.Minute + 30*time.Second - time.Nanosecond, false, true},
		{9*time.Minute + 30*time.Second, false, false},
		{time.Hour, false, false},
	}
	for _, tt := range tests {
		now := sent.Add(tt.at)
		if got := tok.Fresh(now); got != tt.fresh {
			t.Errorf("Fresh at +%s: got %v, want %v", tt.at, got, tt.fresh)
		}
		if got := tok.Usable(now); got != tt.usable {
			t.Errorf("Usable at +%s: got %v, want %v", tt.at, got, tt.usable)
		}
	}
	var zero Token
	if zero.Fresh(sent) || zero.Usable(time.Time{}.Add(-time.Hour)) {
		t.Error("the zero Token is fresh or usable, want neither")
	}
}
