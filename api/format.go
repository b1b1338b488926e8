package api

import (
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/rubyjson"
	"github.com/tasker-systems/tasker-sidecar/readiness"
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

// The readiness checks and the routes redact and classify errors alike.
func errorClass(err error) string { return readiness.ErrorClass(err) }
func redact(msg string) string    { return readiness.Redact(msg) }
func errorText(err error) string  { return readiness.ErrorText(err) }
