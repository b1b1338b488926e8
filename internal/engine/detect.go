package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Querier runs one query returning one row. *pgxpool.Pool, *pgx.Conn and
// pgx.Tx satisfy it.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// ErrNoTables and ErrBothEngines are the detection failures that no
// setting but database.engine fixes; errors.Is finds them in Detect's
// errors, whose text names what was found.
var (
	ErrNoTables    = errors.New("no Tasker tables")
	ErrBothEngines = errors.New("both the Rails engine's tables and tasker-core's")
)

// MissingTablesError says which of an engine's tables a database lacks.
type MissingTablesError struct {
	Engine  Engine
	Missing []string // in Tables.List order
	// Other is set when the other engine's tables are all there, the
	// likely mistake when database.engine insists on the wrong one.
	Other *Engine
}

func (e *MissingTablesError) Error() string {
	msg := fmt.Sprintf("%s's tables are incomplete: missing %s", e.Engine.Name, strings.Join(e.Missing, ", "))
	if e.Other != nil {
		msg += fmt.Sprintf("; %s's tables are all there: set database.engine to %s or %s",
			e.Other.Name, e.Other.Kind, KindAuto)
	}
	return msg
}

// foundSQL returns which of the two lists' tables exist, and the schemas
// bare names resolve through. to_regclass resolves a bare name through
// search_path exactly as the sidecar's unqualified queries do (as
// collector/db.go's schema check does), and returns NULL instead of
// raising for an unknown name. It reads only the catalogs.
const foundSQL = `
SELECT array(SELECT name FROM unnest($1::text[]) WITH ORDINALITY AS r(name, ord)
             WHERE to_regclass(name) IS NOT NULL ORDER BY ord),
       array(SELECT name FROM unnest($2::text[]) WITH ORDINALITY AS r(name, ord)
             WHERE to_regclass(name) IS NOT NULL ORDER BY ord),
       current_schemas(false)::text[]`

// found is what one look at the catalogs saw.
type found struct {
	rails, core []string // the tables of each engine that exist
	searchPath  []string // schemas on the search_path that exist
}

func look(ctx context.Context, q Querier) (found, error) {
	var f found
	err := q.QueryRow(ctx, foundSQL, Rails().Tables.List(), Core().Tables.List()).
		Scan(&f.rails, &f.core, &f.searchPath)
	if err != nil {
		return found{}, fmt.Errorf("look for Tasker tables: %w", err)
	}
	return f, nil
}

// missing returns e's tables that were not found, or nil.
func (f found) missing(e Engine) []string {
	have := f.rails
	if e.Kind == KindCore {
		have = f.core
	}
	var out []string
	for _, t := range e.Tables.List() {
		if !slices.Contains(have, t) {
			out = append(out, t)
		}
	}
	return out
}

// Detect finds which engine's tables the database has, with one read-only
// query. It fails when it finds neither, both (even in part), or only
// some of one engine's tables (a *MissingTablesError naming them).
func Detect(ctx context.Context, q Querier) (Kind, error) {
	f, err := look(ctx, q)
	if err != nil {
		return "", err
	}
	rails, core := Rails(), Core()
	switch {
	case len(f.rails) == 0 && len(f.core) == 0:
		path := strings.Join(f.searchPath, ", ")
		if path == "" {
			path = "none"
		}
		return "", fmt.Errorf("%w: found neither %s (%s; search_path schemas: %s) nor %s (%s)",
			ErrNoTables, rails.Tables.Tasks, rails.Name, path, core.Tables.Tasks, core.Name)
	case len(f.rails) > 0 && len(f.core) > 0:
		return "", fmt.Errorf("found %w (%s: %s; %s: %s): set database.engine to %s or %s",
			ErrBothEngines, rails.Name, strings.Join(f.rails, ", "), core.Name, strings.Join(f.core, ", "),
			KindRails, KindCore)
	}
	e := rails
	if len(f.core) > 0 {
		e = core
	}
	if m := f.missing(e); m != nil {
		return "", &MissingTablesError{Engine: e, Missing: m}
	}
	return e.Kind, nil
}

// Resolve returns the engine a database.engine setting means for the
// database: KindAuto detects it (Detect); KindRails and KindCore check
// that all of that engine's tables exist, and the error names those that
// do not.
func Resolve(ctx context.Context, q Querier, configured Kind) (Engine, error) {
	if configured == KindAuto {
		k, err := Detect(ctx, q)
		if err != nil {
			return Engine{}, err
		}
		return For(k)
	}
	e, err := For(configured)
	if err != nil {
		return Engine{}, err
	}
	f, err := look(ctx, q)
	if err != nil {
		return Engine{}, err
	}
	m := f.missing(e)
	if m == nil {
		return e, nil
	}
	miss := &MissingTablesError{Engine: e, Missing: m}
	other := Rails()
	if e.Kind == KindRails {
		other = Core()
	}
	if f.missing(other) == nil {
		miss.Other = &other
	}
	return Engine{}, miss
}
