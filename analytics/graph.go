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

// TaskGraph is the dependency levels of calculate_dependency_levels and
// Tasker's RuntimeGraphAnalyzer output for one task.
type TaskGraph struct {
	TaskID int64 `json:"task_id"`
	// DependencyLevels is calculate_dependency_levels: one row per step
	// reachable from a root, ordered by level then id.
	DependencyLevels         []StepLevel      `json:"dependency_levels"`
	DependencyGraph          DependencyGraph  `json:"dependency_graph"`
	CriticalPaths            CriticalPaths    `json:"critical_paths"`
	ParallelismOpportunities Parallelism      `json:"parallelism_opportunities"`
	ErrorChains              ErrorChains      `json:"error_chains"`
	Bottlenecks              GraphBottlenecks `json:"bottlenecks"`
	Context                  TaskContext      `json:"execution_context"`
	CycleDetected            bool             `json:"cycle_detected"`
	GeneratedAt              Time             `json:"generated_at"`
}

// analyzer holds one task's graph while its analysis is built.
type analyzer struct {
	ctx         TaskContext
	cycle       bool
	steps       []StepReadiness   // ordered by id
	stepIndex   map[int64]int     // step id → index in steps
	children    map[int64][]int64 // unique, ascending
	parents     map[int64][]int64
	levels      map[int64]int     // absent: unreachable, or on or behind a cycle
	descendants map[int64][]int64 // memo
}

// StepLevel is a row of calculate_dependency_levels.
type StepLevel struct {
	WorkflowStepID  int64 `json:"workflow_step_id"`
	DependencyLevel int   `json:"dependency_level"`
}

// DependencyGraph is the analyzer's structural view.
type DependencyGraph struct {
	Nodes                []GraphNode       `json:"nodes"`
	Edges                []GraphEdge       `json:"edges"`
	AdjacencyList        map[int64][]int64 `json:"adjacency_list"`
	ReverseAdjacencyList map[int64][]int64 `json:"reverse_adjacency_list"`
	DependencyLevels     map[int64]int     `json:"dependency_levels"`
}

// GraphNode is a step; Level is 0 when calculate_dependency_levels has none.
type GraphNode struct {
	ID    int64  `json:"id"`
	Name  string `json:"name"`
	Level int    `json:"level"`
	State string `json:"state"`
}

// GraphEdge runs from a parent step to its dependent.
type GraphEdge struct {
	From     int64  `json:"from"`
	To       int64  `json:"to"`
	FromName string `json:"from_name"`
	ToName   string `json:"to_name"`
}

// CriticalPaths ranks the root-to-leaf paths.
type CriticalPaths struct {
	TotalPaths int64 `json:"total_paths"`
	// LongestPathLength is, as in Tasker, the length of the highest-scored
	// path, not of the longest one.
	LongestPathLength int        `json:"longest_path_length"`
	Paths             []PathInfo `json:"paths"`
	RootNodes         []int64    `json:"root_nodes"`
	LeafNodes         []int64    `json:"leaf_nodes"`
	// PathsTruncated says enumeration stopped at Options.MaxPaths; the
	// ranking then covers only the enumerated paths.
	PathsTruncated bool `json:"paths_truncated"`
}

// PathInfo is one root-to-leaf path.
type PathInfo struct {
	Steps                []int64          `json:"path"`
	StepNames            []string         `json:"step_names"`
	Length               int              `json:"length"`
	CompletedSteps       int              `json:"completed_steps"`
	BlockedSteps         int              `json:"blocked_steps"`
	ErrorSteps           int              `json:"error_steps"`
	RetrySteps           int              `json:"retry_steps"`
	ReadySteps           int              `json:"ready_steps"`
	EstimatedDuration    int64            `json:"estimated_duration"`
	Bottlenecks          []PathBottleneck `json:"bottlenecks"`
	CriticalityScore     Float            `json:"criticality_score"`
	CompletionPercentage Float            `json:"completion_percentage"`
}

