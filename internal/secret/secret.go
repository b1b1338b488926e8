// Package secret holds the types of configuration values that must never
// print: passwords, tokens, and URLs that may embed a password. Component
// configurations use them without importing internal/config.
package secret

import (
	"log/slog"
	"strconv"

	"github.com/tasker-systems/tasker-sidecar/internal/redact"
)

// Redacted is what a secret prints as.
const Redacted = "<redacted>"

// String is a password or token. It never prints, logs or marshals its value.
type String string

// Value returns the secret itself, for the code that must use it.
func (s String) Value() string { return string(s) }

func (s String) String() string {
	if s == "" {
		return ""
	}
	return Redacted
}

// GoString covers %#v, which does not use String.
func (s String) GoString() string { return strconv.Quote(s.String()) }

// LogValue keeps secrets out of slog output.
func (s String) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalYAML keeps secrets out of the printed configuration.
func (s String) MarshalYAML() (any, error) { return s.String(), nil }

// MarshalText keeps secrets out of JSON (encoding/json uses it for a string
// type) and of any other text encoding.
func (s String) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// URL is a connection URL that may embed a password. It prints with the
// password replaced.
type URL string

// Value returns the URL with its password, for the code that connects.
func (u URL) Value() string { return string(u) }

// String masks the password and secret query parameters (see internal/redact).
func (u URL) String() string { return redact.URL(string(u)) }

// GoString covers %#v, which does not use String.
func (u URL) GoString() string { return strconv.Quote(u.String()) }

// LogValue keeps passwords out of slog output.
func (u URL) LogValue() slog.Value { return slog.StringValue(u.String()) }

// MarshalYAML keeps passwords out of the printed configuration.
func (u URL) MarshalYAML() (any, error) { return u.String(), nil }

// MarshalText keeps passwords out of JSON and any other text encoding.
func (u URL) MarshalText() ([]byte, error) { return []byte(u.String()), nil }
