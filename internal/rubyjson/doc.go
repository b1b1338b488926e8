// Package rubyjson renders values the way Tasker (a Rails engine) renders
// them in JSON, so that clients written against Tasker parse the sidecar's
// answers unchanged: times as ActiveSupport::TimeWithZone#as_json does,
// floats as Ruby's Float#to_s does, rounding as Float#round does.
//
// It is the one place for these conventions; exporters and analytics use
// its types (docs/endpoints.md and docs/analytics.md describe the endpoints).
package rubyjson
