package simulate

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"time"
)

// This file is the per-task simulation shared by Bulk and Live. A taskSim knows
// what happens to its task next and when (next), and performs that one event
// (fire), writing every state change through a sink. Bulk drives it with a
// virtual clock and a sink that buffers COPY rows; Live drives it with the wall
// clock and a sink that runs one transaction per transition.

// Shares that are not worth an Options knob.
const (
	// Outages cluster, so a retried step fails more often than a first attempt.
	retryFailRate = 0.4
	// Share of failures that happen before the handler runs (no handler, bad
	// inputs): pending → error without an attempt, so last_attempted_at stays
	// NULL on a first failure.
	preflightShare = 0.05
	// Tasks whose initialization fails: pending → error with no step run.
	initFailRate = 0.002
	// Tasks that wait in a queue backlog before pickup, and tasks nobody ever
	// picks up (a lost job).
	backlogRate = 0.02
	lostRate    = 0.001
	// Share of transient API errors that come with a Retry-After header.
	retryAfterShare = 0.25
	// A task re-enqueues (in_progress → pending) when its next retry is further
	// away than this.
	requeueAfter = 2 * time.Second
	// Share of operator interventions on a retryable failure that ask for a
	// retry instead of resolving the task.
	operatorRetryShare = 0.35
)

// profile holds the timings that differ between history and a live demo,
// where nobody wants to wait hours for an operator.
type profile struct {
	backlogMin, backlogMax   time.Duration
	operatorMin, operatorMax time.Duration
}

func bulkProfile() profile {
	return profile{backlogMin: time.Minute, backlogMax: 30 * time.Minute, operatorMin: 2 * time.Minute, operatorMax: 6 * time.Hour}
}

func liveProfile() profile {
	return profile{backlogMin: 2 * time.Second, backlogMax: 15 * time.Second, operatorMin: 5 * time.Second, operatorMax: 90 * time.Second}
}

type stepAct uint8

const (
	sNone   stepAct = iota
	sStart          // run it: → in_progress (or fail before running)
	sFinish         // the running attempt ends: → complete or error
	sRetry          // the engine requeues a failed step: error → pending
)

type taskAct uint8

const (
	tNone     taskAct = iota
	tPickup           // a worker picks the task up: → in_progress
	tComplete         // the finalizer sees every step complete
	tFail             // the finalizer sees the task blocked by failures
	tRequeue          // nothing runnable until a backoff ends: → pending
	tOperator         // an operator resolves or retries a failed task
)

type failKind uint8

const (
	succeed failKind = iota
	transient
	permanent
)

type stepSim struct {
	def     *stepDef
	id      int64 // workflow_step_id; Bulk assigns it at copy time
	state   state
	lastAt  time.Time // created_at of the newest transition
	sortKey int32
	lastRow int32 // Bulk: batch index of the newest transition row, -1 if none

	retryable     bool
	retryLimit    int32
	attempts      int32
	lastAttempted time.Time // zero is NULL
	backoff       int32     // backoff_request_seconds, 0 is NULL
	processed     bool
	processedAt   time.Time // zero is NULL
	results       string    // jsonb; empty is NULL
	createdAt     time.Time
	updatedAt     time.Time

	act     stepAct
	due     time.Time
	outcome failKind // of the running attempt
	blocked bool     // failed for good: the engine will not run it again
}

type taskSim struct {
	def     *taskDef
	id      int64
	ref     int32 // Bulk: index in its batch
	base    int32 // Bulk: batch index of its first step
	rng     *rand.Rand
	opts    *Options
	prof    *profile
	state   state
	lastAt  time.Time
	sortKey int32
	lastRow int32

	complete    bool
	initialized bool // its first in_progress (with the initializer's metadata) is written
	createdAt   time.Time
	requestedAt time.Time
	updatedAt   time.Time
	initiator   string
	source      string
	reason      string
	context     []byte
	tags        []byte
	salt        uint64 // makes identity_hash unique together with the id

	steps []stepSim

	act      taskAct
	due      time.Time
	wake     time.Time // when a requeued task is picked up again
	cancelAt time.Time // zero: nobody cancels it
	operated int       // operator interventions so far
}

