package dashboards

import (
	"slices"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/statetimeline"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// query is one PromQL expression of a panel. Range windows are written
// [$__rate_interval] so that Grafana sizes them to the scrape interval (and
// the end-to-end test can substitute a short one).
type query struct {
	expr, legend string
	// instant asks for the current value only, one table row per series.
	instant bool
	// exemplars asks Grafana for the exemplars of a histogram, which the
	// Prometheus data source turns into links to the trace in Jaeger.
	exemplars bool
}

func promQuery(expr, legend string) query { return query{expr: expr, legend: legend} }

func instantQuery(expr string) query { return query{expr: expr, instant: true} }

func withExemplars(expr, legend string) query {
	return query{expr: expr, legend: legend, exemplars: true}
}

// Expressions over the transition stream's counters and histograms.
//
// Every replica follows the same database and counts the same transition
// rows, so a counter's rate is taken per replica and the replicas are
// combined with max, never summed. A histogram's buckets may be summed over
// replicas: counting every observation once per replica does not move a
// quantile.

// finalTaskStates are the task states a run ends in (error included: a
// retried task can end again), as a PromQL regular expression. They are
// the same on both engines.
var finalTaskStates = strings.Join(engine.RunEndStates(), "|")

// State groups, as PromQL alternatives over both engines' states. The
// sidecar exports the states of the engine it is attached to, so a panel
// selecting a group works on either: the other engine's states in the
// regex match nothing. A panel never names a state only one engine has
// outside such a group, unless its title says which engine it is for
// (deploy's TestStateMatchersWorkOnBothEngines checks).
var (
	// closedStates end a task or step for good: the terminal states
	// except error, which a Rails task retry or a core operator's reset
	// can leave. "Open" is everything else, new (no transition yet)
	// included: state!~closedStates.
	closedStates = bothEngines(func(e engine.Engine) []string {
		closed := func(m engine.StateSets) []string {
			return slices.DeleteFunc(m.Terminal, func(s string) bool { return slices.Contains(m.Failed, s) })
		}
		return append(closed(e.TaskStates), closed(e.StepStates)...)
	})
	// runningStepStates are a step's attempt under way: in_progress on
	// Rails; on tasker-core also waiting in a worker queue (enqueued) and
	// its result waiting for orchestration.
	runningStepStates = bothEngines(func(e engine.Engine) []string { return e.StepStates.Running })
	// failedAttemptStates are where a failed step attempt goes: error on
	// Rails (retryable or not); waiting_for_retry (retryable) or error
	// (exhausted or not retryable) on tasker-core.
	failedAttemptStates = bothEngines(func(e engine.Engine) []string {
		return append(e.StepStates.Failed, e.StepStates.InBackoff...)
	})
)

// taskTables is the tasks table as the stream's table label names it on
// either engine (engine.Tables: tasker_tasks on Rails, tasker.tasks on
// tasker-core). In the regex the dot also matches itself.
var taskTables = engine.Rails().Tables.Tasks + "|" + engine.Core().Tables.Tasks

// bothEngines joins the states pick chooses on the Rails engine and on
// tasker-core, each once, Rails' first.
func bothEngines(pick func(engine.Engine) []string) string {
	var out []string
	for _, e := range []engine.Engine{engine.Rails(), engine.Core()} {
		for _, s := range pick(e) {
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return strings.Join(out, "|")
}

// rateOf is the per-second rate of a counter, keeping the labels in by.
func rateOf(metric, selector string, by ...string) string {
	return maxBy(by, "sum by ("+labelList("instance", by...)+") (rate("+metric+"{"+selector+"}[$__rate_interval]))")
}

// Zeros for series that do not exist yet. A transition counter's series
// appears with the first transition of its labels, so on a quiet database
// a rate over it is no data, which cannot be told from a sidecar that is
// not scraped. Where the answer is a number, zero, the panel adds it, but
// only while the sidecar proves it is reading: the zeros come from series
// the sidecar exports, so an unscraped sidecar still shows no data. Never
// used for a quantile, where nothing observed has no value, nor for a
// ratio other than a share of failures (failedShare).

// streamReads is non-empty while a replica's transition stream of job
// has polled successfully: a transition counter without a series has then
// counted nothing.
func streamReads(job string) string {
	return `max(tasker_sidecar_stream_last_success_timestamp_seconds{` + job + `} > 0)`
}

// orZero gives expr, an aggregation without grouping over the transition
// counters, the value 0 while it has no series and the stream reads.
func orZero(expr, job string) string {
	return expr + "\nor on() 0 * " + streamReads(job)
}

// orZeroByState gives expr, grouped by label (to_state or state) over the
// transition counters, a 0 for each state of the attached engine matching
// states that has no series, while the stream reads. The attached
// engine's states come from gauge (tasker_tasks or tasker_steps), which
// the sidecar exports for every state, zeros included.
// states ".*" (every state) leaves the state matcher out: a regex that
// names no state is what deploy's TestStateMatchersWorkOnBothEngines
// refuses, and without a matcher the gauge's own states are every state.
func orZeroByState(expr, label, gauge, states, job string) string {
	selector := job
	if states != ".*" {
		selector += `,state=~"` + states + `"`
	}
	// label_join copies state into label (label_replace would need a $1,
	// which Grafana takes for a variable).
	return expr + "\nor on (" + label + ") max by (" + label + ") (label_join(0 * " + gauge + `{` + selector +
		`}, "` + label + `", "", "state"))` + "\n  and on () " + streamReads(job)
}

// orZeroByName gives expr, grouped by namespace and task over the
// transition counters, a 0 for each (namespace, task) pair of the health
// gauges selected by selector that has no series, while the stream reads:
// a named task with tasks in the database that nothing moved.
func orZeroByName(expr, selector, job string) string {
	return expr + "\nor on (namespace, task) 0 * max by (namespace, task) (tasker_tasks_by_name{" + selector + "})" +
		"\n  and on () " + streamReads(job)
}

// ratioOf is the share of a counter's increase matching num among that
// matching den, per replica and then the max over replicas. A window in
// which nothing matched den has no share: no series rather than NaN, so
// that a fallback (failedShare) can say what that means.
func ratioOf(metric, num, den string, by ...string) string {
	sum := func(sel string) string {
		return "sum by (" + labelList("instance", by...) + ") (rate(" + metric + "{" + sel + "}[$__rate_interval]))"
	}
	return maxBy(by, sum(num)+"\n/ ("+sum(den)+" > 0)")
}

// failedShare gives ratio, a share of failures without grouping
// (ratioOf), the value 0 while nothing ended in the window and the stream
// reads: nothing failed. Only for failure shares, where 0 is the reading
// an operator acts on ("nothing is failing"); a hit ratio or a completion
// share of nothing stays empty, since 0 there would say "everything
// missed" or "nothing completes".
func failedShare(ratio, job string) string {
	return orZero(ratio, job)
}

// failedShareByName is failedShare for a share grouped by namespace and
// task: 0 for each named task in the database that ended nothing in the
// window (orZeroByName).
func failedShareByName(ratio, selector, job string) string {
	return orZeroByName(ratio, selector, job)
}

// quantile is a quantile (0.5, 0.95, ...) of a histogram over the window,
// keeping the labels in by.
func quantile(q, metric, selector string, by ...string) string {
	return "histogram_quantile(" + q + ", sum by (" + strings.Join(append(slices.Clone(by), "le"), ", ") + ") (rate(" +
		metric + "_bucket{" + selector + "}[$__rate_interval])))"
}

func maxBy(by []string, expr string) string {
	if len(by) == 0 {
		return "max(" + expr + ")"
	}
	return "max by (" + strings.Join(by, ", ") + ") (" + expr + ")"
}

func labelList(first string, rest ...string) string {
	return strings.Join(append([]string{first}, rest...), ", ")
}

func promDatasource() common.DataSourceRef {
	typ, uid := "prometheus", "${datasource}"
	return common.DataSourceRef{Type: &typ, Uid: &uid}
}

func targets(qs []query) []cog.Builder[variants.Dataquery] {
	out := make([]cog.Builder[variants.Dataquery], 0, len(qs))
	for i, q := range qs {
		t := prometheus.NewDataqueryBuilder().
			RefId(string(rune('A' + i))).
			Datasource(promDatasource()).
			Expr(q.expr)
		if q.legend != "" {
			t.LegendFormat(q.legend)
		}
		if q.instant {
			t.Instant().Format(prometheus.PromQueryFormatTable)
		} else {
			t.Range()
		}
		if q.exemplars {
			t.Exemplar(true)
		}
		out = append(out, t)
	}
	return out
}

// Units, as Grafana names them.
const (
	unitCount      = "short"
	unitSeconds    = "s"
	unitBytes      = "bytes"
	unitRatio      = "percentunit"
	unitPerSecond  = "ops"
	unitRequests   = "reqps"
	unitTasksPerS  = "suffix: tasks/s"
	unitStepsPerS  = "suffix: steps/s"
	unitCPUSeconds = "suffix: cores"
)

func timeSeries(title, description, unit string, qs ...query) *timeseries.PanelBuilder {
	return timeseries.NewPanelBuilder().
		Title(title).
		Description(description).
		Datasource(promDatasource()).
		Targets(targets(qs)).
		Unit(unit).
		FillOpacity(10).
		Legend(common.NewVizLegendOptionsBuilder().
			ShowLegend(true).
			DisplayMode(common.LegendDisplayModeList).
			Placement(common.LegendPlacementBottom))
}

// stackedSeries is a time series whose series add up to a meaningful total.
func stackedSeries(title, description, unit string, qs ...query) *timeseries.PanelBuilder {
	return timeSeries(title, description, unit, qs...).
		FillOpacity(60).
		Stacking(common.NewStackingConfigBuilder().Mode(common.StackingModeNormal))
}

func singleStat(title, description, unit string, qs ...query) *stat.PanelBuilder {
	return stat.NewPanelBuilder().
		Title(title).
		Description(description).
		Datasource(promDatasource()).
		Targets(targets(qs)).
		Unit(unit).
		GraphMode(common.BigValueGraphModeArea).
		ColorMode(common.BigValueColorModeValue).
		ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}))
}

