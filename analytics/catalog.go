package analytics

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Tasker's handler lookup rules (app/controllers/tasker/handlers_controller.rb;
// docs/analytics.md describes them).
const (
	DefaultHandlerVersion = "0.1.0"
	LatestVersion         = "latest"
)

// Messages of Tasker's handler 404s.
const (
	MsgNamespaceNotFound = "Namespace not found"
	MsgHandlerNotFound   = "Handler not found in namespace"
)

// Catalog is the body of GET /tasker/handlers.
type Catalog struct {
	Namespaces      []NamespaceSummary `json:"namespaces"`
	TotalNamespaces int                `json:"total_namespaces"`
	GeneratedAt     Time               `json:"generated_at"`
}

// NamespaceSummary counts a namespace's handlers (distinct task names).
type NamespaceSummary struct {
	Name         string `json:"name"`
	HandlerCount int    `json:"handler_count"`
}

// NamespaceHandlers is the body of GET /tasker/handlers/{namespace}.
type NamespaceHandlers struct {
	Namespace     string           `json:"namespace"`
	Handlers      []HandlerSummary `json:"handlers"`
	TotalHandlers int              `json:"total_handlers"`
	GeneratedAt   Time             `json:"generated_at"`
}

// HandlerSummary is one task name with its versions; HandlerCount is the
// number of versions.
type HandlerSummary struct {
	Name          string   `json:"name"`
	Namespace     string   `json:"namespace"`
	Versions      []string `json:"versions"`
	LatestVersion string   `json:"latest_version"`
	HandlerCount  int      `json:"handler_count"`
}

// HandlerDetail is the body of GET /tasker/handlers/{namespace}/{name}.
type HandlerDetail struct {
	Handler     Handler `json:"handler"`
	GeneratedAt Time    `json:"generated_at"`
}

// Handler is one handler version as recorded in the named-task tables.
type Handler struct {
	Namespace         string          `json:"namespace"`
	Name              string          `json:"name"`
	Version           string          `json:"version"`
	FullName          string          `json:"full_name"`
	NamedTaskID       int32           `json:"named_task_id"`
	Description       *string         `json:"description"`
	Configuration     json.RawMessage `json:"configuration"`
	AvailableVersions []string        `json:"available_versions"`
	StepTemplates     []StepTemplate  `json:"step_templates"`
	DependencyGraph   TemplateGraph   `json:"dependency_graph"`
}

// StepTemplate is a named step of the handler with its defaults.
type StepTemplate struct {
	Name              string  `json:"name"`
	DependentSystem   string  `json:"dependent_system"`
	Description       *string `json:"description"`
	DefaultRetryable  bool    `json:"default_retryable"`
	DefaultRetryLimit int32   `json:"default_retry_limit"`
	Skippable         bool    `json:"skippable"`
}

// TemplateGraph is the handler's step DAG by step name, as its most recent
// task recorded it. SourceTaskID is that task; null when the handler has
// never run, in which case there are no edges to show.
type TemplateGraph struct {
	Nodes          []string       `json:"nodes"`
	Edges          []TemplateEdge `json:"edges"`
	ExecutionOrder []string       `json:"execution_order"`
	SourceTaskID   *int64         `json:"source_task_id"`
}

// TemplateEdge runs from a step to one that depends on it.
type TemplateEdge struct {
	From string `json:"from"`
	To   string `json:"to"`
}

type namedTask struct {
	namespace, name, version string
	id                       int32
	description              *string
	configuration            []byte
	// On tasker-core: the named task's uuid and identity strategy.
	uuid, identity string
}

// loadCatalog reads the named tasks of the Rails engine's tables, or of
// tasker-core's when core.
func loadCatalog(ctx context.Context, q querier, core bool) ([]namedTask, time.Time, error) {
	query := catalogSQL
	if core {
		query = coreCatalogSQL
	}
	rows, err := q.Query(ctx, query)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("query handler catalog: %w", err)
	}
	var now time.Time
	tasks, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (namedTask, error) {
		var t namedTask
		if core {
			err := row.Scan(&t.namespace, &t.name, &t.version, &t.uuid, &t.description, &t.configuration, &t.identity, &now)
			return t, err
		}
		err := row.Scan(&t.namespace, &t.name, &t.version, &t.id, &t.description, &t.configuration, &now)
		return t, err
	})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("read handler catalog: %w", err)
	}
	if now.IsZero() {
		if err := q.QueryRow(ctx, "SELECT now()").Scan(&now); err != nil {
			return nil, time.Time{}, fmt.Errorf("read transaction time: %w", err)
		}
	}
	return tasks, now, nil
}

