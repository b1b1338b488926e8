package analytics

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/rubyjson"
)

// Weights of Tasker's dependency_graph configuration defaults, as
// lib/tasker/analysis/runtime_graph_analyzer.rb applies them (docs/analytics.md).
const (
	weightDownstream    = 5
	weightBlocked       = 15
	penaltyCompleted    = 15
	penaltyBlocked      = 25
	penaltyError        = 30
	penaltyRetry        = 10
	baseStepSeconds     = 30
	errorPenaltySeconds = 60
	retryPenaltySeconds = 30
	thresholdCritical   = 100
	thresholdHigh       = 50
	thresholdMedium     = 20
	maxRankedPaths      = 5
	maxBottlenecks      = 10
	maxRecoveryPriority = 3
)

// TaskGraphOf is the dependency levels of calculate_dependency_levels and
// Tasker's RuntimeGraphAnalyzer output for one task, with its task and step
// ids of type ID and its execution context of type C: TaskGraph on Rails
// (int64 ids, TaskContext), CoreTaskGraph on tasker-core (UUID strings,
// CoreTaskContext). Every type of the output is generic over the id type
// only where it holds ids; the Rails names are aliases of the int64
// instantiations, whose JSON is that of the former int64 structs.
type TaskGraphOf[ID cmp.Ordered, C any] struct {
	TaskID ID `json:"task_id"`
	// DependencyLevels is calculate_dependency_levels: one row per step
	// reachable from a root, ordered by level then id.
	DependencyLevels         []StepLevelOf[ID]      `json:"dependency_levels"`
	DependencyGraph          DependencyGraphOf[ID]  `json:"dependency_graph"`
	CriticalPaths            CriticalPathsOf[ID]    `json:"critical_paths"`
	ParallelismOpportunities Parallelism            `json:"parallelism_opportunities"`
	ErrorChains              ErrorChainsOf[ID]      `json:"error_chains"`
	Bottlenecks              GraphBottlenecksOf[ID] `json:"bottlenecks"`
	Context                  C                      `json:"execution_context"`
	CycleDetected            bool                   `json:"cycle_detected"`
	GeneratedAt              Time                   `json:"generated_at"`
}

// The Rails output types: ids are task_id and workflow_step_id values.
type (
	TaskGraph        = TaskGraphOf[int64, TaskContext]
	StepLevel        = StepLevelOf[int64]
	DependencyGraph  = DependencyGraphOf[int64]
	GraphNode        = GraphNodeOf[int64]
	GraphEdge        = GraphEdgeOf[int64]
	CriticalPaths    = CriticalPathsOf[int64]
	PathInfo         = PathInfoOf[int64]
	PathBottleneck   = PathBottleneckOf[int64]
	ErrorChains      = ErrorChainsOf[int64]
	ErrorChain       = ErrorChainOf[int64]
	RecoveryPriority = RecoveryPriorityOf[int64]
	GraphBottlenecks = GraphBottlenecksOf[int64]
	GraphBottleneck  = GraphBottleneckOf[int64]
)

// analyzer holds one task's graph while its analysis is built. It works on
// int64 step keys: Rails' workflow_step_id, or on tasker-core dense
// ordinals given in step uuid order (coreGraph), so that every ascending
// order of keys is the order of the ids they stand for; id turns a key
// into the id the output carries.
type analyzer[ID cmp.Ordered] struct {
	ctx         graphContext
	sem         graphSemantics
	id          func(int64) ID
	cycle       bool
	steps       []StepReadiness   // ordered by id
	stepIndex   map[int64]int     // step id → index in steps
	children    map[int64][]int64 // unique, ascending
	parents     map[int64][]int64
	levels      map[int64]int     // absent: unreachable, or on or behind a cycle
	descendants map[int64][]int64 // memo
}

// graphContext is what the analysis reads of the task's execution context.
// FailedSteps counts the steps sem.failing holds failing.
type graphContext struct {
	TotalSteps, PendingSteps, FailedSteps, ReadySteps int64
	CompletionPercentage                              Decimal
	HealthStatus                                      string
}

// graphSemantics is where the engines' state machines differ for the
// analysis (docs/analytics.md, "Bottlenecks, per task and
// handlers on tasker-core").
type graphSemantics struct {
	// failing is Tasker's "error" step: a failure, retryable or not. Rails
	// keeps both in error; tasker-core moves a retryable failure to
	// waiting_for_retry and keeps error for the rest
	// (engine.Engine.HasRetryClass).
	failing func(state string) bool
	// core: a step that is not retry eligible without being exhausted is
	// not retryable on tasker-core (its retry_eligible has no timing).
	core bool
}

var railsSemantics = graphSemantics{failing: func(s string) bool { return s == StateError }}

var coreSemantics = graphSemantics{failing: engine.Core().HasRetryClass, core: true}

