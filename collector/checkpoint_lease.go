package collector

import "context"

// Lease is the exclusive lease that decides which replica exports traces
// and writes the shared checkpoint. Package coord implements it over the
// cache store (coord.Coordinator.Lease); this package only holds it, so
// that what reads the workflow database does not import the cache store.
//
// A holder that stalls for longer than the TTL loses the lease without
// knowing until its next renewal, so two replicas can both believe they
// hold it for up to one poll. The deterministic trace and span ids make
// what they both export the same spans, not a second trace.
type Lease interface {
	// Hold takes the lease if it is free, or renews it if this process
	// holds it, and reports whether this process holds it now. An error
	// wrapping errors.ErrUnsupported means the store refuses the lease's
	// operations: the lease then reports held, as every replica would be
	// without one.
	Hold(ctx context.Context) (bool, error)
	// Renew extends the lease if this process holds it, and never takes a
	// free one: taking over is the poll's job, because it must replay what
	// the previous holder left unexported first.
	Renew(ctx context.Context) (bool, error)
	// Held reports the outcome of the last Hold without asking the store.
	Held() bool
	// Holding reports whether this process holds the lease in the store,
	// not merely as a lease that cannot work.
	Holding() bool
	// Token identifies this holder.
	Token() string
	// Release gives the lease back if this process holds it.
	Release(ctx context.Context) error
}
