package simulate

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// stepDef is a named step as a task template uses it.
type stepDef struct {
	name       string
	system     string
	mean       time.Duration // typical run time of one attempt
	api        bool          // calls a remote API: its errors carry backoff requests
	retryable  bool
	retryLimit int
	id         int32 // named_step_id, set by loadCatalog
}

// taskDef is one version of a named task: its steps and the edges between them
// (from = parent, to = child, as indexes into steps).
type taskDef struct {
	namespace   string
	name        string
	version     string
	description string
	context     string // what the task's context describes, see taskContext
	shape       string
	steps       []stepDef
	edges       [][2]int
	weight      int // relative frequency among the namespace's tasks
	id          int32
	// parents and children per step, derived from edges once.
	parents, children [][]int
}

// catalog is everything Bulk and Live need to create tasks.
type catalog struct {
	byNamespace map[string][]*taskDef // versions of all tasks of a namespace
	namespaces  []string
	bySteps     map[int32]stepDef // named_step_id → definition, for adopted tasks
	byTask      map[int32]*taskDef
}

type systemDef struct{ name, description string }

func systems() []systemDef {
	return []systemDef{
		{"internal", "In-process validation and bookkeeping"},
		{"stripe", "Card payments API"},
		{"fraud_service", "Risk scoring service"},
		{"ledger_db", "Accounting ledger database"},
		{"warehouse_api", "Warehouse management API"},
		{"carrier_api", "Shipping carrier API"},
		{"sendgrid", "Email delivery API"},
		{"twilio", "SMS delivery API"},
		{"push_gateway", "Mobile push gateway"},
		{"s3", "Object storage"},
		{"snowflake", "Data warehouse"},
		{"search_cluster", "Search index"},
	}
}

// systems lists the dependent systems the catalog's steps run on.
func (c *catalog) systems() []systemDef {
	known := make(map[string]string)
	for _, s := range systems() {
		known[s.name] = s.description
	}
	seen := make(map[string]bool)
	var out []systemDef
	for _, ns := range c.namespaces {
		for _, d := range c.byNamespace[ns] {
			for _, s := range d.steps {
				if seen[s.system] {
					continue
				}
				seen[s.system] = true
				desc, ok := known[s.system]
				if !ok {
					desc = "Remote service " + s.system
				}
				out = append(out, systemDef{s.system, desc})
			}
		}
	}
	return out
}

func step(name, system string, mean time.Duration) stepDef {
	api := system != "internal" && system != "ledger_db" && system != "s3" && system != "snowflake"
	return stepDef{name: name, system: system, mean: mean, api: api, retryable: true, retryLimit: 3}
}

func (d stepDef) limit(n int) stepDef { d.retryLimit = n; return d }
func (d stepDef) final() stepDef      { d.retryable = false; return d }

// Shapes. Each returns the edges for n steps laid out in order.
func linear(n int) [][2]int {
	var e [][2]int
	for i := 0; i+1 < n; i++ {
		e = append(e, [2]int{i, i + 1})
	}
	return e
}

// fan is one root, n-2 parallel middle steps and one join step.
func fan(n int) [][2]int {
	var e [][2]int
	for i := 1; i < n-1; i++ {
		e = append(e, [2]int{0, i}, [2]int{i, n - 1})
	}
	return e
}

func diamond() [][2]int { return [][2]int{{0, 1}, {0, 2}, {1, 3}, {2, 3}} }

// tree is a binary tree in heap order.
func tree(n int) [][2]int {
	var e [][2]int
	for i := 1; i < n; i++ {
		e = append(e, [2]int{(i - 1) / 2, i})
	}
	return e
}

