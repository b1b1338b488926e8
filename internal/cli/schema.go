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

const schemaUsage = "schema apply [--engine rails|core] [--database-url URL] [--create-database]"

// schemaFor returns the schema that --engine names and the label printed
// for it; ok is false for an unknown engine.
func schemaFor(engine string) (label string, apply func(context.Context, *pgx.Conn) error, ok bool) {
	switch engine {
	case "rails":
		return "Tasker", schema.Apply, true
	case "core":
		return "tasker-core", schema.ApplyCore, true
	}
	return "", nil, false
}

func schemaCmd(ctx context.Context, env *environment, args []string) int {
	if len(args) == 0 || args[0] != "apply" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprintln(env.stderr, "Usage: sidecar "+schemaUsage)
			return exitOK
		}
		fmt.Fprintln(env.stderr, "Usage: sidecar "+schemaUsage+"\n\nThe only schema subcommand is apply.")
		return exitUsage
	}
	fs := newFlagSet(env, "schema apply", schemaUsage,
		"Creates a Tasker-compatible schema (written by tasker-sidecar from the engine's schema, for demos\n"+
			"and tests) in the database. --engine rails: the Rails engine's tasker_* tables, indexes and view\n"+
			"in public. --engine core: tasker-core's schema 'tasker' (tables, constraints, indexes; on\n"+
			"PostgreSQL older than 18 also a UUIDv7 function, public.uuidv7()). Safe to run again. This is the\n"+
			"only command that writes to a database besides simulate and demo; 'run' never writes.")
	engineName := fs.String("engine", "rails", "which engine's schema: rails or core")
	dbURL := fs.String("database-url", envOr(env, "SIDECAR_DATABASE_URL", ""), "PostgreSQL URL (env SIDECAR_DATABASE_URL)")
	create := fs.Bool("create-database", false, "create the database first if it does not exist")
	if code, done := parse(fs, args[1:]); done {
		return code
	}
	label, apply, ok := schemaFor(*engineName)
	if !ok {
		fmt.Fprintf(env.stderr, "schema apply: --engine %q: must be rails or core\n", *engineName)
		return exitUsage
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
	if err := applyEngineSchema(ctx, *dbURL, apply); err != nil {
		fmt.Fprintf(env.stderr, "schema apply: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(env.stdout, "%s schema applied to %s\n", label, redact.URL(*dbURL))
	return exitOK
}

func applyEngineSchema(ctx context.Context, dbURL string, apply func(context.Context, *pgx.Conn) error) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", redact.URL(dbURL), redactErr(err, dbURL))
	}
	defer conn.Close(context.Background())
	// Quiet the "already exists, skipping" notices of a re-run.
	if _, err := conn.Exec(ctx, "SET client_min_messages = warning"); err != nil {
		return err
	}
	return apply(ctx, conn)
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
