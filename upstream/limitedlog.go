package upstream

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// LimitedLog writes at most burst lines per period and counts the rest;
// the first line of a later period carries the count as "suppressed".
// Lines that a client or an upstream can cause go through one, so that a
// flood of bad requests or a failing upstream cannot fill the disk.
type LimitedLog struct {
	log    *slog.Logger
	period time.Duration
	burst  int
	now    func() time.Time

	mu         sync.Mutex // guards the fields below
	start      time.Time
	written    int
	suppressed int
}

// NewLimitedLog returns a LimitedLog writing to log.
func NewLimitedLog(log *slog.Logger, period time.Duration, burst int) *LimitedLog {
	return &LimitedLog{log: log, period: period, burst: burst, now: time.Now}
}

// Log writes one line at level unless the period's lines are spent.
func (l *LimitedLog) Log(ctx context.Context, level slog.Level, msg string,
	attrs ...slog.Attr) {
	if !l.log.Enabled(ctx, level) {
		return
	}
	l.mu.Lock()
	now := l.now()
	if now.Sub(l.start) >= l.period {
		if l.suppressed > 0 {
			attrs = append(attrs, slog.Int("suppressed", l.suppressed))
		}
		l.start, l.written, l.suppressed = now, 0, 0
	}
	if l.written >= l.burst {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	l.written++
	l.mu.Unlock()
	l.log.LogAttrs(ctx, level, msg, attrs...)
}
