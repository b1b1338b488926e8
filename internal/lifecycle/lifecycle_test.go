package lifecycle

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLoopStartShutdown(t *testing.T) {
	var l Loop
	if err := l.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown before Start: %v", err)
	}

	var l2 Loop
	runs := make(chan struct{}, 2)
	ended := make(chan struct{})
	fn := func(ctx context.Context) {
		runs <- struct{}{}
		<-ctx.Done()
		close(ended)
	}
	l2.Start(context.Background(), fn)
	l2.Start(context.Background(), fn) // a second Start does nothing
	<-runs
	if err := l2.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case <-ended:
	default:
		t.Fatal("Shutdown returned before the loop did")
	}
	if err := l2.Shutdown(context.Background()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if len(runs) != 0 {
		t.Fatal("the second Start ran the loop again")
	}
	l2.Start(context.Background(), fn) // after Shutdown: nothing
	if len(runs) != 0 {
		t.Fatal("Start after Shutdown ran the loop")
	}
}

func TestLoopShutdownBudget(t *testing.T) {
	var l Loop
	release := make(chan struct{})
	l.Start(context.Background(), func(context.Context) { <-release }) // ignores its context
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := l.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown of a stuck loop = %v, want the budget's deadline", err)
	}
}

func TestLoopCallerContextEndsLoop(t *testing.T) {
	var l Loop
	ctx, cancel := context.WithCancel(context.Background())
	l.Start(ctx, func(ctx context.Context) { <-ctx.Done() })
	cancel()
	<-l.Done()
}

type recorder struct {
	name     string
	log      *[]string
	startErr error
	stopErr  error
}

func (r *recorder) Start(context.Context) error {
	*r.log = append(*r.log, "start "+r.name)
	return r.startErr
}

func (r *recorder) Shutdown(context.Context) error {
	*r.log = append(*r.log, "stop "+r.name)
	return r.stopErr
}

func TestSupervisorOrder(t *testing.T) {
	for _, tc := range []struct {
		name      string
		failStart string // the step whose Start fails
		want      []string
		wantErr   string
	}{
		{
			name: "explicit order, then reverse start order",
			want: []string{"start pools", "start stream", "start traces", "start http",
				"stop http", "stop stream", "stop traces", "stop pools"},
		},
		{
			name:      "after a failed start, Shutdown stops what started and the failed step",
			failStart: "traces",
			want:      []string{"start pools", "start stream", "start traces", "stop stream", "stop traces", "stop pools"},
			wantErr:   "traces: boom",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log []string
			steps := map[string]*recorder{}
			for _, n := range []string{"pools", "stream", "traces", "http"} {
				steps[n] = &recorder{name: n, log: &log}
			}
			if tc.failStart != "" {
				steps[tc.failStart].startErr = errors.New("boom")
			}
			step := func(n string) Step { return Step{Name: n, Component: steps[n]} }
			s := New([]Step{step("pools"), step("stream"), step("traces"), step("http")},
				[]Step{step("http"), step("stream"), step("traces")})
			err := s.Start(context.Background())
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("Start = %v, want %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if err := s.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			if err := s.Shutdown(context.Background()); err != nil { // safe twice
				t.Fatal(err)
			}
			if !slices.Equal(log, tc.want) {
				t.Fatalf("calls:\n%s\nwant:\n%s", strings.Join(log, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// Shutdown matches steps by name: the shutdown list may hold another
// adapter of a part than the start list.
func TestSupervisorMatchesByName(t *testing.T) {
	var log []string
	a1, a2 := &recorder{name: "a", log: &log}, &recorder{name: "a-other", log: &log}
	b := &recorder{name: "b", log: &log}
	s := New([]Step{{"a", a1}, {"b", b}}, []Step{{"a", a2}, {"b", b}})
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(log, []string{"start a", "start b", "stop a", "stop b"}) {
		t.Fatalf("calls %v: a first, as the shutdown list says, through the started adapter", log)
	}
}

// Wait prefers a finished loop to an ended context: a select over both
// would pick at random when both are ready.
func TestWaitPrefersDone(t *testing.T) {
	done := make(chan struct{})
	close(done)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for i := range 200 {
		if err := Wait(ctx, done); err != nil {
			t.Fatalf("try %d: Wait = %v with the loop done", i, err)
		}
	}
	if err := Wait(ctx, make(chan struct{})); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait on a running loop = %v, want the context's error", err)
	}
}

func TestSupervisorShutdownErrorsNamed(t *testing.T) {
	var log []string
	a := &recorder{name: "a", log: &log, stopErr: errors.New("stuck")}
	b := &recorder{name: "b", log: &log}
	s := New([]Step{{"a", a}, {"b", b}}, nil)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	err := s.Shutdown(context.Background())
	if err == nil || err.Error() != "a: stuck" {
		t.Fatalf("Shutdown = %v, want a: stuck", err)
	}
	if !slices.Equal(log, []string{"start a", "start b", "stop b", "stop a"}) {
		t.Fatalf("calls %v: every step is stopped even after one fails", log)
	}
}

func TestFuncs(t *testing.T) {
	n := 0
	f := &Funcs{ShutdownFunc: func(context.Context) error { n++; return errors.New("x") }}
	if err := f.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	e1, e2 := f.Shutdown(context.Background()), f.Shutdown(context.Background())
	if n != 1 || e1 == nil || e2 == nil {
		t.Fatalf("ShutdownFunc ran %d times (errors %v, %v), want once with its error kept", n, e1, e2)
	}
}
