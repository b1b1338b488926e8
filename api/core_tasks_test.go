package api

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/tasker-systems/tasker-sidecar/analytics"
	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/internal/secret"
)

// TestTaskRoutesOnCore: with the attachment saying tasker-core, the
// per-task context and steps routes take task UUIDs and answer the engine's
// columns (equal to the yardstick get_task_execution_context), 400 for ids
// that are not UUIDs, 404 for unknown tasks, missing_task_ids in the batch
// forms; the graph's adjacency lists are the task's edges, by step uuid;
// the handler catalog reads named_tasks; the bottleneck analysis has the
// engine's uuids.
func TestTaskRoutesOnCore(t *testing.T) {
	db := v1CoreDB(t)
	ys, err := os.ReadFile("../analytics/testdata/tasker_core_tasks.sql")
	if err != nil {
		t.Fatal(err)
	}
	conn := db.Conn(t)
	if _, err := conn.Exec(context.Background(), string(ys)); err != nil {
		t.Fatalf("install yardsticks: %v", err)
	}
	var ids []string
	rows, err := conn.Query(context.Background(), `SELECT task_uuid::text FROM tasker.tasks ORDER BY task_uuid LIMIT 3`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if rows.Err() != nil || len(ids) != 3 {
		t.Fatalf("tasks: %v %v", ids, rows.Err())
	}

	pool, err := collector.Open(collector.DBConfig{URL: secret.URL(db.URL)}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s := newServer(t, baseOptions(&fakeSource{}))
	MountAnalytics(s.Router(), analytics.New(pool.Pool(), analytics.Config{}, nil, analytics.WithAttachment(coreAttachment{})), nil, nil)

	// One task: the engine's context, then generated_at and cache_info.
	r := do(t, s, http.MethodGet, "/tasker/tasks/"+strings.ToUpper(ids[0])+"/context")
	if r.code != http.StatusOK {
		t.Fatalf("context: %d %s", r.code, r.body)
	}
	want := expectV1(t, db, `SELECT row_to_json(c) FROM (SELECT task_uuid, named_task_uuid, status, total_steps, pending_steps,
	    in_progress_steps, completed_steps, failed_steps, ready_steps, execution_status, recommended_action,
	    completion_percentage::float8, health_status, enqueued_steps FROM yardstick.get_task_execution_context($1)) c`, ids[0])
	var got map[string]any
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatal(err)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("context %s: %v, want %v", k, got[k], w)
		}
	}
	keys := orderedKeys(t, r.body)
	if len(keys) != 16 || keys[0] != "task_uuid" || keys[13] != "enqueued_steps" || keys[14] != "generated_at" || keys[15] != "cache_info" {
		t.Errorf("context keys %v", keys)
	}

	// Steps: the yardstick's rows, in its order.
	r = do(t, s, http.MethodGet, "/tasker/tasks/"+ids[1]+"/steps")
	if r.code != http.StatusOK {
		t.Fatalf("steps: %d %s", r.code, r.body)
	}
	var steps struct {
		TaskUUID string           `json:"task_uuid"`
		Steps    []map[string]any `json:"steps"`
	}
	if err := json.Unmarshal(r.body, &steps); err != nil {
		t.Fatal(err)
	}
	wantSteps := expectV1(t, db, `SELECT json_build_object('steps', json_agg(json_build_object('workflow_step_uuid', workflow_step_uuid,
	    'current_state', current_state, 'ready_for_execution', ready_for_execution, 'max_attempts', max_attempts,
	    'total_parents', total_parents, 'completed_parents', completed_parents, 'retry_eligible', retry_eligible))) 
	    FROM yardstick.get_step_readiness_status_batch(ARRAY[$1::uuid])`, ids[1])["steps"].([]any)
	if steps.TaskUUID != ids[1] || len(steps.Steps) != len(wantSteps) || len(wantSteps) == 0 {
		t.Fatalf("steps of %s: %d, yardstick %d", steps.TaskUUID, len(steps.Steps), len(wantSteps))
	}
	for i, w := range wantSteps {
		for k, v := range w.(map[string]any) {
			if steps.Steps[i][k] != v {
				t.Errorf("step %d %s: %v, want %v", i, k, steps.Steps[i][k], v)
			}
		}
	}

	// Batch: tasks in uuid order, the unknown one listed.
	unknown := "00000000-0000-4000-8000-000000000000"
	r = do(t, s, http.MethodGet, "/tasker/tasks/context?ids="+ids[2]+","+unknown+","+ids[0])
	var batch struct {
		Tasks   []map[string]any `json:"tasks"`
		Missing []string         `json:"missing_task_ids"`
	}
	if r.code != http.StatusOK {
		t.Fatalf("batch: %d %s", r.code, r.body)
	}
	if err := json.Unmarshal(r.body, &batch); err != nil {
		t.Fatal(err)
	}
	if len(batch.Tasks) != 2 || batch.Tasks[0]["task_uuid"] != ids[0] || batch.Tasks[1]["task_uuid"] != ids[2] ||
		len(batch.Missing) != 1 || batch.Missing[0] != unknown {
		t.Errorf("batch: %s", r.body)
	}

	// The graph: uuids for every id, the adjacency list the task's edges;
	// the batch form lists the unknown task.
	r = do(t, s, http.MethodGet, "/tasker/tasks/"+strings.ToUpper(ids[1])+"/graph")
	var graph struct {
		TaskID string `json:"task_id"`
		Graph  struct {
			Adjacency map[string][]string `json:"adjacency_list"`
		} `json:"dependency_graph"`
		Context   map[string]any `json:"execution_context"`
		CacheInfo map[string]any `json:"cache_info"`
	}
	if err := json.Unmarshal(r.body, &graph); r.code != http.StatusOK || err != nil {
		t.Fatalf("graph: %d %s", r.code, r.body)
	}
	wantAdj := expectV1(t, db, `SELECT COALESCE(json_object_agg(ws.workflow_step_uuid,
	        (SELECT COALESCE(json_agg(e.to_step_uuid ORDER BY e.to_step_uuid), '[]') FROM tasker.workflow_step_edges e
	          WHERE e.from_step_uuid = ws.workflow_step_uuid)), '{}')
	    FROM tasker.workflow_steps ws WHERE ws.task_uuid = $1`, ids[1])
	gotAdj, _ := json.Marshal(graph.Graph.Adjacency)
	wantJSON, _ := json.Marshal(wantAdj)
	if graph.TaskID != ids[1] || string(gotAdj) != string(wantJSON) || len(wantAdj) == 0 ||
		graph.Context["task_uuid"] != ids[1] || graph.CacheInfo == nil {
		t.Errorf("graph of %s: task_id %q, adjacency %s, want %s; context %v", ids[1], graph.TaskID, gotAdj, wantJSON, graph.Context)
	}
	r = do(t, s, http.MethodGet, "/tasker/tasks/graph?ids="+unknown+","+ids[2])
	var graphs struct {
		Tasks []struct {
			TaskID string `json:"task_id"`
		} `json:"tasks"`
		Missing []string `json:"missing_task_ids"`
	}
	if err := json.Unmarshal(r.body, &graphs); r.code != http.StatusOK || err != nil || len(graphs.Tasks) != 1 ||
		graphs.Tasks[0].TaskID != ids[2] || len(graphs.Missing) != 1 || graphs.Missing[0] != unknown {
		t.Errorf("graph batch: %d %s", r.code, r.body)
	}

	// The handler catalog, from named_tasks.
	r = do(t, s, http.MethodGet, PathHandlers)
	var cat struct {
		Namespaces []struct {
			Name string `json:"name"`
		} `json:"namespaces"`
	}
	if err := json.Unmarshal(r.body, &cat); r.code != http.StatusOK || err != nil || len(cat.Namespaces) == 0 {
		t.Fatalf("handlers: %d %s", r.code, r.body)
	}
	var nsName, taskName, version, named string
	if err := conn.QueryRow(context.Background(), `SELECT tn.name, nt.name, nt.version, nt.named_task_uuid::text
	    FROM tasker.named_tasks nt JOIN tasker.task_namespaces tn USING (task_namespace_uuid) ORDER BY 1, 2, 3 LIMIT 1`).
		Scan(&nsName, &taskName, &version, &named); err != nil {
		t.Fatal(err)
	}
	r = do(t, s, http.MethodGet, "/tasker/handlers/"+nsName+"/"+taskName+"?version="+version)
	var detail struct {
		Handler struct {
			NamedTaskUUID string           `json:"named_task_uuid"`
			StepTemplates []map[string]any `json:"step_templates"`
		} `json:"handler"`
	}
	if err := json.Unmarshal(r.body, &detail); r.code != http.StatusOK || err != nil || detail.Handler.NamedTaskUUID != named ||
		len(detail.Handler.StepTemplates) == 0 || detail.Handler.StepTemplates[0]["default_max_attempts"] == nil {
		t.Errorf("handler detail: %d %s", r.code, r.body)
	}

	// Bottlenecks: the core analysis, uuids in its lists.
	r = do(t, s, http.MethodGet, PathBottlenecks+"?period=48")
	var bn struct {
		Analysis struct {
			SlowestTasks []map[string]any `json:"slowest_tasks"`
		} `json:"bottleneck_analysis"`
		CacheInfo map[string]any `json:"cache_info"`
	}
	if err := json.Unmarshal(r.body, &bn); r.code != http.StatusOK || err != nil || len(bn.Analysis.SlowestTasks) == 0 ||
		bn.Analysis.SlowestTasks[0]["task_uuid"] == nil || bn.CacheInfo == nil {
		t.Errorf("bottlenecks: %d %s", r.code, r.body)
	}

	for _, tc := range []struct {
		path string
		code int
		text string
	}{
		{"/tasker/tasks/" + unknown + "/context", http.StatusNotFound, "Task not found"},
		{"/tasker/tasks/" + unknown + "/steps", http.StatusNotFound, "Task not found"},
		{"/tasker/tasks/42/context", http.StatusBadRequest, `must be a task UUID`},
		{"/tasker/tasks/" + strings.ReplaceAll(ids[0], "-", "") + "/steps", http.StatusBadRequest, `must be a task UUID`},
		{"/tasker/tasks/steps?ids=" + ids[0] + ",7,zz", http.StatusBadRequest, `got \"7\", \"zz\"`},
		{"/tasker/tasks/context", http.StatusBadRequest, "is required"},
		{"/tasker/tasks/" + unknown + "/graph", http.StatusNotFound, "Task not found"},
		{"/tasker/tasks/7/graph", http.StatusBadRequest, `must be a task UUID (8-4-4-4-12 hex digits), got \"7\"`},
		{"/tasker/tasks/{" + ids[0] + "}/graph", http.StatusBadRequest, `must be a task UUID`},
		{"/tasker/tasks/graph?ids=7," + ids[0] + ",zz," + strings.ReplaceAll(ids[1], "-", ""), http.StatusBadRequest,
			`got \"7\", \"zz\", \"` + strings.ReplaceAll(ids[1], "-", "") + `\"`},
		{"/tasker/tasks/graph", http.StatusBadRequest, "is required"},
		{"/tasker/handlers/no_such_namespace", http.StatusNotFound, "Namespace not found"},
		{PathBottlenecks + "?period=0", http.StatusBadRequest, "period"},
	} {
		r := do(t, s, http.MethodGet, tc.path)
		if r.code != tc.code || !strings.Contains(string(r.body), tc.text) {
			t.Errorf("%s: %d %s, want %d with %q", tc.path, r.code, r.body, tc.code, tc.text)
		}
	}
}
