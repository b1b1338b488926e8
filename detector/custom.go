package detector

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// CustomDetector lets a program that embeds the detector add its own
// knowledge, for example "our managed Redis forbids EVAL even though ACL
// probes pass in staging". Detect sees the server identity the runtime
// probes found and returns opinions only for the capabilities it knows
// about; unknown capability names are ignored with a warning. It runs
// within the detection deadline carried by ctx.
type CustomDetector interface {
	Name() string
	Detect(ctx context.Context, id Identity) map[string]Opinion
}

// rule is a compiled RuleConfig.
type rule struct {
	cfg        RuleConfig
	product    string
	constraint *Constraint
	address    addressMatcher
}

func compileRules(cfgs []RuleConfig) ([]rule, error) {
	out := make([]rule, 0, len(cfgs))
	for i, c := range cfgs {
		r := rule{cfg: c, product: strings.ToLower(c.Product)}
		if c.Version != "" {
			con, err := ParseConstraint(c.Version)
			if err != nil {
				return nil, fmt.Errorf("detectors[%d].version: %w", i, err)
			}
			r.constraint = &con
		}
		if c.Address != "" {
			m, err := compileAddress(c.Address)
			if err != nil {
				return nil, fmt.Errorf("detectors[%d].address: %w", i, err)
			}
			r.address = m
		}
		out = append(out, r)
	}
	return out, nil
}

// match reports whether the rule applies, and a description of what matched.
func (r rule) match(id Identity) (bool, string) {
	var why []string
	if r.product != "" {
		if id.Product != r.product {
			return false, ""
		}
		why = append(why, "product "+id.Product)
	}
	if r.constraint != nil {
		v, ok := ParseVersion(id.Version)
		if !ok || !r.constraint.Match(v) {
			return false, ""
		}
		why = append(why, fmt.Sprintf("version %s matches %q", id.Version, r.constraint))
	}
	if r.address != nil {
		hit := ""
		for _, a := range strings.Split(id.Address, ",") {
			if r.address(a) {
				hit = a
				break
			}
		}
		if hit == "" {
			return false, ""
		}
		why = append(why, fmt.Sprintf("address %s matches %q", hit, r.cfg.Address))
	}
	if len(why) == 0 {
		why = append(why, "matches every store")
	}
	return true, strings.Join(why, ", ")
}

// customOpinions runs config rules first, then registered detectors, in
// order; the first to have an opinion on a capability keeps it.
func (d *Detector) customOpinions(ctx context.Context, id Identity) map[string]Opinion {
	out := map[string]Opinion{}
	for _, r := range d.rules {
		ok, why := r.match(id)
		if !ok {
			continue
		}
		for _, name := range sortedKeys(r.cfg.Set) {
			if _, taken := out[name]; taken {
				continue
			}
			out[name] = Opinion{Value: r.cfg.Set[name], Evidence: fmt.Sprintf("rule %q: %s", r.cfg.Name, why)}
		}
	}
	d.mu.RLock()
	detectors := slices.Clone(d.custom)
	d.mu.RUnlock()
	for _, cd := range detectors {
		ops := d.runCustom(ctx, cd, id)
		for _, name := range sortedKeys(ops) {
			op := ops[name]
			if !knownCapability(name) {
				d.warnOnce("custom-unknown:"+cd.Name()+":"+name, "custom detector returned an unknown capability; ignored",
					"detector", cd.Name(), "capability", name)
				continue
			}
			if !valueFits(name, op.Value) {
				d.warnOnce("custom-type:"+cd.Name()+":"+name, "custom detector returned a value of the wrong type; ignored",
					"detector", cd.Name(), "capability", name, "value", fmt.Sprint(op.Value))
				continue
			}
			if _, taken := out[name]; taken {
				continue
			}
			out[name] = Opinion{Value: op.Value, Evidence: fmt.Sprintf("detector %q: %s", cd.Name(), op.Evidence)}
		}
	}
	return out
}

// runCustom shields detection from a panicking embedder detector.
func (d *Detector) runCustom(ctx context.Context, cd CustomDetector, id Identity) (ops map[string]Opinion) {
	defer func() {
		if p := recover(); p != nil {
			d.logger.Error("custom detector panicked; its opinions are ignored", "detector", cd.Name(), "panic", fmt.Sprint(p))
			ops = nil
		}
	}()
	return maps.Clone(cd.Detect(ctx, id))
}

func valueFits(name string, v any) bool {
	if Declarable(name) {
		_, ok := v.(bool)
		return ok
	}
	_, ok := v.(string)
	return ok
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

func contains(list []string, s string) bool { return slices.Contains(list, s) }
