package simulate

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// tasker-core's state machines (crates/tasker-shared/src/state_machine/
// task_state_machine.rs and step_state_machine.rs) are replayed here as a
// plan: every transition a task and its steps will go through, with its time,
// worked out when the task is created. Bulk writes the part of a plan that
// lies before Now; Live writes each step of it when its time comes. The task
// and step states are spelled by the engine package.

// coreOp is one write the engine makes in its own transaction: a transition
// of the task (step < 0) or of one step, with the column updates that go
// with it.
type coreOp struct {
	at   time.Time
	step int // -1: the task
	from string
	to   string
	meta []byte
	// transitionMeta: the task transition's metadata goes in
	// transition_metadata, as transition_task_state_atomic writes it.
	transitionMeta bool
	cols           *coreStepCols // step columns after this op; nil: unchanged
	taskDone       bool          // task: set complete = true, completed_at
}

// coreStepCols are the workflow_steps columns the engine keeps next to the
// transitions.
type coreStepCols struct {
	attempts      int32
	lastAttempted time.Time
	backoff       int32 // 0: NULL
	inProcess     bool
	processed     bool
	processedAt   time.Time
	results       []byte
}

// corePlan is one simulated tasker-core task.
type corePlan struct {
	def         *taskDef
	createdAt   time.Time
	correlation [16]byte
	steps       []coreStepPlan
	ops         []coreOp // by time; per entity in state machine order
	initiator   string
	source      string
	reason      string
	tags        []byte
	context     []byte
	priority    int32
	identity    string
}

type coreStepPlan struct {
	maxAttempts int32
	retryable   bool
	inputs      []byte
}

// planCoreTask simulates a task of def created at start to its end.
func planCoreTask(def *taskDef, r *rand.Rand, opts *Options, start time.Time) *corePlan {
	p := &corePlan{
		def:       def,
		createdAt: start,
		initiator: []string{"api", "scheduler", "webhook", "operator"}[r.IntN(4)],
		source:    []string{"web", "mobile", "batch", "partner_api"}[r.IntN(4)],
		reason:    "simulated " + def.name,
		priority:  int32(r.IntN(3)),
	}
	p.correlation = uuidV7At(start, r)
	p.tags = fmt.Appendf(nil, `{"namespace": %q, "simulated": true}`, def.namespace)
	p.context = fmt.Appendf(nil, `{"%s_id": %d, "amount_cents": %d}`, def.context, r.IntN(1_000_000), r.IntN(100_000))
	p.identity = fmt.Sprintf("%x", uuidV7At(start, r))
	for _, s := range def.steps {
		p.steps = append(p.steps, coreStepPlan{maxAttempts: int32(s.retryLimit), retryable: s.retryable, inputs: p.context})
	}
	sim := coreSim{p: p, r: r, opts: opts, t: start}
	sim.run()
	slices.SortStableFunc(p.ops, func(a, b coreOp) int { return a.at.Compare(b.at) })
	return p
}

type coreSim struct {
	p     *corePlan
	r     *rand.Rand
	opts  *Options
	t     time.Time // the task's clock
	task  string
	state []string // per step
	cols  []coreStepCols
}

func (s *coreSim) tick(mean time.Duration) time.Duration {
	return time.Duration((0.3 + s.r.ExpFloat64()) * float64(mean)).Truncate(time.Microsecond)
}

func (s *coreSim) taskTo(to string, meta []byte) {
	s.t = s.t.Add(s.tick(20 * time.Millisecond))
	op := coreOp{at: s.t, step: -1, from: s.task, to: to, meta: meta, taskDone: to == engine.Complete}
	// Lifecycle moves made through transition_task_state_atomic carry their
	// metadata in transition_metadata.
	op.transitionMeta = s.r.IntN(3) == 0
	s.p.ops = append(s.p.ops, op)
	s.task = to
}

func (s *coreSim) stepTo(i int, at time.Time, to string, meta []byte) {
	op := coreOp{at: at, step: i, from: s.state[i], to: to, meta: meta}
	c := s.cols[i]
	op.cols = &c
	s.p.ops = append(s.p.ops, op)
	s.state[i] = to
}

