// Package layers holds no code: its test checks the import graph the
// architecture promises (docs/architecture.md), so that a convenient import
// cannot quietly undo a boundary.
package layers
