package tokens

import (
	"context"
	"time"
)

// Start fetches the first token and keeps the cache refreshed ahead of
// time, in the background; it returns at once and the loop ends with ctx.
// A failed warm-up is logged and retried with backoff. Call it once.
func (c *Cache) Start(ctx context.Context) {
	go c.loop(ctx)
}

// loop plans the next fetch, waits for it or for a kick (a flight landed,
// a token was invalidated) and re-plans.
func (c *Cache) loop(ctx context.Context) {
	for {
		due := c.nextDue()
		if wait := due.Sub(c.clock.Now()); wait > 0 {
			if !c.sleep(ctx, wait) {
				return
			}
			continue // re-plan: the state may have changed meanwhile
		}
		f := c.join()
		select {
		case <-f.done:
		case <-ctx.Done():
			return
		}
		select { // this flight's own kick: the plan below already sees its result
		case <-c.kick:
		default:
		}
	}
}

// nextDue is when the next background fetch should start.
func (c *Cache) nextDue() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.inflight != nil:
		return c.clock.Now() // join it
	case c.lastErr != nil:
		return c.retryAt
	case c.cur.Load() == nil:
		return time.Time{} // nothing to serve: now
	default:
		return c.refreshAt
	}
}

// sleep waits d, or less if kicked; false when ctx is done.
func (c *Cache) sleep(ctx context.Context, d time.Duration) bool {
	t := c.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
	case <-c.kick:
	case <-ctx.Done():
		return false
	}
	return true
}

// join returns the flight in the air, starting one if there is none.
func (c *Cache) join() *flight {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inflight != nil {
		return c.inflight
	}
	return c.startLocked()
}