// builtinTasks returns the task templates of a namespace. Versions differ in
// shape, as a real deploy history would.
func builtinTasks(ns string) []*taskDef {
	ms := time.Millisecond
	switch ns {
	case "payments":
		validate := step("validate_payment", "internal", 15*ms)
		fraud := step("score_fraud_risk", "fraud_service", 250*ms)
		authorize := step("authorize_card", "stripe", 600*ms).limit(2)
		// A capture is not idempotent on the card network side, so Tasker
		// handlers mark it non-retryable.
		capture := step("capture_payment", "stripe", 700*ms).final()
		ledger := step("record_ledger_entry", "ledger_db", 40*ms).limit(5)
		receipt := step("send_receipt", "sendgrid", 300*ms).limit(5)
		vrefund := step("validate_refund", "internal", 20*ms)
		refund := step("issue_refund", "stripe", 800*ms).final()
		return []*taskDef{
			{name: "process_payment", version: "0.1.0", shape: "linear", context: "payment", weight: 6,
				description: "Charge a card and record it",
				steps:       []stepDef{validate, authorize, capture, ledger, receipt}, edges: linear(5)},
			{name: "process_payment", version: "1.0.0", shape: "diamond", context: "payment", weight: 6,
				description: "Charge a card after a fraud check and record it",
				steps:       []stepDef{validate, fraud, authorize, capture, ledger, receipt},
				edges:       [][2]int{{0, 1}, {0, 2}, {1, 3}, {2, 3}, {3, 4}, {3, 5}}},
			{name: "refund_payment", version: "1.0.0", shape: "linear", context: "payment", weight: 2,
				description: "Refund a captured payment",
				steps:       []stepDef{vrefund, refund, ledger}, edges: linear(3)},
		}
	case "fulfillment":
		validate := step("validate_order", "internal", 20*ms)
		reserve := step("reserve_inventory", "warehouse_api", 400*ms)
		rate := step("calculate_shipping", "carrier_api", 500*ms)
		ship := step("create_shipment", "carrier_api", 900*ms).limit(4)
		notify := step("notify_customer", "sendgrid", 300*ms).limit(5)
		check := step("check_stock_levels", "warehouse_api", 300*ms)
		var suppliers []stepDef
		for _, s := range []string{"a", "b", "c", "d"} {
			suppliers = append(suppliers, step("order_from_supplier_"+s, "warehouse_api", 1200*ms))
		}
		update := step("update_inventory", "warehouse_api", 250*ms)
		restock := append(append([]stepDef{check}, suppliers...), update)
		return []*taskDef{
			{name: "ship_order", version: "0.1.0", shape: "diamond", context: "order", weight: 5,
				description: "Reserve, rate and ship an order",
				steps:       []stepDef{validate, reserve, rate, ship}, edges: diamond()},
			{name: "ship_order", version: "1.0.0", shape: "diamond", context: "order", weight: 5,
				description: "Reserve, rate, ship an order and tell the customer",
				steps:       []stepDef{validate, reserve, rate, ship, notify}, edges: append(diamond(), [2]int{3, 4})},
			{name: "restock_warehouse", version: "1.0.0", shape: "fan", context: "order", weight: 2,
				description: "Order stock from every supplier and book it",
				steps:       restock, edges: fan(len(restock))},
		}
	case "notifications":
		load := step("load_audience", "internal", 200*ms)
		var batches []stepDef
		for i := 1; i <= 6; i++ {
			batches = append(batches, step(fmt.Sprintf("send_email_batch_%d", i), "sendgrid", 1500*ms).limit(5))
		}
		record := step("record_delivery_stats", "internal", 50*ms)
		render := step("render_alert", "internal", 10*ms)
		sms := step("send_sms", "twilio", 400*ms).limit(4)
		push := step("send_push", "push_gateway", 250*ms).limit(4)
		v1 := append(append([]stepDef{load}, batches[:3]...), record)
		v2 := append(append([]stepDef{load}, batches...), record)
		return []*taskDef{
			{name: "send_campaign", version: "0.1.0", shape: "fan", context: "campaign", weight: 2,
				description: "Send a campaign in three batches", steps: v1, edges: fan(len(v1))},
			{name: "send_campaign", version: "1.0.0", shape: "fan", context: "campaign", weight: 2,
				description: "Send a campaign in six batches", steps: v2, edges: fan(len(v2))},
			{name: "deliver_alert", version: "1.0.0", shape: "linear", context: "campaign", weight: 6,
				description: "Render an alert and deliver it by SMS and push",
				steps:       []stepDef{render, sms, push}, edges: linear(3)},
		}
	case "data_pipeline":
		s := time.Second
		extract := step("extract_source", "s3", 4*s)
		tOrders := step("transform_orders", "internal", 3*s)
		tCustomers := step("transform_customers", "internal", 2*s)
		lOrders := step("load_orders_warehouse", "snowflake", 6*s)
		iOrders := step("index_orders", "search_cluster", 2*s)
		lCustomers := step("load_customers_warehouse", "snowflake", 5*s)
		segments := step("update_customer_segments", "snowflake", 3*s)
		tree7 := []stepDef{extract, tOrders, tCustomers, lOrders, iOrders, lCustomers, segments}
		collect := step("collect_daily_metrics", "snowflake", 2*s)
		rollup := step("rollup_revenue", "snowflake", 3*s)
		cohort := step("compute_cohorts", "snowflake", 4*s)
		publish := step("publish_dashboard", "s3", 1*s)
		return []*taskDef{
			{name: "nightly_etl", version: "0.1.0", shape: "tree", context: "pipeline", weight: 2,
				description: "Extract, transform and load orders", steps: tree7[:3], edges: tree(3)},
			{name: "nightly_etl", version: "1.0.0", shape: "tree", context: "pipeline", weight: 2,
				description: "Extract, transform, load and index orders and customers", steps: tree7, edges: tree(7)},
			{name: "compute_metrics", version: "1.0.0", shape: "diamond", context: "pipeline", weight: 3,
				description: "Roll up revenue and cohorts and publish them",
				steps:       []stepDef{collect, rollup, cohort, publish}, edges: diamond()},
		}
	}
	return genericTasks(ns)
}

