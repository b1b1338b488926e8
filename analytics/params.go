package analytics

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits of request parameters. The widths are Tasker's column widths: a
// longer value cannot match anything.
const (
	DefaultPeriodHours = 24
	MaxPeriodHours     = 24 * 365
	maxNameLength      = 64
	maxVersionLength   = 16
)

// ParseBottleneckQuery validates the bottleneck parameters. A blank value
// (empty or white space) is absent, as Rails' presence treats it; period
// defaults to 24 hours and must be a whole number of hours from 1 to
// MaxPeriodHours (Tasker turns anything else into 0 or garbage).
func ParseBottleneckQuery(namespace, name, version, period string) (BottleneckQuery, error) {
	q := BottleneckQuery{PeriodHours: DefaultPeriodHours}
	for _, f := range []struct {
		param string
		raw   string
		into  *string
		limit int
	}{
		{"namespace", namespace, &q.Scope.Namespace, maxNameLength},
		{"name", name, &q.Scope.Name, maxNameLength},
		{"version", version, &q.Scope.Version, maxVersionLength},
	} {
		if strings.TrimSpace(f.raw) == "" {
			continue
		}
		if !utf8.ValidString(f.raw) {
			return q, &ParamError{f.param, "must be valid UTF-8"}
		}
		if n := utf8.RuneCountInString(f.raw); n > f.limit {
			return q, &ParamError{f.param, fmt.Sprintf("must be at most %d characters, got %d", f.limit, n)}
		}
		*f.into = f.raw
	}
	if strings.TrimSpace(period) != "" {
		h, err := strconv.Atoi(strings.TrimSpace(period))
		if err != nil || h < 1 || h > MaxPeriodHours {
			return q, &ParamError{"period", fmt.Sprintf("must be a whole number of hours from 1 to %d, got %q",
				MaxPeriodHours, period)}
		}
		q.PeriodHours = h
	}
	return q, nil
}

// ParseSince validates the performance endpoint's since: an RFC 3339 time
// in the past, at most MaxPeriodHours ago. Empty means none.
func ParseSince(raw string, now time.Time) (*time.Time, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(raw))
	if err != nil {
		return nil, &ParamError{"since", fmt.Sprintf("must be an RFC 3339 time such as 2025-06-18T15:30:00Z, got %q", raw)}
	}
	switch {
	case t.After(now):
		return nil, &ParamError{"since", "must not be in the future"}
	case now.Sub(t) > MaxPeriodHours*time.Hour:
		return nil, &ParamError{"since", fmt.Sprintf("must be within the last %d hours", MaxPeriodHours)}
	}
	// PostgreSQL keeps microseconds; the cache key must not tell apart what
	// the query cannot.
	t = t.UTC().Truncate(time.Microsecond)
	return &t, nil
}

// ParseTaskID validates a task id path segment.
func ParseTaskID(raw string) (int64, error) {
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || id < 1 {
		return 0, &ParamError{"id", fmt.Sprintf("must be a positive integer, got %q", raw)}
	}
	return id, nil
}

// ParseTaskIDs validates a comma-separated id list of at most limit
// distinct ids, returned sorted so that equal requests share a cache entry.
func ParseTaskIDs(raw string, limit int) ([]int64, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, &ParamError{"ids", "is required: a comma-separated list of task ids"}
	}
	var ids []int64
	for part := range strings.SplitSeq(raw, ",") {
		id, err := ParseTaskID(strings.TrimSpace(part))
		if err != nil {
			return nil, &ParamError{"ids", fmt.Sprintf("must be positive integers, got %q", strings.TrimSpace(part))}
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if len(ids) > limit {
		return nil, &ParamError{"ids", fmt.Sprintf("at most %d task ids per request, got %d", limit, len(ids))}
	}
	return ids, nil
}

// IDParams is the cache key part of an id list.
func IDParams(ids []int64) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.FormatInt(id, 10)
	}
	return "ids=" + strings.Join(parts, ",")
}
