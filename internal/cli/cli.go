// Package cli implements the sidecar's commands. It lives apart from main so
// that every command can be tested in-process with its exit code and output.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/prometheus/common/version"

	"github.com/tasker-systems/tasker-sidecar/internal/config"
)

// Exit codes. 2 is what flag parsing and invalid configuration return, as the
// issue and most Unix tools do.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *environment, args []string) int
}

// environment is what a command needs from the outside world, injectable for tests.
type environment struct {
	stdout, stderr io.Writer
	environ        []string
	// ready, when set, is called by run with the bound HTTP address, so tests
	// can talk to a sidecar listening on :0.
	ready func(addr string)
}

func commands() []command {
	return []command{
		{"run", "run the sidecar daemon", runCmd},
		{"check-config", "validate the configuration and print it with secrets redacted", checkConfigCmd},
		{"schema", "schema apply: create the Tasker-compatible schema (for demos and tests)", schemaCmd},
		{"simulate", "write Tasker workflow activity into a database (bulk or live)", simulateCmd},
		{"demo", "create a demo database, seed it, keep it busy and run the sidecar on it", demoCmd},
		{"detect", "detect what a cache store can do and print the report", detectCmd},

		{"version", "print version and build information", versionCmd},
	}
}

// Main runs the command named by args[0] and returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, &environment{stdout: stdout, stderr: stderr, environ: os.Environ()}, args)
}

func run(ctx context.Context, env *environment, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(env.stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	if args[0] == "--version" {
		args[0] = "version"
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, env, args[1:])
		}
	}
	fmt.Fprintf(env.stderr, "sidecar: unknown command %q\n\n", args[0])
	usage(env.stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: sidecar <command> [flags]\n\ntasker-sidecar observes a Tasker workflow engine's PostgreSQL database and cache store:\nhealth endpoints, Prometheus metrics, analytics and traces.\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-13s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'sidecar <command> --help' for the flags of a command.\n")
}

// newFlagSet returns a flag set whose --help prints a usage line, the
// description and the flags, and whose errors go to stderr.
func newFlagSet(env *environment, name, synopsis, description string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.stderr, "Usage: sidecar %s\n\n%s\n\nFlags:\n", synopsis, description)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags and returns (exit code, done). done is true when the
// command must stop: --help (exit 0) or a bad flag (exit 2).
func parse(fs *flag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, true
		}
		return exitUsage, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return exitUsage, true
	}
	return 0, false
}

// loadConfig loads and validates configuration, printing every problem and
// warning. ok is false when the configuration is invalid.
func loadConfig(env *environment, fs *flag.FlagSet, f *config.Flags) (config.Config, bool) {
	cfg, warnings, err := config.Load(fs, f, env.environ)
	for _, w := range warnings {
		fmt.Fprintf(env.stderr, "warning: %s\n", w)
	}
	if err != nil {
		fmt.Fprintf(env.stderr, "%v\n", err)
		return cfg, false
	}
	return cfg, true
}

func newLogger(w io.Writer, cfg config.LogConfig) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Level))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func checkConfigCmd(_ context.Context, env *environment, args []string) int {
	fs := newFlagSet(env, "check-config", "check-config [--config FILE] [flags]",
		"Loads the configuration from defaults, --config, SIDECAR_* variables and flags, reports every\nproblem with its key path (exit 2), or prints the effective configuration with secrets redacted.\nIt runs the same pre-flight checks as run (files readable, every component's options), so a\nconfiguration it accepts gets past start-up.")
	var f config.Flags
	f.Register(fs)
	if code, done := parse(fs, args); done {
		return code
	}
	cfg, ok := loadConfig(env, fs, &f)
	// The same pre-flight as run: what is accepted here must start.
	if !ok || !preflight(env, cfg) {
		return exitUsage
	}
	fmt.Fprint(env.stdout, cfg.Dump())
	fmt.Fprintln(env.stderr, "configuration is valid")
	return exitOK
}

func versionCmd(_ context.Context, env *environment, args []string) int {
	fs := newFlagSet(env, "version", "version", "Prints the version, revision and Go version of this build.")
	if code, done := parse(fs, args); done {
		return code
	}
	fmt.Fprintln(env.stdout, version.Print("tasker-sidecar"))
	return exitOK
}
