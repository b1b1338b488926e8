// Package lifecycle is the one shape of the sidecar's long-lived parts:
// Start(ctx) begins the background work and returns, Shutdown(ctx) stops it
// and waits for it within ctx; both are safe to call twice, and Shutdown is
// safe without Start (the contract of the OpenTelemetry Collector's
// component.Component, component/component.go). Supervisor runs them in
// order and shuts them down in an explicit order under one budget.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Component is a long-lived part of the sidecar.
type Component interface {
	Start(ctx context.Context) error
	Shutdown(ctx context.Context) error
}

// Loop runs one background goroutine from Start until Shutdown. Components
// embed it and pass their loop to Start; the zero Loop is ready.
type Loop struct {
	mu      sync.Mutex
	started bool
	stopped bool
	cancel  context.CancelFunc
	done    chan struct{}
}

// Start runs fn(ctx) in a goroutine; the context it gets ends at Shutdown
// or when ctx ends. A second Start, or one after Shutdown, does nothing.
// The Supervisor starts components with a context that no signal cancels,
// so that they stop in its shutdown order rather than all at once.
func (l *Loop) Start(ctx context.Context, fn func(ctx context.Context)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.started || l.stopped {
		return
	}
	l.started = true
	ctx, l.cancel = context.WithCancel(ctx)
	l.done = make(chan struct{})
	go func() {
		defer close(l.done)
		fn(ctx)
	}()
}

// Shutdown cancels the loop and waits for it to return, or for ctx to end
// (then it returns ctx's error and the loop finishes on its own). Safe
// before Start and more than once.
func (l *Loop) Shutdown(ctx context.Context) error {
	l.mu.Lock()
	l.stopped = true
	cancel, done := l.cancel, l.done
	l.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	return Wait(ctx, done)
}

// Wait waits for done or for ctx to end, whichever comes first, preferring
// done: a loop that has finished counts as finished even when ctx has
// ended too (select alone would pick at random).
func Wait(ctx context.Context, done <-chan struct{}) error {
	select {
	case <-done:
		return nil
	default:
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		select {
		case <-done:
			return nil
		default:
			return ctx.Err()
		}
	}
}

// Done is closed when the loop has returned; nil before Start.
func (l *Loop) Done() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.done
}

// Step is one component of a Supervisor, named for its logs and errors.
type Step struct {
	Name      string
	Component Component
}

// Supervisor starts its steps in order and shuts them down in the order
// given to Shutdown's caller (see New): the sidecar stops accepting HTTP
// first, then drains, stops the stream, flushes traces and closes pools.
type Supervisor struct {
	start    []Step
	shutdown []Step

	mu      sync.Mutex
	started []Step
	done    bool
}

// New returns a supervisor that starts the steps of start in order and, at
// Shutdown, stops the started ones in the order of shutdown (steps match by
// Name); a started step missing from shutdown is stopped last, in reverse
// start order.
func New(start []Step, shutdown []Step) *Supervisor {
	return &Supervisor{start: start, shutdown: shutdown}
}

// Start starts every step in order and stops at the first that fails,
// returning its error; the caller then calls Shutdown, with its budget, to
// stop the ones already started (and the failed one, which may have
// started part of its work).
func (s *Supervisor) Start(ctx context.Context) error {
	for _, st := range s.start {
		err := st.Component.Start(ctx)
		s.mu.Lock()
		s.started = append(s.started, st)
		s.mu.Unlock()
		if err != nil {
			return fmt.Errorf("%s: %w", st.Name, err)
		}
	}
	return nil
}

// Shutdown stops every started step in the shutdown order within ctx's
// budget, each step getting what the previous ones left. It returns every
// step's error, each named. Safe twice and without Start.
func (s *Supervisor) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return nil
	}
	s.done = true
	started := s.started
	s.mu.Unlock()

	// Steps are matched by name, so that the two lists may hold different
	// adapters of one part.
	isStarted := map[string]Step{}
	for _, st := range started {
		isStarted[st.Name] = st
	}
	var order []Step
	for _, st := range s.shutdown {
		if started, ok := isStarted[st.Name]; ok {
			order = append(order, started)
			delete(isStarted, st.Name)
		}
	}
	for i := len(started) - 1; i >= 0; i-- {
		if _, ok := isStarted[started[i].Name]; ok {
			order = append(order, started[i])
		}
	}
	var errs []error
	for _, st := range order {
		if err := st.Component.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", st.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Funcs adapts a pair of functions to a Component; either may be nil.
type Funcs struct {
	StartFunc    func(ctx context.Context) error
	ShutdownFunc func(ctx context.Context) error

	once sync.Once
	err  error
}

// Start calls StartFunc.
func (f *Funcs) Start(ctx context.Context) error {
	if f.StartFunc == nil {
		return nil
	}
	return f.StartFunc(ctx)
}

// Shutdown calls ShutdownFunc once; later calls return its first result.
func (f *Funcs) Shutdown(ctx context.Context) error {
	f.once.Do(func() {
		if f.ShutdownFunc != nil {
			f.err = f.ShutdownFunc(ctx)
		}
	})
	return f.err
}
