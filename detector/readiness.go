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

// Readiness is the outcome of ReadinessCheck: Tasker's fields (status,
// message, response_time_ms, error, cache_store, coordination_strategy,
// and on success distributed, atomic_operations, locking_support) plus
// coordination_mechanism, and conflicts when there are any.
type Readiness struct {
	Status         string
	Message        string
	ResponseTimeMS float64
	// Error is Tasker's "<class>: <message>", set when unhealthy.
	Error      string
	CacheStore string
	Strategy   string
	Mechanism  string
	// RoundTrip is set when the value round-tripped: then the capabilities
	// below are reported.
	RoundTrip        bool
	Distributed      bool
	AtomicOperations bool
	LockingSupport   bool
	Conflicts        []Conflict
}

// Details are the fields besides status, message, response time and error,
// under Tasker's names.
func (r Readiness) Details() map[string]any {
	d := map[string]any{
		"cache_store":            r.CacheStore,
		"coordination_strategy":  r.Strategy,
		"coordination_mechanism": r.Mechanism,
	}
	if r.RoundTrip {
		d["distributed"] = r.Distributed
		d["atomic_operations"] = r.AtomicOperations
		d["locking_support"] = r.LockingSupport
	}
	if len(r.Conflicts) > 0 {
		d["conflicts"] = r.Conflicts
	}
	return d
}

// Fields are all the fields under Tasker's names, as Tasker's check
// returns them.
func (r Readiness) Fields() map[string]any {
	d := r.Details()
	d["status"] = r.Status
	d["message"] = r.Message
	d["response_time_ms"] = r.ResponseTimeMS
	if r.Error != "" {
		d["error"] = r.Error
	}
	return d
}

// ReadinessCheck is Tasker's readiness cache check
// (docs/tasker-semantics.md#readiness-cache-check):
// write tasker_readiness_check_<16 hex> = epoch seconds with a 60 s TTL,
// read it back, delete it.
//
// Status is healthy when the value round-trips, degraded when it does but a
// declared capability contradicts a probe, and unhealthy when it does not.
// Two departures from Tasker: none:// is degraded, not unhealthy ("no cache"
// is a configuration, not an outage, and should not keep a pod out of
// service), and a failure here feeds NotifyError so that a store which
// changed under us is re-detected.
func (d *Detector) ReadinessCheck(ctx context.Context) Readiness {
	start := time.Now()
	rep := d.Report()
	res := Readiness{CacheStore: rep.Store.Product, Strategy: rep.Strategy, Mechanism: rep.Mechanism}
	if res.CacheStore == "" {
		res.CacheStore = d.st.Kind()
	}
	elapsed := func() float64 {
		return math.Round(float64(time.Since(start).Microseconds())/10) / 100
	}

	if d.st.Kind() == store.KindNone {
		res.Status = StatusDegraded
		res.Message = "No cache store configured (none://): nothing is cached or shared"
		res.ResponseTimeMS = elapsed()
		return res
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
	res.ResponseTimeMS = elapsed()
	if err != nil {
		d.NotifyError(err)
		res.Status = StatusUnhealthy
		res.Message = "Cache check failed: " + err.Error()
		res.Error = errorName(err) + ": " + err.Error()
		return res
	}
	if !found || string(got) != want {
		res.Status = StatusUnhealthy
		res.Message = "Cache read/write test failed"
		res.Error = "CacheTestFailed"
		return res
	}
	if !rep.Store.Reachable && !rep.Store.DetectedAt.IsZero() {
		// The store answers although the last detection found it down:
		// detect again rather than wait for the recheck tick.
		d.Rerun()
	}
	res.RoundTrip = true
	res.Distributed = rep.Bool(Distributed)
	res.AtomicOperations = rep.Bool(AtomicIncrement)
	res.LockingSupport = rep.Bool(Locking)
	if len(rep.Conflicts) > 0 {
		res.Status = StatusDegraded
		res.Message = "Cache is available, but declared capabilities contradict what the probes observed"
		res.Conflicts = rep.Conflicts
		return res
	}
	res.Status = StatusHealthy
	res.Message = "Cache is available"
	return res
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