// StepLevelOf is a row of calculate_dependency_levels.
type StepLevelOf[ID cmp.Ordered] struct {
	WorkflowStepID  ID  `json:"workflow_step_id"`
	DependencyLevel int `json:"dependency_level"`
}

// DependencyGraphOf is the analyzer's structural view.
type DependencyGraphOf[ID cmp.Ordered] struct {
	Nodes                []GraphNodeOf[ID] `json:"nodes"`
	Edges                []GraphEdgeOf[ID] `json:"edges"`
	AdjacencyList        map[ID][]ID       `json:"adjacency_list"`
	ReverseAdjacencyList map[ID][]ID       `json:"reverse_adjacency_list"`
	DependencyLevels     map[ID]int        `json:"dependency_levels"`
}

// GraphNodeOf is a step; Level is 0 when calculate_dependency_levels has none.
type GraphNodeOf[ID cmp.Ordered] struct {
	ID    ID     `json:"id"`
	Name  string `json:"name"`
	Level int    `json:"level"`
	State string `json:"state"`
}

// GraphEdgeOf runs from a parent step to its dependent.
type GraphEdgeOf[ID cmp.Ordered] struct {
	From     ID     `json:"from"`
	To       ID     `json:"to"`
	FromName string `json:"from_name"`
	ToName   string `json:"to_name"`
}

// CriticalPathsOf ranks the root-to-leaf paths.
type CriticalPathsOf[ID cmp.Ordered] struct {
	TotalPaths int64 `json:"total_paths"`
	// LongestPathLength is, as in Tasker, the length of the highest-scored
	// path, not of the longest one.
	LongestPathLength int              `json:"longest_path_length"`
	Paths             []PathInfoOf[ID] `json:"paths"`
	RootNodes         []ID             `json:"root_nodes"`
	LeafNodes         []ID             `json:"leaf_nodes"`
	// PathsTruncated says enumeration stopped at Options.MaxPaths; the
	// ranking then covers only the enumerated paths.
	PathsTruncated bool `json:"paths_truncated"`
}

// PathInfoOf is one root-to-leaf path.
type PathInfoOf[ID cmp.Ordered] struct {
	Steps                []ID                   `json:"path"`
	StepNames            []string               `json:"step_names"`
	Length               int                    `json:"length"`
	CompletedSteps       int                    `json:"completed_steps"`
	BlockedSteps         int                    `json:"blocked_steps"`
	ErrorSteps           int                    `json:"error_steps"`
	RetrySteps           int                    `json:"retry_steps"`
	ReadySteps           int                    `json:"ready_steps"`
	EstimatedDuration    int64                  `json:"estimated_duration"`
	Bottlenecks          []PathBottleneckOf[ID] `json:"bottlenecks"`
	CriticalityScore     Float                  `json:"criticality_score"`
	CompletionPercentage Float                  `json:"completion_percentage"`
}

// PathBottleneckOf is a blocked or failing step on a path.
type PathBottleneckOf[ID cmp.Ordered] struct {
	StepID   ID     `json:"step_id"`
	StepName string `json:"step_name"`
	Reason   string `json:"reason"`
	Severity int    `json:"severity"`
	Impact   string `json:"impact"`
}

// Parallelism groups the steps by dependency level.
type Parallelism struct {
	TotalSteps                   int64          `json:"total_steps"`
	TotalLevels                  int            `json:"total_levels"`
	MaxParallelSteps             int            `json:"max_parallel_steps"`
	CurrentParallelOpportunities int64          `json:"current_parallel_opportunities"`
	BlockedParallelOpportunities int            `json:"blocked_parallel_opportunities"`
	OverallCompletion            Decimal        `json:"overall_completion"`
	Levels                       []LevelSummary `json:"levels"`
	ParallelismEfficiency        Float          `json:"parallelism_efficiency"`
}

// LevelSummary describes one dependency level.
type LevelSummary struct {
	Level                int      `json:"level"`
	TotalSteps           int      `json:"total_steps"`
	ReadySteps           int      `json:"ready_steps"`
	BlockedSteps         int      `json:"blocked_steps"`
	ErrorSteps           int      `json:"error_steps"`
	CompletedSteps       int      `json:"completed_steps"`
	StepNames            []string `json:"step_names"`
	ParallelismPotential string   `json:"parallelism_potential"`
	BottleneckRisk       string   `json:"bottleneck_risk"`
}

// ErrorChainsOf describes what each failing step holds up.
type ErrorChainsOf[ID cmp.Ordered] struct {
	TotalErrorSteps      int64                    `json:"total_error_steps"`
	TotalSteps           int64                    `json:"total_steps"`
	ErrorPercentage      Float                    `json:"error_percentage"`
	TotalBlockedByErrors int                      `json:"total_blocked_by_errors"`
	MostCriticalError    *ErrorChainOf[ID]        `json:"most_critical_error"`
	Chains               []ErrorChainOf[ID]       `json:"error_chains"`
	RecoveryPriority     []RecoveryPriorityOf[ID] `json:"recovery_priority"`
	HealthStatus         string                   `json:"health_status"`
}

