package collector

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
)

func TestTaskHistories(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	f := newFixture(t, pg)
	nt := f.namedTask("billing", "invoice", "0.3.0")
	task := f.task(nt, "pending", "in_progress", "complete")
	parent := f.step(task, stepSpec{attempts: n32(2), retryLimit: n32(3), lastAttempted: true},
		"pending", "in_progress", "error", "pending", "in_progress", "complete")
	child := f.step(task, stepSpec{attempts: n32(1), retryLimit: n32(3)}, "pending", "in_progress", "complete")
	f.exec(`INSERT INTO tasker_workflow_step_edges (from_step_id, to_step_id, name, created_at, updated_at)
		VALUES ($1, $2, 'provides', $3, $3), ($1, $2, 'provides', $3, $3)`, parent, child, epoch) // a duplicate edge
	f.exec(`UPDATE tasker_workflow_steps SET results = '{"error": "boom", "error_class": "Faraday::TimeoutError"}',
		backoff_request_seconds = 4 WHERE workflow_step_id = $1`, parent)
	other := f.task(nt) // no transitions, no steps

	db, _ := openTest(t, pg.URL)
	hs, err := db.TaskHistories(testCtx(t), ids(other, task, 999_999), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 2 || hs[0].TaskID != engine.IntID(task) || hs[1].TaskID != engine.IntID(other) {
		t.Fatalf("histories for %v", hs)
	}
	h := hs[0]
	if h.Namespace != "billing" || h.TaskName != "invoice" || h.Version != "0.3.0" || len(h.Transitions) != 3 {
		t.Errorf("task = %+v", h)
	}
	var states []string
	for _, tr := range h.Transitions {
		states = append(states, tr.ToState)
	}
	if !slices.Equal(states, []string{"pending", "in_progress", "complete"}) {
		t.Errorf("task transitions %v", states)
	}
	if len(h.Steps) != 2 {
		t.Fatalf("steps = %+v", h.Steps)
	}
	p, c := h.Steps[0], h.Steps[1]
	if p.StepID != engine.IntID(parent) || len(p.Transitions) != 6 || p.Name != "fixture_step" || *p.Attempts != 2 ||
		p.Error != "boom" || p.ErrorClass != "Faraday::TimeoutError" || *p.BackoffRequestSeconds != 4 || p.LastAttemptedAt == nil {
		t.Errorf("parent step = %+v", p)
	}
	if !slices.Equal(c.Parents, ids(parent)) || len(p.Parents) != 0 {
		t.Errorf("parents: child %v, parent %v", c.Parents, p.Parents)
	}
	if len(hs[1].Steps) != 0 || len(hs[1].Transitions) != 0 {
		t.Errorf("empty task = %+v", hs[1])
	}
	if hs, err := db.TaskHistories(testCtx(t), nil, nil); hs != nil || err != nil {
		t.Errorf("no ids: %v, %v", hs, err)
	}

	// The transitions the stream read stand in for the queries: the same
	// histories, whether the stream had read every row, or only part of
	// them and the rest are read above its position.
	const maxID = 1 << 62
	for _, tc := range []struct {
		name    string
		keep    func(HistoryTransition) bool
		through int64
	}{
		{"all read", func(HistoryTransition) bool { return true }, maxID},
		{"all read, position unknown", func(HistoryTransition) bool { return true }, 0},
		{"the last rows committed after the read", func(tr HistoryTransition) bool { return tr.SortKey < 3 }, -1},
	} {
		seen := &TaskTransitions{Steps: map[engine.ID][]HistoryTransition{},
			TaskThrough: engine.IntID(tc.through), StepThrough: engine.IntID(tc.through)}
		for _, tr := range h.Transitions {
			if tc.keep(tr) {
				seen.Task = append(seen.Task, tr)
				if tc.through < 0 {
					seen.TaskThrough = engine.IntID(max(seen.TaskThrough.Int(), tr.ID.Int()+1))
				}
			}
		}
		for _, st := range h.Steps {
			for _, tr := range st.Transitions {
				if tc.keep(tr) {
					seen.Steps[st.StepID] = append(seen.Steps[st.StepID], tr)
					if tc.through < 0 {
						seen.StepThrough = engine.IntID(max(seen.StepThrough.Int(), tr.ID.Int()+1))
					}
				}
			}
		}
		again, err := db.TaskHistories(testCtx(t), ids(other, task), map[engine.ID]*TaskTransitions{engine.IntID(task): seen})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(again, hs) {
			t.Errorf("%s:\n%+v\nwant\n%+v", tc.name, again, hs)
		}
	}
}

// ids are Rails keys.
func ids(ns ...int64) []engine.ID {
	out := make([]engine.ID, len(ns))
	for i, n := range ns {
		out[i] = engine.IntID(n)
	}
	return out
}

// coreHistoryFixture writes, with SQL into tasker-core's schema, a task
// that completed after its step charge failed once and was retried, and
// whose step email has transitions tied on sort_key: rows that only
// created_at, and then only the key, put in order.
type coreHistoryFixture struct {
	task, other, charge, email engine.ID
	// emailOrder is the keys of email's transitions in history order.
	emailOrder []engine.ID
	failure    engine.ID // charge's enqueued_as_error_for_orchestration row
}

const coreCorrelationID = "0190f2a4-5b6c-7d8e-9f00-000000000042"

var coreEpoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func newCoreHistoryFixture(t *testing.T, pg pgtest.DB) coreHistoryFixture {
	t.Helper()
	ctx := testCtx(t)
	conn := pg.Conn(t)
	key := func(sql string, args ...any) engine.ID {
		t.Helper()
		var id engine.ID
		if err := conn.QueryRow(ctx, sql, args...).Scan(&id); err != nil {
			t.Fatalf("fixture %q: %v", sql, err)
		}
		return id
	}
	var fx coreHistoryFixture
	ns := key(`INSERT INTO tasker.task_namespaces (name, created_at, updated_at) VALUES ('billing', $1, $1)
		RETURNING task_namespace_uuid`, epoch)
	nt := key(`INSERT INTO tasker.named_tasks (task_namespace_uuid, name, version, created_at, updated_at)
		VALUES ($1, 'invoice', '0.3.0', $2, $2) RETURNING named_task_uuid`, ns, epoch)
	newTask := func(hash string, correlation string) engine.ID {
		return key(`INSERT INTO tasker.tasks (named_task_uuid, requested_at, identity_hash, initiator, source_system,
			reason, correlation_id, created_at, updated_at)
			VALUES ($1, $2, $3, 'billing-api', 'web', 'month end', $4, $2, $2) RETURNING task_uuid`, nt, epoch, hash, correlation)
	}
	fx.task = newTask("h1", coreCorrelationID)
	fx.other = newTask("h2", "0190f2a4-5b6c-7d8e-9f00-000000000043")
	taskRow := func(task engine.ID, state string, sortKey int, sec int) {
		t.Helper()
		if _, err := conn.Exec(ctx, `INSERT INTO tasker.task_transitions (task_uuid, to_state, sort_key, most_recent,
			created_at, updated_at) VALUES ($1, $2, $3, false, $4, $4)`, task, state, sortKey, coreEpoch.Add(time.Duration(sec)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	for i, st := range []string{engine.Pending, engine.Initializing, engine.EnqueuingSteps, engine.StepsInProcess,
		engine.EvaluatingResults, engine.Complete} {
		taskRow(fx.task, st, i+1, i)
	}
	step := func(name string, results string) engine.ID {
		ns := key(`INSERT INTO tasker.named_steps (name, created_at, updated_at) VALUES ($1, $2, $2)
			RETURNING named_step_uuid`, name, epoch)
		return key(`INSERT INTO tasker.workflow_steps (task_uuid, named_step_uuid, retryable, max_attempts, attempts,
			backoff_request_seconds, last_attempted_at, results, created_at, updated_at)
			VALUES ($1, $2, true, 5, 2, 4, $3, $4, $3, $3) RETURNING workflow_step_uuid`, fx.task, ns, epoch, results)
	}
	// The latest result of charge is a failure that orchestration has not
	// decided on yet: its error is the step's Error.
	fx.charge = step("charge", `{"success": false, "error": {"message": "gateway timeout", "error_type": "TimeoutError", "retryable": true}}`)
	fx.email = step("email", `{"success": true, "result": {"sent": true}}`)
	stepRow := func(s engine.ID, state string, sortKey, sec int, meta string, id string) engine.ID {
		t.Helper()
		if id == "" {
			id = "DEFAULT"
		} else {
			id = "'" + id + "'"
		}
		return key(`INSERT INTO tasker.workflow_step_transitions (workflow_step_transition_uuid, workflow_step_uuid, to_state,
			sort_key, most_recent, metadata, created_at, updated_at)
			VALUES (`+id+`, $1, $2, $3, false, $4, $5, $5) RETURNING workflow_step_transition_uuid`,
			s, state, sortKey, meta, coreEpoch.Add(time.Duration(sec)*time.Second))
	}
	// The engine's metadata: the event is the StepEvent serialized to JSON
	// text inside the JSON object.
	engineMeta := `{"event": "{\"type\":\"EnqueueAsErrorForOrchestration\",\"data\":{\"success\":false,\"error\":{\"message\":\"card declined\",\"error_type\":\"PaymentError\",\"retryable\":true}}}", "timestamp": "2025-06-01T12:00:03Z"}`
	for i, st := range []string{engine.Pending, engine.Enqueued, engine.InProgress, engine.EnqueuedAsErrorForOrchestration,
		engine.WaitingForRetry, engine.Pending, engine.Enqueued, engine.InProgress, engine.EnqueuedAsErrorForOrchestration} {
		meta := "{}"
		if st == engine.EnqueuedAsErrorForOrchestration && i == 3 {
			meta = engineMeta
		} else if st == engine.EnqueuedAsErrorForOrchestration {
			// A worker that puts the result in the metadata itself.
			meta = `{"event": "step_failed", "result": {"success": false, "error": {"message": "gateway timeout", "error_class": "TimeoutError"}}}`
		}
		id := stepRow(fx.charge, st, i+1, i, meta, "")
		if i == 3 {
			fx.failure = id
		}
	}
	// email: sort_key 2 twice (created_at decides), sort_key 3 twice at
	// the same time (the key decides); inserted out of order.
	a := stepRow(fx.email, engine.Complete, 3, 8, "{}", "0190f2a4-0000-7000-8000-0000000000b2")
	b := stepRow(fx.email, engine.EnqueuedForOrchestration, 3, 8, "{}", "0190f2a4-0000-7000-8000-0000000000b1")
	c := stepRow(fx.email, engine.InProgress, 2, 7, "{}", "0190f2a4-0000-7000-8000-0000000000a1")
	d := stepRow(fx.email, engine.Enqueued, 2, 6, "{}", "0190f2a4-0000-7000-8000-0000000000a2")
	e := stepRow(fx.email, engine.Pending, 1, 5, "{}", "")
	fx.emailOrder = []engine.ID{e, d, c, b, a}
	if _, err := conn.Exec(ctx, `INSERT INTO tasker.workflow_step_edges (from_step_uuid, to_step_uuid, name, created_at, updated_at)
		VALUES ($1, $2, 'provides', $3, $3)`, fx.charge, fx.email, epoch); err != nil {
		t.Fatal(err)
	}
	return fx
}

func TestTaskHistoriesCore(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewCore(t)
	fx := newCoreHistoryFixture(t, pg)
	db, _ := openTest(t, pg.URL)
	missing := engine.UUIDLowerBound(coreEpoch)
	hs, err := db.TaskHistories(testCtx(t), []engine.ID{fx.other, fx.task, missing}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 2 || hs[0].TaskID != fx.task || hs[1].TaskID != fx.other {
		t.Fatalf("histories for %+v", hs)
	}
	h := hs[0]
	if h.Namespace != "billing" || h.TaskName != "invoice" || h.Version != "0.3.0" || h.Initiator != "billing-api" ||
		h.Reason != "month end" || h.CorrelationID != coreCorrelationID || len(h.Transitions) != 6 ||
		h.Transitions[5].ToState != engine.Complete {
		t.Errorf("task = %+v", h)
	}
	if len(h.Steps) != 2 {
		t.Fatalf("steps = %+v", h.Steps)
	}
	byID := map[engine.ID]StepHistory{h.Steps[0].StepID: h.Steps[0], h.Steps[1].StepID: h.Steps[1]}
	charge, email := byID[fx.charge], byID[fx.email]
	if charge.Name != "charge" || *charge.RetryLimit != 5 || *charge.Attempts != 2 || *charge.BackoffRequestSeconds != 4 ||
		charge.Error != "gateway timeout" || charge.ErrorClass != "TimeoutError" || len(charge.Transitions) != 9 {
		t.Errorf("charge = %+v", charge)
	}
	wantFailures := []StepFailure{
		{TransitionID: fx.failure, Error: "card declined", ErrorClass: "PaymentError"},
		{TransitionID: charge.Transitions[8].ID, Error: "gateway timeout", ErrorClass: "TimeoutError"},
	}
	if !reflect.DeepEqual(charge.Failures, wantFailures) {
		t.Errorf("charge failures = %+v, want %+v", charge.Failures, wantFailures)
	}
	var order []engine.ID
	for _, tr := range email.Transitions {
		order = append(order, tr.ID)
	}
	if !slices.Equal(order, fx.emailOrder) || email.Error != "" || email.Failures != nil {
		t.Errorf("email transitions %v, want %v; email = %+v", order, fx.emailOrder, email)
	}
	if !slices.Equal(email.Parents, []engine.ID{fx.charge}) || len(charge.Parents) != 0 {
		t.Errorf("parents: email %v, charge %v", email.Parents, charge.Parents)
	}
	if hs[1].CorrelationID == "" || len(hs[1].Steps) != 0 || len(hs[1].Transitions) != 0 {
		t.Errorf("empty task = %+v", hs[1])
	}

	// The stream's transitions stand in for the rows below its position,
	// merged with those read at or above it.
	var all []engine.ID
	for _, tr := range h.Transitions {
		all = append(all, tr.ID)
	}
	for _, s := range h.Steps {
		for _, tr := range s.Transitions {
			all = append(all, tr.ID)
		}
	}
	slices.SortFunc(all, engine.ID.Compare)
	var top [16]byte
	for i := range top {
		top[i] = 0xff
	}
	for _, tc := range []struct {
		name    string
		through engine.ID
		keepAll bool
	}{
		{"all read", engine.UUIDID(top), false},
		{"all read, position unknown", engine.ID{}, true},
		{"the rows above the middle key committed after the read", all[len(all)/2], false},
		{"nothing read yet", all[0], false},
	} {
		keep := func(tr HistoryTransition) bool { return tc.keepAll || tr.ID.Compare(tc.through) < 0 }
		seen := &TaskTransitions{Steps: map[engine.ID][]HistoryTransition{}, TaskThrough: tc.through, StepThrough: tc.through}
		for _, tr := range h.Transitions {
			if keep(tr) {
				seen.Task = append(seen.Task, tr)
			}
		}
		for _, st := range h.Steps {
			for _, tr := range st.Transitions {
				if keep(tr) {
					seen.Steps[st.StepID] = append(seen.Steps[st.StepID], tr)
				}
			}
		}
		again, err := db.TaskHistories(testCtx(t), []engine.ID{fx.other, fx.task}, map[engine.ID]*TaskTransitions{fx.task: seen})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(again, hs) {
			t.Errorf("%s:\n%+v\nwant\n%+v", tc.name, again, hs)
		}
	}
}

func TestCoreFailure(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, meta, msg, class string
	}{
		{"engine event", `{"event": "{\"type\":\"EnqueueAsErrorForOrchestration\",\"data\":{\"error\":{\"message\":\"boom\",\"error_type\":\"E\"}}}"}`, "boom", "E"},
		{"flat", `{"event": "step_failed", "error": {"message": "boom", "error_class": "C"}}`, "boom", "C"},
		{"nested result", `{"result": {"error": {"message": "boom"}}}`, "boom", ""},
		{"string error", `{"error": "boom"}`, "boom", ""},
		{"event without data", `{"event": "{\"type\":\"EnqueueAsErrorForOrchestration\",\"data\":null}"}`, "", ""},
		{"not an object", `[1, 2]`, "", ""},
		{"nothing", `{}`, "", ""},
	} {
		if msg, class := coreFailure([]byte(tc.meta)); msg != tc.msg || class != tc.class {
			t.Errorf("%s: %q, %q; want %q, %q", tc.name, msg, class, tc.msg, tc.class)
		}
	}
}
