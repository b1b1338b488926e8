package ttl

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tasker-systems/tasker-sidecar/store/storetest"
)

// histogramCount is the number of observations of the histogram series of
// name whose labels include labels.
func histogramCount(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) uint64 {
	t.Helper()
	var n uint64
	for _, m := range series(t, reg, name, labels) {
		n += m.GetHistogram().GetSampleCount()
	}
	return n
}

// Recomputation durations are labelled with the path that ran them, as the
// recomputation counter is: cold (a request waited), refresh (background
// renewal of a value in service), retry (renewal while recomputations fail),
// so that the time requests wait and the time refreshes or failing retries
// take can be told apart.
func TestRecomputeDurationByReason(t *testing.T) {
	for _, b := range allBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			clk := newClock()
			c := newReplica(t, b.open(t, storetest.Prefix(t)), fixedReport(b.mechanism), testConfig(), clk)
			src := &source{}
			const name = "tasker_sidecar_cache_recompute_duration_seconds"
			want := func(what string, cold, refresh, retry uint64) {
				t.Helper()
				for reason, n := range map[string]uint64{"cold": cold, "refresh": refresh, "retry": retry} {
					if got := histogramCount(t, c.reg, name, map[string]string{"resource": ResourceStatus, "reason": reason}); got != n {
						t.Fatalf("%s: %s{reason=%q} has %d observations, want %d", what, name, reason, got, n)
					}
					got := counterValue(t, c.reg, "tasker_sidecar_cache_recomputations_total", map[string]string{"resource": ResourceStatus, "reason": reason})
					if uint64(got) != n {
						t.Fatalf("%s: recomputations_total{reason=%q} = %v, want %d", what, reason, got, n)
					}
				}
			}

			mustGet(t, c.Cache, ResourceStatus, "", src)
			want("cold miss", 1, 0, 0)

			clk.Advance(60*time.Second - 50*time.Millisecond)
			eventually(t, "the refreshed value", func() bool {
				v, _ := mustGet(t, c.Cache, ResourceStatus, "", src)
				return v == gen(2, ResourceStatus)
			})
			want("refresh ahead", 1, 1, 0)

			// The database fails: the first failed renewal is a refresh,
			// the attempts after it are retries.
			src.fail.Store(true)
			clk.Advance(61 * time.Second)
			eventually(t, "the failed refresh", func() bool {
				mustGet(t, c.Cache, ResourceStatus, "", src)
				return counterValue(t, c.reg, "tasker_sidecar_cache_refreshes_total", map[string]string{"result": "error"}) == 1
			})
			want("failed refresh", 1, 2, 0)
			clk.Advance(time.Second) // the backoff
			eventually(t, "the retry", func() bool {
				mustGet(t, c.Cache, ResourceStatus, "", src)
				return counterValue(t, c.reg, "tasker_sidecar_cache_refreshes_total", map[string]string{"result": "error"}) == 2
			})
			want("retry", 1, 2, 1)
			lint(t, c.reg)
		})
	}
}
