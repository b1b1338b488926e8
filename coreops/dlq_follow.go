package coreops

import (
	"context"
	"fmt"
	"time"
)

// dlqFollower finds tasks_dlq entries that appeared since its last read,
// for tasker_dlq_entries_created_total. Keys are UUIDv7 and dlq_timestamp is
// the inserting transaction's start, so neither orders commits
// (tasker-core-facts.md §1): an entry can commit after a later-stamped one
// was read. It therefore remembers the keys stamped within Horizon and
// counts a key it has not seen; an entry that commits more than Horizon
// after its stamp is missed (a transaction open that long inside the
// engine's DLQ write is a bug of its own). The first read only remembers,
// so that a restart does not count old entries again.
type dlqFollower struct {
	horizon time.Duration
	max     int
	seen    map[string]struct{}
	primed  bool
}

func newDLQFollower() *dlqFollower {
	return &dlqFollower{horizon: time.Hour, max: 100_000}
}

// The newest first, so that past max the oldest are the ones forgotten
// (and, being older, the least likely still to be committing).
const dlqRecentSQL = `
SELECT dlq_entry_uuid::text, dlq_reason::text
FROM tasker.tasks_dlq
WHERE dlq_timestamp > now() - make_interval(secs => $1)
ORDER BY dlq_timestamp DESC
LIMIT $2`

// read returns the entries new since the last read, by reason.
func (f *dlqFollower) read(ctx context.Context, q Querier) (map[string]int, error) {
	rows, err := q.Query(ctx, dlqRecentSQL, f.horizon.Seconds(), f.max)
	if err != nil {
		return nil, fmt.Errorf("tasks_dlq new entries: %w", err)
	}
	defer rows.Close()
	seen := make(map[string]struct{}, len(f.seen))
	var fresh map[string]int
	for rows.Next() {
		var key, reason string
		if err := rows.Scan(&key, &reason); err != nil {
			return nil, fmt.Errorf("tasks_dlq new entries: %w", err)
		}
		seen[key] = struct{}{}
		if _, ok := f.seen[key]; ok || !f.primed {
			continue
		}
		if fresh == nil {
			fresh = map[string]int{}
		}
		fresh[reason]++
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("tasks_dlq new entries: %w", err)
	}
	// Only what this read returned is kept: the rest left the horizon or
	// was deleted, and memory stays bounded by max.
	f.seen, f.primed = seen, true
	return fresh, nil
}
