package collector

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestStreamConfigValidate(t *testing.T) {
	t.Parallel()
	if errs := DefaultStreamConfig().Validate(); len(errs) != 0 {
		t.Fatalf("defaults invalid: %v", errs)
	}
	c := DefaultStreamConfig()
	c.BatchSize = 0
	c.MaxBatchesPerPoll = 0
	c.PollInterval = 0
	c.GapHorizon = -time.Second
	c.StartGapWindow = -1
	c.RecountInterval = -time.Second
	c.MaxLabelGroups = 0
	c.Checkpoint.Key = ""
	c.Checkpoint.Interval = -1
	c.Lease.Key = ""
	c.Lease.TTL = 0
	var got []string
	for _, err := range c.Validate() {
		got = append(got, err.Error())
	}
	for _, key := range []string{"batch_size", "max_batches_per_poll", "poll_interval", "gap_horizon",
		"start_gap_window", "recount_interval", "max_label_groups", "checkpoint.key", "checkpoint.interval",
		"lease.key", "lease.ttl"} {
		if !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, key+": ") }) {
			t.Errorf("no error for %s in %v", key, got)
		}
	}

	// Relations between keys.
	c = DefaultStreamConfig()
	c.PollInterval = 10 * time.Second
	c.GapHorizon = 15 * time.Second
	c.StaleAfter = 15 * time.Second
	c.Lease.TTL = 20 * time.Second
	got = got[:0]
	for _, err := range c.Validate() {
		got = append(got, err.Error())
	}
	for _, key := range []string{"gap_horizon", "stale_after", "lease.ttl"} {
		if !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, key+": ") }) {
			t.Errorf("no error for %s relative to poll_interval in %v", key, got)
		}
	}
}
