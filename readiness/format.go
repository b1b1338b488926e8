package readiness

import (
	"strings"
	"unicode/utf8"

	"github.com/tasker-systems/tasker-sidecar/collector"
	credentials "github.com/tasker-systems/tasker-sidecar/internal/redact"
)

// Classes of error_class beyond collector's refresh reasons (timeout,
// connection, query, schema).
const (
	ClassStale   = "stale"   // refresher alive but no success for two intervals
	ClassPending = "pending" // no refresh has finished yet
)

// ErrorClass reuses the refresher's reason enum, so that error_class in the
// JSON matches the reason label of tasker_sidecar_refresh_errors_total.
func ErrorClass(err error) string { return collector.Classify(err) }

const maxMessage = 500

// Redact removes anything that looks like a credential from an error
// message before it leaves the process, and bounds its length. Driver
// errors normally carry no password, but a DSN echoed by a wrapper would,
// and the endpoints may be public.
func Redact(msg string) string {
	msg = credentials.Text(msg)
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	if utf8.RuneCountInString(msg) > maxMessage {
		msg = string([]rune(msg)[:maxMessage]) + "…"
	}
	return msg
}

// ErrorText is err's text, redacted; "" for nil.
func ErrorText(err error) string {
	if err == nil {
		return ""
	}
	return Redact(err.Error())
}
