package collector

import (
	"context"
	"os"
	"testing"

	"github.com/tasker-systems/tasker-sidecar/internal/secret"
)

// BenchmarkRefresh measures one full refresh against a real, preferably
// large, Tasker database. It is opt-in: set SIDECAR_BENCH_DATABASE_URL.
// bench/seed.sh builds 10k, 100k and 1M-task databases for it.
func BenchmarkRefresh(b *testing.B) {
	url := os.Getenv("SIDECAR_BENCH_DATABASE_URL")
	if url == "" {
		b.Skip("set SIDECAR_BENCH_DATABASE_URL to a Tasker database to run this benchmark")
	}
	db, err := Open(DBConfig{URL: secret.URL(url)}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	snap, err := db.Refresh(ctx) // warm the pool and the statement cache
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(snap.Counts.TotalTasks), "tasks")
	b.ReportMetric(float64(snap.Counts.TotalSteps), "steps")
	b.ResetTimer()
	for b.Loop() {
		if _, err := db.Refresh(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