// ErrorChainOf is one failing step and its descendants.
type ErrorChainOf[ID cmp.Ordered] struct {
	StepID              ID                 `json:"step_id"`
	StepName            string             `json:"step_name"`
	DownstreamSteps     []ID               `json:"downstream_steps"`
	BlockedSteps        []ID               `json:"blocked_steps"`
	TotalImpact         int                `json:"total_impact"`
	RetryAnalysis       RetryAnalysis      `json:"retry_analysis"`
	RecoveryStrategies  []RecoveryStrategy `json:"recovery_strategies"`
	DownstreamCount     int                `json:"downstream_count"`
	BlockedDownstreamCt int                `json:"blocked_count"`
}

// RetryAnalysis is the retry outlook of a failing step.
type RetryAnalysis struct {
	Exhausted         bool  `json:"exhausted"`
	RemainingAttempts int32 `json:"remaining_attempts"`
	InBackoff         bool  `json:"in_backoff"`
	NextRetryAt       Time  `json:"next_retry_at"`
	Retryable         bool  `json:"retryable"`
}

// RecoveryStrategy is a suggested action and its priority.
type RecoveryStrategy struct {
	Strategy string `json:"strategy"`
	Priority string `json:"priority"`
}

// RecoveryPriorityOf orders the failing steps to act on first.
type RecoveryPriorityOf[ID cmp.Ordered] struct {
	StepID            ID     `json:"step_id"`
	StepName          string `json:"step_name"`
	PriorityLevel     string `json:"priority_level"`
	Reason            string `json:"reason"`
	RecommendedAction string `json:"recommended_action"`
	TotalImpact       int    `json:"total_impact"`
}

// GraphBottlenecksOf ranks the steps holding the task back.
type GraphBottlenecksOf[ID cmp.Ordered] struct {
	Bottlenecks         []GraphBottleneckOf[ID] `json:"bottlenecks"`
	TotalBottlenecks    int                     `json:"total_bottlenecks"`
	CriticalBottlenecks int                     `json:"critical_bottlenecks"`
	TotalBlockedSteps   int                     `json:"total_blocked_steps"`
	FailedStepsRatio    Float                   `json:"failed_steps_ratio"`
	OverallImpact       string                  `json:"overall_impact"`
}

// GraphBottleneckOf is one ranked step. RetryLimit is max_attempts on
// tasker-core.
type GraphBottleneckOf[ID cmp.Ordered] struct {
	StepID                  ID      `json:"step_id"`
	StepName                string  `json:"step_name"`
	CurrentState            string  `json:"current_state"`
	BottleneckType          string  `json:"bottleneck_type"`
	ImpactScore             int64   `json:"impact_score"`
	Severity                string  `json:"severity"`
	DownstreamSteps         int     `json:"downstream_steps"`
	BlockedDownstreamSteps  int     `json:"blocked_downstream_steps"`
	Attempts                int32   `json:"attempts"`
	RetryLimit              int32   `json:"retry_limit"`
	ResolutionStrategy      string  `json:"resolution_strategy"`
	EstimatedResolutionTime string  `json:"estimated_resolution_time"`
	BlockingReason          *string `json:"blocking_reason"`
	RetryStatus             string  `json:"retry_status"`
	DependencyStatus        string  `json:"dependency_status"`
	TimeUntilReady          *int64  `json:"time_until_ready"`
}

// analyzeGraph builds a task's graph analysis from its readiness rows and
// edges. Edges whose parent is not a step of the task are left out of the
// structure (Tasker never writes such edges); they still count in the
// readiness rows, which come from the database.
func analyzeGraph(t *taskData, maxPaths int) TaskGraph {
	c := t.context()
	gc := graphContext{TotalSteps: c.TotalSteps, PendingSteps: c.PendingSteps, FailedSteps: c.FailedSteps,
		ReadySteps: c.ReadySteps, CompletionPercentage: c.CompletionPercentage, HealthStatus: c.HealthStatus}
	g := newAnalyzer(t.steps, t.edges, gc, railsSemantics, func(id int64) int64 { return id })
	return buildGraph(g, t.taskID, c, t.now, maxPaths)
}

