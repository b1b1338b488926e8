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
		"Connects to the cache store, settles every capability from the four sources (declared in config >\ncustom detectors > built-in constants > runtime probes), and prints the report with the chosen\ncoordination strategy and mechanism. Exits 1 with one line when the store is unreachable, 2 when\nthe URL or configuration is invalid. Probe keys are always removed.")
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
	rep, runErr := det.Run(ctx)
	if runErr != nil {
		fmt.Fprintf(env.stderr, "detect: %s: %v\n", st.URL(), runErr)
		return exitFailure
	}
	if *format == "text" {
		if err := rep.WriteText(env.stdout); err != nil {
			fmt.Fprintf(env.stderr, "detect: %v\n", err)
			return exitFailure
		}
		return exitOK
	}
	enc := json.NewEncoder(env.stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		fmt.Fprintf(env.stderr, "detect: %v\n", err)
		return exitFailure
	}
	return exitOK
}
