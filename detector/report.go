package detector

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tasker-systems/tasker-sidecar/coord"
)

// Identity is who the server is, as far as the probes could tell.
type Identity struct {
	Kind     string `json:"kind"`              // store kind: redis, memcached, memory, none
	Product  string `json:"product,omitempty"` // redis, valkey, keydb, dragonfly, memcached, memory, none; empty if unknown
	Version  string `json:"version,omitempty"` // as the server reports it
	Address  string `json:"address"`           // host:port list, never credentials
	Role     string `json:"role,omitempty"`    // master or replica (Redis family)
	Mode     string `json:"mode,omitempty"`    // standalone, cluster or sentinel (Redis family)
	Protocol int    `json:"protocol,omitempty"`
}

// StoreInfo is the "store" object of the report.
type StoreInfo struct {
	Identity
	URL        string    `json:"url"` // password redacted
	Cluster    bool      `json:"cluster"`
	Reachable  bool      `json:"reachable"`
	Error      string    `json:"error,omitempty"`
	Warnings   []string  `json:"warnings,omitempty"`
	DetectedAt time.Time `json:"detected_at"`
	DurationMS float64   `json:"duration_ms"`
}

// Capability is one capability's settled value and where it came from.
type Capability struct {
	Value    any    `json:"value"`
	Source   string `json:"source"` // declared, custom, constants or runtime
	Evidence string `json:"evidence"`
}

// Conflict is a declaration a runtime probe contradicted. The declaration
// still wins.
type Conflict struct {
	Capability string `json:"capability"`
	Declared   any    `json:"declared"`
	Observed   any    `json:"observed"`
	Evidence   string `json:"evidence"`
}

// Report is the result of one detection run. Its JSON form is
// {"store": {...}, "capabilities": {"<name>": {"value", "source",
// "evidence"}}, "strategy", "mechanism", "conflicts": [...]}.
type Report struct {
	Store        StoreInfo             `json:"store"`
	Capabilities map[string]Capability `json:"capabilities"`
	Strategy     string                `json:"strategy"`
	Mechanism    string                `json:"mechanism"`
	Conflicts    []Conflict            `json:"conflicts"`
	// Methods are the compare-and-swap and compare-and-delete a
	// Redis-protocol store allows, for package coord: the latest that a
	// run could settle (scripts until then, none where no Lua may be
	// sent). The probes' evidence is in Capabilities.
	Methods coord.Methods `json:"-"`
}

// Bool returns a boolean capability's value (false if missing or not a bool).
func (r Report) Bool(name string) bool {
	b, _ := r.Capabilities[name].Value.(bool)
	return b
}

// WriteText writes the report for people: a header, one row per capability
// in the documented order, then conflicts and warnings.
func (r Report) WriteText(w io.Writer) error {
	var b strings.Builder
	s := r.Store
	who := s.Product
	if who == "" {
		who = s.Kind
	}
	if s.Version != "" {
		who += " " + s.Version
	}
	var details []string
	for _, d := range []string{s.Mode, s.Role} {
		if d != "" {
			details = append(details, d)
		}
	}
	if s.Protocol > 0 {
		details = append(details, fmt.Sprintf("RESP%d", s.Protocol))
	}
	fmt.Fprintf(&b, "store:      %s at %s", who, s.Address)
	if len(details) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(details, ", "))
	}
	fmt.Fprintf(&b, "\nurl:        %s\n", s.URL)
	if !s.Reachable {
		fmt.Fprintf(&b, "reachable:  no: %s\n", s.Error)
	}
	fmt.Fprintf(&b, "strategy:   %s (%s)\n", r.Strategy, r.Mechanism)
	fmt.Fprintf(&b, "detected:   %s in %.1fms\n\n", s.DetectedAt.UTC().Format(time.RFC3339), s.DurationMS)
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CAPABILITY\tVALUE\tSOURCE\tEVIDENCE")
	for _, name := range Capabilities() {
		c, ok := r.Capabilities[name]
		if !ok {
			continue
		}
		fmt.Fprintf(tw, "%s\t%v\t%s\t%s\n", name, c.Value, c.Source, c.Evidence)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	b.Reset()
	if len(r.Conflicts) == 0 {
		b.WriteString("\nconflicts:  none\n")
	} else {
		b.WriteString("\nconflicts (the declaration wins):\n")
		for _, c := range r.Conflicts {
			fmt.Fprintf(&b, "  %s: declared %v, observed %v: %s\n", c.Capability, c.Declared, c.Observed, c.Evidence)
		}
	}
	for _, warn := range s.Warnings {
		fmt.Fprintf(&b, "warning:    %s\n", warn)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
