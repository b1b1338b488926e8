package store

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"
)

// RouteDriverLogs sends go-redis's own log lines (dial failures, pool
// notices), which it otherwise prints to stderr, to logger at debug level.
// go-redis keeps its logger in a package variable, so this is process-wide:
// call it once from main, before opening stores.
func RouteDriverLogs(logger *slog.Logger) {
	redis.SetLogger(driverLogger{logger.With("component", "go-redis")})
}

type driverLogger struct{ l *slog.Logger }

func (d driverLogger) Printf(ctx context.Context, format string, v ...any) {
	d.l.DebugContext(ctx, fmt.Sprintf(format, v...))
}
