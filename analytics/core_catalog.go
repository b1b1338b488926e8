package analytics

import (
	"context"
	"encoding/json"
	"fmt"
)

var (
	coreCatalogSQL  = mustSQL("core_catalog.sql")
	coreTemplateSQL = mustSQL("core_handler_template.sql")
)

// CoreHandlerDetail is the body of GET /tasker/handlers/{namespace}/{name}
// on tasker-core.
type CoreHandlerDetail struct {
	Handler     CoreHandler `json:"handler"`
	GeneratedAt Time        `json:"generated_at"`
}

// CoreHandler is one tasker-core handler version (named_tasks): Handler's
// fields with the engine's uuid, its identity strategy, and step templates
// with default_max_attempts (tasker-core has no dependent systems and no
// skippable steps).
type CoreHandler struct {
	Namespace         string             `json:"namespace"`
	Name              string             `json:"name"`
	Version           string             `json:"version"`
	FullName          string             `json:"full_name"`
	NamedTaskUUID     string             `json:"named_task_uuid"`
	Description       *string            `json:"description"`
	Configuration     json.RawMessage    `json:"configuration"`
	IdentityStrategy  string             `json:"identity_strategy"`
	AvailableVersions []string           `json:"available_versions"`
	StepTemplates     []CoreStepTemplate `json:"step_templates"`
	DependencyGraph   CoreTemplateGraph  `json:"dependency_graph"`
}

// CoreStepTemplate is a named step of the handler with its defaults
// (named_tasks_named_steps).
type CoreStepTemplate struct {
	Name               string  `json:"name"`
	Description        *string `json:"description"`
	DefaultRetryable   bool    `json:"default_retryable"`
	DefaultMaxAttempts int32   `json:"default_max_attempts"`
}

// CoreTemplateGraph is TemplateGraph with the source task's uuid.
type CoreTemplateGraph struct {
	Nodes          []string       `json:"nodes"`
	Edges          []TemplateEdge `json:"edges"`
	ExecutionOrder []string       `json:"execution_order"`
	SourceTaskUUID *string        `json:"source_task_uuid"`
}

// readCatalog runs a catalog computation on whichever engine the
// attachment names: tasker-core's tables when it says core, the Rails
// engine's otherwise (gated by Supported).
func (s *Service) readCatalog(ctx context.Context, name string, fn func(q querier, core bool) error) error {
	if s.OnCore() {
		return s.readCoreLookup(ctx, name, func(q querier) error { return fn(q, true) })
	}
	return s.read(ctx, ClassLookup, name, func(q querier) error { return fn(q, false) })
}

// HandlerReport is the body of GET /tasker/handlers/{namespace}/{name} for
// the attached engine: a HandlerDetail on the Rails engine's database, a
// CoreHandlerDetail on tasker-core's.
func (s *Service) HandlerReport(ctx context.Context, namespace, name, version string) (any, error) {
	if !s.OnCore() {
		return s.Handler(ctx, namespace, name, version)
	}
	var d *CoreHandlerDetail
	err := s.readCoreLookup(ctx, "handler", func(q querier) error {
		tasks, now, err := loadCatalog(ctx, q, true)
		if err != nil {
			return err
		}
		t, versions, err := pickHandler(tasks, namespace, name, version)
		if err != nil {
			return err
		}
		h, err := coreHandlerDetail(ctx, q, t)
		if err != nil {
			return err
		}
		h.AvailableVersions = versions
		d = &CoreHandlerDetail{Handler: h, GeneratedAt: Time(now)}
		return nil
	})
	return d, err
}

func coreHandlerDetail(ctx context.Context, q querier, t namedTask) (CoreHandler, error) {
	h := CoreHandler{
		Namespace: t.namespace, Name: t.name, Version: t.version, NamedTaskUUID: t.uuid,
		FullName:         t.namespace + "." + t.name + "@" + t.version,
		Description:      t.description,
		Configuration:    json.RawMessage("null"),
		IdentityStrategy: t.identity,
		StepTemplates:    []CoreStepTemplate{},
	}
	if len(t.configuration) > 0 {
		h.Configuration = t.configuration
	}
	rows, err := q.Query(ctx, coreTemplateSQL, t.uuid)
	if err != nil {
		return h, fmt.Errorf("query handler template: %w", err)
	}
	defer rows.Close()
	var taskSteps []string
	var edges []TemplateEdge
	var source *string
	var templates []StepTemplate
	for rows.Next() {
		var (
			kind, step, ord    string
			description, child *string
			retryable          *bool
			attempts           *int32
			taskUUID           *string
			createdAt          any
		)
		if err := rows.Scan(&kind, &step, &description, &retryable, &attempts, &child, &taskUUID, &createdAt, &ord); err != nil {
			return h, fmt.Errorf("read handler template: %w", err)
		}
		source = taskUUID
		switch kind {
		case "template":
			h.StepTemplates = append(h.StepTemplates, CoreStepTemplate{
				Name: step, Description: description, DefaultRetryable: deref(retryable), DefaultMaxAttempts: deref(attempts),
			})
			templates = append(templates, StepTemplate{Name: step})
		case "edge":
			edges = append(edges, TemplateEdge{From: step, To: deref(child)})
		case "step":
			taskSteps = append(taskSteps, step)
		}
	}
	if err := rows.Err(); err != nil {
		return h, fmt.Errorf("read handler template: %w", err)
	}
	g := templateGraph(templates, taskSteps, edges, nil)
	h.DependencyGraph = CoreTemplateGraph{Nodes: g.Nodes, Edges: g.Edges, ExecutionOrder: g.ExecutionOrder, SourceTaskUUID: source}
	return h, nil
}
