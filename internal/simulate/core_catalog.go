package simulate

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

// coreCatalog is the Rails catalog's task templates with the keys the core
// schema gave them. Core named steps have no dependent system: a name is one
// named step.
type coreCatalog struct {
	*catalog
	task map[*taskDef][16]byte
	step map[string][16]byte
}

// EnsureCoreCatalog writes the catalog into a tasker-core database: task
// namespaces, named steps, named tasks (several versions) and
// named_tasks_named_steps. Rows that already exist are kept.
func EnsureCoreCatalog(ctx context.Context, pool *pgxpool.Pool, opts Options) error {
	opts, err := opts.withDefaults()
	if err != nil {
		return err
	}
	_, err = loadCoreCatalog(ctx, pool, opts)
	return err
}

func loadCoreCatalog(ctx context.Context, pool *pgxpool.Pool, opts Options) (*coreCatalog, error) {
	c := &coreCatalog{catalog: buildCatalog(opts.Namespaces), task: map[*taskDef][16]byte{}, step: map[string][16]byte{}}
	now := time.Now().UTC().Truncate(time.Microsecond)
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		for _, ns := range c.namespaces {
			b.Queue(`INSERT INTO tasker.task_namespaces (name, description, created_at, updated_at)
				VALUES ($1, $2, $3, $3) ON CONFLICT (name) DO NOTHING`, ns, "Simulated "+ns+" workflows", now)
			for _, d := range c.byNamespace[ns] {
				for _, s := range d.steps {
					b.Queue(`INSERT INTO tasker.named_steps (name, description, created_at, updated_at)
						VALUES ($1, $2, $3, $3) ON CONFLICT (name) DO NOTHING`, s.name, s.name+" on "+s.system, now)
				}
				b.Queue(`INSERT INTO tasker.named_tasks (task_namespace_uuid, name, description, version, configuration, created_at, updated_at)
					SELECT task_namespace_uuid, $2, $3, $4, $5, $6, $6 FROM tasker.task_namespaces WHERE name = $1
					ON CONFLICT (task_namespace_uuid, name, version) DO NOTHING`,
					ns, d.name, d.description, d.version, fmt.Sprintf(`{"dag_shape": %q}`, d.shape), now)
				for _, s := range d.steps {
					b.Queue(`INSERT INTO tasker.named_tasks_named_steps
						(named_task_uuid, named_step_uuid, default_retryable, default_max_attempts, created_at, updated_at)
						SELECT nt.named_task_uuid, st.named_step_uuid, $5, $6, $7, $7
						FROM tasker.named_tasks nt
						JOIN tasker.task_namespaces n ON n.task_namespace_uuid = nt.task_namespace_uuid
						JOIN tasker.named_steps st ON st.name = $4
						WHERE n.name = $1 AND nt.name = $2 AND nt.version = $3
						ON CONFLICT (named_task_uuid, named_step_uuid) DO NOTHING`,
						ns, d.name, d.version, s.name, s.retryable, s.retryLimit, now)
				}
			}
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return nil, fmt.Errorf("ensure core catalog: %w", err)
	}
	rows, err := pool.Query(ctx, `SELECT name, named_step_uuid FROM tasker.named_steps`)
	if err != nil {
		return nil, fmt.Errorf("read named steps: %w", err)
	}
	for rows.Next() {
		var name string
		var id pgtype.UUID
		if err := rows.Scan(&name, &id); err != nil {
			return nil, fmt.Errorf("read named steps: %w", err)
		}
		c.step[name] = id.Bytes
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read named steps: %w", err)
	}
	tasks := map[[3]string][16]byte{}
	rows, err = pool.Query(ctx, `SELECT n.name, nt.name, nt.version, nt.named_task_uuid
		FROM tasker.named_tasks nt JOIN tasker.task_namespaces n ON n.task_namespace_uuid = nt.task_namespace_uuid`)
	if err != nil {
		return nil, fmt.Errorf("read named tasks: %w", err)
	}
	for rows.Next() {
		var ns, name, version string
		var id pgtype.UUID
		if err := rows.Scan(&ns, &name, &version, &id); err != nil {
			return nil, fmt.Errorf("read named tasks: %w", err)
		}
		tasks[[3]string{ns, name, version}] = id.Bytes
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read named tasks: %w", err)
	}
	for _, ns := range c.namespaces {
		for _, d := range c.byNamespace[ns] {
			id, ok := tasks[[3]string{ns, d.name, d.version}]
			if !ok {
				return nil, fmt.Errorf("named task %s/%s %s missing after insert", ns, d.name, d.version)
			}
			c.task[d] = id
			for _, s := range d.steps {
				if _, ok := c.step[s.name]; !ok {
					return nil, fmt.Errorf("named step %s missing after insert", s.name)
				}
			}
		}
	}
	return c, nil
}
