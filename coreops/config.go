package coreops

import (
	"fmt"

	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/internal/secret"
)

// Config is the configuration's pgmq section.
type Config struct {
	// DatabaseURL is the database holding PGMQ when tasker-core keeps its
	// queues apart from the Tasker database (its PGMQ_DATABASE_URL). Empty:
	// PGMQ is looked for in the Tasker database. Opened read-only, with
	// database's timeouts, one connection.
	DatabaseURL secret.URL `yaml:"database_url"`
}

// Validate returns every problem, keyed relative to the section.
func (c Config) Validate() []error {
	if c.DatabaseURL == "" {
		return nil
	}
	if err := collector.CheckDatabaseURL(c.DatabaseURL.Value()); err != nil {
		return []error{fmt.Errorf("database_url: %w", err)}
	}
	return nil
}
