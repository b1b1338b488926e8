package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
)

// The whole sidecar pointed at a hot standby (docs/operations.md#read-replicas)
// says where it is: /capabilities, the status endpoint, the readiness
// details (with credentials off, the public check only has its status) and
// the metrics; replay paused while the primary is written makes the data
// stale, resuming clears it.
func TestRunOnStandby(t *testing.T) {
	db := pgtest.New(t)
	seed(t, db.URL, 30)
	sb := pgtest.StartStandby(t)
	sc := startSidecar(t, nil, "--database-url", sb.URLFor(db.Name), "--refresh-interval", "1s")
	eventually(t, 30*time.Second, "first refresh", func() bool {
		code, _ := sc.get(t, "/tasker/health/status")
		return code == 200
	})

	_, caps := sc.get(t, "/capabilities")
	dbCaps, _ := caps["database"].(map[string]any)
	if dbCaps["role"] != "standby" || dbCaps["replay_paused"] != false || dbCaps["replication_lag_seconds"] == nil {
		t.Errorf("/capabilities database = %v, want a standby with its lag", dbCaps)
	}
	_, status := sc.get(t, "/tasker/health/status")
	database, _ := status["database"].(map[string]any)
	if database["role"] != "standby" || database["note"] == nil {
		t.Errorf("status database = %v, want role standby and a note on the connection figures", database)
	}
	_, m := sc.get(t, "/metrics")
	text, _ := m["text"].(string)
	if !strings.Contains(text, "\ntasker_sidecar_database_in_recovery 1\n") ||
		!strings.Contains(text, "\ntasker_sidecar_replication_lag_seconds ") {
		t.Errorf("metrics lack the standby's role or lag:\n%s", grepText(text, "tasker_sidecar_replication", "tasker_sidecar_database_in_recovery"))
	}

	// Replay paused while the primary gains tasks: the data goes stale
	// (two refresh intervals), and comes back once replay resumes.
	sb.Exec(t, "SELECT pg_wal_replay_pause()")
	seedMore(t, db.URL, 5)
	var last map[string]any
	defer func() {
		if t.Failed() {
			t.Logf("last status: %v", last)
		}
	}()
	eventually(t, 60*time.Second, "stale data while replay is paused", func() bool {
		code, st := sc.get(t, "/tasker/health/status")
		last = st
		ci, _ := st["cache_info"].(map[string]any)
		return code == 503 && ci["stale"] == true && st["error_class"] == "stale"
	})
	// The status is stale once lag and age together pass the bound; the
	// lag alone follows.
	eventually(t, 30*time.Second, "the lag metric past the bound", func() bool {
		_, m := sc.get(t, "/metrics")
		text, _ := m["text"].(string)
		return metricSum(text, "tasker_sidecar_replication_lag_seconds ") > 2 &&
			metricSum(text, "tasker_sidecar_replication_replay_paused ") == 1
	})
	sb.Exec(t, "SELECT pg_wal_replay_resume()")
	eventually(t, 60*time.Second, "fresh data after resuming replay", func() bool {
		code, st := sc.get(t, "/tasker/health/status")
		ci, _ := st["cache_info"].(map[string]any)
		return code == 200 && ci["stale"] == false
	})
}

// seedMore adds tasks to a database seed made.
func seedMore(t *testing.T, url string, tasks int) {
	t.Helper()
	seed(t, url, tasks) // schema.Apply and EnsureCatalog are idempotent
}

func grepText(text string, prefixes ...string) string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				out = append(out, line)
			}
		}
	}
	return strings.Join(out, "\n")
}