// newAnalyzer builds the structure of one task's graph; steps are ordered
// by key.
func newAnalyzer[ID cmp.Ordered](steps []StepReadiness, edges [][2]int64, ctx graphContext, sem graphSemantics, id func(int64) ID) *analyzer[ID] {
	g := &analyzer[ID]{
		ctx:         ctx,
		sem:         sem,
		id:          id,
		steps:       steps,
		stepIndex:   make(map[int64]int, len(steps)),
		children:    map[int64][]int64{},
		parents:     map[int64][]int64{},
		descendants: map[int64][]int64{},
	}
	for i, s := range steps {
		g.stepIndex[s.WorkflowStepID] = i
	}
	seen := map[[2]int64]bool{}
	for _, e := range edges {
		_, fromOK := g.stepIndex[e[0]]
		_, toOK := g.stepIndex[e[1]]
		if !fromOK || !toOK || seen[e] {
			continue
		}
		seen[e] = true
		g.children[e[0]] = append(g.children[e[0]], e[1])
		g.parents[e[1]] = append(g.parents[e[1]], e[0])
	}
	for _, m := range []map[int64][]int64{g.children, g.parents} {
		for k := range m {
			slices.Sort(m[k])
		}
	}
	g.levels, g.cycle = dependencyLevels(steps, edges, g.stepIndex)
	return g
}

// buildGraph runs the analysis of g at now.
func buildGraph[ID cmp.Ordered, C any](g *analyzer[ID], taskID ID, ctx C, now time.Time, maxPaths int) TaskGraphOf[ID, C] {
	return TaskGraphOf[ID, C]{
		TaskID:                   taskID,
		DependencyLevels:         levelRows(g),
		DependencyGraph:          g.structure(),
		CriticalPaths:            g.criticalPaths(maxPaths),
		ParallelismOpportunities: g.parallelism(),
		ErrorChains:              g.errorChains(now),
		Bottlenecks:              g.bottlenecks(now),
		Context:                  ctx,
		CycleDetected:            g.cycle,
		GeneratedAt:              Time(now),
	}
}

// ids maps keys to the output's ids, never nil.
func (g *analyzer[ID]) ids(keys []int64) []ID {
	out := make([]ID, len(keys))
	for i, k := range keys {
		out[i] = g.id(k)
	}
	return out
}

// dependencyLevels is calculate_dependency_levels: roots are the task's
// steps without an incoming edge (any edge, as in Tasker's NOT EXISTS); a
// step's level is its longest edge distance from a root over the steps the
// walk from the roots reaches. Tasker's recursive walk never ends when a
// cycle is reachable from a root; here the steps on or behind such a cycle
// get no level and cycle is reported instead.
func dependencyLevels(steps []StepReadiness, edges [][2]int64, index map[int64]int) (map[int64]int, bool) {
	hasParent := map[int64]bool{}
	out := map[int64][]int64{}
	for _, e := range edges {
		hasParent[e[1]] = true
		if _, ok := index[e[0]]; ok {
			if _, ok := index[e[1]]; ok {
				out[e[0]] = append(out[e[0]], e[1]) // duplicates kept: each is an in-degree
			}
		}
	}
	// The walk from the roots.
	reached := map[int64]bool{}
	var stack []int64
	for _, s := range steps {
		if !hasParent[s.WorkflowStepID] {
			reached[s.WorkflowStepID] = true
			stack = append(stack, s.WorkflowStepID)
		}
	}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, c := range out[n] {
			if !reached[c] {
				reached[c] = true
				stack = append(stack, c)
			}
		}
	}
	// Longest distance over the reached subgraph, in topological order.
	indeg := map[int64]int{}
	for n := range reached {
		for _, c := range out[n] {
			indeg[c]++
		}
	}
	level := map[int64]int{}
	var queue []int64
	for _, s := range steps {
		if reached[s.WorkflowStepID] && indeg[s.WorkflowStepID] == 0 {
			queue = append(queue, s.WorkflowStepID)
			level[s.WorkflowStepID] = 0
		}
	}
	done := 0
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		done++
		for _, c := range out[n] {
			level[c] = max(level[c], level[n]+1)
			indeg[c]--
			if indeg[c] == 0 {
				queue = append(queue, c)
			}
		}
	}
	cycle := done < len(reached)
	if cycle {
		for n := range level {
			if indeg[n] > 0 {
				delete(level, n)
			}
		}
	}
	return level, cycle
}

func levelRows[ID cmp.Ordered](g *analyzer[ID]) []StepLevelOf[ID] {
	type row struct {
		key   int64
		level int
	}
	rows := make([]row, 0, len(g.levels))
	for k, l := range g.levels {
		rows = append(rows, row{k, l})
	}
	slices.SortFunc(rows, func(a, b row) int {
		return cmp.Or(cmp.Compare(a.level, b.level), cmp.Compare(a.key, b.key))
	})
	out := make([]StepLevelOf[ID], len(rows))
	for i, r := range rows {
		out[i] = StepLevelOf[ID]{WorkflowStepID: g.id(r.key), DependencyLevel: r.level}
	}
	return out
}

func (g *analyzer[ID]) step(id int64) *StepReadiness { return &g.steps[g.stepIndex[id]] }

