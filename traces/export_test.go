package traces

import (
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// The external tests (package traces_test: otlp_test.go, e2e_test.go) use
// traces/otlp, which an internal test cannot import as it imports traces.
// These lend them the internal test helpers.
var (
	TestingConfig     = testTracing
	NewTestWorkflows  = newTestTraces
	Ended             = ended
	StartGRPCReceiver = startGRPCReceiver
	StartHTTPReceiver = startHTTPReceiver
	WriterPool        = writerPool
	NewLogger         = testLogger
	ExpectedSpans     = expectedSpans
	OpenDB            = openDB
	StreamConfig      = streamConfig
)

// All returns the spans received so far.
func (r *otlpReceiver) All() []gotSpan { return r.all() }

// LastHeaders returns the headers (or gRPC metadata) of the last request.
func (r *otlpReceiver) LastHeaders() map[string]string { return r.lastHeaders() }

// RetriedTaskHistories serves task 42, retriedTask: four spans when its
// run that ended at sort key 20 is exported.
func RetriedTaskHistories() TaskHistorySource {
	return &fakeHistories{tasks: map[engine.ID]collector.TaskHistory{engine.IntID(42): retriedTask()}}
}

// ExportedRuns is the count of task runs w exported.
func ExportedRuns(w *Workflows) float64 {
	return testutil.ToFloat64(w.tasks.WithLabelValues(resultExported))
}