// Handlers lists the namespaces that have handlers.
func (s *Service) Handlers(ctx context.Context) (*Catalog, error) {
	var c *Catalog
	err := s.readCatalog(ctx, "handlers", func(q querier, core bool) error {
		tasks, now, err := loadCatalog(ctx, q, core)
		if err != nil {
			return err
		}
		c = &Catalog{Namespaces: []NamespaceSummary{}, GeneratedAt: Time(now)}
		names := map[string]map[string]bool{}
		var order []string
		for _, t := range tasks {
			if names[t.namespace] == nil {
				names[t.namespace] = map[string]bool{}
				order = append(order, t.namespace)
			}
			names[t.namespace][t.name] = true
		}
		for _, ns := range order {
			c.Namespaces = append(c.Namespaces, NamespaceSummary{Name: ns, HandlerCount: len(names[ns])})
		}
		c.TotalNamespaces = len(c.Namespaces)
		return nil
	})
	return c, err
}

// Namespace lists the handlers of one namespace.
func (s *Service) Namespace(ctx context.Context, namespace string) (*NamespaceHandlers, error) {
	var n *NamespaceHandlers
	err := s.readCatalog(ctx, "namespace", func(q querier, core bool) error {
		tasks, now, err := loadCatalog(ctx, q, core)
		if err != nil {
			return err
		}
		versions := map[string][]string{}
		var order []string
		for _, t := range tasks {
			if t.namespace != namespace {
				continue
			}
			if versions[t.name] == nil {
				order = append(order, t.name)
			}
			versions[t.name] = append(versions[t.name], t.version)
		}
		if len(order) == 0 {
			return &NotFoundError{Message: MsgNamespaceNotFound}
		}
		n = &NamespaceHandlers{Namespace: namespace, Handlers: []HandlerSummary{}, GeneratedAt: Time(now)}
		for _, name := range order {
			v := sortVersions(versions[name])
			n.Handlers = append(n.Handlers, HandlerSummary{
				Name: name, Namespace: namespace, Versions: v, LatestVersion: v[len(v)-1], HandlerCount: len(v),
			})
		}
		n.TotalHandlers = len(n.Handlers)
		return nil
	})
	return n, err
}

// Handler describes one handler version. version follows Tasker: empty
// means DefaultHandlerVersion, LatestVersion the highest, and a missing
// DefaultHandlerVersion falls back to the lowest.
func (s *Service) Handler(ctx context.Context, namespace, name, version string) (*HandlerDetail, error) {
	var d *HandlerDetail
	err := s.read(ctx, ClassLookup, "handler", func(q querier) error {
		tasks, now, err := loadCatalog(ctx, q, false)
		if err != nil {
			return err
		}
		t, versions, err := pickHandler(tasks, namespace, name, version)
		if err != nil {
			return err
		}
		h, err := handlerDetail(ctx, q, t)
		if err != nil {
			return err
		}
		h.AvailableVersions = versions
		d = &HandlerDetail{Handler: h, GeneratedAt: Time(now)}
		return nil
	})
	return d, err
}

// pickHandler finds the handler version Tasker's lookup rules pick, and
// the handler's versions in order.
func pickHandler(tasks []namedTask, namespace, name, version string) (namedTask, []string, error) {
	byVersion := map[string]namedTask{}
	nsKnown := false
	for _, t := range tasks {
		if t.namespace != namespace {
			continue
		}
		nsKnown = true
		if t.name == name {
			byVersion[t.version] = t
		}
	}
	if !nsKnown {
		return namedTask{}, nil, &NotFoundError{Message: MsgNamespaceNotFound}
	}
	if len(byVersion) == 0 {
		return namedTask{}, nil, &NotFoundError{Message: MsgHandlerNotFound}
	}
	var versions []string
	for v := range byVersion {
		versions = append(versions, v)
	}
	versions = sortVersions(versions)
	if version == "" {
		version = DefaultHandlerVersion
	}
	pick := version
	switch {
	case version == LatestVersion:
		pick = versions[len(versions)-1]
	case version == DefaultHandlerVersion:
		if _, ok := byVersion[version]; !ok {
			pick = versions[0]
		}
	}
	t, ok := byVersion[pick]
	if !ok {
		return namedTask{}, nil, &NotFoundError{Message: MsgHandlerNotFound}
	}
	return t, versions, nil
}