func (g *analyzer[ID]) structure() DependencyGraphOf[ID] {
	d := DependencyGraphOf[ID]{
		Nodes:                make([]GraphNodeOf[ID], 0, len(g.steps)),
		Edges:                []GraphEdgeOf[ID]{},
		AdjacencyList:        map[ID][]ID{},
		ReverseAdjacencyList: map[ID][]ID{},
		DependencyLevels:     map[ID]int{},
	}
	for _, s := range g.steps {
		k := s.WorkflowStepID
		id := g.id(k)
		d.Nodes = append(d.Nodes, GraphNodeOf[ID]{ID: id, Name: s.Name, Level: g.levels[k], State: s.CurrentState})
		d.AdjacencyList[id] = g.ids(g.children[k])
		d.ReverseAdjacencyList[id] = g.ids(g.parents[k])
		if l, ok := g.levels[k]; ok {
			d.DependencyLevels[id] = l
		}
		for _, c := range g.children[k] {
			d.Edges = append(d.Edges, GraphEdgeOf[ID]{From: id, To: g.id(c), FromName: s.Name, ToName: g.step(c).Name})
		}
	}
	return d
}

func orEmpty(s []int64) []int64 {
	if s == nil {
		return []int64{}
	}
	return s
}

func (g *analyzer[ID]) roots() []int64 {
	var r []int64
	for _, s := range g.steps {
		if len(g.parents[s.WorkflowStepID]) == 0 {
			r = append(r, s.WorkflowStepID)
		}
	}
	return orEmpty(r)
}

func (g *analyzer[ID]) leaves() []int64 {
	var r []int64
	for _, s := range g.steps {
		if len(g.children[s.WorkflowStepID]) == 0 {
			r = append(r, s.WorkflowStepID)
		}
	}
	return orEmpty(r)
}

func completedState(s string) bool { return engine.SatisfiesDependency(s) }

func (g *analyzer[ID]) criticalPaths(maxPaths int) CriticalPathsOf[ID] {
	roots := g.roots()
	cp := CriticalPathsOf[ID]{RootNodes: g.ids(roots), LeafNodes: g.ids(g.leaves()), Paths: []PathInfoOf[ID]{}}
	var paths [][]int64
	var walk func(path []int64, onPath map[int64]bool)
	walk = func(path []int64, onPath map[int64]bool) {
		if cp.PathsTruncated {
			return
		}
		last := path[len(path)-1]
		kids := g.children[last]
		if len(kids) == 0 {
			if len(paths) >= maxPaths {
				cp.PathsTruncated = true
				return
			}
			paths = append(paths, slices.Clone(path))
			return
		}
		for _, c := range kids {
			if onPath[c] {
				continue // a cycle: simple paths only
			}
			onPath[c] = true
			walk(append(path, c), onPath)
			delete(onPath, c)
		}
	}
	for _, r := range roots {
		walk([]int64{r}, map[int64]bool{r: true})
	}
	cp.TotalPaths = int64(len(paths))
	if n, ok := g.countPaths(); ok {
		cp.TotalPaths = n
	}
	health := 1.0
	if g.ctx.HealthStatus != "healthy" {
		health = 1.5
	}
	for _, p := range paths {
		cp.Paths = append(cp.Paths, g.pathInfo(p, health))
	}
	slices.SortStableFunc(cp.Paths, func(a, b PathInfoOf[ID]) int { return cmp.Compare(b.CriticalityScore, a.CriticalityScore) })
	if len(cp.Paths) > 0 {
		cp.LongestPathLength = cp.Paths[0].Length
	}
	if len(cp.Paths) > maxRankedPaths {
		cp.Paths = cp.Paths[:maxRankedPaths]
	}
	return cp
}

// countPaths counts root-to-leaf paths exactly by dynamic programming when
// the graph is acyclic, so total_paths stays right when enumeration stops.
func (g *analyzer[ID]) countPaths() (int64, bool) {
	if g.cycle {
		return 0, false
	}
	memo := map[int64]int64{}
	var count func(n int64) int64
	count = func(n int64) int64 {
		if v, ok := memo[n]; ok {
			return v
		}
		kids := g.children[n]
		if len(kids) == 0 {
			memo[n] = 1
			return 1
		}
		var sum int64
		for _, c := range kids {
			sum += count(c)
			if sum < 0 || sum > math.MaxInt64/2 {
				sum = math.MaxInt64 / 2 // saturate rather than overflow
			}
		}
		memo[n] = sum
		return sum
	}
	var total int64
	for _, r := range g.roots() {
		total += count(r)
	}
	return total, true
}

