package config

import "github.com/tasker-systems/tasker-sidecar/internal/secret"

// Secret and SecretURL are internal/secret's types under the names this
// package's callers already use.
type (
	Secret    = secret.String
	SecretURL = secret.URL
)
