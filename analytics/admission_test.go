package analytics

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/ttl"
)

// waitFor polls cond until it holds or the test's context ends: the
// admission state changes in other goroutines, with no event to wait on.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx := testCtx(t)
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(time.Millisecond):
		}
	}
}

// TestLookupsPassSaturatedAggregates: with the expensive class's connection
// held by a computation blocked in the database and its queue full, a
// further aggregate is refused at once, one whose deadline passes while it
// waits is refused, and a per-task lookup still completes on its own
// connection. Before the classes, the lookup queued behind every aggregate.
func TestLookupsPassSaturatedAggregates(t *testing.T) {
	db := pgtest.NewTasker(t)
	var task int64
	commit(t, db, func(f *fixture) {
		task = f.task(f.namedTask("pay", "charge", "1.0.0"), time.Minute)
		f.step(task, "a", stepOpts{attempts: i32(0)})
	})
	const waiters = 2
	svc := New(servicePool(t, db.URL), Config{MaxConcurrent: 1, MaxWaiters: waiters}, nil)
	ctx := testCtx(t)

	// The blocked aggregate waits on an advisory lock another session holds.
	locker := db.Conn(t)
	if _, err := locker.Exec(ctx, "SELECT pg_advisory_lock(4242)"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 1+waiters)
	blocked := func() {
		defer wg.Done()
		errs <- svc.read(ctx, ClassExpensive, "blocked", func(q querier) error {
			_, err := q.Exec(ctx, "SELECT pg_advisory_xact_lock_shared(4242)")
			return err
		})
	}
	wg.Add(1)
	go blocked()
	waitFor(t, "the aggregate to hold its connection", func() bool {
		return testutil.ToFloat64(svc.adm.inUse.WithLabelValues(ClassExpensive)) == 1
	})
	for range waiters {
		wg.Add(1)
		go blocked()
	}
	waitFor(t, "the queue to fill", func() bool {
		return testutil.ToFloat64(svc.adm.depth.WithLabelValues(ClassExpensive)) == waiters
	})
	if busy, msg := svc.Saturated(); !busy || !strings.Contains(msg, "expensive") {
		t.Errorf("saturated = %v %q", busy, msg)
	}

	// Past the waiter cap: refused at once, without a database round trip.
	_, err := svc.Performance(ctx, nil)
	var oe *OverloadedError
	if !errors.Is(err, ttl.ErrOverloaded) || !errors.As(err, &oe) || oe.Reason != ReasonQueueFull || oe.RetryAfter() <= 0 {
		t.Errorf("performance past the cap: %v", err)
	}

	// Lookups have their own connection.
	contexts, missing, err := svc.TaskContexts(ctx, []int64{task})
	if err != nil || len(contexts) != 1 || contexts[0].TaskID != task || len(missing) != 0 {
		t.Errorf("lookup while aggregates are saturated: %+v %v %v", contexts, missing, err)
	}

	// Free a waiter's place, then wait past a deadline.
	if _, err := locker.Exec(ctx, "SELECT pg_advisory_unlock(4242)"); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("a blocked aggregate failed: %v", err)
		}
	}

	release, err := svc.adm.gates[ClassExpensive].enter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	_, err = svc.Bottlenecks(short, BottleneckQuery{PeriodHours: 1})
	if !errors.Is(err, ttl.ErrOverloaded) || !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &oe) || oe.Reason != ReasonDeadline {
		t.Errorf("bottlenecks past its deadline: %v", err)
	}
	release()

	for reason, want := range map[string]float64{ReasonQueueFull: 1, ReasonDeadline: 1} {
		if got := testutil.ToFloat64(svc.adm.rejections.WithLabelValues(ClassExpensive, reason)); got != want {
			t.Errorf("rejections{reason=%s} = %v, want %v", reason, got, want)
		}
	}
	if got := testutil.ToFloat64(svc.adm.rejections.WithLabelValues(ClassLookup, ReasonQueueFull)); got != 0 {
		t.Errorf("lookup rejections %v", got)
	}
	if busy, _ := svc.Saturated(); busy {
		t.Error("still saturated after the queue drained")
	}
	if problems, err := testutil.CollectAndLint(svc); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// TestAdmissionDefaults: the classes and their caps as documented.
func TestAdmissionDefaults(t *testing.T) {
	svc := New(servicePool(t, pgtest.NewTasker(t).URL), Config{}, nil)
	want := `
# HELP tasker_sidecar_analytics_max_concurrent Configured cap of open analytics transactions, by admission class.
# TYPE tasker_sidecar_analytics_max_concurrent gauge
tasker_sidecar_analytics_max_concurrent{class="expensive"} 1
tasker_sidecar_analytics_max_concurrent{class="lookup"} 1
# HELP tasker_sidecar_analytics_max_waiters Configured cap of analytics computations waiting for a connection, by admission class.
# TYPE tasker_sidecar_analytics_max_waiters gauge
tasker_sidecar_analytics_max_waiters{class="expensive"} 8
tasker_sidecar_analytics_max_waiters{class="lookup"} 64
`
	if err := testutil.CollectAndCompare(svc, strings.NewReader(want),
		"tasker_sidecar_analytics_max_concurrent", "tasker_sidecar_analytics_max_waiters"); err != nil {
		t.Error(err)
	}
	if err := svc.read(testCtx(t), "nope", "x", func(querier) error { return nil }); !errors.Is(err, errUnknownClass) {
		t.Errorf("unknown class: %v", err)
	}
}
