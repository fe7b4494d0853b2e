package tokens

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeClock is a Clock whose time moves only when a test calls Advance;
// timers that come due fire then.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*fakeTimer
	changed chan struct{} // closed and replaced whenever timers change
}

type fakeTimer struct {
	clk *fakeClock
	at  time.Time
	ch  chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{
		now:     time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
		changed: make(chan struct{}),
	}
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) NewTimer(d time.Duration) Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &fakeTimer{clk: f, at: f.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.ch <- f.now
		return t
	}
	f.timers = append(f.timers, t)
	f.notifyLocked()
	return t
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	f := t.clk
	f.mu.Lock()
	defer f.mu.Unlock()
	i := slices.Index(f.timers, t)
	if i < 0 {
		return false
	}
	f.timers = slices.Delete(f.timers, i, i+1)
	f.notifyLocked()
	return true
}

func (f *fakeClock) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// Advance moves time forward by d and fires the timers that come due.
func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	kept := f.timers[:0]
	for _, t := range f.timers {
		if t.at.After(f.now) {
			kept = append(kept, t)
			continue
		}
		t.ch <- f.now
	}
	clear(f.timers[len(kept):])
	f.timers = kept
	f.notifyLocked()
}

// AdvanceTo moves time forward to at.
func (f *fakeClock) AdvanceTo(at time.Time) { f.Advance(at.Sub(f.Now())) }

// waitTimers blocks until ok holds for the deadlines of the pending
// timers, and returns them sorted. It fails the test after 10s of real
// time: the code under test never got there.
func (f *fakeClock) waitTimers(t *testing.T, what string, ok func([]time.Time) bool) []time.Time {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		f.mu.Lock()
		ats := make([]time.Time, len(f.timers))
		for i, tm := range f.timers {
			ats[i] = tm.at
		}
		changed := f.changed
		f.mu.Unlock()
		slices.SortFunc(ats, time.Time.Compare)
		if ok(ats) {
			return ats
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("waiting for %s: pending timers %v", what, ats)
		}
	}
}

// waitTimerCount waits until n timers are pending.
func (f *fakeClock) waitTimerCount(t *testing.T, n int) []time.Time {
	t.Helper()
	return f.waitTimers(t, "pending timers", func(a []time.Time) bool { return len(a) == n })
}

// waitTimerAt waits until a timer is pending for exactly at.
func (f *fakeClock) waitTimerAt(t *testing.T, at time.Time) {
	t.Helper()
	f.waitTimers(t, "a timer at "+at.String(), func(a []time.Time) bool {
		return slices.ContainsFunc(a, at.Equal)
	})
}
