package exporters

import "github.com/tasker-systems/tasker-sidecar/internal/healthtest"

// The shared stand-ins (internal/healthtest) under this package's names.
type fakeSource = healthtest.Source

var (
	testNow    = healthtest.Now
	errRefused = healthtest.ErrRefused
)
