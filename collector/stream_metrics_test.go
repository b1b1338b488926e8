package collector

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/schema"
)

// tasker_sidecar_stream_caught_up says the stream has read everything
// committed. While its polls fail it cannot know that, so the gauge must
// read 0 (it stayed 1 through an outage, issue 10 item 8), and 1 again
// once a poll after the outage has caught up.
func TestStreamCaughtUpFollowsFailedPolls(t *testing.T) {
	t.Parallel()
	srv := pgtest.StartServer(t) // a private cluster: this test stops it
	ctx := testCtx(t)
	conn, err := pgx.Connect(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	if err := schema.Apply(ctx, conn); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close(context.Background())

	s := newTestStream(t, srv.URL(), testStreamConfig(), nil)
	s.Start(ctx)
	caughtUp := func() float64 { return testutil.ToFloat64(s.m.caughtUp) }
	failures := func() (n float64) {
		for _, r := range Reasons() {
			n += testutil.ToFloat64(s.m.pollErrors.WithLabelValues(r))
		}
		return n
	}
	waitFor(t, "the first poll to catch up", func() bool { return caughtUp() == 1 })

	srv.Stop()
	waitFor(t, "a poll to fail", func() bool { return failures() > 0 })
	// failed sets the gauge before it counts the error.
	if got := caughtUp(); got != 0 {
		t.Errorf("caught_up = %v after a failed poll, want 0", got)
	}

	srv.Start()
	waitFor(t, "caught_up to return after PostgreSQL is back", func() bool { return caughtUp() == 1 })
}