func (s *coreSim) run() {
	n := len(s.p.steps)
	s.state = make([]string, n)
	s.cols = make([]coreStepCols, n)
	// The task initializer writes the pending rows of the task and every step
	// in the creating transaction (state_initializer.rs).
	initial := []byte(`{"initial_state": "pending", "from_service": "task_initializer"}`)
	s.p.ops = append(s.p.ops, coreOp{at: s.t, step: -1, to: engine.Pending, meta: initial})
	s.task = engine.Pending
	for i := range n {
		s.p.ops = append(s.p.ops, coreOp{at: s.t, step: i, to: engine.Pending, meta: initial})
		s.state[i] = engine.Pending
	}
	s.t = s.t.Add(s.tick(200 * time.Millisecond))
	s.taskTo(engine.Initializing, nil)
	s.taskTo(engine.EnqueuingSteps, fmt.Appendf(nil, `{"event": "ready_steps_found", "count": %d}`, len(s.ready())))
	for round := 0; ; round++ {
		ready := s.ready()
		if round > 0 && s.r.Float64() < s.opts.CancelRate/4 {
			s.cancel()
			return
		}
		// enqueuing_steps: the ready steps go to their namespace queue.
		for _, i := range ready {
			s.stepTo(i, s.t.Add(time.Duration(len(ready))*time.Millisecond), engine.Enqueued, nil)
		}
		s.t = s.t.Add(time.Duration(len(ready)+1) * time.Millisecond)
		s.taskTo(engine.StepsInProcess, fmt.Appendf(nil, `{"event": "steps_enqueued", "count": %d}`, len(ready)))
		end := s.t
		var retry, failed []int
		for _, i := range ready {
			at, outcome := s.execute(i)
			end = maxTime(end, at)
			switch outcome {
			case engine.WaitingForRetry:
				retry = append(retry, i)
			case engine.Error:
				failed = append(failed, i)
			}
		}
		s.t = end
		switch {
		case len(failed) > 0:
			s.taskTo(engine.EvaluatingResults, nil)
			s.taskTo(engine.BlockedByFailures, fmt.Appendf(nil, `{"event": "permanent_failure", "failed_steps": %d}`, len(failed)))
			if s.r.Float64() < s.opts.ManualResolveRate {
				s.t = s.t.Add(s.tick(10 * time.Minute))
				s.taskTo(engine.ResolvedManually, []byte(`{"event": "manual_resolution", "resolved_by": "operator"}`))
			} else {
				s.taskTo(engine.Error, []byte(`{"event": "give_up"}`))
			}
			return
		case len(retry) > 0:
			// A retryable step failure parks the task until the backoff ends.
			s.taskTo(engine.WaitingForRetry, fmt.Appendf(nil, `{"event": "step_failed", "retrying_steps": %d}`, len(retry)))
			wait := time.Duration(0)
			for _, i := range retry {
				wait = max(wait, s.backoff(i))
			}
			s.t = s.t.Add(wait)
			for _, i := range retry {
				s.stepTo(i, s.t, engine.Pending, []byte(`{"event": "retry"}`))
			}
			s.t = s.t.Add(time.Millisecond)
			s.taskTo(engine.EnqueuingSteps, []byte(`{"event": "retry_ready"}`))
			continue
		}
		s.taskTo(engine.EvaluatingResults, nil)
		if len(s.ready()) == 0 {
			s.taskTo(engine.Complete, []byte(`{"event": "all_steps_successful"}`))
			return
		}
		if s.r.IntN(5) == 0 {
			// Results still arriving: the task waits, then looks again.
			s.taskTo(engine.WaitingForDependencies, nil)
			s.t = s.t.Add(s.tick(300 * time.Millisecond))
			s.taskTo(engine.EvaluatingResults, []byte(`{"event": "dependencies_ready"}`))
		}
		s.taskTo(engine.EnqueuingSteps, fmt.Appendf(nil, `{"event": "ready_steps_found", "count": %d}`, len(s.ready())))
	}
}

// ready lists the pending steps whose parents are all complete.
func (s *coreSim) ready() []int {
	var out []int
	for i, st := range s.state {
		if st != engine.Pending {
			continue
		}
		ok := true
		for _, p := range s.p.def.parents[i] {
			ok = ok && s.state[p] == engine.Complete
		}
		if ok {
			out = append(out, i)
		}
	}
	return out
}

