package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

type redisOptions = redis.Options

func mustDuration(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestAbandonedCallsAreBounded: calls whose callers left at a deadline keep
// running until the server answers, but no more than maxAbandoned of them;
// beyond that a call fails at once instead of adding a goroutine.
func TestAbandonedCallsAreBounded(t *testing.T) {
	m := &Memcached{}
	release := make(chan struct{})
	var once sync.Once
	releaseAll := func() { once.Do(func() { close(release) }) }
	t.Cleanup(releaseAll)
	blocked := func() error { <-release; return nil }
	abandonedAll := make(chan error, 1)
	go func() {
		// Until maxAbandoned calls are abandoned: on a loaded machine a
		// 1 ms deadline can pass before a call starts, and such a call
		// returns without starting anything to abandon.
		for attempts := 0; m.abandoned.Load() < maxAbandoned; attempts++ {
			if attempts == 100*maxAbandoned {
				abandonedAll <- fmt.Errorf("only %d of %d calls abandoned", m.abandoned.Load(), maxAbandoned)
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
			err := m.call(ctx, blocked)
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				abandonedAll <- fmt.Errorf("call = %v, want the deadline", err)
				return
			}
		}
		abandonedAll <- nil
	}()
	select {
	case err := <-abandonedAll:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("calls did not return at their deadline")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	err := m.call(ctx, func() error { t.Error("a call started beyond the bound"); return nil })
	if !errors.Is(err, errBacklog) || Classify(err) != ClassUnavailable || time.Since(start) > 100*time.Millisecond {
		t.Fatalf("call beyond the bound = %v (%v) after %v", err, Classify(err), time.Since(start))
	}
	releaseAll()
	m.running.Wait()
	if n := m.abandoned.Load(); n != 0 {
		t.Errorf("%d calls still counted as abandoned after they ended", n)
	}
	if err := m.call(ctx, func() error { return nil }); err != nil {
		t.Errorf("call after the backlog drained = %v", err)
	}
}
