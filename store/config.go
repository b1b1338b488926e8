package store

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/hostport"
	"github.com/tasker-systems/tasker-sidecar/internal/secret"
)

// Config is a cache store's configuration: the cache: section's connection
// keys. Zero durations take DefaultConfig's.
type Config struct {
	// URL is the store's URL (see Open); it may carry a password.
	URL secret.URL `yaml:"url"`
	// DialTimeout bounds connecting.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// ReadTimeout and WriteTimeout bound each socket read and write.
	// Memcached's client has a single I/O timeout, the larger of the two.
	ReadTimeout  time.Duration `yaml:"read_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// KeyPrefix is prepended to every key, giving the sidecar its own
	// namespace in a shared store (the Tasker engine's keys stay apart).
	KeyPrefix string `yaml:"key_prefix"`

	// Username and Password, when set, replace the credentials in the URL,
	// so the secret can come from a file or the environment instead.
	Username string        `yaml:"-"`
	Password secret.String `yaml:"-"`
	// PoolSize is the connection pool size per server (0 = driver default).
	PoolSize int `yaml:"-"`
}

// DefaultConfig is an in-process store with the configuration's defaults.
func DefaultConfig() Config {
	return Config{
		URL:          "memory://",
		DialTimeout:  2 * time.Second,
		ReadTimeout:  time.Second,
		WriteTimeout: time.Second,
		KeyPrefix:    "tasker_sidecar:",
	}
}

// Validate reports every problem, each starting with its key relative to
// the section ("url: ...", "key_prefix: ..."). It accepts exactly what
// Open accepts, so validation and opening cannot disagree.
func (c Config) Validate() []error {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	raw := c.URL.Value()
	if err := checkURLForConfig(raw); err != nil {
		add("url", "%v", err)
	} else if err := hostport.Check(urlHosts(raw)); err != nil {
		add("url", "%v", err)
	} else if err := CheckKeyPrefix(raw, c.KeyPrefix); err != nil {
		add("key_prefix", "%v", err)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"dial_timeout", c.DialTimeout}, {"read_timeout", c.ReadTimeout}, {"write_timeout", c.WriteTimeout}} {
		if d.v <= 0 {
			add(d.key, "must be a positive duration such as 5s (got %s)", d.v)
		}
	}
	return errs
}

// withDefaults fills zero durations from DefaultConfig.
func (c Config) withDefaults() (Config, error) {
	if c.DialTimeout < 0 || c.ReadTimeout < 0 || c.WriteTimeout < 0 {
		return c, errors.New("timeouts must not be negative")
	}
	if c.PoolSize < 0 {
		return c, errors.New("pool size must not be negative")
	}
	def := DefaultConfig()
	c.DialTimeout = orDefault(c.DialTimeout, def.DialTimeout)
	c.ReadTimeout = orDefault(c.ReadTimeout, def.ReadTimeout)
	c.WriteTimeout = orDefault(c.WriteTimeout, def.WriteTimeout)
	return c, nil
}

// checkURLForConfig is CheckURL with the message a configuration key
// wants: the store's message starts with the redacted URL, and the key
// path already says which setting it is.
func checkURLForConfig(raw string) error {
	if raw == "" {
		return errors.New("required (use memory:// for an in-process cache)")
	}
	if err := CheckURL(raw); err != nil {
		msg := err.Error()
		if _, rest, ok := strings.Cut(msg, ": "); ok && strings.Contains(msg, "://") {
			msg = rest
		}
		return errors.New(msg)
	}
	return nil
}

// urlHosts lists the host[:port] entries of a cache URL that CheckURL
// accepted.
func urlHosts(raw string) []string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil
	}
	switch strings.ToLower(scheme) {
	case "memory", "none":
		return nil
	case "memcached", "memcache":
		authority, _, _ := strings.Cut(rest, "/")
		if at := strings.LastIndex(authority, "@"); at >= 0 {
			authority = authority[at+1:]
		}
		return strings.Split(authority, ",")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil
	}
	return append(strings.Split(u.Host, ","), u.Query()["addr"]...)
}
