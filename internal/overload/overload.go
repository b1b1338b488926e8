// Package overload holds the one sentinel error for "too busy now, try again
// later", shared by the producers of such refusals (the coordinated cache's
// waiter bounds in ttl, the analytics admission queues) without making the
// workflow readers depend on the cache: analytics wraps it, ttl serves the
// last value when a computation fails with it, and the HTTP API answers it
// with 503 and Retry-After.
package overload

import "errors"

// Err is wrapped by every error that means "too busy now, try again later"
// rather than "this failed". ttl.ErrOverloaded is this same value.
var Err = errors.New("overloaded")
