// Package healthtest has the stand-ins the tests of the health endpoints,
// the readiness checks and the domain collector share: a refresher state
// set by hand, a fixed clock and a refused-connection error.
package healthtest

import (
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/tasker-systems/tasker-sidecar/collector"
)

// Now is the fixed clock of the tests.
var Now = time.Date(2025, 6, 18, 15, 30, 0, 123_000_000, time.UTC)

// ErrRefused looks like what pgx returns when PostgreSQL is down.
var ErrRefused = fmt.Errorf("collect health counts: %w",
	&net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 5), Port: 5432}, Err: syscall.ECONNREFUSED})

// Source is a refresher whose state the test sets.
type Source struct {
	mu sync.Mutex
	st collector.RefreshState
}

// State returns the state last set.
func (f *Source) State() collector.RefreshState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

// Set replaces the state.
func (f *Source) Set(st collector.RefreshState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st = st
}
