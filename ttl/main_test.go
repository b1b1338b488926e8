package ttl

import (
	"log/slog"
	"os"
	"testing"

	"github.com/tasker-systems/tasker-sidecar/store"
)

func TestMain(m *testing.M) {
	// go-redis reports every failed dial on stderr; the failure tests
	// cause them on purpose.
	store.RouteDriverLogs(slog.New(slog.DiscardHandler))
	os.Exit(m.Run())
}
