// Package ttl is the coordinated cache every expensive result goes through:
// an in-process level in front of the shared store picked by package
// detector, request coalescing, leases and early refresh across replicas, and
// adaptive TTLs (Tasker's formula, or cost-aware).
package ttl

import "context"

// Info says where a served value came from. It is rendered as the
// cache_info object of every cached response.
type Info struct {
	Cached     bool    `json:"cached"`      // served from a cache level, not computed for this request
	AgeSeconds float64 `json:"age_seconds"` // time since the value was computed
	TTLSeconds float64 `json:"ttl_seconds"` // freshness lifetime it was stored with
	Stale      bool    `json:"stale"`       // past its TTL, served because a refresh failed or is under way
}

// Getter serves the value of (resource, params), computing it with compute
// when no level has a usable copy. Values are JSON documents: they cross
// process boundaries through the shared store.
type Getter interface {
	Get(ctx context.Context, resource, params string, compute func(ctx context.Context) ([]byte, error)) ([]byte, Info, error)
}

// Uncached computes on every call; for tests and for caching disabled.
type Uncached struct{}

// Get computes the value.
func (Uncached) Get(ctx context.Context, _, _ string, compute func(ctx context.Context) ([]byte, error)) ([]byte, Info, error) {
	v, err := compute(ctx)
	return v, Info{}, err
}

var _ Getter = Uncached{}
