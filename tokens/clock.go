package tokens

import "time"

// Clock is the time source of a Client, Cache and Shared. Tests inject a
// fake one whose timers fire when the test moves time forward.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that sends on its channel once d has passed.
	NewTimer(d time.Duration) Timer
}

// Timer is the part of time.Timer that this package uses.
type Timer interface {
	C() <-chan time.Time
	// Stop prevents the timer from firing; see time.Timer.Stop.
	Stop() bool
}

// RealClock is the wall clock; a nil Clock in any config means RealClock.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// NewTimer returns a time.Timer behind the Timer interface.
func (RealClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time { return r.t.C }
func (r realTimer) Stop() bool          { return r.t.Stop() }

func clockOrReal(c Clock) Clock {
	if c == nil {
		return RealClock{}
	}
	return c
}
