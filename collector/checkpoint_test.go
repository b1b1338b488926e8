package collector

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/secret"
	"github.com/tasker-systems/tasker-sidecar/internal/simulate"
	"github.com/tasker-systems/tasker-sidecar/store"
	"github.com/tasker-systems/tasker-sidecar/store/storetest"
)

func sampleCheckpoint() Checkpoint {
	return Checkpoint{
		Database: "tasker/16384/16390",
		SavedAt:  time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC),
		TaskTransitions: Cursor{Watermark: 120, Gaps: []Gap{
			{Lo: 100, Hi: 101, Since: time.Date(2025, 6, 1, 11, 59, 0, 0, time.UTC)},
		}},
		StepTransitions: Cursor{Watermark: 900},
	}
}

func TestFileCheckpointer(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "nested", "stream.json")
	c := NewFileCheckpointer(path)
	ctx := testCtx(t)
	if _, ok, err := c.Load(ctx); ok || err != nil {
		t.Fatalf("Load without a file = %v, %v; want no checkpoint and no error", ok, err)
	}
	want := sampleCheckpoint()
	if err := c.Save(ctx, want); err != nil {
		t.Fatal(err)
	}
	got, ok, err := c.Load(ctx)
	want.Version = checkpointVersion
	if err != nil || !ok || !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip = %+v, %v, %v; want %+v", got, ok, err, want)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
	if c.Shared() || !strings.Contains(c.String(), path) {
		t.Errorf("Shared %v, String %q", c.Shared(), c.String())
	}

	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Load(ctx); err == nil {
		t.Error("a corrupt file loaded without error")
	}
	if err := os.WriteFile(path, []byte(`{"version": 99}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Load(ctx); err == nil || !strings.Contains(err.Error(), "version 99") {
		t.Errorf("unknown version: %v", err)
	}
}

func openRedis(t *testing.T, prefix string) store.Store {
	t.Helper()
	st, err := store.Open(store.Config{URL: secret.URL(storetest.RedisURL(t)), KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func TestStoreCheckpointer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		st     store.Store
		shared bool
	}{
		{"memory", store.NewMemory("x:"), false},
		{"redis", openRedis(t, storetest.Prefix(t)), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			c := NewStoreCheckpointer(checkpointsIn(tc.st), "stream:checkpoint")
			if _, ok, err := c.Load(ctx); ok || err != nil {
				t.Fatalf("Load before Save = %v, %v", ok, err)
			}
			want := sampleCheckpoint()
			if err := c.Save(ctx, want); err != nil {
				t.Fatal(err)
			}
			got, ok, err := c.Load(ctx)
			want.Version = checkpointVersion
			if err != nil || !ok || !reflect.DeepEqual(got, want) {
				t.Fatalf("round trip = %+v, %v, %v", got, ok, err)
			}
			if c.Shared() != tc.shared {
				t.Errorf("Shared = %v, want %v", c.Shared(), tc.shared)
			}
		})
	}
}

func TestNewCheckpointerPicksTheStore(t *testing.T) {
	t.Parallel()
	cfg := CheckpointConfig{File: filepath.Join(t.TempDir(), "c.json"), Key: "k"}
	if _, ok := NewCheckpointer(checkpointsIn(store.NewMemory("")), cfg).(*FileCheckpointer); !ok {
		t.Error("an in-process store must not hold the checkpoint: it dies with the process")
	}
	if _, ok := NewCheckpointer(checkpointsIn(openRedis(t, storetest.Prefix(t))), cfg).(*StoreCheckpointer); !ok {
		t.Error("a distributed store should hold the checkpoint")
	}
	if c := NewCheckpointer(nil, CheckpointConfig{}); c != nil {
		t.Errorf("no store and no file = %v, want nil", c)
	}
}

func TestStreamCheckpointForAnotherDatabaseIsIgnored(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	f := newFixture(t, pg)
	buildMixed(f)
	ckpt := NewFileCheckpointer(filepath.Join(t.TempDir(), "c.json"))
	cp := sampleCheckpoint()
	cp.Database = "elsewhere/1/2"
	if err := ckpt.Save(testCtx(t), cp); err != nil {
		t.Fatal(err)
	}
	s := newTestStream(t, pg.URL, testStreamConfig(), ckpt)
	s.drain(t)
	if s.pos[tableTaskTransitions].Watermark != s.base[tableTaskTransitions].Watermark {
		t.Errorf("resumed from a checkpoint of another database: %+v", s.pos[tableTaskTransitions])
	}
	// A checkpoint ahead of the database (a restore) is ignored as well.
	cp.Database = s.ident
	cp.TaskTransitions.Watermark = 1 << 40
	if err := ckpt.Save(testCtx(t), cp); err != nil {
		t.Fatal(err)
	}
	s2 := newTestStream(t, pg.URL, testStreamConfig(), ckpt)
	s2.drain(t)
	if s2.pos[tableTaskTransitions].Watermark == 1<<40 {
		t.Error("resumed from a checkpoint ahead of the database")
	}
}

// TestStreamLeaseHandover runs two replicas on a shared Redis checkpoint
// and lease. The holder stops cleanly mid-stream; the other takes over,
// replays what it read as a follower and the holder had not exported, and
// every terminal task transition reaches exactly one sink.
func TestStreamLeaseHandover(t *testing.T) {
	t.Parallel()
	for _, e := range handoverEngines {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			testHandover(t, e, false)
		})
	}
}

// TestStreamLeaseHandoverAfterCrash is the same with the holder killed:
// no final checkpoint, no release. The other replica takes over when the
// lease expires; nothing is lost, and only what the dead holder exported
// after its last checkpoint is exported again.
func TestStreamLeaseHandoverAfterCrash(t *testing.T) {
	t.Parallel()
	for _, e := range handoverEngines {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			testHandover(t, e, true)
		})
	}
}

// handoverEngine is what the handover test does per engine: its database,
// its writers, and its terminal task transitions' keys.
type handoverEngine struct {
	name        string
	database    func(testing.TB) pgtest.DB
	live        func(t *testing.T, pool *pgxpool.Pool)
	terminalSQL string
}

var handoverEngines = []handoverEngine{
	{name: "rails", database: pgtest.NewTasker,
		live:        func(t *testing.T, pool *pgxpool.Pool) { runLive(t, pool, 30, 3*time.Second, 41) },
		terminalSQL: `SELECT id FROM tasker_task_transitions WHERE to_state = ANY($1) ORDER BY id`},
	{name: "core", database: pgtest.NewCore,
		live: func(t *testing.T, pool *pgxpool.Pool) {
			opts := simulate.Options{Seed: 41, ErrorRate: 0.3, Workers: 4}
			if _, err := simulate.LiveCore(context.Background(), pool, 30, 3*time.Second, opts, nil); err != nil {
				t.Errorf("live: %v", err)
			}
		},
		terminalSQL: `SELECT task_transition_uuid FROM tasker.task_transitions WHERE to_state = ANY($1) ORDER BY 1`},
}

func testHandover(t *testing.T, e handoverEngine, crash bool) {
	pg := e.database(t)
	pool := writerPool(t, pg.URL, 5)
	if e.name == "core" {
		if err := simulate.EnsureCoreCatalog(testCtx(t), pool, simulate.Options{Seed: 41}); err != nil {
			t.Fatal(err)
		}
	}
	st := openRedis(t, storetest.Prefix(t))
	cfg := testStreamConfig()
	cfg.Lease.TTL = 300 * time.Millisecond
	replica := func() testStream {
		lease, err := newLease(st, cfg.Lease)
		if err != nil {
			t.Fatal(err)
		}
		return newTestStream(t, pg.URL, cfg, NewCheckpointer(checkpointsIn(st), cfg.Checkpoint), WithLease(lease))
	}
	ctx := testCtx(t)
	a := replica()
	a.Start(ctx)
	<-a.Ready()
	waitFor(t, "a to take the lease", func() bool { return testutil.ToFloat64(a.m.leader) == 1 })
	b := replica()
	b.Start(ctx)
	<-b.Ready()

	liveDone := make(chan struct{})
	go func() { e.live(t, pool); close(liveDone) }()
	// Hand over once a has exported some of the terminal transitions
	// checked below and saved where it got to, so both replicas share the
	// traffic and b resumes from a's checkpoint.
	saved := NewCheckpointer(checkpointsIn(st), cfg.Checkpoint)
	waitFor(t, "a to export and checkpoint terminal transitions", func() bool {
		ended := 0
		for _, tr := range a.sink.all() {
			if !tr.Step && engine.EndsRun(tr.ToState) {
				ended++
			}
		}
		_, ok, err := saved.Load(ctx)
		return ended >= 3 && ok && err == nil
	})
	if crash {
		a.crash()
	} else {
		_ = a.Shutdown(context.Background())
	}
	start := a.base.clone()
	waitFor(t, "b to take the lease", func() bool { return testutil.ToFloat64(b.m.leader) == 1 })
	<-liveDone
	_ = b.Shutdown(context.Background())
	b.drain(t)
	b.assertMatchesRecount(t)

	if testutil.ToFloat64(b.m.leader) != 1 {
		t.Fatal("b does not hold the lease after draining")
	}
	seen := map[engine.ID]int{}
	for _, tr := range append(a.sink.all(), b.sink.all()...) {
		if !tr.Step && engine.EndsRun(tr.ToState) {
			seen[tr.ID]++
		}
	}
	rows, err := pg.Conn(t).Query(ctx, e.terminalSQL, terminalTaskStates)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[engine.ID])
	if err != nil {
		t.Fatal(err)
	}
	var again, total int
	for _, id := range ids {
		if start[tableTaskTransitions].Contains(id) {
			continue
		}
		total++
		switch n := seen[id]; {
		case n == 0:
			t.Errorf("terminal task transition %s exported by neither replica", id)
		case n > 1 && !crash:
			t.Errorf("terminal task transition %s exported %d times", id, n)
		case n > 1:
			again++
		}
	}
	t.Logf("%d terminal task transitions; a exported %d rows, b %d; replayed %v; exported twice %d",
		total, len(a.sink.all()), len(b.sink.all()), testutil.ToFloat64(b.m.replayed), again)
	if total == 0 || len(a.sink.all()) == 0 || len(b.sink.all()) == 0 {
		t.Error("the handover was not exercised: a replica exported nothing")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// slowSink blocks its first Consume, like an export to a slow receiver.
type slowSink struct {
	once sync.Once
	d    time.Duration
}

func (s *slowSink) Consume(context.Context, []Transition) error {
	s.once.Do(func() { time.Sleep(s.d) })
	return nil
}

// A poll that takes longer than the lease TTL (a slow export, a recount on
// a large database) must not lose the lease: it is renewed between polls.
func TestStreamKeepsLeaseThroughSlowPoll(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	f := newFixture(t, pg)
	task := f.task(f.namedTask("default", "slow", "0.1.0"))
	st := openRedis(t, storetest.Prefix(t))
	cfg := testStreamConfig()
	cfg.Lease.TTL = 300 * time.Millisecond
	replica := func(opts ...StreamOption) testStream {
		lease, err := newLease(st, cfg.Lease)
		if err != nil {
			t.Fatal(err)
		}
		return newTestStream(t, pg.URL, cfg, NewCheckpointer(checkpointsIn(st), cfg.Checkpoint), append(opts, WithLease(lease))...)
	}
	ctx := testCtx(t)
	a := replica(WithSink(&slowSink{d: 1500 * time.Millisecond}))
	a.Start(ctx)
	waitFor(t, "a to take the lease", func() bool { return testutil.ToFloat64(a.m.leader) == 1 })
	b := replica()
	b.Start(ctx)
	<-b.Ready()
	statesman(t, ctx, pg.Conn(t), tableTaskTransitions, task, "in_progress") // a's next poll blocks in the sink
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if testutil.ToFloat64(b.m.leader) == 1 {
			t.Fatal("the lease changed hands while its holder was in a slow poll")
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = a.Shutdown(context.Background())
	waitFor(t, "b to take the lease after a stopped", func() bool { return testutil.ToFloat64(b.m.leader) == 1 })
}

// The default local checkpoint is named after the database, so two sidecars
// on one host watching different databases never share a file (issue 10
// item 7: both used /tmp/tasker-sidecar-stream.json), and one database
// always gets the same file whatever the credentials or option order.
func TestCheckpointPath(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultStreamConfig().Checkpoint
	cfg.StateDir = dir
	path := func(url string) string {
		t.Helper()
		p, err := cfg.Path(url)
		if err != nil {
			t.Fatalf("Path(%q): %v", url, err)
		}
		return p
	}
	base := path("postgres://tasker:hunter2@db1.example:5432/tasker?sslmode=disable")
	if filepath.Dir(base) != dir {
		t.Errorf("%s is not under the state directory %s", base, dir)
	}
	if !strings.Contains(filepath.Base(base), "-"+Engine+"-tasker-") {
		t.Errorf("%s does not name the engine and the database", base)
	}
	if strings.Contains(base, "hunter2") {
		t.Errorf("%s contains the password", base)
	}
	same := []string{
		"postgres://other:secret@db1.example:5432/tasker?sslmode=disable",
		"postgres://db1.example/tasker?application_name=x&sslmode=require",
		"host=db1.example port=5432 dbname=tasker user=tasker password=hunter2",
	}
	for _, u := range same {
		if got := path(u); got != base {
			t.Errorf("same database %q: %s, want %s", u, got, base)
		}
	}
	different := []string{
		"postgres://tasker:hunter2@db2.example:5432/tasker",
		"postgres://tasker:hunter2@db1.example:5433/tasker",
		"postgres://tasker:hunter2@db1.example:5432/tasker_staging",
		"postgres://tasker:hunter2@db1.example:5432,db2.example:5432/tasker",
	}
	seen := map[string]string{base: "the first"}
	for _, u := range different {
		got := path(u)
		if prev, dup := seen[got]; dup {
			t.Errorf("%q shares %s with %s", u, got, prev)
		}
		seen[got] = u
	}

	explicit := cfg
	explicit.File = "/var/lib/sidecar/stream.json"
	if got, err := explicit.Path("postgres://db1.example/tasker"); err != nil || got != explicit.File {
		t.Errorf("an explicit file must win: got %q, %v", got, err)
	}
	off := cfg
	off.StateDir = ""
	if got, err := off.Path("postgres://db1.example/tasker"); err != nil || got != "" {
		t.Errorf("no file and no state directory must disable the local checkpoint: got %q, %v", got, err)
	}
	if _, err := cfg.Path("postgres://u:hunter2@db1.example:99999/tasker"); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("an unusable URL must fail without its password: %v", err)
	}
}

// Two streams on different databases, each with the default file under one
// state directory, keep their own checkpoints: each resumes from its own.
func TestCheckpointFilesApartPerDatabase(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := testCtx(t)
	cfg := testStreamConfig()
	cfg.Checkpoint.StateDir = dir
	var files []string
	for range 2 {
		pg := pgtest.NewTasker(t)
		f := newFixture(t, pg)
		task := f.task(f.namedTask("default", "welcome", "0.1.0"), "pending")
		file, err := cfg.Checkpoint.Path(pg.URL)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, file)
		s := newTestStream(t, pg.URL, cfg, NewCheckpointer(nil, CheckpointConfig{File: file}))
		s.Start(ctx)
		<-s.Ready()
		statesman(t, ctx, f.conn, tableTaskTransitions, task, "in_progress")
		waitFor(t, "a checkpoint save", func() bool { return testutil.ToFloat64(s.m.checkpoints.WithLabelValues("ok")) > 0 })
		_ = s.Shutdown(context.Background())
	}
	if files[0] == files[1] {
		t.Fatalf("both databases use %s", files[0])
	}
	var idents []string
	for _, file := range files {
		cp, ok, err := NewFileCheckpointer(file).Load(ctx)
		if err != nil || !ok {
			t.Fatalf("%s: %v, %v", file, ok, err)
		}
		idents = append(idents, cp.Database)
	}
	if idents[0] == idents[1] {
		t.Errorf("both checkpoints belong to %s", idents[0])
	}
}

// The shared-store keys of two databases' sidecars differ even with one
// store and one key prefix; the replicas of one database share theirs.
func TestScopedKey(t *testing.T) {
	key := func(url string) string {
		t.Helper()
		k, err := ScopedKey("stream:lease", url)
		if err != nil {
			t.Fatalf("ScopedKey(%q): %v", url, err)
		}
		return k
	}
	base := key("postgres://tasker:hunter2@db1.example:5432/tasker")
	if !strings.HasPrefix(base, "stream:lease:"+Engine+"-tasker-") || strings.Contains(base, "hunter2") {
		t.Errorf("key %q must start with the configured key, the engine and the database, without the password", base)
	}
	for _, u := range []string{"postgres://other:x@db1.example/tasker", "host=db1.example dbname=tasker user=y"} {
		if got := key(u); got != base {
			t.Errorf("same database %q: %s, want %s", u, got, base)
		}
	}
	for _, u := range []string{"postgres://tasker@db2.example/tasker", "postgres://tasker@db1.example/tasker_staging"} {
		if got := key(u); got == base {
			t.Errorf("another database %q shares the key %s", u, got)
		}
	}
}

// TestShutdownWithSpentBudgetSavesCheckpoint: when the shutdown budget is
// already spent as the stream's turn comes (a long HTTP drain before it),
// the loop has ended and the final checkpoint still gets its moment.
func TestShutdownWithSpentBudgetSavesCheckpoint(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	f := newFixture(t, pg)
	task := f.task(f.namedTask("default", "welcome", "0.1.0"), "pending")
	cfg := testStreamConfig()
	// Only the first save and the final one write: what the final save
	// writes is then observable.
	cfg.Checkpoint.Interval = time.Hour
	// A shared store honours the context, as the final save must.
	ckpt := NewCheckpointer(checkpointsIn(openRedis(t, storetest.Prefix(t))), cfg.Checkpoint)
	s := newTestStream(t, pg.URL, cfg, ckpt)
	ctx := testCtx(t)
	_ = s.Start(ctx)
	<-s.Ready()
	statesman(t, ctx, f.conn, tableTaskTransitions, task, "in_progress")
	waitFor(t, "the first checkpoint save", func() bool { return testutil.ToFloat64(s.m.checkpoints.WithLabelValues("ok")) > 0 })
	statesman(t, ctx, f.conn, tableTaskTransitions, task, "complete")
	waitFor(t, "the stream to emit the second transition", func() bool { return len(s.sink.all()) > 1 })

	// The loop is stopped first, as if an earlier step of the supervisor
	// had used the whole budget; Shutdown then gets an ended context.
	_ = s.loop.Shutdown(context.Background())
	spent, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Shutdown(spent); err != nil {
		t.Fatalf("Shutdown with a spent budget = %v, want nil: the loop had ended", err)
	}
	saved, ok, err := ckpt.Load(ctx)
	if err != nil || !ok {
		t.Fatalf("no checkpoint: %v, %v", ok, err)
	}
	if want := s.pos[tableTaskTransitions].Watermark; saved.TaskTransitions.Watermark != want {
		t.Errorf("checkpoint at %d, stream stopped at %d: the final save did not happen", saved.TaskTransitions.Watermark, want)
	}
}
