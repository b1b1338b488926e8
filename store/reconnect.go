package store

import (
	"context"
	"errors"
	"sync"
)

// dialWatch turns the stream of dial results into "reconnected" events: a
// successful dial after one or more failed ones.
type dialWatch struct {
	mu      sync.Mutex
	failing bool
	nextID  int
	fns     map[int]func()
}

func (w *dialWatch) observe(err error) {
	w.mu.Lock()
	if err != nil {
		w.failing = true
		w.mu.Unlock()
		return
	}
	if !w.failing {
		w.mu.Unlock()
		return
	}
	w.failing = false
	fns := make([]func(), 0, len(w.fns))
	for _, fn := range w.fns {
		fns = append(fns, fn)
	}
	w.mu.Unlock()
	for _, fn := range fns {
		go fn()
	}
}

func (w *dialWatch) add(fn func()) func() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fns == nil {
		w.fns = map[int]func(){}
	}
	id := w.nextID
	w.nextID++
	w.fns[id] = fn
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		delete(w.fns, id)
	}
}

// lost marks the connection as failing when a command failed because the
// server went away (not because the caller's context ran out, nor because a
// memcached call was not started behind a backlog of abandoned ones), so the
// next successful dial counts as a reconnect even though no dial failed.
func (w *dialWatch) lost(err error) {
	if Classify(err) == ClassUnavailable && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) &&
		!errors.Is(err, errBacklog) {
		w.observe(err)
	}
}