// tablePanel shows instant queries, one row per series with its labels as
// columns; the time column says nothing there and is hidden.
func tablePanel(title, description string, qs ...query) *table.PanelBuilder {
	return table.NewPanelBuilder().
		Title(title).
		Description(description).
		Datasource(promDatasource()).
		Targets(targets(qs)).
		// Grafana's own default; the SDK's leaves the reducer null.
		Footer(common.NewTableFooterOptionsBuilder().Show(false).Reducer([]string{"sum"})).
		WithTransformation(dashboard.DataTransformerConfig{
			Id:      "organize",
			Options: map[string]any{"excludeByName": map[string]any{"Time": true, "__name__": true}},
		})
}

func stateTimeline(title, description string, qs ...query) *statetimeline.PanelBuilder {
	return statetimeline.NewPanelBuilder().
		Title(title).
		Description(description).
		Datasource(promDatasource()).
		Targets(targets(qs)).
		ShowValue(common.VisibilityModeNever).
		MergeValues(true)
}

// lineThresholds draws a time series' thresholds as lines.
func lineThresholds() *common.GraphThresholdsStyleConfigBuilder {
	return common.NewGraphThresholdsStyleConfigBuilder().Mode(common.GraphThresholdsStyleModeLine)
}

// thresholds colours a value green below the first step and then each
// step's colour from its value up.
func thresholds(steps ...dashboard.Threshold) *dashboard.ThresholdsConfigBuilder {
	return dashboard.NewThresholdsConfigBuilder().
		Mode(dashboard.ThresholdsModeAbsolute).
		Steps(append([]dashboard.Threshold{{Color: "green"}}, steps...))
}