func (g *analyzer[ID]) pathInfo(path []int64, health float64) PathInfoOf[ID] {
	p := PathInfoOf[ID]{Steps: g.ids(path), Length: len(path), Bottlenecks: []PathBottleneckOf[ID]{}}
	var attempts int64
	for i, id := range path {
		s := g.step(id)
		p.StepNames = append(p.StepNames, s.Name)
		if completedState(s.CurrentState) {
			p.CompletedSteps++
		}
		blocked := !s.DependenciesSatisfied
		isErr := g.sem.failing(s.CurrentState)
		if blocked {
			p.BlockedSteps++
		}
		if isErr {
			p.ErrorSteps++
			if s.Attempts > 0 {
				p.RetrySteps++
			}
		}
		if s.ReadyForExecution {
			p.ReadySteps++
		}
		attempts += int64(s.Attempts)
		if blocked || isErr {
			sev := 5 * int(s.Attempts)
			if isErr {
				sev += 10
			}
			if s.Exhausted() {
				sev += 20
			}
			if blocked {
				sev += 5
			}
			p.Bottlenecks = append(p.Bottlenecks, PathBottleneckOf[ID]{
				StepID: g.id(id), StepName: s.Name, Reason: pathReason(s, g.sem), Severity: sev,
				Impact: fmt.Sprintf("Blocks %d downstream steps", len(path)-i-1),
			})
		}
	}
	slices.SortStableFunc(p.Bottlenecks, func(a, b PathBottleneckOf[ID]) int { return cmp.Compare(b.Severity, a.Severity) })
	n := float64(len(path))
	p.EstimatedDuration = int64(len(path))*baseStepSeconds + int64(p.ErrorSteps)*errorPenaltySeconds + attempts*retryPenaltySeconds
	completion := float64(p.CompletedSteps) / n * 100
	raw := 10*n - penaltyCompleted*float64(p.CompletedSteps) + penaltyBlocked*float64(p.BlockedSteps)*health +
		penaltyError*float64(p.ErrorSteps)*health + penaltyRetry*float64(p.RetrySteps) + 2*float64(p.EstimatedDuration)/60
	p.CriticalityScore = Float(max(0, raw*(1-0.3*completion/100)))
	p.CompletionPercentage = Float(rubyjson.Round(completion, 1))
	return p
}

// pathReason maps the readiness blocking reason to the analyzer's text.
func pathReason(s *StepReadiness, sem graphSemantics) string {
	if s.BlockingReason == nil {
		return "Not blocked (ready for execution)"
	}
	switch *s.BlockingReason {
	case "dependencies_not_satisfied":
		return "Dependencies not satisfied"
	case "retry_not_eligible":
		if s.Exhausted() {
			return "Exhausted retries"
		}
		if sem.core {
			return "Not retryable"
		}
		return "In backoff period"
	case "invalid_state":
		if sem.failing(s.CurrentState) {
			return "In error state"
		}
		return "Invalid state: " + s.CurrentState
	}
	return "Unknown blocking condition"
}

func (g *analyzer[ID]) parallelism() Parallelism {
	byLevel := map[int][]*StepReadiness{}
	maxLevel := -1
	for i := range g.steps {
		s := &g.steps[i]
		l := g.levels[s.WorkflowStepID]
		byLevel[l] = append(byLevel[l], s)
		maxLevel = max(maxLevel, l)
	}
	p := Parallelism{
		TotalSteps:                   g.ctx.TotalSteps,
		TotalLevels:                  maxLevel + 1,
		CurrentParallelOpportunities: g.ctx.ReadySteps,
		OverallCompletion:            g.ctx.CompletionPercentage,
		Levels:                       []LevelSummary{},
	}
	highLevels := 0
	for l := 0; l <= maxLevel; l++ {
		steps, ok := byLevel[l]
		if !ok {
			continue
		}
		ls := LevelSummary{Level: l, TotalSteps: len(steps), StepNames: []string{}}
		for _, s := range steps {
			ls.StepNames = append(ls.StepNames, s.Name)
			if s.ReadyForExecution {
				ls.ReadySteps++
			}
			if !s.DependenciesSatisfied {
				ls.BlockedSteps++
			}
			if g.sem.failing(s.CurrentState) {
				ls.ErrorSteps++
			}
			if completedState(s.CurrentState) {
				ls.CompletedSteps++
			}
		}
		switch {
		case ls.ReadySteps > 1:
			ls.ParallelismPotential = "High"
			highLevels++
		case ls.ReadySteps == 1:
			ls.ParallelismPotential = "Medium"
		default:
			ls.ParallelismPotential = "Low"
		}
		ls.BottleneckRisk = "Low"
		if ls.BlockedSteps > ls.TotalSteps/2 {
			ls.BottleneckRisk = "High"
		}
		p.MaxParallelSteps = max(p.MaxParallelSteps, ls.TotalSteps)
		p.BlockedParallelOpportunities += ls.BlockedSteps
		p.Levels = append(p.Levels, ls)
	}
	if len(p.Levels) > 0 {
		p.ParallelismEfficiency = Float(rubyjson.Round(float64(highLevels)/float64(len(p.Levels))*100, 1))
	}
	return p
}

