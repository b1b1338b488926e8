package config

import (
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"strings"
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

func (u SecretURL) String() string { return RedactURL(string(u)) }

// LogValue keeps passwords out of slog output.
func (u SecretURL) LogValue() slog.Value { return slog.StringValue(u.String()) }

// MarshalYAML keeps passwords out of the printed configuration.
func (u SecretURL) MarshalYAML() (any, error) { return u.String(), nil }

var kvPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('[^']*'|\S+)`)

// RedactURL masks the password of a URL (user:pass@ or ?password=) or of a
// key=value connection string.
func RedactURL(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		// An unparsable URL may still hold user:password@; mask all userinfo.
		if i, j := strings.Index(raw, "://"), strings.LastIndex(raw, "@"); i >= 0 && j > i {
			return raw[:i+3] + redacted + raw[j:]
		}
		return kvPassword.ReplaceAllString(raw, "${1}"+redacted)
	}
	changed := false
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
		changed = true
	}
	q := u.Query()
	for k := range q {
		if secretParam(k) {
			q.Set(k, "xxxxx")
			changed = true
		}
	}
	if !changed {
		// Re-encoding would turn memory:// into memory: and reorder queries.
		return raw
	}
	u.RawQuery = q.Encode()
	return u.String()
}

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

// secretParam matches query parameters that carry credentials in any of the
// URL forms the sidecar accepts (password, sslpassword, sentinel_password,
// auth_token, ...).
func secretParam(name string) bool {
	n := strings.ToLower(name)
	for _, word := range []string{"pass", "secret", "token", "key"} {
		if strings.Contains(n, word) {
			return true
		}
	}
	return false
}
