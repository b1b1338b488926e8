package simulate

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

func TestBackoffSeconds(t *testing.T) {
	// Values pinned by Tasker's spec/lib/tasker/types/backoff_config_spec.rb.
	for _, tc := range []struct{ n, want int }{
		{-1, 0}, {0, 0}, {1, 1}, {2, 2}, {3, 4}, {6, 32}, {7, 49}, {17, 289}, {18, 300}, {100, 300},
	} {
		if got := backoffSeconds(tc.n, nil, false); got != tc.want {
			t.Errorf("calc(%d) = %d, want %d", tc.n, got, tc.want)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct{ n, lo, hi int }{
		{1, 1, 1}, {4, 7, 9}, {6, 29, 35}, {100, 270, 330},
	} {
		for range 200 {
			if got := backoffSeconds(tc.n, r, true); got < tc.lo || got > tc.hi {
				t.Fatalf("calc(%d) with jitter = %d, want in [%d, %d]", tc.n, got, tc.lo, tc.hi)
			}
		}
	}
}

func TestFailureBackoff(t *testing.T) {
	for _, tc := range []struct {
		attempts int32
		want     time.Duration
	}{{0, time.Second}, {1, 2 * time.Second}, {2, 4 * time.Second}, {4, 16 * time.Second}, {5, 30 * time.Second}, {9, 30 * time.Second}} {
		if got := failureBackoff(tc.attempts); got != tc.want {
			t.Errorf("failureBackoff(%d) = %v, want %v", tc.attempts, got, tc.want)
		}
	}
}

func TestStateMachines(t *testing.T) {
	for _, tc := range []struct {
		task     bool
		from, to state
		ok       bool
	}{
		{true, none, inProgress, true},
		{true, none, pending, false}, // idempotent pending → pending is rejected
		{true, none, complete, false},
		{true, inProgress, pending, true},
		{true, errored, inProgress, false},
		{true, errored, resolved, true},
		{true, complete, cancelled, true},
		{true, cancelled, pending, false},
		{false, none, resolved, true},
		{false, none, complete, false},
		{false, errored, inProgress, false}, // retries go through pending
		{false, errored, pending, true},
		{false, complete, cancelled, false},
		{false, inProgress, pending, false},
	} {
		got := stepMoveAllowed(tc.from, tc.to)
		if tc.task {
			got = taskMoveAllowed(tc.from, tc.to)
		}
		if got != tc.ok {
			t.Errorf("task=%v %q → %q allowed = %v, want %v", tc.task, tc.from, tc.to, got, tc.ok)
		}
	}
}

func TestCatalogShapes(t *testing.T) {
	c := buildCatalog(append(DefaultNamespaces(), "billing"))
	shapes := map[string]bool{}
	for _, ns := range c.namespaces {
		versions := map[string]int{}
		for _, d := range c.byNamespace[ns] {
			shapes[d.shape] = true
			versions[d.name]++
			t.Run(ns+"/"+d.name+"@"+d.version, func(t *testing.T) {
				names := map[string]bool{}
				for _, s := range d.steps {
					if names[s.name] {
						t.Errorf("step %s twice", s.name)
					}
					names[s.name] = true
					if s.mean <= 0 || s.retryLimit < 1 {
						t.Errorf("step %s: mean %v limit %d", s.name, s.mean, s.retryLimit)
					}
				}
				seen := map[[2]int]bool{}
				for _, e := range d.edges {
					if e[0] < 0 || e[1] < 0 || e[0] >= len(d.steps) || e[1] >= len(d.steps) || e[0] == e[1] || seen[e] {
						t.Errorf("bad edge %v", e)
					}
					seen[e] = true
				}
				if order := topoOrder(d); len(order) != len(d.steps) {
					t.Errorf("edges have a cycle")
				}
				roots := 0
				for i := range d.steps {
					if len(d.parents[i]) == 0 {
						roots++
					}
				}
				if roots != 1 {
					t.Errorf("%d roots, want 1", roots)
				}
			})
		}
		if len(versions) < 2 {
			t.Errorf("%s has %d named tasks, want several", ns, len(versions))
		}
		multi := false
		for _, n := range versions {
			multi = multi || n > 1
		}
		if !multi {
			t.Errorf("%s has no named task in several versions", ns)
		}
	}
	for _, s := range []string{"linear", "diamond", "fan", "tree"} {
		if !shapes[s] {
			t.Errorf("no %s task", s)
		}
	}
}

// topoOrder is Kahn's algorithm; it returns fewer steps than there are when
// the edges have a cycle.
func topoOrder(d *taskDef) []int {
	in := make([]int, len(d.steps))
	for _, e := range d.edges {
		in[e[1]]++
	}
	var queue, order []int
	for i, n := range in {
		if n == 0 {
			queue = append(queue, i)
		}
	}
	for len(queue) > 0 {
		i := queue[0]
		queue = queue[1:]
		order = append(order, i)
		for _, c := range d.children[i] {
			if in[c]--; in[c] == 0 {
				queue = append(queue, c)
			}
		}
	}
	return order
}

// checkingSink records transitions and checks them independently of the
// simulation's own checks.
type checkingSink struct {
	t          *testing.T
	taskStates map[state]int
	moves      map[string]int
}

func (c *checkingSink) taskMoved(t *taskSim, to state, meta []byte, at time.Time, _ bool) error {
	if !at.After(t.lastAt) || at.Before(t.createdAt) {
		c.t.Errorf("task transition at %v, last %v, created %v", at, t.lastAt, t.createdAt)
	}
	if (to == inProgress && !t.initialized) != (meta != nil) {
		c.t.Errorf("task → %s (initialized %v) with metadata %s", to, t.initialized, meta)
	}
	c.moves[fmt.Sprintf("task %s→%s", t.state, to)]++
	return nil
}

func (c *checkingSink) stepMoved(t *taskSim, i int, n *stepSim, to state, at time.Time) error {
	s := &t.steps[i]
	if !at.After(s.lastAt) || at.Before(s.createdAt) {
		c.t.Errorf("step transition at %v, last %v, created %v", at, s.lastAt, s.createdAt)
	}
	if t.state != inProgress && !(to == cancelled || to == resolved || (to == pending && t.state == pending)) {
		c.t.Errorf("step %s → %s while task %s", s.state, to, t.state)
	}
	if to == inProgress {
		for _, p := range t.def.parents[i] {
			if st := t.steps[p].state; st != complete && st != resolved {
				c.t.Errorf("step started with parent %s", st)
			}
		}
	}
	c.moves[fmt.Sprintf("step %s→%s", s.state, to)]++
	return nil
}

// TestSimulationRunsToAnEnd simulates many tasks with no time limit: every
// task must end in a final state (or never start), never hang in flight.
func TestSimulationRunsToAnEnd(t *testing.T) {
	opts, err := Options{Seed: 11, ErrorRate: 0.15, CancelRate: 0.05}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	prof := bulkProfile()
	p := newPicker(buildCatalog(opts.Namespaces))
	k := &checkingSink{t: t, taskStates: map[state]int{}, moves: map[string]int{}}
	start := time.Date(2025, 6, 18, 15, 30, 0, 0, time.UTC)
	for i := range 20000 {
		r := rand.New(rand.NewPCG(11, uint64(i)))
		task := newTask(p.pick(r, 0), r, &opts, &prof, start)
		events := 0
		for {
			at, ok := task.next()
			if !ok {
				break
			}
			if err := task.fire(at, k); err != nil {
				t.Fatal(err)
			}
			if events++; events > 1000 {
				t.Fatalf("task %d does not finish", i)
			}
		}
		switch task.state {
		case none, complete, errored, cancelled, resolved:
		default:
			t.Fatalf("task %d stuck in %s", i, task.state)
		}
		if task.state == complete != task.complete {
			t.Fatalf("task %d: state %s, complete %v", i, task.state, task.complete)
		}
		k.taskStates[task.state]++
	}
	t.Logf("final task states: %v", k.taskStates)
	t.Logf("moves: %v", k.moves)
	for _, m := range []string{
		"task →in_progress", "task →error", "task →cancelled", "task in_progress→pending", "task pending→in_progress",
		"task in_progress→complete", "task in_progress→error", "task error→resolved_manually", "task error→pending",
		"step →in_progress", "step →error", "step →cancelled", "step →resolved_manually", "step pending→in_progress",
		"step in_progress→complete", "step in_progress→error", "step in_progress→cancelled", "step error→pending",
		"step error→resolved_manually",
	} {
		if k.moves[m] == 0 {
			t.Errorf("no %s", m)
		}
	}
}

func TestOptionsDefaults(t *testing.T) {
	o, err := Options{CancelRate: -1}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if o.CancelRate != 0 || o.ErrorRate != 0.05 || o.BatchSize != 2000 || o.History != 48*time.Hour || len(o.Namespaces) != 4 || o.Seed == 0 {
		t.Errorf("defaults: %+v", o)
	}
	if o.Now.Location() != time.UTC {
		t.Errorf("Now in %v, want UTC", o.Now.Location())
	}
	for _, bad := range []Options{
		{Namespaces: []string{""}},
		{BatchSize: -1},
		{History: -time.Hour},
		{RetryRate: 2},
	} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// BenchmarkGenerate measures the Go side of Bulk: simulating a batch of 1000
// tasks and buffering its rows, without the database.
func BenchmarkGenerate(b *testing.B) {
	opts, err := Options{Seed: 1, BatchSize: 1000}.withDefaults()
	if err != nil {
		b.Fatal(err)
	}
	g := &generator{opts: opts, prof: bulkProfile(), picker: newPicker(buildCatalog(opts.Namespaces)), total: 1000 * b.N}
	b.ResetTimer()
	for i := range b.N {
		if _, err := g.batch(i); err != nil {
			b.Fatal(err)
		}
	}
}
