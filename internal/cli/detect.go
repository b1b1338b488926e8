package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/tasker-systems/tasker-sidecar/detector"
	"github.com/tasker-systems/tasker-sidecar/internal/config"
	"github.com/tasker-systems/tasker-sidecar/store"
)

func detectCmd(ctx context.Context, env *environment, args []string) int {
	fs := newFlagSet(env, "detect", "detect --cache-url URL [--config FILE] [--format json|text]",
		"Connects to the cache store, settles every capability from the four sources (declared in config >\ncustom detectors > built-in constants > runtime probes), and prints the report with the chosen\ncoordination strategy and mechanism. When the store is unreachable it still prints the report\n(local_only, every capability with its provenance), writes one error line to stderr and exits 1;\nit exits 2 with one line when the URL or configuration is invalid. Probe keys are always removed.")
	var f config.Flags
	f.Register(fs)
	format := fs.String("format", "json", "json or text")
	if code, done := parse(fs, args); done {
		return code
	}
	if *format != "json" && *format != "text" {
		fmt.Fprintf(env.stderr, "detect: --format must be json or text (got %q)\n", *format)
		return exitUsage
	}
	cfg, _, err := config.Load(fs, &f, env.environ)
	var cerr *config.Error
	if errors.As(err, &cerr) {
		// detect needs no database, so only the other problems count, and
		// they go on one line.
		var problems []string
		for _, p := range cerr.Problems {
			if !strings.HasPrefix(p.Error(), "database.") {
				problems = append(problems, p.Error())
			}
		}
		if len(problems) > 0 {
			fmt.Fprintf(env.stderr, "detect: %s\n", strings.Join(problems, "; "))
			return exitUsage
		}
	}
	// Probe failures are in the report; log lines would only blur the one-line error.
	logger := slog.New(slog.NewTextHandler(env.stderr, &slog.HandlerOptions{Level: slog.LevelError + 1}))
	store.RouteDriverLogs(logger)
	st, err := openStore(cfg.Cache)
	if err != nil {
		fmt.Fprintf(env.stderr, "detect: %v\n", err)
		return exitUsage
	}
	defer st.Close()
	det, err := detector.New(st, cfg.Cache.Detection, nil, logger)
	if err != nil {
		fmt.Fprintf(env.stderr, "detect: %v\n", err)
		return exitUsage
	}
	// An unreachable store still has a complete report (local_only, every
	// capability with its provenance): print it, then the error.
	rep, runErr := det.Run(ctx)
	if err := writeReport(env, rep, *format); err != nil {
		fmt.Fprintf(env.stderr, "detect: %v\n", err)
		return exitFailure
	}
	if runErr != nil {
		fmt.Fprintf(env.stderr, "detect: %s: %v\n", st.URL(), runErr)
		return exitFailure
	}
	return exitOK
}

func writeReport(env *environment, rep detector.Report, format string) error {
	if format == "text" {
		return rep.WriteText(env.stdout)
	}
	enc := json.NewEncoder(env.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}
