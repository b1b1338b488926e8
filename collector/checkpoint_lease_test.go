package collector

import (
	"context"

	"github.com/tasker-systems/tasker-sidecar/coord"
	"github.com/tasker-systems/tasker-sidecar/store"
)

// The lease and the shared checkpoint are package coord's over a real
// store; its tests cover the lease itself (coord/lease_test.go).

// newLease is the stream lease the sidecar wires (internal/cli/run.go), on
// st with the conditional methods assumed before any detection.
func newLease(st store.Store, cfg LeaseConfig) (*coord.Lease, error) {
	return coord.New(st, nil).Lease(context.Background(), cfg.Key, cfg.TTL)
}

// checkpointsIn is st as the checkpoint's store.
func checkpointsIn(st store.Store) CheckpointStore { return coord.KeysOf(st) }