// PathBottleneck is a blocked or failing step on a path.
type PathBottleneck struct {
	StepID   int64  `json:"step_id"`
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

// ErrorChains describes what each failing step holds up.
type ErrorChains struct {
	TotalErrorSteps      int64              `json:"total_error_steps"`
	TotalSteps           int64              `json:"total_steps"`
	ErrorPercentage      Float              `json:"error_percentage"`
	TotalBlockedByErrors int                `json:"total_blocked_by_errors"`
	MostCriticalError    *ErrorChain        `json:"most_critical_error"`
	Chains               []ErrorChain       `json:"error_chains"`
	RecoveryPriority     []RecoveryPriority `json:"recovery_priority"`
	HealthStatus         string             `json:"health_status"`
}

// ErrorChain is one failing step and its descendants.
type ErrorChain struct {
	StepID              int64              `json:"step_id"`
	StepName            string             `json:"step_name"`
	DownstreamSteps     []int64            `json:"downstream_steps"`
	BlockedSteps        []int64            `json:"blocked_steps"`
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

// RecoveryPriority orders the failing steps to act on first.
type RecoveryPriority struct {
	StepID            int64  `json:"step_id"`
	StepName          string `json:"step_name"`
	PriorityLevel     string `json:"priority_level"`
	Reason            string `json:"reason"`
	RecommendedAction string `json:"recommended_action"`
	TotalImpact       int    `json:"total_impact"`
}

// GraphBottlenecks ranks the steps holding the task back.
type GraphBottlenecks struct {
	Bottlenecks         []GraphBottleneck `json:"bottlenecks"`
	TotalBottlenecks    int               `json:"total_bottlenecks"`
	CriticalBottlenecks int               `json:"critical_bottlenecks"`
	TotalBlockedSteps   int               `json:"total_blocked_steps"`
	FailedStepsRatio    Float             `json:"failed_steps_ratio"`
	OverallImpact       string            `json:"overall_impact"`
}

// GraphBottleneck is one ranked step.
type GraphBottleneck struct {
	StepID                  int64   `json:"step_id"`
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
	g := &analyzer{
		ctx:         t.context(),
		steps:       t.steps,
		stepIndex:   make(map[int64]int, len(t.steps)),
		children:    map[int64][]int64{},
		parents:     map[int64][]int64{},
		descendants: map[int64][]int64{},
	}
	for i, s := range t.steps {
		g.stepIndex[s.WorkflowStepID] = i
	}
	seen := map[[2]int64]bool{}
	for _, e := range t.edges {
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
	g.levels, g.cycle = dependencyLevels(t.steps, t.edges, g.stepIndex)
	return TaskGraph{
		TaskID:                   t.taskID,
		DependencyLevels:         levelRows(g.levels),
		DependencyGraph:          g.structure(),
		CriticalPaths:            g.criticalPaths(maxPaths),
		ParallelismOpportunities: g.parallelism(),
		ErrorChains:              g.errorChains(t.now),
		Bottlenecks:              g.bottlenecks(t.now),
		Context:                  g.ctx,
		CycleDetected:            g.cycle,
		GeneratedAt:              Time(t.now),
	}
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

func levelRows(levels map[int64]int) []StepLevel {
	rows := make([]StepLevel, 0, len(levels))
	for id, l := range levels {
		rows = append(rows, StepLevel{WorkflowStepID: id, DependencyLevel: l})
	}
	slices.SortFunc(rows, func(a, b StepLevel) int {
		return cmp.Or(cmp.Compare(a.DependencyLevel, b.DependencyLevel), cmp.Compare(a.WorkflowStepID, b.WorkflowStepID))
	})
	return rows
}

func (g *analyzer) step(id int64) *StepReadiness { return &g.steps[g.stepIndex[id]] }

func (g *analyzer) structure() DependencyGraph {
	d := DependencyGraph{
		Nodes:                make([]GraphNode, 0, len(g.steps)),
		Edges:                []GraphEdge{},
		AdjacencyList:        map[int64][]int64{},
		ReverseAdjacencyList: map[int64][]int64{},
		DependencyLevels:     map[int64]int{},
	}
	for _, s := range g.steps {
		id := s.WorkflowStepID
		d.Nodes = append(d.Nodes, GraphNode{ID: id, Name: s.Name, Level: g.levels[id], State: s.CurrentState})
		d.AdjacencyList[id] = orEmpty(g.children[id])
		d.ReverseAdjacencyList[id] = orEmpty(g.parents[id])
		if l, ok := g.levels[id]; ok {
			d.DependencyLevels[id] = l
		}
		for _, c := range g.children[id] {
			d.Edges = append(d.Edges, GraphEdge{From: id, To: c, FromName: s.Name, ToName: g.step(c).Name})
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

func (g *analyzer) roots() []int64 {
	var r []int64
	for _, s := range g.steps {
		if len(g.parents[s.WorkflowStepID]) == 0 {
			r = append(r, s.WorkflowStepID)
		}
	}
	return orEmpty(r)
}

func (g *analyzer) leaves() []int64 {
	var r []int64
	for _, s := range g.steps {
		if len(g.children[s.WorkflowStepID]) == 0 {
			r = append(r, s.WorkflowStepID)
		}
	}
	return orEmpty(r)
}

func completedState(s string) bool { return engine.SatisfiesDependency(s) }

func (g *analyzer) criticalPaths(maxPaths int) CriticalPaths {
	cp := CriticalPaths{RootNodes: g.roots(), LeafNodes: g.leaves(), Paths: []PathInfo{}}
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
	for _, r := range cp.RootNodes {
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
	slices.SortStableFunc(cp.Paths, func(a, b PathInfo) int { return cmp.Compare(b.CriticalityScore, a.CriticalityScore) })
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
func (g *analyzer) countPaths() (int64, bool) {
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

func (g *analyzer) pathInfo(path []int64, health float64) PathInfo {
	p := PathInfo{Steps: path, Length: len(path), Bottlenecks: []PathBottleneck{}}
	var attempts int64
	for i, id := range path {
		s := g.step(id)
		p.StepNames = append(p.StepNames, s.Name)
		if completedState(s.CurrentState) {
			p.CompletedSteps++
		}
		blocked := !s.DependenciesSatisfied
		isErr := s.CurrentState == StateError
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
			p.Bottlenecks = append(p.Bottlenecks, PathBottleneck{
				StepID: id, StepName: s.Name, Reason: pathReason(s), Severity: sev,
				Impact: fmt.Sprintf("Blocks %d downstream steps", len(path)-i-1),
			})
		}
	}
	slices.SortStableFunc(p.Bottlenecks, func(a, b PathBottleneck) int { return cmp.Compare(b.Severity, a.Severity) })
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
func pathReason(s *StepReadiness) string {
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
		return "In backoff period"
	case "invalid_state":
		if s.CurrentState == StateError {
			return "In error state"
		}
		return "Invalid state: " + s.CurrentState
	}
	return "Unknown blocking condition"
}

func (g *analyzer) parallelism() Parallelism {
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
			if s.CurrentState == StateError {
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
func (g *analyzer) descendantsOf(id int64) []int64 {
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

func (g *analyzer) blockedAmong(ids []int64) []int64 {
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

func (g *analyzer) errorChains(now time.Time) ErrorChains {
	c := g.ctx
	ec := ErrorChains{
		TotalErrorSteps:  c.FailedSteps,
		TotalSteps:       c.TotalSteps,
		Chains:           []ErrorChain{},
		RecoveryPriority: []RecoveryPriority{},
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
		if s.CurrentState != StateError {
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
		ec.Chains = append(ec.Chains, ErrorChain{
			StepID: s.WorkflowStepID, StepName: s.Name, DownstreamSteps: down, BlockedSteps: blocked,
			TotalImpact: impact, RetryAnalysis: ra, RecoveryStrategies: strategies,
			DownstreamCount: len(down), BlockedDownstreamCt: len(blocked),
		})
		ec.TotalBlockedByErrors += len(blocked)
	}
	slices.SortStableFunc(ec.Chains, func(a, b ErrorChain) int { return cmp.Compare(b.TotalImpact, a.TotalImpact) })
	if len(ec.Chains) > 0 {
		top := ec.Chains[0]
		ec.MostCriticalError = &top
	}
	for _, ch := range ec.Chains[:min(maxRecoveryPriority, len(ec.Chains))] {
		ec.RecoveryPriority = append(ec.RecoveryPriority, RecoveryPriority{
			StepID: ch.StepID, StepName: ch.StepName, PriorityLevel: priorityLevel(ch.TotalImpact),
			Reason:            fmt.Sprintf("Blocking %d downstream steps", ch.BlockedDownstreamCt),
			RecommendedAction: ch.RecoveryStrategies[0].Strategy, TotalImpact: ch.TotalImpact,
		})
	}
	return ec
}

func (g *analyzer) bottlenecks(now time.Time) GraphBottlenecks {
	c := g.ctx
	gb := GraphBottlenecks{Bottlenecks: []GraphBottleneck{}, OverallImpact: "None"}
	if c.TotalSteps > 0 {
		gb.FailedStepsRatio = Float(rubyjson.Round(float64(c.FailedSteps)/float64(c.TotalSteps)*100, 1))
	}
	if c.FailedSteps == 0 && c.PendingSteps == 0 && c.ReadySteps == c.TotalSteps {
		return gb
	}
	var candidates []*StepReadiness
	for i := range g.steps {
		if g.steps[i].CurrentState == StateError {
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
		case s.CurrentState == StateError:
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
		gb.Bottlenecks = append(gb.Bottlenecks, GraphBottleneck{
			StepID: s.WorkflowStepID, StepName: s.Name, CurrentState: s.CurrentState,
			BottleneckType: bottleneckType(s), ImpactScore: score, Severity: priorityLevel(int(score)),
			DownstreamSteps: len(down), BlockedDownstreamSteps: len(blocked),
			Attempts: s.Attempts, RetryLimit: s.RetryLimit,
			ResolutionStrategy:      resolutionStrategy(s),
			EstimatedResolutionTime: resolutionTime(s, now),
			BlockingReason:          s.BlockingReason, RetryStatus: s.RetryStatus,
			DependencyStatus: s.DependencyStatus, TimeUntilReady: s.TimeUntilReady,
		})
		gb.TotalBlockedSteps += len(blocked)
	}
	slices.SortStableFunc(gb.Bottlenecks, func(a, b GraphBottleneck) int { return cmp.Compare(b.ImpactScore, a.ImpactScore) })
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

func bottleneckType(s *StepReadiness) string {
	switch {
	case s.Exhausted():
		return "Permanent Failure"
	case s.CurrentState == StateError:
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

func resolutionStrategy(s *StepReadiness) string {
	switch {
	case s.Exhausted():
		return "Manual intervention required"
	case s.CurrentState == StateError:
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

func resolutionTime(s *StepReadiness, now time.Time) string {
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
	case s.CurrentState == StateError && s.RetryEligible:
		return "Within next retry cycle"
	case !s.DependenciesSatisfied:
		return "Depends on upstream steps"
	}
	return "Unknown"
}
