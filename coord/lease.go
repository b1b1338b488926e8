package coord

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/tasker-systems/tasker-sidecar/store"
)

// Lease is a small exclusive lease over a cache store: SetNX to take it,
// a token-checked compare-and-swap to renew it, compare-and-delete to give
// it back, with the conditional methods the detector reported. It decides
// which replica exports traces and writes the shared checkpoint
// (collector.Lease); the cache's per-key leases are the Mechanisms'.
//
// A holder that stalls for longer than the TTL loses the lease without
// knowing until its next renewal, so two replicas can both believe they
// hold it for up to one poll. The deterministic trace and span ids make
// what they both export the same spans, not a second trace.
type Lease struct {
	add   store.Adder
	c     *Coordinator
	key   string
	ttl   time.Duration
	token []byte
	now   func() time.Time

	mu      sync.Mutex
	held    bool
	renewed time.Time // last successful acquire or renewal
	// unusable is set when the store refuses the lease's operations after
	// Coordinator.Lease accepted it: the store was unreachable then, and a
	// later capability detection found no compare-and-swap, or the server
	// was replaced by one with fewer commands. The lease then behaves as if
	// there were none (every replica holds it) rather than changing hands
	// every TTL, and checks on each Hold whether the store works again.
	unusable bool
	probeKey string
}

// ErrNoLease is returned by Coordinator.Lease for a store that cannot hold a
// lease: one without atomic add and compare-and-swap, or a Redis on which
// no compare-and-swap method works (the capability detector found neither
// SET IFEQ nor EVAL). Such a lease could never be renewed and would change
// hands every TTL. It wraps errors.ErrUnsupported, which is how package
// collector, which does not import this one, recognises it.
var ErrNoLease = fmt.Errorf("the cache store cannot hold a lease (needs atomic add and compare-and-swap): %w", errors.ErrUnsupported)

// leaseProbeTimeout bounds Lease's compare-and-swap round trip.
const leaseProbeTimeout = 5 * time.Second

// Lease returns a lease under key. It fails with ErrNoLease when the store
// lacks the atomic operations a lease needs, or they do not work: a
// reachable Redis whose reported swap method is CondNone (the capability
// detector found none; with scripting off it starts without one), or a
// compare-and-swap on a probe key that the store refuses as unsupported or
// unknown. A store that
// does not answer cannot tell; the lease is returned and behaves as with a
// store that is down until it answers (for a Redis without a method yet, as
// no lease until one works: see Lease.unusable).
func (c *Coordinator) Lease(ctx context.Context, key string, ttl time.Duration) (*Lease, error) {
	st := c.st
	add, ok := st.(store.Adder)
	if !ok || !CanSwap(st) {
		return nil, fmt.Errorf("%s: %w", st.Kind(), ErrNoLease)
	}
	if ttl <= 0 || key == "" {
		return nil, errors.New("lease: key and a positive ttl are required")
	}
	buf := make([]byte, 12)
	_, _ = rand.Read(buf)
	host, _ := os.Hostname()
	// The holder's name in the token lets an operator see who holds it.
	token := fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(buf))
	l := &Lease{add: add, c: c, key: key, ttl: ttl, token: []byte(token), now: time.Now,
		probeKey: key + ":probe:" + hex.EncodeToString(buf)}
	if _, ok := st.(*store.Redis); ok {
		if c.methods().Swap == CondNone {
			// The detector found no method, or could not ask a store that
			// is down (with scripting off it starts without one). Only a
			// store that answers settles it; otherwise the lease starts
			// unusable, acting as none, until a re-detection finds one.
			ctx, cancel := context.WithTimeout(ctx, min(ttl, leaseProbeTimeout))
			err := st.Ping(ctx)
			cancel()
			if err == nil {
				return nil, fmt.Errorf("%s: no working compare-and-swap (neither SET IFEQ nor EVAL): %w", st.Kind(), ErrNoLease)
			}
			l.unusable = true
			return l, nil
		}
	}
	if err := probeSwap(ctx, c, l.probeKey, min(ttl, leaseProbeTimeout)); refused(err) {
		return nil, fmt.Errorf("%s: compare-and-swap does not work: %w (%w)", st.Kind(), ErrNoLease, err)
	}
	return l, nil
}

