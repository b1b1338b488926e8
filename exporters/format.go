package exporters

import (
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tasker-systems/tasker-sidecar/collector"
	credentials "github.com/tasker-systems/tasker-sidecar/internal/redact"
	"github.com/tasker-systems/tasker-sidecar/internal/rubyjson"
)

// Tasker's JSON conventions live in internal/rubyjson; these names keep
// the handlers short.
type (
	// railsTime renders as Rails renders a TimeWithZone: UTC, milliseconds.
	railsTime = rubyjson.Time
	// liveTime matches Tasker's live endpoint, which calls .iso8601
	// explicitly and so has no fraction.
	liveTime = rubyjson.ISO8601
	// jsonFloat always carries a decimal point: Ruby clients (and Tasker's
	// specs) tell 5 from 5.0 when parsing, and Tasker sends floats for
	// these fields.
	jsonFloat = rubyjson.PlainFloat
)

// round rounds half away from zero, as Ruby's Float#round does.
func round(x float64, places int) float64 { return rubyjson.Round(x, places) }

func seconds(d time.Duration) jsonFloat { return rubyjson.Seconds(d) }

// rubySeconds formats a duration the way Ruby prints a Float, because
// Tasker's timeout message interpolates one ("after 5.0 seconds").
func rubySeconds(d time.Duration) string { return rubyjson.Float(d.Seconds()).String() }

// Classes of error_class beyond collector's refresh reasons (timeout,
// connection, query, schema).
const (
	ClassStale   = "stale"   // refresher alive but no success for two intervals
	ClassPending = "pending" // no refresh has finished yet
)

// errorClass reuses the refresher's reason enum, so that error_class in the
// JSON matches the reason label of tasker_sidecar_refresh_errors_total.
func errorClass(err error) string { return collector.Classify(err) }

const maxMessage = 500

// redact removes anything that looks like a credential from an error message
// before it leaves the process, and bounds its length. Driver errors normally
// carry no password, but a DSN echoed by a wrapper would, and the endpoints
// may be public.
func redact(msg string) string {
	msg = credentials.Text(msg)
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	if utf8.RuneCountInString(msg) > maxMessage {
		msg = string([]rune(msg)[:maxMessage]) + "…"
	}
	return msg
}

func errorText(err error) string {
	if err == nil {
		return ""
	}
	return redact(err.Error())
}
