package collector

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/hostport"
	"github.com/tasker-systems/tasker-sidecar/internal/secret"
)

// DBConfig is the read-only connection to Tasker's database, the
// configuration's database section.
type DBConfig struct {
	// URL is a postgres:// URL or a key=value connection string.
	URL secret.URL `yaml:"url"`
	// MaxConns caps the pool. The URL's pool_max_conns is ignored so that
	// the sidecar's footprint on Tasker's connection budget is always this
	// explicit number.
	MaxConns int32 `yaml:"max_conns"`
	// ConnectTimeout bounds dialling plus the startup handshake.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// StatementTimeout is the server-side ceiling for any single query, so
	// a refresh cannot keep a snapshot open on Tasker's database
	// indefinitely. The stream's full recount on 1M tasks runs about 5 s per
	// statement on an idle database (docs/benchmarks.md).
	StatementTimeout time.Duration `yaml:"statement_timeout"`
	// ApplicationName is how a DBA finds the sidecar in pg_stat_activity.
	ApplicationName string `yaml:"application_name"`
	// Engine is which Tasker engine's schema to read: auto (detect it when
	// the sidecar attaches), rails or core (insist on one).
	Engine engine.Kind `yaml:"engine"`

	// lockTimeout is how long a query may wait for a table lock; zero means
	// defaultLockTimeout. Tests shorten it.
	lockTimeout time.Duration
}

// defaultLockTimeout: our reads only need ACCESS SHARE, which only waits
// behind DDL; giving up quickly keeps the sidecar from queueing in front of
// Tasker's own queries during a migration.
const defaultLockTimeout = 2 * time.Second

// DefaultDBConfig is the database section's defaults. Open fills a zero
// field from the URL's own parameter when it has one (connect_timeout,
// statement_timeout, application_name), else from here.
func DefaultDBConfig() DBConfig {
	return DBConfig{
		// One connection each for the expensive analytics and the per-task
		// lookups, and one for health (counts, stream, pings).
		MaxConns:         3,
		ConnectTimeout:   5 * time.Second,
		StatementTimeout: 30 * time.Second,
		ApplicationName:  "tasker-sidecar",
		Engine:           engine.KindAuto,
	}
}

// Validate returns every problem, each starting with its key relative to
// the section.
func (c DBConfig) Validate() []error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("url: required: set --database-url, SIDECAR_DATABASE_URL or database.url"))
	} else if err := checkDatabaseURL(c.URL.Value()); err != nil {
		errs = append(errs, fmt.Errorf("url: %w", err))
	}
	if c.MaxConns < 1 || c.MaxConns > 20 {
		errs = append(errs, fmt.Errorf("max_conns: must be between 1 and 20 (got %d); the sidecar must stay cheap for the database", c.MaxConns))
	}
	for _, f := range []struct {
		key string
		d   time.Duration
	}{{"connect_timeout", c.ConnectTimeout}, {"statement_timeout", c.StatementTimeout}} {
		if f.d <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be a positive duration such as 5s (got %s)", f.key, f.d))
		}
	}
	if _, err := engine.ParseKind(string(c.Engine)); err != nil {
		errs = append(errs, fmt.Errorf("engine: %w", err))
	}
	if c.ApplicationName == "" {
		errs = append(errs, errors.New("application_name: must not be empty; it is how a DBA finds the sidecar in pg_stat_activity"))
	}
	return errs
}

// checkDatabaseURL accepts what Open accepts (pgx's parser, ports
// included), with clearer messages for the common mistakes. Its messages
// never contain the URL, which may carry a password.
func checkDatabaseURL(raw string) error {
	if strings.Contains(raw, "://") {
		u, err := url.Parse(raw)
		if err != nil {
			return fmt.Errorf("not a valid URL: %s", urlErrorReason(err))
		}
		if u.Scheme != "postgres" && u.Scheme != "postgresql" {
			return fmt.Errorf("scheme must be postgres or postgresql (got %q)", u.Scheme)
		}
		// pgx takes a comma-separated list of hosts.
		if err := hostport.Check(strings.Split(u.Host, ",")); err != nil {
			return err
		}
	} else if !strings.Contains(raw, "=") {
		// pgx also accepts the key=value form (host=… dbname=…).
		return errors.New("must be a postgres:// URL or a key=value connection string")
	}
	if _, err := poolConfig(DBConfig{URL: secret.URL(raw)}); err != nil {
		// parseError's message starts with the redacted URL; the key path
		// already says which setting it is.
		msg := err.Error()
		if i := strings.Index(msg, ": "); i >= 0 && strings.HasPrefix(msg, "invalid database URL ") {
			msg = msg[i+2:]
		}
		return errors.New(msg)
	}
	return nil
}

// urlErrorReason drops the URL that net/url quotes in its errors, because it
// may carry a password.
func urlErrorReason(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return "malformed"
}
