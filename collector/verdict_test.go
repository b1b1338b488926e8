package collector

import "testing"

func TestVerdict(t *testing.T) {
	tests := []struct {
		name     string
		counts   HealthCounts
		healthy  bool
		wantUtil float64
	}{
		{"empty database", HealthCounts{ActiveConnections: 1, MaxConnections: 100}, true, 1.0},
		{"5 of 100 connections", HealthCounts{ActiveConnections: 5, MaxConnections: 100}, true, 5.0},
		{"3 of 50 connections", HealthCounts{ActiveConnections: 3, MaxConnections: 50}, true, 6.0},
		{"exactly 90% connections", HealthCounts{ActiveConnections: 90, MaxConnections: 100}, true, 90.0},
		{"90.01% connections", HealthCounts{ActiveConnections: 9001, MaxConnections: 10000}, false, 90.01},
		{"max connections 0", HealthCounts{ActiveConnections: 500}, true, 0.0},
		{"2 of 3 connections rounds", HealthCounts{ActiveConnections: 2, MaxConnections: 3}, true, 66.67},
		{"50% error tasks", HealthCounts{TotalTasks: 2, ErrorTasks: 1}, true, 0},
		{"over 50% error tasks", HealthCounts{TotalTasks: 10000, ErrorTasks: 5001}, false, 0},
		{"50% error steps", HealthCounts{TotalSteps: 100, ErrorSteps: 50}, true, 0},
		{"over 50% error steps", HealthCounts{TotalSteps: 100, ErrorSteps: 51}, false, 0},
		{"errors but no totals", HealthCounts{ErrorTasks: 3, ErrorSteps: 3}, true, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			healthy, util := Verdict(tc.counts)
			if healthy != tc.healthy || util != tc.wantUtil {
				t.Errorf("Verdict = %v, %v; want %v, %v", healthy, util, tc.healthy, tc.wantUtil)
			}
		})
	}
}
