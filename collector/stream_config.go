package collector

import (
	"fmt"
	"os"
	"time"
)

// StreamConfig configures the transition stream (the `stream:` section).
// Zero values are invalid; start from DefaultStreamConfig.
type StreamConfig struct {
	// BatchSize is the most rows read from one table in one query.
	BatchSize int `yaml:"batch_size"`
	// MaxBatchesPerPoll bounds the queries per table in one poll, and so how
	// long one read-only snapshot stays open while a backlog drains. A poll
	// that hits it starts the next one at once instead of waiting.
	MaxBatchesPerPoll int `yaml:"max_batches_per_poll"`
	// PollInterval is the pause between polls once the stream has caught up.
	PollInterval time.Duration `yaml:"poll_interval"`
	// PollTimeout bounds one poll, including a recount when one is due.
	PollTimeout time.Duration `yaml:"poll_timeout"`
	// GapHorizon is how long an id skipped by the watermark is re-checked
	// for a late commit. It must exceed the longest transaction that writes
	// Tasker rows.
	GapHorizon time.Duration `yaml:"gap_horizon"`
	// StartGapWindow is how many ids below the starting watermark are
	// searched for gaps when the stream starts from a full count, so rows
	// of transactions that were open at that moment are not missed.
	StartGapWindow int64 `yaml:"start_gap_window"`
	// KeyClockMargin is how much older than the transaction writing it a
	// tasker-core key may be. tasker-core's tables take their keys from the
	// column default (uuid_generate_v7(), a moment before the transaction
	// gets its id), but a tool or an engine version that makes its own keys
	// (Uuid::now_v7 in Rust) does so earlier, on a host whose clock may lag
	// the database's. The stream re-reads this much of each table on every
	// poll, skipping the keys it has read.
	KeyClockMargin time.Duration `yaml:"key_clock_margin"`
	// RecountInterval is how often a full recount checks the incremental
	// counts for drift and corrects them; 0 disables it (the first count at
	// start always runs).
	RecountInterval time.Duration `yaml:"recount_interval"`
	// StaleAfter is how old the last successful poll may be before the
	// counts are reported as failing rather than served as current.
	StaleAfter time.Duration `yaml:"stale_after"`
	// MaxLabelGroups caps the (namespace, task) label pairs of the
	// transition counters and histograms; the rest are counted under
	// namespace="other",task="other".
	MaxLabelGroups int `yaml:"max_label_groups"`

	Checkpoint CheckpointConfig `yaml:"checkpoint"`
	Lease      LeaseConfig      `yaml:"lease"`
}

// CheckpointConfig says where the stream's position is saved. With a
// distributed cache store it goes there under Key, shared by all replicas;
// otherwise into a local file (see Path).
type CheckpointConfig struct {
	// File is the local checkpoint. Empty derives it from the database
	// under StateDir; empty both disables it when the store is not
	// distributed. Put it on a volume that outlives the container.
	File string `yaml:"file"`
	// StateDir holds the derived checkpoint files, one per database and
	// engine, so sidecars on one host never share a file.
	StateDir string `yaml:"state_dir"`
	// Key is the store key (the store adds its key prefix).
	Key string `yaml:"key"`
	// Interval is the least time between two saves; 0 saves after every
	// poll that moved the position. Fewer saves mean more rows handed to
	// the trace exporter twice after a crash (never after a clean stop).
	Interval time.Duration `yaml:"interval"`
}

// LeaseConfig is the lease that lets one replica at a time export traces
// and write the shared checkpoint. It needs a distributed store with atomic
// add and compare-and-delete; without one every replica exports.
type LeaseConfig struct {
	Key string        `yaml:"key"`
	TTL time.Duration `yaml:"ttl"`
}

// DefaultStreamConfig returns the defaults documented in docs/stream.md.
func DefaultStreamConfig() StreamConfig {
	return StreamConfig{
		BatchSize:         5000,
		MaxBatchesPerPoll: 4,
		PollInterval:      time.Second,
		PollTimeout:       60 * time.Second,
		GapHorizon:        10 * time.Minute,
		StartGapWindow:    100_000,
		KeyClockMargin:    5 * time.Second,
		RecountInterval:   time.Hour,
		StaleAfter:        time.Minute,
		MaxLabelGroups:    100,
		Checkpoint: CheckpointConfig{
			StateDir: os.TempDir(),
			Key:      "stream:checkpoint",
		},
		Lease: LeaseConfig{Key: "stream:lease", TTL: 15 * time.Second},
	}
}

// Validate returns every problem, each prefixed with its key path relative
// to the stream section.
func (c StreamConfig) Validate() []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	if c.BatchSize < 1 || c.BatchSize > 1_000_000 {
		add("batch_size", "must be between 1 and 1000000 (got %d)", c.BatchSize)
	}
	if c.MaxBatchesPerPoll < 1 {
		add("max_batches_per_poll", "must be at least 1 (got %d)", c.MaxBatchesPerPoll)
	}
	positive := []struct {
		path string
		d    time.Duration
	}{
		{"poll_interval", c.PollInterval},
		{"poll_timeout", c.PollTimeout},
		{"gap_horizon", c.GapHorizon},
		{"stale_after", c.StaleAfter},
		{"lease.ttl", c.Lease.TTL},
	}
	for _, p := range positive {
		if p.d <= 0 {
			add(p.path, "must be a positive duration such as 5s (got %s)", p.d)
		}
	}
	if c.GapHorizon > 0 && c.PollInterval > 0 && c.GapHorizon < 2*c.PollInterval {
		add("gap_horizon", "must be at least twice poll_interval, or late rows are given up before they are re-checked (got %s)", c.GapHorizon)
	}
	if c.StaleAfter > 0 && c.PollInterval > 0 && c.StaleAfter < 2*c.PollInterval {
		add("stale_after", "must be at least twice poll_interval (got %s)", c.StaleAfter)
	}
	if c.KeyClockMargin < 0 || c.KeyClockMargin > time.Hour {
		add("key_clock_margin", "must be between 0 and 1h (got %s)", c.KeyClockMargin)
	}
	if c.StartGapWindow < 0 {
		add("start_gap_window", "must not be negative (got %d)", c.StartGapWindow)
	}
	if c.RecountInterval < 0 {
		add("recount_interval", "must not be negative (got %s)", c.RecountInterval)
	}
	if c.MaxLabelGroups < 1 {
		add("max_label_groups", "must be at least 1 (got %d)", c.MaxLabelGroups)
	}
	if c.Checkpoint.Key == "" {
		add("checkpoint.key", "required")
	}
	if c.Checkpoint.Interval < 0 {
		add("checkpoint.interval", "must not be negative (got %s)", c.Checkpoint.Interval)
	}
	if c.Lease.Key == "" {
		add("lease.key", "required")
	}
	if c.Lease.TTL > 0 && c.PollInterval > 0 && c.Lease.TTL < 3*c.PollInterval {
		add("lease.ttl", "must be at least three poll intervals, or the lease lapses between renewals (got %s)", c.Lease.TTL)
	}
	return errs
}
