package exporters

import (
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tasker-systems/tasker-sidecar/collector"
	credentials "github.com/tasker-systems/tasker-sidecar/internal/redact"
)

// railsTime renders like Rails renders a TimeWithZone in JSON, so clients
// written against Tasker parse our timestamps unchanged.
type railsTime time.Time

func (t railsTime) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Time(t).UTC().Format("2006-01-02T15:04:05.000Z") + `"`), nil
}

// liveTime matches Tasker's live endpoint, which calls .iso8601 explicitly and
// so has no fraction.
type liveTime time.Time

func (t liveTime) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Time(t).UTC().Format("2006-01-02T15:04:05Z") + `"`), nil
}

// jsonFloat always carries a decimal point: Ruby clients (and Tasker's specs)
// tell 5 from 5.0 when parsing, and Tasker sends floats for these fields.
type jsonFloat float64

func (f jsonFloat) MarshalJSON() ([]byte, error) {
	v := float64(f)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return []byte("null"), nil
	}
	b := strconv.AppendFloat(nil, v, 'f', -1, 64)
	if !strings.ContainsRune(string(b), '.') {
		b = append(b, ".0"...)
	}
	return b, nil
}

// round rounds half away from zero, as Ruby's Float#round does.
func round(x float64, places int) float64 {
	p := math.Pow(10, float64(places))
	return math.Round(x*p) / p
}

func seconds(d time.Duration) jsonFloat { return jsonFloat(round(d.Seconds(), 6)) }

// rubySeconds formats a duration the way Ruby prints a Float, because
// Tasker's timeout message interpolates one ("after 5.0 seconds").
func rubySeconds(d time.Duration) string {
	b, _ := jsonFloat(d.Seconds()).MarshalJSON()
	return string(b)
}

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