// genericTasks serves namespaces the simulator has no story for.
func genericTasks(ns string) []*taskDef {
	ms := time.Millisecond
	sys := ns + "_service"
	fetch := step("fetch", sys, 300*ms)
	check := step("validate", "internal", 20*ms)
	transform := step("transform", "internal", 200*ms)
	store := step("store", "ledger_db", 60*ms)
	notify := step("notify", "sendgrid", 300*ms).limit(5)
	parts := []stepDef{fetch}
	for i := 1; i <= 3; i++ {
		parts = append(parts, step(fmt.Sprintf("process_part_%d", i), sys, 500*ms))
	}
	parts = append(parts, store)
	return []*taskDef{
		{name: ns + "_sync", version: "0.1.0", shape: "linear", context: "generic", weight: 3,
			description: "Fetch, check and store", steps: []stepDef{fetch, check, transform, store}, edges: linear(4)},
		{name: ns + "_sync", version: "1.0.0", shape: "diamond", context: "generic", weight: 3,
			description: "Fetch, check and transform in parallel, store",
			steps:       []stepDef{fetch, check, transform, store, notify}, edges: append(diamond(), [2]int{3, 4})},
		{name: ns + "_batch", version: "1.0.0", shape: "fan", context: "generic", weight: 2,
			description: "Process parts in parallel", steps: parts, edges: fan(len(parts))},
	}
}

func buildCatalog(namespaces []string) *catalog {
	c := &catalog{
		byNamespace: make(map[string][]*taskDef),
		namespaces:  namespaces,
		bySteps:     make(map[int32]stepDef),
		byTask:      make(map[int32]*taskDef),
	}
	for _, ns := range namespaces {
		defs := builtinTasks(ns)
		for _, d := range defs {
			d.namespace = ns
			d.parents = make([][]int, len(d.steps))
			d.children = make([][]int, len(d.steps))
			for _, e := range d.edges {
				d.children[e[0]] = append(d.children[e[0]], e[1])
				d.parents[e[1]] = append(d.parents[e[1]], e[0])
			}
		}
		c.byNamespace[ns] = defs
	}
	return c
}

// EnsureCatalog creates the namespaces, dependent systems, named steps, named
// tasks (several versions each) and their named_tasks_named_steps links that
// the simulated tasks refer to. Rows that already exist are kept, so it is safe
// to call on every start and on a live Tasker database.
func EnsureCatalog(ctx context.Context, pool *pgxpool.Pool, opts Options) error {
	opts, err := opts.withDefaults()
	if err != nil {
		return err
	}
	_, err = loadCatalog(ctx, pool, opts)
	return err
}

