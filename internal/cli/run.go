package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/version"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasker-systems/tasker-sidecar/analytics"
	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/coord"
	"github.com/tasker-systems/tasker-sidecar/internal/config"
	"github.com/tasker-systems/tasker-sidecar/ttl"
)

func runCmd(ctx context.Context, env *environment, args []string) int {
	fs := newFlagSet(env, "run", "run [--config FILE] [--database-url URL] [--cache-url URL] [--listen ADDR] [flags]",
		"Runs the sidecar: attaches read-only to the Tasker database and the cache store, refreshes the\nhealth counts in the background and serves /tasker/health/{live,ready,status} and /metrics.\nExits 2 on invalid configuration; keeps serving (degraded) while a dependency is down.")
	var f config.Flags
	f.Register(fs)
	if code, done := parse(fs, args); done {
		return code
	}
	cfg, ok := loadConfig(env, fs, &f)
	if !ok || !preflight(env, cfg) {
		return exitUsage
	}
	logger := newLogger(env.stderr, cfg.Log)
	if err := serve(ctx, cfg, logger, env.ready); err != nil {
		logger.Error("sidecar stopped", "err", err)
		return exitFailure
	}
	return exitOK
}

// displayAddr turns ":9394" or "[::]:9394" into something a person can click.
func displayAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "::" || host == "0.0.0.0" {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

// newStream follows the transition tables. With a distributed cache store the
// checkpoint is shared and a lease picks the one replica that exports traces;
// otherwise the checkpoint is a local file and this replica exports.
func newStream(ctx context.Context, cfg config.Config, db *collector.DB, cache *cacheRuntime, reg prometheus.Registerer, logger *slog.Logger, opts []collector.StreamOption) *collector.Stream {
	// Preflight resolved the same path, so this cannot fail here.
	ckptCfg, _ := checkpointConfig(cfg) // preflight.go
	ckpt := collector.NewCheckpointer(coord.KeysOf(cache.st), ckptCfg)
	if coord.Shared(cache.st) {
		leaseCfg, _ := leaseConfig(cfg) // preflight.go; resolved there like the checkpoint
		lease, err := cache.coord.Lease(ctx, leaseCfg.Key, leaseCfg.TTL)
		if err != nil {
			logger.Warn("no export lease on this cache store: every replica exports traces", "err", err)
		} else {
			opts = append(opts, collector.WithLease(lease))
		}
	}
	return collector.NewStream(db, cfg.Stream.StreamConfig, ckpt, reg, logger.With("component", "stream"), opts...)
}

// newAnalytics is the analytics service with its admission metrics.
func newAnalytics(cfg config.Config, db *collector.DB, reg prometheus.Registerer, tp trace.TracerProvider, logger *slog.Logger) *analytics.Service {
	svc := analytics.New(db.Pool(), cfg.Analytics, logger.With("component", "analytics"), analytics.WithTracerProvider(tp),
		// Each computation checks the attached engine itself (attaching
		// briefly when the first request comes before the first count).
		analytics.WithAttachment(db))
	reg.MustRegister(svc) // admission metrics
	return svc
}

// saturation reports whether expensive work is being turned away: by the
// coordinated cache (too many requests waiting on one resource) or by the
// analytics connection queues (svc may be nil when analytics are off).
func saturation(results *ttl.Cache, svc *analytics.Service) func() (bool, string) {
	return func() (bool, string) {
		var msgs []string
		if sat, msg := results.Saturated(); sat {
			msgs = append(msgs, msg)
		}
		if svc != nil {
			if sat, msg := svc.Saturated(); sat {
				msgs = append(msgs, msg)
			}
		}
		return len(msgs) > 0, strings.Join(msgs, "; ")
	}
}

// newResults is the coordinated cache every expensive result goes through.
// Entries are keyed by the build, the database and the configuration, so
// sidecars that would compute different answers never share one.
func newResults(cfg config.Config, cache *cacheRuntime, reg prometheus.Registerer, logger *slog.Logger) (*ttl.Cache, error) {
	tc := resultsConfig(cfg) // preflight.go
	if tc.KeyVersion == "" {
		tc.KeyVersion = keyVersion(cfg)
	}
	det := cache.det
	return ttl.New(cache.st, det.Report, func(err error) { det.NotifyError(err) }, tc, reg, logger)
}

// keyVersion covers what changes a cached answer: the build, the database and
// the settings the computations read. Per-pod settings (listen address,
// checkpoint file) stay out, or replicas would never share an entry.
//
// The build is its version and revision as stamped with -ldflags (Makefile,
// Dockerfile) and the VCS revision Go stamps itself (debug.ReadBuildInfo,
// vcs.revision and vcs.modified). When none of them names the source
// exactly, a SHA-256 of the executable does: a build without a revision (a
// plain go build outside a checkout, the Dockerfile's defaults dev/unknown,
// where .git is not in the build context) or from a modified tree (vcs.modified,
// or a -dirty version). So two different builds never share an entry, and
// replicas running one binary always do. The build also fixes the SQL the
// computations run and the Tasker tables they read; the schema of the live
// database is not part of the key (it is not known before connecting, and a
// migration under a running sidecar only keeps old entries until they expire).
func keyVersion(cfg config.Config) string {
	tc := cfg.TTL
	tc.KeyVersion = ""
	build := map[string]string{"version": version.Version, "revision": version.Revision}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" || s.Key == "vcs.modified" {
				build[s.Key] = s.Value
			}
		}
	}
	named := (version.Revision != "" && version.Revision != "unknown") || build["vcs.revision"] != ""
	modified := build["vcs.modified"] == "true" || strings.Contains(version.Version, "dirty")
	if !named || modified {
		build["executable"] = "unreadable"
		if path, err := os.Executable(); err == nil {
			if f, err := os.Open(path); err == nil {
				h := sha256.New()
				if _, err := io.Copy(h, f); err == nil {
					build["executable"] = hex.EncodeToString(h.Sum(nil))
				}
				_ = f.Close()
			}
		}
	}
	parts, _ := json.Marshal([]any{build, cfg.Database.URL.String(), cfg.Metrics, cfg.Analytics, tc})
	sum := sha256.Sum256(parts)
	return hex.EncodeToString(sum[:6])
}

