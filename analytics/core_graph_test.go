package analytics

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestCoreGraphMatchesEdges: on a simulated tasker-core workload (with the
// corner rows of coreTasksDB), every task's graph analysis is checked
// against direct SQL on tasker.workflow_step_edges: the adjacency lists in
// both directions, the edge list, roots and leaves, the nodes and their
// states, levels that are the longest distance from a root, and each error
// chain's downstream steps against a recursive walk of the edges. Ids are
// the steps' uuids and the JSON has Rails' keys.
func TestCoreGraphMatchesEdges(t *testing.T) {
	db := coreTasksDB(t)
	ctx, tx := coreTx(t, db)
	ids := coreTaskUUIDs(t, ctx, tx)
	tasks, err := loadCoreTasks(ctx, tx, ids)
	if err != nil {
		t.Fatal(err)
	}
	edges, err := coreEdges(ctx, tx, ids)
	if err != nil {
		t.Fatal(err)
	}

	// The database's view, independent of the code under test.
	type stepRow struct{ task, state string }
	stepsOf := map[string]stepRow{}
	rows, err := tx.Query(ctx, `SELECT ws.workflow_step_uuid::text, ws.task_uuid::text, COALESCE(x.to_state, 'pending')
	    FROM tasker.workflow_steps ws LEFT JOIN tasker.workflow_step_transitions x
	      ON x.workflow_step_uuid = ws.workflow_step_uuid AND x.most_recent`)
	if err != nil {
		t.Fatal(err)
	}
	var sid, task, state string
	if _, err := pgx.ForEachRow(rows, []any{&sid, &task, &state}, func() error {
		stepsOf[sid] = stepRow{task, state}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	children := map[string][]string{}
	parents := map[string][]string{}
	edgeCount := map[string]int{}
	rows, err = tx.Query(ctx, `SELECT DISTINCT from_step_uuid::text, to_step_uuid::text FROM tasker.workflow_step_edges ORDER BY 1, 2`)
	if err != nil {
		t.Fatal(err)
	}
	var from, to string
	if _, err := pgx.ForEachRow(rows, []any{&from, &to}, func() error {
		children[from] = append(children[from], to)
		parents[to] = append(parents[to], from)
		edgeCount[stepsOf[to].task]++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)

	seen := map[string]int{}
	for _, task := range tasks {
		g := coreGraph(task, edges[task.uuid], maxPaths)
		if g.TaskID != task.uuid {
			t.Fatalf("task_id %q, want %q", g.TaskID, task.uuid)
		}
		d := g.DependencyGraph
		var mine []string
		for s, r := range stepsOf {
			if r.task == task.uuid {
				mine = append(mine, s)
			}
		}
		slices.Sort(mine)
		var nodes []string
		for _, n := range d.Nodes {
			nodes = append(nodes, n.ID)
			if n.State != stepsOf[n.ID].state {
				t.Errorf("task %s node %s state %q, database %q", task.uuid, n.ID, n.State, stepsOf[n.ID].state)
			}
			seen["state="+n.State]++
		}
		if !slices.Equal(nodes, mine) {
			t.Fatalf("task %s nodes %v, database steps %v", task.uuid, nodes, mine)
		}
		if len(d.Edges) != edgeCount[task.uuid] {
			t.Errorf("task %s: %d edges, database %d", task.uuid, len(d.Edges), edgeCount[task.uuid])
		}
		var roots, leaves []string
		for _, s := range mine {
			if !reflect.DeepEqual(d.AdjacencyList[s], orNone(children[s])) {
				t.Errorf("step %s children %v, database %v", s, d.AdjacencyList[s], children[s])
			}
			if !reflect.DeepEqual(d.ReverseAdjacencyList[s], orNone(parents[s])) {
				t.Errorf("step %s parents %v, database %v", s, d.ReverseAdjacencyList[s], parents[s])
			}
			if len(parents[s]) == 0 {
				roots = append(roots, s)
			}
			if len(children[s]) == 0 {
				leaves = append(leaves, s)
			}
			// The longest distance from a root: 0 for a root, else one
			// more than its deepest parent.
			l, ok := d.DependencyLevels[s]
			if !ok {
				t.Errorf("step %s has no level (the simulated graphs are acyclic)", s)
				continue
			}
			want := 0
			for _, p := range parents[s] {
				want = max(want, d.DependencyLevels[p]+1)
			}
			if l != want {
				t.Errorf("step %s level %d, want %d from its parents %v", s, l, want, parents[s])
			}
			seen["level"+string(rune('0'+min(l, 9)))]++
		}
		if !slices.Equal(g.CriticalPaths.RootNodes, orNone(roots)) || !slices.Equal(g.CriticalPaths.LeafNodes, orNone(leaves)) {
			t.Errorf("task %s roots %v leaves %v, database %v %v", task.uuid, g.CriticalPaths.RootNodes,
				g.CriticalPaths.LeafNodes, roots, leaves)
		}
		if len(g.DependencyLevels) != len(mine) {
			t.Errorf("task %s: %d level rows for %d steps", task.uuid, len(g.DependencyLevels), len(mine))
		}
		for _, p := range g.CriticalPaths.Paths {
			for i := 1; i < len(p.Steps); i++ {
				if !slices.Contains(children[p.Steps[i-1]], p.Steps[i]) {
					t.Errorf("task %s path %v: %s is not a child of %s", task.uuid, p.Steps, p.Steps[i], p.Steps[i-1])
				}
			}
		}
		if g.CriticalPaths.TotalPaths > 1 {
			seen["several paths"]++
		}
		failing := 0
		for _, n := range d.Nodes {
			if n.State == StateError || n.State == "waiting_for_retry" {
				failing++
			}
		}
		if len(g.ErrorChains.Chains) != failing || g.ErrorChains.TotalErrorSteps != int64(failing) {
			t.Errorf("task %s: %d chains, total_error_steps %d; %d steps in error or waiting_for_retry",
				task.uuid, len(g.ErrorChains.Chains), g.ErrorChains.TotalErrorSteps, failing)
		}
		for _, ch := range g.ErrorChains.Chains {
			seen["chain:"+stepsOf[ch.StepID].state]++
			var down []string
			if err := tx.QueryRow(ctx, `WITH RECURSIVE d(s) AS (
			        SELECT to_step_uuid FROM tasker.workflow_step_edges WHERE from_step_uuid = $1
			        UNION SELECT e.to_step_uuid FROM tasker.workflow_step_edges e JOIN d ON e.from_step_uuid = d.s)
			    SELECT COALESCE(array_agg(s::text ORDER BY s), '{}') FROM d`, ch.StepID).Scan(&down); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ch.DownstreamSteps, down) {
				t.Errorf("chain of %s downstream %v, database %v", ch.StepID, ch.DownstreamSteps, down)
			}
			if len(down) > 0 {
				seen["chain with downstream"]++
			}
		}
		if g.Context.TaskUUID != task.uuid || g.ParallelismOpportunities.TotalSteps != int64(len(mine)) {
			t.Errorf("task %s context %+v, parallelism total %d", task.uuid, g.Context, g.ParallelismOpportunities.TotalSteps)
		}
	}
	for _, k := range []string{"state=complete", "state=error", "state=waiting_for_retry", "state=pending",
		"level0", "level1", "level2", "several paths", "chain:error", "chain:waiting_for_retry", "chain with downstream"} {
		if seen[k] == 0 {
			t.Errorf("the sample has no %q (%v)", k, seen)
		}
	}
	t.Logf("%d tasks; %v", len(tasks), seen)

	// Rails' JSON keys, at every level, with uuids for ids.
	g := coreGraph(tasks[0], edges[tasks[0].uuid], maxPaths)
	rails := analyzeGraph(&taskData{taskID: 1}, maxPaths)
	if gk, rk := jsonKeys(t, g), jsonKeys(t, rails); !reflect.DeepEqual(gk, rk) {
		t.Errorf("core graph keys %v\nRails graph keys %v", gk, rk)
	}
}

func orNone(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// jsonKeys lists the keys of v's JSON object and of the objects it nests
// whose keys are names, not ids, leaving execution_context out (each
// engine's context route's columns).
func jsonKeys(t *testing.T, v any) []string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "execution_context")
	// Maps keyed by id, and a chain that is null without errors.
	skip := map[string]bool{"adjacency_list": true, "reverse_adjacency_list": true, "dependency_levels": true,
		"most_critical_error": true}
	var out []string
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			out = append(out, prefix+k)
			if skip[k] {
				continue
			}
			if sub, ok := m[k].(map[string]any); ok {
				walk(prefix+k+".", sub)
			}
		}
	}
	walk("", m)
	return out
}