// execute runs one attempt of step i from enqueued, returning when it ended
// and the state it ended in: complete, waiting_for_retry or error.
func (s *coreSim) execute(i int) (time.Time, string) {
	def := s.p.def.steps[i]
	at := s.t.Add(s.tick(30 * time.Millisecond)) // queue wait
	c := &s.cols[i]
	// The worker's claim counts the attempt.
	c.attempts++
	c.lastAttempted, c.inProcess = at, true
	s.stepTo(i, at, engine.InProgress, nil)
	d := s.tick(def.mean)
	at = at.Add(d)
	c.inProcess = false
	ms := d.Milliseconds()
	worker := uuidV7At(at, s.r)
	fail := s.r.Float64() < s.opts.ErrorRate
	if !fail {
		// The worker's result message: tasker-core's StepExecutionResult.
		meta := fmt.Appendf(nil, `{"event": "step_completed", "success": true, "execution_time_ms": %d, "worker_uuid": %q, "result": {"ok": true, "step": %q}, "attempt": %d}`,
			ms, uuidString(worker), def.name, c.attempts)
		s.stepTo(i, at, engine.EnqueuedForOrchestration, meta)
		at = at.Add(s.tick(15 * time.Millisecond))
		c.processed, c.processedAt = true, at
		c.results = fmt.Appendf(nil, `{"success": true, "result": {"ok": true, "step": %q}}`, def.name)
		s.stepTo(i, at, engine.Complete, nil)
		return at, engine.Complete
	}
	transient := s.r.Float64() < s.opts.RetryRate
	// Some workers nest the timing under metadata, where the engine's audit
	// trigger does not find it (facts §3).
	var meta []byte
	if s.r.IntN(4) == 0 {
		meta = fmt.Appendf(nil, `{"event": "step_failed", "result": {"success": false, "metadata": {"execution_time_ms": %d}, "error": {"message": "upstream %s failed", "retryable": %t}}, "worker_uuid": %q}`,
			ms, def.system, transient, uuidString(worker))
	} else {
		meta = fmt.Appendf(nil, `{"event": "step_failed", "success": false, "execution_time_ms": %d, "error": {"message": "upstream %s failed", "error_class": "RemoteError", "retryable": %t}, "worker_uuid": %q}`,
			ms, def.system, transient, uuidString(worker))
	}
	s.stepTo(i, at, engine.EnqueuedAsErrorForOrchestration, meta)
	at = at.Add(s.tick(15 * time.Millisecond))
	c.results = fmt.Appendf(nil, `{"success": false, "error": {"message": "upstream %s failed", "retryable": %t}}`, def.system, transient)
	if transient && s.p.steps[i].retryable && c.attempts < s.p.steps[i].maxAttempts {
		if s.r.IntN(3) == 0 {
			// The handler asked for a delay (set_step_backoff_atomic).
			c.backoff = int32(1 + s.r.IntN(30))
		}
		s.stepTo(i, at, engine.WaitingForRetry, nil)
		return at, engine.WaitingForRetry
	}
	s.stepTo(i, at, engine.Error, nil)
	return at, engine.Error
}

// backoff is how long step i waits before its retry: the requested delay,
// else min(2^attempts, 60) s (calculate_step_next_retry_time).
func (s *coreSim) backoff(i int) time.Duration {
	c := s.cols[i]
	if c.backoff > 0 {
		return time.Duration(c.backoff) * time.Second
	}
	return time.Duration(math.Min(math.Pow(2, float64(c.attempts)), 60)) * time.Second
}

// cancel cancels the task and every step not finished.
func (s *coreSim) cancel() {
	s.t = s.t.Add(s.tick(time.Second))
	for i, st := range s.state {
		if st == engine.Pending || st == engine.WaitingForRetry {
			s.stepTo(i, s.t, engine.Cancelled, []byte(`{"event": "cancel"}`))
		}
	}
	s.t = s.t.Add(time.Millisecond)
	s.taskTo(engine.Cancelled, []byte(`{"event": "cancel", "by": "operator"}`))
}

// uuidV7At makes an RFC 9562 version 7 UUID for time t: what the engine's
// uuid_generate_v7() would have returned at that moment.
func uuidV7At(t time.Time, r *rand.Rand) [16]byte {
	var u [16]byte
	ms := uint64(t.UnixMilli())
	for i := range 6 {
		u[i] = byte(ms >> (40 - 8*i))
	}
	a, b := r.Uint64(), r.Uint64()
	for i := 6; i < 16; i++ {
		if i < 8 {
			u[i] = byte(a >> (8 * i))
		} else {
			u[i] = byte(b >> (8 * (i - 8)))
		}
	}
	u[6] = 0x70 | u[6]&0x0f
	u[8] = 0x80 | u[8]&0x3f
	return u
}

func uuidString(u [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// jsonOrEmpty is a jsonb column value: '{}' for nil, the engine's default.
func jsonOrEmpty(b []byte) any {
	if b == nil {
		return "{}"
	}
	return b
}