// sink persists one transition. The sim applies the change to itself only
// after the sink accepted it, so a failed write leaves sim and database agreeing.
type sink interface {
	taskMoved(t *taskSim, to state, meta []byte, at time.Time, markComplete bool) error
	// next holds the step's columns after the move; the sink may set lastRow.
	stepMoved(t *taskSim, i int, next *stepSim, to state, at time.Time) error
}

// newTask creates a task of def as the engine's TaskBuilder would: task row,
// steps with attempts 0 and the template's retry settings, no transitions.
func newTask(def *taskDef, rng *rand.Rand, opts *Options, prof *profile, createdAt time.Time) *taskSim {
	createdAt = createdAt.UTC().Truncate(time.Microsecond)
	t := &taskSim{
		def:         def,
		rng:         rng,
		opts:        opts,
		prof:        prof,
		lastRow:     -1,
		createdAt:   createdAt,
		requestedAt: createdAt.Add(-uniform(rng, 0, 2*time.Second)).Truncate(time.Microsecond),
		updatedAt:   createdAt,
		salt:        rng.Uint64(),
		steps:       make([]stepSim, len(def.steps)),
	}
	t.initiator, t.source, t.reason, t.context = taskContext(def, rng)
	t.tags = []byte(`["` + def.namespace + `", "` + def.name + `"]`)
	for i := range def.steps {
		// Rails stamps each record as it saves it, a little after the task.
		at := createdAt.Add(time.Duration(i+1) * 150 * time.Microsecond)
		t.steps[i] = stepSim{
			def:        &def.steps[i],
			lastRow:    -1,
			retryable:  def.steps[i].retryable,
			retryLimit: int32(def.steps[i].retryLimit),
			createdAt:  at,
			updatedAt:  at,
		}
	}
	switch p := rng.Float64(); {
	case p < lostRate:
		// Never picked up: stays without transitions.
	case p < lostRate+backlogRate:
		t.act, t.due = tPickup, createdAt.Add(logUniform(rng, prof.backlogMin, prof.backlogMax))
	default:
		t.act, t.due = tPickup, createdAt.Add(lognormal(rng, 150*time.Millisecond, 0.8, 10*time.Millisecond, 5*time.Second))
	}
	if rng.Float64() < opts.CancelRate {
		var expected time.Duration
		for i := range def.steps {
			expected += def.steps[i].mean
		}
		wait := time.Second + 2*expected
		if !t.due.IsZero() {
			wait += t.due.Sub(createdAt)
		}
		// Not before the builder's transaction (steps, edges) has committed.
		t.cancelAt = createdAt.Add(10*time.Millisecond + uniform(rng, 0, wait))
	}
	return t
}

