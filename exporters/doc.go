// Package exporters holds the sidecar's Prometheus collectors built from
// snapshots at scrape time: the domain collector (the health counts by
// namespace, task and state) and the readiness collector (what
// /tasker/health/ready would answer now). The HTTP API that serves them is
// package api.
package exporters
