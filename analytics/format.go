package analytics

import (
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/rubyjson"
)

// The analytics JSON follows Tasker's Ruby/Rails conventions, which
// internal/rubyjson owns (docs/analytics.md, "Exact decimals" and "Times").
type (
	// Decimal is a PostgreSQL numeric carried as its exact text and
	// rendered as Ruby renders the Float Tasker makes of it.
	Decimal = rubyjson.Decimal
	// Time renders as Rails renders a TimeWithZone; the zero Time is null.
	Time = rubyjson.Time
	// Float is a computed (not database) number, rendered as Ruby renders
	// a Float so that Tasker clients see the same text.
	Float = rubyjson.Float
)

// timeOf converts a nullable scan target.
func timeOf(p *time.Time) Time {
	if p == nil {
		return Time{}
	}
	return Time(*p)
}