// descendantsOf lists every step reachable from id, ascending.
func (g *analyzer[ID]) descendantsOf(id int64) []int64 {
	if d, ok := g.descendants[id]; ok {
		return d
	}
	seen := map[int64]bool{}
	stack := slices.Clone(g.children[id])
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[n] || n == id {
			continue
		}
		seen[n] = true
		stack = append(stack, g.children[n]...)
	}
	out := make([]int64, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	slices.Sort(out)
	g.descendants[id] = out
	return out
}

func (g *analyzer[ID]) blockedAmong(ids []int64) []int64 {
	out := []int64{}
	for _, id := range ids {
		if !g.step(id).DependenciesSatisfied {
			out = append(out, id)
		}
	}
	return out
}

func priorityLevel(score int) string {
	switch {
	case score >= thresholdCritical:
		return "Critical"
	case score >= thresholdHigh:
		return "High"
	case score >= thresholdMedium:
		return "Medium"
	}
	return "Low"
}

func (g *analyzer[ID]) errorChains(now time.Time) ErrorChainsOf[ID] {
	c := g.ctx
	ec := ErrorChainsOf[ID]{
		TotalErrorSteps:  c.FailedSteps,
		TotalSteps:       c.TotalSteps,
		Chains:           []ErrorChainOf[ID]{},
		RecoveryPriority: []RecoveryPriorityOf[ID]{},
		HealthStatus:     c.HealthStatus,
	}
	if c.FailedSteps == 0 {
		return ec
	}
	if c.TotalSteps > 0 {
		ec.ErrorPercentage = Float(rubyjson.Round(float64(c.FailedSteps)/float64(c.TotalSteps)*100, 1))
	}
	for i := range g.steps {
		s := &g.steps[i]
		if !g.sem.failing(s.CurrentState) {
			continue
		}
		down := g.descendantsOf(s.WorkflowStepID)
		blocked := g.blockedAmong(down)
		impact := weightBlocked*len(blocked) + weightDownstream*len(down) + 3*int(s.Attempts)
		if s.Exhausted() {
			impact += 20
		}
		ra := RetryAnalysis{
			Exhausted:         s.Exhausted(),
			RemainingAttempts: max(s.RetryLimit-s.Attempts, 0),
			InBackoff:         !s.NextRetryAt.Std().IsZero() && s.NextRetryAt.Std().After(now),
			NextRetryAt:       s.NextRetryAt,
			Retryable:         s.RetryEligible,
		}
		var strategies []RecoveryStrategy
		switch {
		case ra.Exhausted:
			strategies = []RecoveryStrategy{{"Manual Resolution", "High"}, {"Increase Retry Limit", "Medium"}}
		case ra.InBackoff:
			strategies = []RecoveryStrategy{{"Wait for Backoff", "Low"}}
		case ra.Retryable:
			strategies = []RecoveryStrategy{{"Monitor Retries", "Medium"}}
		default:
			strategies = []RecoveryStrategy{{"Investigate Root Cause", "High"}}
		}
		ec.Chains = append(ec.Chains, ErrorChainOf[ID]{
			StepID: g.id(s.WorkflowStepID), StepName: s.Name, DownstreamSteps: g.ids(down), BlockedSteps: g.ids(blocked),
			TotalImpact: impact, RetryAnalysis: ra, RecoveryStrategies: strategies,
			DownstreamCount: len(down), BlockedDownstreamCt: len(blocked),
		})
		ec.TotalBlockedByErrors += len(blocked)
	}
	slices.SortStableFunc(ec.Chains, func(a, b ErrorChainOf[ID]) int { return cmp.Compare(b.TotalImpact, a.TotalImpact) })
	if len(ec.Chains) > 0 {
		top := ec.Chains[0]
		ec.MostCriticalError = &top
	}
	for _, ch := range ec.Chains[:min(maxRecoveryPriority, len(ec.Chains))] {
		ec.RecoveryPriority = append(ec.RecoveryPriority, RecoveryPriorityOf[ID]{
			StepID: ch.StepID, StepName: ch.StepName, PriorityLevel: priorityLevel(ch.TotalImpact),
			Reason:            fmt.Sprintf("Blocking %d downstream steps", ch.BlockedDownstreamCt),
			RecommendedAction: ch.RecoveryStrategies[0].Strategy, TotalImpact: ch.TotalImpact,
		})
	}
	return ec
}