// taskContext invents the task's initiator, source_system, reason and context.
func taskContext(def *taskDef, r *rand.Rand) (initiator, source, reason string, ctx []byte) {
	ctx = make([]byte, 0, 96)
	switch def.context {
	case "payment":
		ctx = append(ctx, `{"order_id": `...)
		ctx = strconv.AppendInt(ctx, 100000+r.Int64N(900000), 10)
		ctx = append(ctx, `, "amount_cents": `...)
		ctx = strconv.AppendInt(ctx, 100+r.Int64N(50000), 10)
		ctx = append(ctx, `, "currency": "USD", "customer_id": `...)
		ctx = strconv.AppendInt(ctx, 1+r.Int64N(200000), 10)
		return "checkout-web", "web", "order placed", append(ctx, '}')
	case "order":
		ctx = append(ctx, `{"order_id": `...)
		ctx = strconv.AppendInt(ctx, 100000+r.Int64N(900000), 10)
		ctx = append(ctx, `, "warehouse": "`...)
		ctx = append(ctx, []string{"us-east", "us-west", "eu-central"}[r.IntN(3)]...)
		ctx = append(ctx, `", "items": `...)
		ctx = strconv.AppendInt(ctx, 1+r.Int64N(12), 10)
		return "order-service", "api", "order paid", append(ctx, '}')
	case "campaign":
		ctx = append(ctx, `{"campaign_id": `...)
		ctx = strconv.AppendInt(ctx, 1+r.Int64N(5000), 10)
		ctx = append(ctx, `, "channel": "`...)
		ctx = append(ctx, []string{"email", "sms", "push"}[r.IntN(3)]...)
		ctx = append(ctx, `", "audience_size": `...)
		ctx = strconv.AppendInt(ctx, 10+r.Int64N(100000), 10)
		return "marketing-console", "web", "campaign scheduled", append(ctx, '}')
	case "pipeline":
		ctx = append(ctx, `{"source": "`...)
		ctx = append(ctx, []string{"orders", "customers", "events"}[r.IntN(3)]...)
		ctx = append(ctx, `", "partition": `...)
		ctx = strconv.AppendInt(ctx, r.Int64N(64), 10)
		return "scheduler", "cron", "scheduled run", append(ctx, '}')
	}
	ctx = append(ctx, `{"request_id": `...)
	ctx = strconv.AppendInt(ctx, r.Int64N(1<<40), 10)
	return "api-client", "api", "requested", append(ctx, '}')
}

// next reports when the task's next event happens; false when nothing will
// happen to it any more without outside help.
func (t *taskSim) next() (time.Time, bool) {
	at, which := t.earliest()
	return at, which != noEvent
}

const (
	noEvent     = -3
	taskEvent   = -2
	cancelEvent = -1
)

// earliest returns the time of the next event and which it is: taskEvent,
// cancelEvent or the index of a step.
func (t *taskSim) earliest() (time.Time, int) {
	var best time.Time
	which := noEvent
	consider := func(d time.Time, w int) {
		if which == noEvent || d.Before(best) {
			best, which = d, w
		}
	}
	if t.act != tNone {
		consider(t.due, taskEvent)
	}
	if !t.cancelAt.IsZero() && (t.state == none || t.state == pending || t.state == inProgress) {
		consider(t.cancelAt, cancelEvent)
	}
	// Steps only move while the task is being worked on.
	if t.state == inProgress {
		for i := range t.steps {
			if t.steps[i].act != sNone {
				consider(t.steps[i].due, i)
			}
		}
	}
	return best, which
}

// fire performs the earliest event, stamping it at (Bulk passes the event's
// due time, Live the wall clock).
func (t *taskSim) fire(at time.Time, k sink) error {
	_, which := t.earliest()
	var err error
	switch which {
	case noEvent:
		return nil
	case taskEvent:
		err = t.fireTask(at, k)
	case cancelEvent:
		err = t.cancel(at, k)
	default:
		err = t.fireStep(which, at, k)
	}
	if err != nil {
		return err
	}
	t.replan(at)
	return nil
}

func (t *taskSim) fireTask(at time.Time, k sink) error {
	r := t.rng
	act := t.act
	t.act = tNone
	switch act {
	case tPickup:
		if t.state == none && r.Float64() < initFailRate {
			if err := t.moveTask(k, errored, nil, at); err != nil {
				return err
			}
			t.afterFailure(at)
			return nil
		}
		at, err := t.start(k, at)
		if err != nil {
			return err
		}
		// Retries that came due while the task waited run once it is back.
		for i := range t.steps {
			if s := &t.steps[i]; s.act != sNone && !s.due.After(at) {
				s.due = at.Add(uniform(r, time.Millisecond, 40*time.Millisecond))
			}
		}
	case tComplete:
		return t.moveTask(k, complete, nil, at)
	case tFail:
		if err := t.moveTask(k, errored, nil, at); err != nil {
			return err
		}
		t.afterFailure(at)
	case tRequeue:
		if err := t.moveTask(k, pending, nil, at); err != nil {
			return err
		}
		t.act, t.due = tPickup, t.wake
	case tOperator:
		return t.operate(at, k)
	}
	return nil
}

