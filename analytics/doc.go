// Package analytics computes workflow analytics from the Tasker database:
// performance trends, bottlenecks, per-task readiness, execution context and
// dependency graphs, and the handler catalog, with the semantics of Tasker's
// SQL functions and without their bugs. docs/analytics.md defines every
// number.
//
// Every computation runs in one read-only REPEATABLE READ transaction, so
// all of its queries see one snapshot and one NOW(), as a single Tasker
// function call does. Results are plain structs that marshal to the JSON the
// HTTP layer serves.
//
// Computations are admitted in two classes with their own connections and
// bounded queues (admission.go): expensive aggregates and cheap lookups, so
// that a lookup never waits behind an aggregate and nothing queues without
// bound. Request parameters are checked before they reach SQL (params.go).
package analytics
