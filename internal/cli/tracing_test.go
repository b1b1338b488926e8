package cli

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/simulate"
)

// otlpReceiver is a real OTLP/HTTP endpoint that keeps what it receives.
type otlpReceiver struct {
	mu    sync.Mutex
	spans map[string]map[string]int // service -> span name -> count
}

func (r *otlpReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil || req.URL.Path != "/v1/traces" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	var msg coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range msg.ResourceSpans {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.Key == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		if r.spans[service] == nil {
			r.spans[service] = map[string]int{}
		}
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				r.spans[service][sp.Name]++
			}
		}
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

func (r *otlpReceiver) count(service, name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.spans[service][name]
}

func TestRunExportsWorkflowTraces(t *testing.T) {
	db := pgtest.New(t)
	seed(t, db.URL, 30)
	recv := &otlpReceiver{spans: map[string]map[string]int{}}
	otlp := httptest.NewServer(recv)
	t.Cleanup(otlp.Close) // after the sidecar stops, so its last export lands

	sc := startSidecar(t, []string{
		"SIDECAR_TRACING_ENABLED=true",
		"SIDECAR_TRACING_PROTOCOL=http/protobuf",
		"SIDECAR_TRACING_ENDPOINT=" + otlp.URL,
		"SIDECAR_TRACING_SIDECAR_SAMPLING_RATIO=1",
	}, "--database-url", db.URL, "--refresh-interval", "1s")

	// Live activity finishes tasks after the stream started, so their traces
	// are exported as they end.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := simulate.Live(ctx, pool, 20, 4*time.Second, simulate.Options{Seed: 7}, nil); err != nil {
		t.Fatal(err)
	}

	// An analytics request is a span of the sidecar's own, with the cache's
	// lookup and recomputation around the query.
	sc.get(t, "/tasker/analytics/performance")
	eventually(t, 60*time.Second, "workflow and sidecar spans at the OTLP receiver", func() bool {
		return recv.count("tasker", "tasker.task.execution") > 0 &&
			recv.count("tasker", "tasker.step.execution") > 0 &&
			recv.count("tasker-sidecar", "refresh") > 0 &&
			recv.count("tasker-sidecar", "cache.get") > 0 &&
			recv.count("tasker-sidecar", "cache.recompute") > 0 &&
			recv.count("tasker-sidecar", "analytics.performance") > 0
	})
	var text string
	eventually(t, 30*time.Second, "transition counters on /metrics", func() bool {
		_, m := sc.get(t, "/metrics")
		text, _ = m["text"].(string)
		return strings.Contains(text, "tasker_task_transitions_total{") && strings.Contains(text, "tasker_sidecar_traces_spans_exported_total")
	})
}