// start moves the task to in_progress; the first time with the metadata
// Tasker's TaskInitializer writes.
func (t *taskSim) start(k sink, at time.Time) (time.Time, error) {
	var meta []byte
	if !t.initialized {
		meta = fmt.Appendf(nil, `{"initialization_completed": true, "step_dependencies_established": %d}`, len(t.steps))
	}
	if err := t.moveTask(k, inProgress, meta, at); err != nil {
		return at, err
	}
	t.initialized = true
	return t.lastAt, nil
}

// afterFailure decides whether an operator will look at the failed task.
func (t *taskSim) afterFailure(at time.Time) {
	if t.operated < 2 && t.rng.Float64() < t.opts.ManualResolveRate {
		t.act, t.due = tOperator, at.Add(logUniform(t.rng, t.prof.operatorMin, t.prof.operatorMax))
	}
}

// operate is an operator acting on a failed task: a retry when the failed
// steps still have attempts left, else manual resolution.
func (t *taskSim) operate(at time.Time, k sink) error {
	r := t.rng
	t.operated++
	retryable := true
	for i := range t.steps {
		s := &t.steps[i]
		if s.state == errored && (!s.retryable || s.attempts >= s.retryLimit) {
			retryable = false
		}
	}
	if retryable && r.Float64() < operatorRetryShare {
		if err := t.moveTask(k, pending, nil, at); err != nil {
			return err
		}
		for i := range t.steps {
			if t.steps[i].state != errored {
				continue
			}
			if err := t.moveStep(k, i, pending, at, nil); err != nil {
				return err
			}
			s := &t.steps[i]
			s.blocked = false
			s.act, s.due = sStart, s.lastAt
		}
		t.act, t.due = tPickup, at.Add(logUniform(r, 200*time.Millisecond, 20*time.Second))
		return nil
	}
	if r.Float64() < 0.5 {
		// Resolve the failed steps, and sometimes the never-run ones too, before
		// the task.
		alsoUnrun := r.Float64() < 0.5
		for i := range t.steps {
			s := &t.steps[i]
			if s.state == errored || (alsoUnrun && s.state == none) {
				s.act = sNone
				if err := t.moveStep(k, i, resolved, at, nil); err != nil {
					return err
				}
			}
		}
	}
	return t.moveTask(k, resolved, nil, at)
}

