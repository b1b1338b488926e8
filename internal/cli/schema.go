package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tasker-systems/tasker-sidecar/internal/redact"
	"github.com/tasker-systems/tasker-sidecar/internal/schema"
)

func schemaCmd(ctx context.Context, env *environment, args []string) int {
	if len(args) == 0 || args[0] != "apply" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprintln(env.stderr, "Usage: sidecar schema apply [--database-url URL] [--create-database]")
			return exitOK
		}
		fmt.Fprintln(env.stderr, "Usage: sidecar schema apply [--database-url URL] [--create-database]\n\nThe only schema subcommand is apply.")
		return exitUsage
	}
	fs := newFlagSet(env, "schema apply", "schema apply [--database-url URL] [--create-database]",
		"Creates the Tasker-compatible tables, indexes and view (written by tasker-sidecar from Tasker's\nschema, for demos and tests) in the database. Safe to run again. This is the only command that\nwrites to a database besides simulate and demo; 'run' never writes.")
	dbURL := fs.String("database-url", envOr(env, "SIDECAR_DATABASE_URL", ""), "PostgreSQL URL (env SIDECAR_DATABASE_URL)")
	create := fs.Bool("create-database", false, "create the database first if it does not exist")
	if code, done := parse(fs, args[1:]); done {
		return code
	}
	if *dbURL == "" {
		fmt.Fprintln(env.stderr, "schema apply: --database-url or SIDECAR_DATABASE_URL is required")
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if *create {
		if err := ensureDatabase(ctx, *dbURL); err != nil {
			fmt.Fprintf(env.stderr, "schema apply: %v\n", err)
			return exitFailure
		}
	}
	if err := applySchema(ctx, *dbURL); err != nil {
		fmt.Fprintf(env.stderr, "schema apply: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(env.stdout, "Tasker schema applied to %s\n", redact.URL(*dbURL))
	return exitOK
}

func applySchema(ctx context.Context, dbURL string) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", redact.URL(dbURL), redactErr(err, dbURL))
	}
	defer conn.Close(context.Background())
	// Quiet the "already exists, skipping" notices of a re-run.
	if _, err := conn.Exec(ctx, "SET client_min_messages = warning"); err != nil {
		return err
	}
	return schema.Apply(ctx, conn)
}

// ensureDatabase creates the URL's database through the server's maintenance
// database when it does not exist yet.
func ensureDatabase(ctx context.Context, dbURL string) error {
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		return fmt.Errorf("invalid database URL %s", redact.URL(dbURL))
	}
	name := cfg.Database
	cfg.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to the postgres maintenance database: %w", redactErr(err, dbURL))
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database
		return nil
	}
	if err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// redactErr keeps a password that pgx quotes in a connection error out of
// output: the URL's own and the one pgx found elsewhere (PGPASSWORD, a
// passfile).
func redactErr(err error, dbURL string) error {
	if err == nil {
		return nil
	}
	secrets := redact.Secrets(dbURL)
	if cfg, perr := pgx.ParseConfig(dbURL); perr == nil && cfg.Password != "" {
		secrets = append(secrets, cfg.Password)
	}
	if msg := redact.Scrub(err.Error(), secrets...); msg != err.Error() {
		return errors.New(msg)
	}
	return err
}

func envOr(env *environment, name, fallback string) string {
	for _, kv := range env.environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return fallback
}
