package rubyjson

import (
	"fmt"
	"strconv"
	"time"
)

// railsLayout is ActiveSupport's JSON time format with its default three
// fraction digits (ActiveSupport::JSON::Encoding.time_precision).
const railsLayout = "2006-01-02T15:04:05.000Z"

// iso8601Layout is Ruby's Time#iso8601 with no fraction, in UTC.
const iso8601Layout = "2006-01-02T15:04:05Z"

// Time renders as Rails renders a TimeWithZone in JSON: UTC, milliseconds,
// "Z" (docs/endpoints.md, docs/analytics.md). The zero Time renders as
// null, as Rails renders nil.
type Time time.Time

// MarshalJSON renders t in UTC with milliseconds, or null when zero.
func (t Time) MarshalJSON() ([]byte, error) {
	return marshalTime(time.Time(t), railsLayout), nil
}

// UnmarshalJSON reads RFC 3339 text, or PostgreSQL's JSON rendering of a
// timestamp without time zone, which is naive UTC in Tasker's tables.
func (t *Time) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*t = Time{}
		return nil
	}
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return fmt.Errorf("time %s: %w", b, err)
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999"} {
		if v, err := time.Parse(layout, s); err == nil {
			*t = Time(v.UTC())
			return nil
		}
	}
	return fmt.Errorf("time %q: unknown format", s)
}

// Std returns t as a time.Time.
func (t Time) Std() time.Time { return time.Time(t) }

// ISO8601 renders as Ruby's Time#iso8601 in UTC: no fraction. Tasker's live
// endpoint calls .iso8601 explicitly (docs/endpoints.md). The zero ISO8601
// renders as null.
type ISO8601 time.Time

// MarshalJSON renders t in UTC to the second, or null when zero.
func (t ISO8601) MarshalJSON() ([]byte, error) {
	return marshalTime(time.Time(t), iso8601Layout), nil
}

func marshalTime(t time.Time, layout string) []byte {
	if t.IsZero() {
		return []byte("null")
	}
	return []byte(`"` + t.UTC().Format(layout) + `"`)
}
