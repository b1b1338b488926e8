// Package simulate writes Tasker workflow activity into a Tasker database the way
// the Tasker engine does: DAG-shaped tasks, Statesman-style transition rows and
// the step retry/backoff columns of the step executor. It feeds demos
// (`sidecar simulate`, `sidecar demo`) and benchmarks.
//
// Bulk writes history fast with COPY; Live produces ongoing activity in real time,
// one transaction per transition. Both drive the same per-task simulation
// (sim.go), so the data they leave behind obeys the same rules.
package simulate

import (
	"errors"
	"fmt"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// Options tunes the generated workload. The zero value is usable: zero fields
// take the defaults documented on each field. Rates are fractions in [0,1]; a
// negative rate means "never" (zero already means "default").
type Options struct {
	// Namespaces to spread tasks over. Default: payments, fulfillment,
	// notifications, data_pipeline. Names outside that set get generic tasks.
	Namespaces []string
	// Seed makes the run deterministic when non-zero. Bulk with the same Seed and
	// Now writes the same tasks, states and timestamps (ids come from the
	// sequences and so differ between databases).
	Seed int64
	// BatchSize is the number of tasks Bulk generates and copies per batch; each
	// batch is one transaction holding one COPY per table (a task averages about
	// 5 steps, 5 edges and 12-13 transition rows). Default 2000.
	BatchSize int
	// SkipFKChecks makes Bulk load with session_replication_role = replica,
	// which skips the per-row foreign-key triggers: about a quarter of the load
	// time with all indexes in place. It needs a superuser (or SET privilege on that parameter) and
	// also skips any other trigger on the tables; the rows satisfy the foreign
	// keys by construction.
	SkipFKChecks bool
	// Now is the end of the Bulk history window. Default: the wall clock.
	Now time.Time
	// History is how far back Bulk spreads task creation, denser towards Now.
	// Default 48h.
	History time.Duration

	// ErrorRate is the chance that a step's first attempt fails. Default 0.05.
	ErrorRate float64
	// RetryRate is the share of step failures that are transient, which the
	// engine retries after backoff while retries last; the rest are permanent and
	// fail the task. Default 0.8.
	RetryRate float64
	// CancelRate is the share of tasks an operator cancels before they finish.
	// Default 0.02.
	CancelRate float64
	// ManualResolveRate is the chance that an operator acts on a failed task,
	// resolving it (and its failed steps) manually or asking for a retry.
	// Default 0.4.
	ManualResolveRate float64

	// MaxActive bounds the tasks Live keeps in flight (and so its memory).
	// Default 5000.
	MaxActive int
	// Workers is how many transactions Live runs at once. Default: the pool's
	// MaxConns minus one, at most 4, at least 1.
	Workers int
}

// Stats counts what a run wrote.
type Stats struct {
	Tasks           int64 // task rows created
	Steps           int64 // workflow step rows created
	Edges           int64 // workflow step edges created
	TaskTransitions int64 // task transition rows inserted
	StepTransitions int64 // step transition rows inserted
	Adopted         int64 // Live: existing in-flight tasks picked up from the database
	Active          int64 // Live: tasks in flight when the stats were taken
	Elapsed         time.Duration
}

func (s *Stats) add(o Stats) {
	s.Tasks += o.Tasks
	s.Steps += o.Steps
	s.Edges += o.Edges
	s.TaskTransitions += o.TaskTransitions
	s.StepTransitions += o.StepTransitions
}

// DefaultNamespaces is the namespace set used when Options.Namespaces is empty.
func DefaultNamespaces() []string {
	return []string{"payments", "fulfillment", "notifications", "data_pipeline"}
}

func (o Options) withDefaults() (Options, error) {
	if len(o.Namespaces) == 0 {
		o.Namespaces = DefaultNamespaces()
	}
	seen := make(map[string]bool, len(o.Namespaces))
	for _, ns := range o.Namespaces {
		// 64 is the column width; generic task names append up to 7 characters
		// and still have to fit named_tasks.name varchar(64).
		if ns == "" || len(ns) > 56 {
			return o, fmt.Errorf("namespace %q: want 1 to 56 characters", ns)
		}
		if seen[ns] {
			return o, fmt.Errorf("namespace %q listed twice", ns)
		}
		seen[ns] = true
	}
	if o.Seed == 0 {
		o.Seed = time.Now().UnixNano()
	}
	if o.BatchSize < 0 {
		return o, errors.New("batch size must not be negative")
	}
	if o.BatchSize == 0 {
		o.BatchSize = 2000
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	o.Now = o.Now.UTC().Truncate(time.Microsecond)
	if o.History < 0 {
		return o, errors.New("history must not be negative")
	}
	if o.History == 0 {
		o.History = 48 * time.Hour
	}
	rates := []struct {
		name string
		v    *float64
		def  float64
	}{
		{"error rate", &o.ErrorRate, 0.05},
		{"retry rate", &o.RetryRate, 0.8},
		{"cancel rate", &o.CancelRate, 0.02},
		{"manual resolve rate", &o.ManualResolveRate, 0.4},
	}
	for _, r := range rates {
		switch {
		case *r.v == 0:
			*r.v = r.def
		case *r.v < 0:
			*r.v = 0
		case *r.v > 1:
			return o, fmt.Errorf("%s %v is above 1", r.name, *r.v)
		}
	}
	if o.MaxActive < 0 || o.Workers < 0 {
		return o, errors.New("max active and workers must not be negative")
	}
	if o.MaxActive == 0 {
		o.MaxActive = 5000
	}
	return o, nil
}

// state is a Tasker task or step state. none stands for "no transition row
// yet", which Tasker reports as pending but stores as nothing.
type state uint8

const (
	none state = iota
	pending
	inProgress
	complete
	errored
	cancelled
	resolved
)

func (s state) String() string {
	switch s {
	case pending:
		return engine.Pending
	case inProgress:
		return engine.InProgress
	case complete:
		return engine.Complete
	case errored:
		return engine.Error
	case cancelled:
		return engine.Cancelled
	case resolved:
		return engine.ResolvedManually
	}
	return ""
}

func parseState(s string) (state, error) {
	for st := pending; st <= resolved; st++ {
		if st.String() == s {
			return st, nil
		}
	}
	return none, fmt.Errorf("unknown state %q", s)
}

// taskMoveAllowed is Tasker's task state machine
// (docs/tasker-semantics.md#states-and-state-machines). An entity without
// rows is in the initial state pending, so none moves like pending.
func taskMoveAllowed(from, to state) bool {
	switch from {
	case none, pending:
		return to == inProgress || to == cancelled || to == errored
	case inProgress:
		return to == complete || to == errored || to == cancelled || to == pending
	case errored:
		return to == pending || to == resolved
	case complete, resolved:
		return to == cancelled
	}
	return false
}

// stepMoveAllowed is Tasker's step state machine
// (docs/tasker-semantics.md#states-and-state-machines). There is no
// error → in_progress: a retried step has to pass through pending.
func stepMoveAllowed(from, to state) bool {
	switch from {
	case none, pending:
		return to == inProgress || to == errored || to == cancelled || to == resolved
	case inProgress:
		return to == complete || to == errored || to == cancelled
	case errored:
		return to == pending || to == resolved
	}
	return false
}