func step(value float64, color string) dashboard.Threshold {
	return dashboard.Threshold{Value: &value, Color: color}
}

// byThresholds colours series and values by the panel's thresholds.
func byThresholds() *dashboard.FieldColorBuilder {
	return dashboard.NewFieldColorBuilder().Mode(dashboard.FieldColorModeIdThresholds)
}

// mapping names the values of a 0/1 gauge.
func mapping(zeroText, zeroColor, oneText, oneColor string) []dashboard.ValueMapping {
	result := func(text, color string, index int32) dashboard.ValueMappingResult {
		return dashboard.ValueMappingResult{Text: &text, Color: &color, Index: &index}
	}
	return []dashboard.ValueMapping{{ValueMap: &dashboard.ValueMap{
		Type: dashboard.MappingTypeValueToText,
		Options: map[string]dashboard.ValueMappingResult{
			"0": result(zeroText, zeroColor, 0),
			"1": result(oneText, oneColor, 1),
		},
	}}}
}

// checkStates names the values of checkLevel: a readiness check's status.
func checkStates() []dashboard.ValueMapping {
	result := func(text, color string, index int32) dashboard.ValueMappingResult {
		return dashboard.ValueMappingResult{Text: &text, Color: &color, Index: &index}
	}
	return []dashboard.ValueMapping{{ValueMap: &dashboard.ValueMap{
		Type: dashboard.MappingTypeValueToText,
		Options: map[string]dashboard.ValueMappingResult{
			"0": result("unhealthy", "red", 0),
			"1": result("degraded", "orange", 1),
			"2": result("healthy", "green", 2),
		},
	}}}
}

// checkLevel turns the tasker_sidecar_readiness_check state set into one
// series per replica and check: 2 healthy, 1 degraded, 0 unhealthy.
func checkLevel(selector string) string {
	return `max by (instance, check) (
  2 * tasker_sidecar_readiness_check{` + selector + `,status="healthy"}
  + on (instance, check) tasker_sidecar_readiness_check{` + selector + `,status="degraded"}
)`
}

// readiness names a 1-when-working gauge.
func readiness() []dashboard.ValueMapping { return mapping("failing", "red", "ready", "green") }

// Template variables.

func labelValues(name, label, query string) *dashboard.QueryVariableBuilder {
	q := "label_values(" + query + ", " + label + ")"
	return dashboard.NewQueryVariableBuilder(name).
		Label(label).
		Datasource(promDatasource()).
		Query(dashboard.StringOrMap{String: &q}).
		Definition(q).
		Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
		Sort(dashboard.VariableSortAlphabeticalAsc)
}

// jobVariable picks one sidecar deployment. Every replica of a deployment
// reports the same Tasker numbers, so domain panels take the max over the
// replicas of one job; mixing jobs would mix databases.
func jobVariable() cog.Builder[dashboard.VariableModel] {
	return labelValues("job", "job", "tasker_sidecar_build_info")
}

// multiVariable is a filter whose "All" matches every value, including
// values that appear after the dashboard was loaded.
func multiVariable(name, label, query string) cog.Builder[dashboard.VariableModel] {
	return labelValues(name, label, query).
		Multi(true).
		IncludeAll(true).
		AllValue(".*").
		Current(option("All", "$__all"))
}

func instanceVariable() cog.Builder[dashboard.VariableModel] {
	return multiVariable("instance", "instance", `tasker_sidecar_build_info{job="$job"}`)
}
