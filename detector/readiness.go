package detector

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"math"
	"strconv"
	"time"

	"github.com/tasker-systems/tasker-sidecar/store"
)

// Readiness statuses.
const (
	StatusHealthy   = "healthy"
	StatusDegraded  = "degraded"
	StatusUnhealthy = "unhealthy"
)

// ReadinessCheck is Tasker's readiness cache check
// (docs/tasker-semantics.md#readiness-cache-check):
// write tasker_readiness_check_<16 hex> = epoch seconds with a 60 s TTL,
// read it back, delete it. The details carry Tasker's fields (status,
// message, response_time_ms, cache_store, coordination_strategy, and on
// success distributed, atomic_operations, locking_support) plus
// coordination_mechanism, and conflicts when there are any.
//
// Status is healthy when the value round-trips, degraded when it does but a
// declared capability contradicts a probe, and unhealthy when it does not.
// Two departures from Tasker: none:// is degraded, not unhealthy ("no cache"
// is a configuration, not an outage, and should not keep a pod out of
// service), and a failure here feeds NotifyError so that a store which
// changed under us is re-detected.
func (d *Detector) ReadinessCheck(ctx context.Context) (string, map[string]any) {
	start := time.Now()
	rep := d.Report()
	cacheStore := rep.Store.Product
	if cacheStore == "" {
		cacheStore = d.st.Kind()
	}
	details := map[string]any{
		"cache_store":            cacheStore,
		"coordination_strategy":  rep.Strategy,
		"coordination_mechanism": rep.Mechanism,
	}
	elapsed := func() float64 {
		return math.Round(float64(time.Since(start).Microseconds())/10) / 100
	}

	if d.st.Kind() == store.KindNone {
		details["status"] = StatusDegraded
		details["message"] = "No cache store configured (none://): nothing is cached or shared"
		details["response_time_ms"] = elapsed()
		return StatusDegraded, details
	}

	b := make([]byte, 8)
	_, _ = rand.Read(b)
	key := "tasker_readiness_check_" + hex.EncodeToString(b)
	want := strconv.FormatInt(time.Now().Unix(), 10)
	err := d.st.Set(ctx, key, []byte(want), time.Minute)
	var got []byte
	var found bool
	if err == nil {
		got, found, err = d.st.Get(ctx, key)
	}
	if delErr := d.st.Delete(ctx, key); err == nil {
		err = delErr
	}
	details["response_time_ms"] = elapsed()
	if err != nil {
		d.NotifyError(err)
		details["status"] = StatusUnhealthy
		details["message"] = "Cache check failed: " + err.Error()
		details["error"] = errorName(err) + ": " + err.Error()
		return StatusUnhealthy, details
	}
	if !found || string(got) != want {
		details["status"] = StatusUnhealthy
		details["message"] = "Cache read/write test failed"
		details["error"] = "CacheTestFailed"
		return StatusUnhealthy, details
	}
	if !rep.Store.Reachable && !rep.Store.DetectedAt.IsZero() {
		// The store answers although the last detection found it down:
		// detect again rather than wait for the recheck tick.
		d.Rerun()
	}
	details["distributed"] = rep.Bool(Distributed)
	details["atomic_operations"] = rep.Bool(AtomicIncrement)
	details["locking_support"] = rep.Bool(Locking)
	if len(rep.Conflicts) > 0 {
		details["status"] = StatusDegraded
		details["message"] = "Cache is available, but declared capabilities contradict what the probes observed"
		details["conflicts"] = rep.Conflicts
		return StatusDegraded, details
	}
	details["status"] = StatusHealthy
	details["message"] = "Cache is available"
	return StatusHealthy, details
}

// errorName stands in for Tasker's exception class name.
func errorName(err error) string {
	switch store.Classify(err) {
	case store.ClassUnavailable:
		return "CacheUnavailable"
	case store.ClassPermission:
		return "CachePermissionDenied"
	case store.ClassProtocol:
		return "CacheProtocolError"
	}
	return "CacheError"
}
