package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tasker-systems/tasker-sidecar/api"
	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/coord"
	"github.com/tasker-systems/tasker-sidecar/detector"
	"github.com/tasker-systems/tasker-sidecar/internal/config"
	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/readiness"
	"github.com/tasker-systems/tasker-sidecar/store"
	"github.com/tasker-systems/tasker-sidecar/ttl"
)

// PathCapabilities serves the detector's report.
const PathCapabilities = "/capabilities"

// cacheRuntime is the cache store and what the detector found it can do.
type cacheRuntime struct {
	st      store.Store
	det     *detector.Detector
	coord   *coord.Coordinator // with the conditional methods det reports
	results *ttl.Cache         // set once the coordinated cache exists

	// engine is collector.DB.Engine and configured database.engine, for
	// /capabilities; engine may be nil (no database section is reported).
	engine     func() (engine.Engine, bool)
	configured engine.Kind
	// replication is collector.DB.Replication: where the database is.
	replication func() (collector.Replication, time.Time)
}

// capabilities is /capabilities: the detector's report of the cache store,
// and the Tasker engine the sidecar reads.
type capabilities struct {
	detector.Report
	Database *databaseCapabilities `json:"database,omitempty"`
}

// databaseCapabilities names the engine the last schema check found
// ("rails" or "core"; absent before one did) and database.engine.
//
// Role is "standby" when the server is a hot standby (pg_is_in_recovery),
// "primary" otherwise, absent before it answered; on a standby the
// replication lag at the last refresh and whether replay is paused
// (docs/operations.md#read-replicas).
type databaseCapabilities struct {
	Engine                engine.Kind `json:"engine,omitempty"`
	EngineName            string      `json:"engine_name,omitempty"`
	ConfiguredEngine      engine.Kind `json:"configured_engine"`
	Role                  string      `json:"role,omitempty"`
	ReplicationLagSeconds *float64    `json:"replication_lag_seconds,omitempty"`
	ReplayPaused          *bool       `json:"replay_paused,omitempty"`
}

func (c *cacheRuntime) capabilities() capabilities {
	caps := capabilities{Report: c.det.Report()}
	if c.engine != nil {
		db := &databaseCapabilities{ConfiguredEngine: c.configured}
		if e, ok := c.engine(); ok {
			db.Engine, db.EngineName = e.Kind, e.Name
		}
		if c.replication != nil {
			r, _ := c.replication()
			db.Role = r.Role()
			if r.Standby {
				lag, paused := r.Lag.Seconds(), r.Paused
				db.ReplicationLagSeconds, db.ReplayPaused = &lag, &paused
			}
		}
		caps.Database = db
	}
	return caps
}

func openStore(cfg config.CacheConfig) (store.Store, error) {
	st, err := store.Open(cfg.Config)
	if err != nil {
		return nil, fmt.Errorf("cache.url: %w", err)
	}
	return st, nil
}

// openCache opens the store and runs detection once before serving, so that
// the coordinated cache starts with the right mechanism and the first
// readiness answer already knows the strategy; the detector's background
// loop is started by the supervisor (serve.go). An unreachable store is not
// an error: the sidecar runs local_only and re-detects when it is back.
func openCache(ctx context.Context, cfg config.Config, reg prometheus.Registerer, logger *slog.Logger) (*cacheRuntime, error) {
	st, err := openStore(cfg.Cache)
	if err != nil {
		return nil, err
	}
	det, err := detector.New(st, cfg.Cache.Detection, reg, logger)
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	// The detector logs the outcome itself (a warning when unreachable).
	_, _ = det.Run(ctx)
	co := coord.New(st, det.Methods)
	return &cacheRuntime{st: st, det: det, coord: co}, nil
}

func (c *cacheRuntime) routes(srv *api.Server) {
	srv.Router().GET(PathCapabilities, func(ctx *gin.Context) {
		ctx.Header("Cache-Control", "no-cache, no-store, must-revalidate")
		ctx.JSON(http.StatusOK, c.capabilities())
	})
}

// check is the readiness cache check: Tasker's round trip
// (docs/tasker-semantics.md#readiness-cache-check) plus
// the store, strategy and capabilities, "degraded" on capability conflicts.
func (c *cacheRuntime) check() readiness.Checker {
	return readiness.CheckFunc("cache", func(ctx context.Context) readiness.CheckResult {
		r := c.det.ReadinessCheck(ctx)
		status := r.Status
		res := readiness.CheckResult{Status: status, Message: r.Message, Error: r.Error,
			ResponseTimeMs: r.ResponseTimeMS, Details: r.Details()}
		if c.results != nil {
			if degraded, why := c.results.Degraded(); degraded && status == detector.StatusHealthy {
				res.Status = detector.StatusDegraded
				res.Message = "Results cached in-process only: " + why
			}
		}
		if status == detector.StatusUnhealthy {
			// A failed operation may mean an ACL or failover changed what the
			// store allows; let the detector look again.
			c.det.NotifyError(fmt.Errorf("%s", res.Error))
		}
		return res
	})
}
