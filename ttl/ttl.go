// Package ttl is the coordinated cache every expensive result goes through:
// an in-process level in front of the shared store picked by package
// detector, request coalescing, leases and early refresh across replicas, and
// adaptive TTLs (Tasker's formula, or cost-aware).
package ttl

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/overload"
)

// Info says where a served value came from. It is rendered as the
// cache_info object of every cached response.
type Info struct {
	Cached     bool    `json:"cached"`      // served from a cache level, not computed for this request
	AgeSeconds float64 `json:"age_seconds"` // time since the value was computed
	TTLSeconds float64 `json:"ttl_seconds"` // freshness lifetime it was stored with
	Stale      bool    `json:"stale"`       // past its TTL, served because a refresh failed or is under way, or the resource is overloaded
}

// Getter serves the value of (resource, params), computing it with compute
// when no level has a usable copy. Values are JSON documents: they cross
// process boundaries through the shared store.
type Getter interface {
	Get(ctx context.Context, resource, params string, compute func(ctx context.Context) ([]byte, error), opts ...Option) ([]byte, Info, error)
}

// Option changes how one Get call is cached.
type Option func(*options)

type options struct {
	localOnly bool
}

func getOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	return o
}

// LocalOnly keeps the value in the in-process level only: no shared-store
// read or write, no lease. Requests are still coalesced within the replica.
// For keys whose parameters a client can vary freely (any period, any id
// combination), so that a flood of distinct requests cannot fill the store
// that the replicas, and Tasker itself, share.
func LocalOnly() Option {
	return func(o *options) { o.localOnly = true }
}

// ErrOverloaded is wrapped by every error that means "too busy now, try
// again later" rather than "this failed": a resource at its waiter cap, a
// request whose deadline passed while it waited for a computation (both
// *OverloadedError), or a compute function whose own queue is full. The HTTP
// layer answers it with 503 and a Retry-After header (see RetryAfter). It is
// internal/overload's sentinel, so that a compute function can wrap it
// without importing this package.
var ErrOverloaded = overload.Err

// OverloadedError is the error of a request the cache turned away with
// nothing servable: errors.Is(err, ErrOverloaded) holds, and for reason
// "deadline" errors.Is(err, context.DeadlineExceeded) too.
type OverloadedError struct {
	Resource string
	// Reason is "waiters" (the resource had max_waiters requests waiting
	// for cold computations, or as many computations running) or
	// "deadline" (the request's context ended while it waited).
	Reason string
	// RetryAfter is when trying again is worth it: about the time the
	// computation it would wait for takes, at least a second.
	RetryAfter time.Duration
	// Err is the request's context error for reason "deadline".
	Err error
}

func (e *OverloadedError) Error() string {
	msg := fmt.Sprintf("%s: %s: ", e.Resource, ErrOverloaded)
	if e.Reason == RejectDeadline {
		msg += "deadline reached while waiting for the computation"
	} else {
		msg += "too many requests waiting for computations"
	}
	return msg + fmt.Sprintf("; retry in %s", e.RetryAfter)
}

// Unwrap makes errors.Is find ErrOverloaded and the context's error.
func (e *OverloadedError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrOverloaded}
	}
	return []error{ErrOverloaded, e.Err}
}

// Reasons of a rejection (OverloadedError.Reason, and the reason label of
// tasker_sidecar_cache_rejections_total).
const (
	RejectWaiters  = "waiters"
	RejectDeadline = "deadline"
)

// RetryAfter returns the delay an *OverloadedError in err's chain suggests
// for a Retry-After header. ok is false when there is none (other errors
// that wrap ErrOverloaded carry no estimate: the caller picks its own).
func RetryAfter(err error) (time.Duration, bool) {
	var oe *OverloadedError
	if errors.As(err, &oe) {
		return oe.RetryAfter, true
	}
	return 0, false
}

// Uncached computes on every call; for tests and for caching disabled.
type Uncached struct{}

// Get computes the value.
func (Uncached) Get(ctx context.Context, _, _ string, compute func(ctx context.Context) ([]byte, error), _ ...Option) ([]byte, Info, error) {
	v, err := compute(ctx)
	return v, Info{}, err
}

var _ Getter = Uncached{}