// probeSwap runs one compare-and-swap on a key that does not exist: a
// working store answers "no swap" without writing anything.
func probeSwap(ctx context.Context, c *Coordinator, key string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err := c.CompareAndSwap(ctx, key, []byte("-"), []byte("-"), timeout)
	return err
}

// CanSwap reports whether st has an atomic compare-and-swap at all (which
// method works on a Redis is the detector's to find).
func CanSwap(st store.Store) bool {
	switch st.(type) {
	case *store.Redis, *store.Memcached, store.Swapper:
		return true
	}
	return false
}

// refused reports whether err means the store refused a lease operation
// itself (unsupported, an unknown command or bad syntax, not permitted),
// as opposed to not answering, which cannot tell.
func refused(err error) bool {
	switch store.Classify(err) {
	case store.ClassUnsupported, store.ClassProtocol:
		return true
	case store.ClassPermission:
		// NOPERM (an ACL without EVAL) is final; a replica that is read-only
		// during a failover is not.
		return !strings.Contains(err.Error(), "READONLY")
	}
	return false
}

// Token identifies this holder.
func (l *Lease) Token() string { return string(l.token) }

// Hold takes the lease if it is free, or renews it if this process holds
// it, and reports whether this process holds it now. When the store
// cannot be reached the lease is assumed held until its TTL would have run
// out since the last renewal, and lost after. When the store refuses the
// lease's operations, Hold reports it held, as every replica would without
// a lease; the first time, its error wraps ErrNoLease.
func (l *Lease) Hold(ctx context.Context) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.unusable {
		if _, err := l.c.CompareAndSwap(ctx, l.probeKey, []byte("-"), []byte("-"), l.ttl); err != nil {
			return true, nil // still refused, or cannot tell yet
		}
		l.unusable = false // works again: take the lease afresh
	}
	if l.held {
		if ok, err := l.renew(ctx); ok || err != nil {
			return ok, err
		}
		// Expired, and possibly taken by another replica: try to take it.
	}
	now := l.now()
	ok, err := l.add.SetNX(ctx, l.key, l.token, l.ttl)
	if err != nil {
		if refused(err) {
			return l.refuse(err)
		}
		return false, fmt.Errorf("acquire lease: %w", err)
	}
	if ok {
		l.held, l.renewed = true, now
	}
	return l.held, nil
}

// refuse switches the lease to unusable (see the field). Called with mu held.
func (l *Lease) refuse(err error) (bool, error) {
	l.unusable, l.held = true, false
	return true, fmt.Errorf("%w: %w; every replica exports until it can", ErrNoLease, err)
}

// Renew extends the lease if this process holds it, and never takes a
// free one: taking over is the poll's job, because it must replay what
// the previous holder left unexported first.
func (l *Lease) Renew(ctx context.Context) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.unusable {
		return true, nil
	}
	if !l.held {
		return false, nil
	}
	return l.renew(ctx)
}

// renew extends a held lease by a token-checked compare-and-swap and
// reports whether it is still held. When the store cannot be reached the
// lease counts as held until its TTL since the last renewal runs out.
// Called with mu held.
func (l *Lease) renew(ctx context.Context) (bool, error) {
	now := l.now()
	ok, err := l.c.CompareAndSwap(ctx, l.key, l.token, l.token, l.ttl)
	if err != nil {
		if refused(err) {
			return l.refuse(err)
		}
		l.held = now.Sub(l.renewed) < l.ttl
		return l.held, fmt.Errorf("renew lease: %w", err)
	}
	l.held = ok
	if ok {
		l.renewed = now
	}
	return ok, nil
}

// Held reports the outcome of the last Hold without asking the store.
func (l *Lease) Held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held || l.unusable
}

// Holding reports whether this process holds the lease in the store,
// not merely as a lease that cannot work.
func (l *Lease) Holding() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held
}

// Renewed is when this process last took or renewed the lease.
func (l *Lease) Renewed() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.renewed
}

// Release gives the lease back if this process holds it, so another replica
// can take over at once instead of after the TTL.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.held {
		return nil // also when unusable: there is nothing to give back
	}
	l.held = false
	if _, err := l.c.CompareAndDelete(ctx, l.key, l.token); err != nil {
		return fmt.Errorf("release lease: %w", err)
	}
	return nil
}