// cancel is an operator cancelling the task; Tasker cancels its unfinished
// steps with it (failed steps cannot move to cancelled and stay failed).
func (t *taskSim) cancel(at time.Time, k sink) error {
	t.cancelAt = time.Time{}
	if err := t.moveTask(k, cancelled, nil, at); err != nil {
		return err
	}
	t.act = tNone
	at = t.lastAt
	for i := range t.steps {
		s := &t.steps[i]
		s.act = sNone
		if s.state == none || s.state == pending || s.state == inProgress {
			if err := t.moveStep(k, i, cancelled, at, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// failP is the chance that the next attempt of step i fails.
func (t *taskSim) failP(i int) float64 {
	if t.steps[i].attempts > 0 {
		return max(t.opts.ErrorRate, retryFailRate)
	}
	return t.opts.ErrorRate
}

// resume schedules a task loaded from the database, whose in-memory plans
// were lost: running attempts end soon, failed steps are retried when the
// readiness rules allow (transient tells which failures are retryable).
func (t *taskSim) resume(now time.Time, transient []bool) {
	r := t.rng
	soon := func() time.Time { return now.Add(uniform(r, 10*time.Millisecond, time.Second)) }
	switch t.state {
	case none, pending, inProgress:
		for i := range t.steps {
			s := &t.steps[i]
			switch s.state {
			case inProgress:
				d := t.decide(i, t.failP(i))
				s.act, s.due = sFinish, maxTime(s.lastAt.Add(d), soon())
			case errored:
				if !transient[i] || !s.retryable || s.attempts >= s.retryLimit {
					s.blocked = true
					continue
				}
				ready := s.lastAt.Add(failureBackoff(s.attempts))
				if s.backoff > 0 && !s.lastAttempted.IsZero() {
					ready = maxTime(ready, s.lastAttempted.Add(time.Duration(s.backoff)*time.Second))
				}
				s.act, s.due = sRetry, maxTime(ready, soon())
			}
		}
		if t.state != inProgress {
			t.act, t.due = tPickup, soon()
		}
		t.replan(now)
	case errored:
		for i := range t.steps {
			if t.steps[i].state == errored {
				t.steps[i].blocked = true
			}
		}
		t.afterFailure(now)
	}
}

func (t *taskSim) fireStep(i int, at time.Time, k sink) error {
	r := t.rng
	s := &t.steps[i]
	act := s.act
	s.act = sNone
	switch act {
	case sStart:
		failP := t.failP(i)
		if s.attempts == 0 && r.Float64() < failP*preflightShare {
			res := errorResults(s.def, "Tasker::ProceduralError", "No step handler registered for "+s.def.name+" in this worker")
			if err := t.moveStep(k, i, errored, at, func(n *stepSim, at time.Time) {
				n.results, n.updatedAt = res, at
			}); err != nil {
				return err
			}
			s.blocked = true
			return nil
		}
		if err := t.moveStep(k, i, inProgress, at, nil); err != nil {
			return err
		}
		d := t.decide(i, failP)
		s.act, s.due = sFinish, s.lastAt.Add(d)
	case sFinish:
		return t.finish(i, at, k)
	case sRetry:
		if err := t.moveStep(k, i, pending, at, nil); err != nil {
			return err
		}
		// The step job waits in the worker queue before it runs; under load
		// that is seconds.
		s.act, s.due = sStart, s.lastAt.Add(logUniform(r, 100*time.Millisecond, 10*time.Second))
	}
	return nil
}

// decide settles how the attempt that just started ends and how long it takes.
func (t *taskSim) decide(i int, failP float64) time.Duration {
	r := t.rng
	s := &t.steps[i]
	mean := s.def.mean
	s.outcome = succeed
	if r.Float64() >= failP {
		return lognormal(r, mean, 0.6, time.Millisecond, 20*mean)
	}
	s.outcome = permanent
	if r.Float64() < t.opts.RetryRate {
		s.outcome = transient
	}
	switch {
	case s.outcome == permanent:
		return lognormal(r, mean/3, 0.5, time.Millisecond, 5*mean)
	case s.def.api && r.Float64() < 0.3:
		return 30 * time.Second // the HTTP client's timeout
	}
	return lognormal(r, mean, 0.6, time.Millisecond, 20*mean)
}

// failureBackoff is the readiness SQL's wait after an error transition:
// min(2^attempts, 30) seconds (docs/tasker-semantics.md#retry-and-backoff).
func failureBackoff(attempts int32) time.Duration {
	return time.Duration(min(1<<min(max(attempts, 0), 5), 30)) * time.Second
}

// finish ends a running attempt with the step executor's column updates
// (docs/tasker-semantics.md#retry-and-backoff) in the same transaction as the transition.
func (t *taskSim) finish(i int, at time.Time, k sink) error {
	r := t.rng
	s := &t.steps[i]
	if s.outcome == succeed {
		return t.moveStep(k, i, complete, at, func(n *stepSim, at time.Time) {
			n.attempts++
			n.lastAttempted, n.processed, n.processedAt, n.updatedAt = at, true, at, at
			n.results = successResults
		})
	}
	class, msg := errorFor(s.def, s.outcome, r)
	res := errorResults(s.def, class, msg)
	var retryAfter int32
	if s.outcome == transient && s.def.api && r.Float64() < retryAfterShare {
		res = errorResults(s.def, "Faraday::TooManyRequestsError", "the server responded with status 429")
		retryAfter = []int32{1, 5, 10, 30, 60, 120, 600}[r.IntN(7)]
	}
	err := t.moveStep(k, i, errored, at, func(n *stepSim, at time.Time) {
		n.attempts++
		n.lastAttempted, n.updatedAt, n.results = at, at, res
		// Only API step handlers run the BackoffCalculator.
		if n.def.api {
			if retryAfter > 0 {
				n.backoff = min(retryAfter, 300)
			} else {
				n.backoff = int32(max(backoffSeconds(int(n.attempts), r, true), 1))
			}
		}
	})
	if err != nil {
		return err
	}
	if s.outcome != transient || !s.retryable || s.attempts >= s.retryLimit {
		s.blocked = true
		return nil
	}
	// The engine runs it again once both the requested backoff and the
	// readiness SQL's failure backoff have passed
	// (docs/tasker-semantics.md#retry-and-backoff), on a later pass.
	ready := s.lastAt.Add(failureBackoff(s.attempts))
	if s.backoff > 0 {
		ready = maxTime(ready, s.lastAttempted.Add(time.Duration(s.backoff)*time.Second))
	}
	s.act, s.due = sRetry, ready.Add(uniform(r, 200*time.Millisecond, 3*time.Second))
	return nil
}

// replan schedules what follows from the current state: ready steps start,
// and a task with nothing to run completes, fails or waits for a retry.
func (t *taskSim) replan(at time.Time) {
	if t.state != inProgress || t.act != tNone {
		return
	}
	r := t.rng
	busy, allComplete := false, true
	var retryAt time.Time
	for i := range t.steps {
		s := &t.steps[i]
		if s.state != complete {
			allComplete = false
		}
		switch s.state {
		case none, pending:
			if s.act == sNone && !s.blocked && t.parentsDone(i) {
				s.act, s.due = sStart, at.Add(uniform(r, 2*time.Millisecond, 80*time.Millisecond))
			}
			busy = busy || s.act != sNone
		case inProgress:
			busy = true
		case errored:
			if s.act == sRetry && (retryAt.IsZero() || s.due.Before(retryAt)) {
				retryAt = s.due
			}
		}
	}
	settle := at.Add(uniform(r, 5*time.Millisecond, 120*time.Millisecond))
	switch {
	case busy:
	case !retryAt.IsZero():
		if retryAt.Sub(at) > requeueAfter {
			t.act, t.due = tRequeue, settle
			t.wake = retryAt.Add(-uniform(r, 10*time.Millisecond, 200*time.Millisecond))
		}
	case allComplete:
		t.act, t.due = tComplete, settle
	default:
		t.act, t.due = tFail, settle
	}
}

// parentsDone is the step machine's guard for in_progress.
func (t *taskSim) parentsDone(i int) bool {
	for _, p := range t.def.parents[i] {
		if st := t.steps[p].state; st != complete && st != resolved {
			return false
		}
	}
	return true
}

// after keeps an entity's transition times strictly increasing at the
// microsecond precision PostgreSQL stores.
func after(at, last time.Time) time.Time {
	at = at.UTC().Truncate(time.Microsecond)
	if !at.After(last) {
		return last.Add(time.Microsecond)
	}
	return at
}

func (t *taskSim) moveTask(k sink, to state, meta []byte, at time.Time) error {
	if !taskMoveAllowed(t.state, to) {
		return fmt.Errorf("task %d: %s → %s is not a Tasker task transition", t.id, t.state, to)
	}
	if to == complete {
		for i := range t.steps {
			if t.steps[i].state != complete {
				return fmt.Errorf("task %d: cannot complete with step %s %s", t.id, t.steps[i].def.name, t.steps[i].state)
			}
		}
	}
	at = after(at, t.lastAt)
	if err := k.taskMoved(t, to, meta, at, to == complete); err != nil {
		return err
	}
	t.state, t.lastAt = to, at
	t.sortKey += 10
	if to == complete {
		t.complete, t.updatedAt = true, at
	}
	return nil
}

func (t *taskSim) moveStep(k sink, i int, to state, at time.Time, update func(n *stepSim, at time.Time)) error {
	s := &t.steps[i]
	if !stepMoveAllowed(s.state, to) {
		return fmt.Errorf("task %d step %s: %s → %s is not a Tasker step transition", t.id, s.def.name, s.state, to)
	}
	if to == inProgress && !t.parentsDone(i) {
		return fmt.Errorf("task %d step %s: started before its parents finished", t.id, s.def.name)
	}
	n := *s
	n.lastAt = after(at, s.lastAt)
	if update != nil {
		update(&n, n.lastAt)
	}
	n.state = to
	n.sortKey += 10
	if err := k.stepMoved(t, i, &n, to, n.lastAt); err != nil {
		return err
	}
	*s = n
	return nil
}

const successResults = `{"status": "success"}`

type errorResult struct {
	Error      string `json:"error"`
	Backtrace  string `json:"backtrace"`
	ErrorClass string `json:"error_class"`
}

func errorResults(d *stepDef, class, msg string) string {
	b, err := json.Marshal(errorResult{
		Error:      msg,
		Backtrace:  "app/tasks/handlers/" + d.name + "_handler.rb:42:in `process'\nlib/tasker/step_handler/base.rb:118:in `handle'",
		ErrorClass: class,
	})
	if err != nil {
		panic(err) // cannot happen: three strings
	}
	return string(b)
}

// transientClasses are the error classes the engine retries; adopted tasks
// are judged by them.
func isTransientClass(c string) bool {
	switch c {
	case "Faraday::TimeoutError", "Faraday::ConnectionFailed", "Faraday::TooManyRequestsError",
		"Tasker::RetryableError", "ActiveRecord::Deadlocked":
		return true
	}
	return false
}

func errorFor(d *stepDef, kind failKind, r *rand.Rand) (class, msg string) {
	if kind == permanent {
		if d.api {
			return "Tasker::PermanentError", d.system + " rejected the request: 422 Unprocessable Entity"
		}
		return "ArgumentError", "invalid input for " + d.name
	}
	if !d.api {
		if r.IntN(2) == 0 {
			return "ActiveRecord::Deadlocked", "PG::TRDeadlockDetected: ERROR:  deadlock detected"
		}
		return "Tasker::RetryableError", d.system + " is temporarily unavailable"
	}
	switch r.IntN(3) {
	case 0:
		return "Faraday::TimeoutError", "Net::ReadTimeout with #<TCPSocket:(closed)>"
	case 1:
		return "Faraday::ConnectionFailed", "Failed to open TCP connection to " + d.system + ":443 (Connection refused)"
	}
	return "Tasker::RetryableError", d.system + " responded 503 Service Unavailable"
}

// backoffSeconds is Tasker's BackoffConfig#calculate_backoff_seconds with the
// default configuration
// (docs/tasker-semantics.md#retry-and-backoff): the table [1,2,4,8,16,32], then n²,
// capped at 300, then ±10 % jitter floored at 1.
func backoffSeconds(n int, r *rand.Rand, jitter bool) int {
	if n <= 0 {
		return 0
	}
	table := [...]int{1, 2, 4, 8, 16, 32}
	var s int
	if n <= len(table) {
		s = table[n-1]
	} else {
		s = int(math.Floor(math.Pow(float64(n), 2.0)))
	}
	s = min(s, 300)
	if jitter {
		j := int(math.Round(float64(s) * 0.1))
		s = max(s+r.IntN(2*j+1)-j, 1)
	}
	return s
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func uniform(r *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(r.Int64N(int64(hi-lo)))
}

func logUniform(r *rand.Rand, lo, hi time.Duration) time.Duration {
	a, b := math.Log(float64(lo)), math.Log(float64(hi))
	return time.Duration(math.Exp(a + r.Float64()*(b-a)))
}

// lognormal draws a duration with the given mean, clamped to [lo, hi].
func lognormal(r *rand.Rand, mean time.Duration, sigma float64, lo, hi time.Duration) time.Duration {
	d := time.Duration(float64(mean) * math.Exp(sigma*r.NormFloat64()-sigma*sigma/2))
	return min(max(d, lo), hi)
}
