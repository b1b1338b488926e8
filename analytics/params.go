package analytics

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits of request parameters. The widths are Tasker's column widths: a
// longer value cannot match anything.
const (
	DefaultPeriodHours = 24
	MaxPeriodHours     = 24 * 365
	maxNameLength      = 64
	maxVersionLength   = 16
	// maxSinceLength is far more than any RFC 3339 time needs.
	maxSinceLength = 64
	// maxIDLength is the digits of the largest int64 with a sign.
	maxIDLength = 20
	// idListBytesPerID bounds an id list's length: a 19-digit id, its
	// comma and a little white space.
	idListBytesPerID = 24
	// MaxEcho is how much of an offending value an error message quotes:
	// a 400 must not echo the megabyte it was sent.
	MaxEcho = 100
)

// Echo quotes raw for an error message: at most MaxEcho bytes of it, cut at
// a character boundary and marked with "…" when longer. Control characters
// and invalid bytes come out escaped.
func Echo(raw string) string {
	if len(raw) <= MaxEcho {
		return strconv.Quote(raw)
	}
	cut := MaxEcho
	for cut > MaxEcho-utf8.UTFMax && !utf8.RuneStart(raw[cut]) {
		cut--
	}
	return strconv.Quote(raw[:cut]) + "…"
}

// CheckText rejects what must never reach SQL or a cache key: invalid
// UTF-8 (PostgreSQL answers it with "invalid byte sequence", a server error
// for what is bad input), control characters, NUL among them, and more than
// limit characters.
func CheckText(param, raw string, limit int) error {
	if !utf8.ValidString(raw) {
		return &ParamError{param, "must be valid UTF-8, got " + Echo(raw)}
	}
	if strings.ContainsFunc(raw, unicode.IsControl) {
		return &ParamError{param, "must not contain control characters, got " + Echo(raw)}
	}
	if n := utf8.RuneCountInString(raw); n > limit {
		return &ParamError{param, fmt.Sprintf("must be at most %d characters, got %d", limit, n)}
	}
	return nil
}

// ParseQuery parses a raw query string strictly: a malformed escape or a
// semicolon separator is an error instead of a parameter silently dropped
// (url.URL.Query drops them).
func ParseQuery(raw string) (url.Values, error) {
	q, err := url.ParseQuery(raw)
	if err != nil {
		msg := err.Error()
		if len(msg) > 2*MaxEcho {
			msg = strings.ToValidUTF8(msg[:2*MaxEcho], "") + "…"
		}
		return nil, &ParamError{"query", msg}
	}
	return q, nil
}

// QueryValue is the one value of a query parameter, "" when absent. A
// parameter given more than once is an error: picking one would answer a
// question the client did not ask.
func QueryValue(q url.Values, name string) (string, error) {
	switch v := q[name]; len(v) {
	case 0:
		return "", nil
	case 1:
		return v[0], nil
	default:
		return "", &ParamError{name, fmt.Sprintf("given %d times", len(v))}
	}
}

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
		if err := CheckText(f.param, f.raw, f.limit); err != nil {
			return q, err
		}
		*f.into = f.raw
	}
	if strings.TrimSpace(period) != "" {
		h, err := strconv.Atoi(strings.TrimSpace(period))
		if err != nil || h < 1 || h > MaxPeriodHours {
			return q, &ParamError{"period", fmt.Sprintf("must be a whole number of hours from 1 to %d, got %s",
				MaxPeriodHours, Echo(period))}
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
	if err := CheckText("since", raw, maxSinceLength); err != nil {
		return nil, err
	}
	t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(raw))
	if err != nil {
		return nil, &ParamError{"since", "must be an RFC 3339 time such as 2025-06-18T15:30:00Z, got " + Echo(raw)}
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
	if err != nil || id < 1 || len(raw) > maxIDLength {
		return 0, &ParamError{"id", "must be a positive integer, got " + Echo(raw)}
	}
	return id, nil
}

// ParseTaskIDs validates a comma-separated id list of at most limit
// distinct ids, returned sorted and without repeats. A repeated ids
// parameter is merged by the caller joining its values with commas.
func ParseTaskIDs(raw string, limit int) ([]int64, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, &ParamError{"ids", "is required: a comma-separated list of task ids"}
	}
	if maxLen := idListBytesPerID * max(limit, 1); len(raw) > maxLen {
		return nil, &ParamError{"ids", fmt.Sprintf("must be at most %d bytes for %d task ids, got %d", maxLen, limit, len(raw))}
	}
	var ids []int64
	for part := range strings.SplitSeq(raw, ",") {
		part = strings.TrimSpace(part)
		id, err := strconv.ParseInt(part, 10, 64)
		if err != nil || id < 1 {
			return nil, &ParamError{"ids", "must be positive integers, got " + Echo(part)}
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

// HandlerParams names a handler or a namespace of the catalog routes.
type HandlerParams struct {
	Namespace string // the :namespace path segment
	Name      string // the :name path segment, empty on the namespace route
	Version   string // ?version, empty when absent
}

// ParseHandlerParams validates the handler routes' parameters, which are
// compared with Tasker's names and so are held to their widths. Values are
// kept as given (a blank version is not the absent one, as in Tasker).
func ParseHandlerParams(namespace, name, version string) (HandlerParams, error) {
	for _, f := range []struct {
		param, raw string
		limit      int
	}{
		{"namespace", namespace, maxNameLength},
		{"name", name, maxNameLength},
		{"version", version, maxVersionLength},
	} {
		if err := CheckText(f.param, f.raw, f.limit); err != nil {
			return HandlerParams{}, err
		}
	}
	return HandlerParams{Namespace: namespace, Name: name, Version: version}, nil
}

// TaskParams is the cache key part of one task on the per-task routes,
// shared by the single-task form and every batch that names the task.
func TaskParams(id int64) string { return "id=" + strconv.FormatInt(id, 10) }