func handlerDetail(ctx context.Context, q querier, t namedTask) (Handler, error) {
	h := Handler{
		Namespace: t.namespace, Name: t.name, Version: t.version, NamedTaskID: t.id,
		FullName:      t.namespace + "." + t.name + "@" + t.version,
		Description:   t.description,
		Configuration: json.RawMessage("null"),
		StepTemplates: []StepTemplate{},
	}
	if len(t.configuration) > 0 {
		h.Configuration = t.configuration
	}
	rows, err := q.Query(ctx, templateSQL, t.id)
	if err != nil {
		return h, fmt.Errorf("query handler template: %w", err)
	}
	defer rows.Close()
	var taskSteps []string
	var edges []TemplateEdge
	var source *int64
	for rows.Next() {
		var (
			kind, step                 string
			ord                        int64
			system, description, child *string
			retryable, skippable       *bool
			limit                      *int32
			taskID                     *int64
		)
		if err := rows.Scan(&kind, &ord, &step, &system, &description, &retryable, &limit, &skippable, &child, &taskID); err != nil {
			return h, fmt.Errorf("read handler template: %w", err)
		}
		source = taskID
		switch kind {
		case "template":
			h.StepTemplates = append(h.StepTemplates, StepTemplate{
				Name: step, DependentSystem: deref(system), Description: description,
				DefaultRetryable: deref(retryable), DefaultRetryLimit: deref(limit), Skippable: deref(skippable),
			})
		case "edge":
			edges = append(edges, TemplateEdge{From: step, To: deref(child)})
		case "step":
			taskSteps = append(taskSteps, step)
		}
	}
	if err := rows.Err(); err != nil {
		return h, fmt.Errorf("read handler template: %w", err)
	}
	h.DependencyGraph = templateGraph(h.StepTemplates, taskSteps, edges, source)
	return h, nil
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// templateGraph orders the nodes as the templates list them, then any step
// only the task has; execution_order is a topological order that keeps that
// order among steps that are ready together.
func templateGraph(templates []StepTemplate, taskSteps []string, edges []TemplateEdge, source *int64) TemplateGraph {
	g := TemplateGraph{Nodes: []string{}, Edges: []TemplateEdge{}, ExecutionOrder: []string{}, SourceTaskID: source}
	pos := map[string]int{}
	add := func(n string) {
		if _, ok := pos[n]; !ok {
			pos[n] = len(g.Nodes)
			g.Nodes = append(g.Nodes, n)
		}
	}
	for _, t := range templates {
		add(t.Name)
	}
	for _, s := range taskSteps {
		add(s)
	}
	seen := map[TemplateEdge]bool{}
	indeg := map[string]int{}
	children := map[string][]string{}
	for _, e := range edges {
		if seen[e] {
			continue
		}
		seen[e] = true
		add(e.From)
		add(e.To)
		g.Edges = append(g.Edges, e)
		indeg[e.To]++
		children[e.From] = append(children[e.From], e.To)
	}
	ready := []string{}
	for _, n := range g.Nodes {
		if indeg[n] == 0 {
			ready = append(ready, n)
		}
	}
	for len(ready) > 0 {
		slices.SortFunc(ready, func(a, b string) int { return cmp.Compare(pos[a], pos[b]) })
		n := ready[0]
		ready = ready[1:]
		g.ExecutionOrder = append(g.ExecutionOrder, n)
		for _, c := range children[n] {
			indeg[c]--
			if indeg[c] == 0 {
				ready = append(ready, c)
			}
		}
	}
	return g
}

// sortVersions orders versions numerically by dot-separated parts, as
// Gem::Version compares them; a part that is not a number compares as text
// after the numbers.
func sortVersions(vs []string) []string {
	out := slices.Clone(vs)
	slices.SortFunc(out, compareVersions)
	return slices.Compact(out)
}

func compareVersions(a, b string) int {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(pa), len(pb)) {
		var x, y string
		if i < len(pa) {
			x = pa[i]
		}
		if i < len(pb) {
			y = pb[i]
		}
		nx, ex := strconv.ParseInt(cmp.Or(x, "0"), 10, 64)
		ny, ey := strconv.ParseInt(cmp.Or(y, "0"), 10, 64)
		switch {
		case ex == nil && ey == nil:
			if c := cmp.Compare(nx, ny); c != 0 {
				return c
			}
		case ex == nil:
			return -1
		case ey == nil:
			return 1
		default:
			if c := strings.Compare(x, y); c != 0 {
				return c
			}
		}
	}
	return strings.Compare(a, b)
}