// sharedCounts computes the health counts once per refresh interval across
// all replicas that share the cache store.
type sharedCounts struct {
	src      collector.CountSource
	cache    *ttl.Cache
	interval time.Duration

	mu      sync.Mutex
	lastErr error // of this replica's latest computation, which may run in the background
}

func (s *sharedCounts) Refresh(ctx context.Context) (collector.Snapshot, error) {
	raw, info, err := s.cache.Get(ctx, ttl.ResourceStatus, "", func(ctx context.Context) ([]byte, error) {
		snap, err := s.src.Refresh(ctx)
		s.mu.Lock()
		s.lastErr = err
		s.mu.Unlock()
		if err != nil {
			return nil, err
		}
		return json.Marshal(snap)
	})
	if err != nil {
		return collector.Snapshot{}, err
	}
	// The cache serves the last value while recomputes fail; the refresher
	// must still see the failure, or its metrics and readiness would call
	// old counts fresh.
	if info.Stale {
		s.mu.Lock()
		lastErr := s.lastErr
		s.mu.Unlock()
		if lastErr != nil {
			return collector.Snapshot{}, lastErr
		}
		if info.AgeSeconds > 2*s.interval.Seconds() {
			return collector.Snapshot{}, fmt.Errorf("shared health counts are %.0fs old: the replica refreshing them is failing", info.AgeSeconds)
		}
	}
	var snap collector.Snapshot
	if err := json.Unmarshal(raw, &snap); err != nil {
		return collector.Snapshot{}, fmt.Errorf("decode shared health counts: %w", err)
	}
	return snap, nil
}