// loadCatalog ensures the catalog rows and reads their ids back.
func loadCatalog(ctx context.Context, pool *pgxpool.Pool, opts Options) (*catalog, error) {
	c := buildCatalog(opts.Namespaces)
	now := time.Now().UTC().Truncate(time.Microsecond)
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		for _, s := range c.systems() {
			b.Queue(`INSERT INTO tasker_dependent_systems (name, description, created_at, updated_at)
				VALUES ($1, $2, $3, $3) ON CONFLICT (name) DO NOTHING`, s.name, s.description, now)
		}
		for _, ns := range c.namespaces {
			b.Queue(`INSERT INTO tasker_task_namespaces (name, description, created_at, updated_at)
				VALUES ($1, $2, $3, $3) ON CONFLICT (name) DO NOTHING`, ns, "Simulated "+ns+" workflows", now)
		}
		for _, ns := range c.namespaces {
			for _, d := range c.byNamespace[ns] {
				for _, s := range d.steps {
					b.Queue(`INSERT INTO tasker_named_steps (dependent_system_id, name, description, created_at, updated_at)
						SELECT dependent_system_id, $2, $3, $4, $4 FROM tasker_dependent_systems WHERE name = $1
						ON CONFLICT (dependent_system_id, name) DO NOTHING`, s.system, s.name, s.name+" on "+s.system, now)
				}
				b.Queue(`INSERT INTO tasker_named_tasks (name, description, task_namespace_id, version, configuration, created_at, updated_at)
					SELECT $1, $2, task_namespace_id, $4, $5, $6, $6 FROM tasker_task_namespaces WHERE name = $3
					ON CONFLICT (task_namespace_id, name, version) DO NOTHING`,
					d.name, d.description, ns, d.version, fmt.Sprintf(`{"dag_shape": %q}`, d.shape), now)
				for _, s := range d.steps {
					b.Queue(`INSERT INTO tasker_named_tasks_named_steps
						(named_task_id, named_step_id, skippable, default_retryable, default_retry_limit, created_at, updated_at)
						SELECT nt.named_task_id, ns.named_step_id, false, $6, $7, $8, $8
						FROM tasker_named_tasks nt
						JOIN tasker_task_namespaces n ON n.task_namespace_id = nt.task_namespace_id
						JOIN tasker_named_steps ns ON ns.name = $4
						JOIN tasker_dependent_systems ds ON ds.dependent_system_id = ns.dependent_system_id AND ds.name = $5
						WHERE n.name = $1 AND nt.name = $2 AND nt.version = $3
						ON CONFLICT (named_task_id, named_step_id) DO NOTHING`,
						ns, d.name, d.version, s.name, s.system, s.retryable, s.retryLimit, now)
				}
			}
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return nil, fmt.Errorf("ensure catalog: %w", err)
	}

	stepIDs := make(map[[2]string]int32)
	rows, err := pool.Query(ctx, `SELECT ds.name, ns.name, ns.named_step_id
		FROM tasker_named_steps ns JOIN tasker_dependent_systems ds USING (dependent_system_id)`)
	if err != nil {
		return nil, fmt.Errorf("read named steps: %w", err)
	}
	for rows.Next() {
		var sys, name string
		var id int32
		if err := rows.Scan(&sys, &name, &id); err != nil {
			return nil, fmt.Errorf("read named steps: %w", err)
		}
		stepIDs[[2]string{sys, name}] = id
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read named steps: %w", err)
	}
	taskIDs := make(map[[3]string]int32)
	rows, err = pool.Query(ctx, `SELECT n.name, nt.name, nt.version, nt.named_task_id
		FROM tasker_named_tasks nt JOIN tasker_task_namespaces n ON n.task_namespace_id = nt.task_namespace_id`)
	if err != nil {
		return nil, fmt.Errorf("read named tasks: %w", err)
	}
	for rows.Next() {
		var ns, name, version string
		var id int32
		if err := rows.Scan(&ns, &name, &version, &id); err != nil {
			return nil, fmt.Errorf("read named tasks: %w", err)
		}
		taskIDs[[3]string{ns, name, version}] = id
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read named tasks: %w", err)
	}
	for _, ns := range c.namespaces {
		for _, d := range c.byNamespace[ns] {
			id, ok := taskIDs[[3]string{ns, d.name, d.version}]
			if !ok {
				return nil, fmt.Errorf("named task %s/%s %s missing after insert", ns, d.name, d.version)
			}
			d.id = id
			c.byTask[id] = d
			for i := range d.steps {
				sid, ok := stepIDs[[2]string{d.steps[i].system, d.steps[i].name}]
				if !ok {
					return nil, fmt.Errorf("named step %s on %s missing after insert", d.steps[i].name, d.steps[i].system)
				}
				d.steps[i].id = sid
				c.bySteps[sid] = d.steps[i]
			}
		}
	}
	return c, nil
}
