package config

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/tasker-systems/tasker-sidecar/internal/redact"
)

const redacted = "<redacted>"

// Secret is a password or token. It never prints, logs or marshals its value.
type Secret string

// Value returns the secret itself, for the code that must use it.
func (s Secret) Value() string { return string(s) }

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// LogValue keeps secrets out of slog output.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalYAML keeps secrets out of the printed configuration.
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

// SecretURL is a connection URL that may embed a password. It prints with the
// password replaced.
type SecretURL string

// Value returns the URL with its password, for the code that connects.
func (u SecretURL) Value() string { return string(u) }

// String masks the password and secret query parameters (see internal/redact).
func (u SecretURL) String() string { return redact.URL(string(u)) }

// LogValue keeps passwords out of slog output.
func (u SecretURL) LogValue() slog.Value { return slog.StringValue(u.String()) }

// MarshalYAML keeps passwords out of the printed configuration.
func (u SecretURL) MarshalYAML() (any, error) { return u.String(), nil }

// Credentials returns the bearer token and basic-auth password, reading the
// *_file variants so that a Kubernetes Secret mounted as a file can be used.
func (a AuthConfig) Credentials() (token, password string, err error) {
	token, err = fromFile(a.BearerToken, a.BearerTokenFile)
	if err != nil {
		return "", "", fmt.Errorf("server.auth.bearer_token_file: %w", err)
	}
	password, err = fromFile(a.BasicPassword, a.BasicPasswordFile)
	if err != nil {
		return "", "", fmt.Errorf("server.auth.basic_password_file: %w", err)
	}
	return token, password, nil
}

func fromFile(value Secret, file string) (string, error) {
	if file == "" {
		return value.Value(), nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(data))
	if s == "" {
		return "", fmt.Errorf("%s is empty", file)
	}
	return s, nil
}