func (g *analyzer[ID]) bottlenecks(now time.Time) GraphBottlenecksOf[ID] {
	c := g.ctx
	gb := GraphBottlenecksOf[ID]{Bottlenecks: []GraphBottleneckOf[ID]{}, OverallImpact: "None"}
	if c.TotalSteps > 0 {
		gb.FailedStepsRatio = Float(rubyjson.Round(float64(c.FailedSteps)/float64(c.TotalSteps)*100, 1))
	}
	if c.FailedSteps == 0 && c.PendingSteps == 0 && c.ReadySteps == c.TotalSteps {
		return gb
	}
	var candidates []*StepReadiness
	for i := range g.steps {
		if g.sem.failing(g.steps[i].CurrentState) {
			candidates = append(candidates, &g.steps[i])
		}
	}
	if len(candidates) == 0 {
		for i := range g.steps {
			s := &g.steps[i]
			if !s.DependenciesSatisfied || s.Attempts >= 2 || !s.RetryEligible {
				candidates = append(candidates, s)
			}
		}
	}
	for _, s := range candidates {
		down := g.descendantsOf(s.WorkflowStepID)
		blocked := g.blockedAmong(down)
		m := 1.0
		switch {
		case g.sem.failing(s.CurrentState):
			m = 2.0
			if s.Exhausted() {
				m += 0.5
			}
		case s.CurrentState == StatePending && s.DependenciesSatisfied:
			m = 1.0
		case s.CurrentState == StatePending:
			m = 1.2
		}
		p := 3 * float64(s.Attempts)
		if !s.RetryEligible {
			p += 10
		}
		if s.Exhausted() {
			p += 20
		}
		score := int64(rubyjson.Round(float64(weightDownstream*len(down)+weightBlocked*len(blocked))*m+p, 0))
		gb.Bottlenecks = append(gb.Bottlenecks, GraphBottleneckOf[ID]{
			StepID: g.id(s.WorkflowStepID), StepName: s.Name, CurrentState: s.CurrentState,
			BottleneckType: bottleneckType(s, g.sem), ImpactScore: score, Severity: priorityLevel(int(score)),
			DownstreamSteps: len(down), BlockedDownstreamSteps: len(blocked),
			Attempts: s.Attempts, RetryLimit: s.RetryLimit,
			ResolutionStrategy:      resolutionStrategy(s, g.sem),
			EstimatedResolutionTime: resolutionTime(s, g.sem, now),
			BlockingReason:          s.BlockingReason, RetryStatus: s.RetryStatus,
			DependencyStatus: s.DependencyStatus, TimeUntilReady: s.TimeUntilReady,
		})
		gb.TotalBlockedSteps += len(blocked)
	}
	slices.SortStableFunc(gb.Bottlenecks, func(a, b GraphBottleneckOf[ID]) int { return cmp.Compare(b.ImpactScore, a.ImpactScore) })
	if len(gb.Bottlenecks) > maxBottlenecks {
		gb.Bottlenecks = gb.Bottlenecks[:maxBottlenecks]
	}
	gb.TotalBottlenecks = len(gb.Bottlenecks)
	high := 0
	for _, b := range gb.Bottlenecks {
		switch b.Severity {
		case "Critical":
			gb.CriticalBottlenecks++
		case "High":
			high++
		}
	}
	switch {
	case gb.CriticalBottlenecks >= 3 || c.FailedSteps > c.TotalSteps/2:
		gb.OverallImpact = "Severe"
	case gb.CriticalBottlenecks >= 1 || high >= 3:
		gb.OverallImpact = "High"
	case high >= 1 || gb.TotalBottlenecks >= 5:
		gb.OverallImpact = "Medium"
	default:
		gb.OverallImpact = "Low"
	}
	return gb
}

func bottleneckType(s *StepReadiness, sem graphSemantics) string {
	switch {
	case s.Exhausted():
		return "Permanent Failure"
	case sem.failing(s.CurrentState):
		return "Active Error"
	case !s.DependenciesSatisfied && s.TotalParents > 0:
		return "Dependency Block"
	case s.Attempts >= 2:
		return "Retry Exhaustion"
	case !s.RetryEligible:
		return "Non-Retryable"
	}
	return "Unknown"
}

func resolutionStrategy(s *StepReadiness, sem graphSemantics) string {
	switch {
	case s.Exhausted():
		return "Manual intervention required"
	case sem.failing(s.CurrentState):
		return "Investigate error cause"
	case !s.DependenciesSatisfied:
		return "Check upstream dependencies"
	case !s.RetryEligible && !s.NextRetryAt.Std().IsZero():
		return "Wait for backoff period"
	case s.Attempts >= 1:
		return "Monitor retry attempts"
	}
	return "Review step configuration"
}

func resolutionTime(s *StepReadiness, sem graphSemantics, now time.Time) string {
	if s.Exhausted() {
		return "Immediate action needed"
	}
	if !s.NextRetryAt.Std().IsZero() {
		if secs := s.NextRetryAt.Std().Sub(now).Seconds(); secs > 0 {
			m := int(math.Ceil(secs / 60))
			unit := "minutes"
			if m == 1 {
				unit = "minute"
			}
			return strconv.Itoa(m) + " " + unit
		}
	}
	switch {
	case sem.failing(s.CurrentState) && s.RetryEligible:
		return "Within next retry cycle"
	case !s.DependenciesSatisfied:
		return "Depends on upstream steps"
	}
	return "Unknown"
}
