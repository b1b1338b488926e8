package detector

import (
	"fmt"
	"strconv"
	"strings"
)

// Version is a server version reduced to major.minor.patch. Servers decorate
// versions ("df-v1.37.0", "8.1.0-rc1", "v7.2.4"); only the numbers count.
type Version struct {
	Major, Minor, Patch int
	// parts is how many numbers were given; a constraint "7.2" only
	// pins major and minor.
	parts int
}

// ParseVersion reads the first run of dot-separated numbers in s.
func ParseVersion(s string) (Version, bool) {
	start := strings.IndexFunc(s, func(r rune) bool { return r >= '0' && r <= '9' })
	if start < 0 {
		return Version{}, false
	}
	s = s[start:]
	end := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if end >= 0 {
		s = s[:end]
	}
	s = strings.TrimRight(s, ".")
	fields := strings.Split(s, ".")
	if len(fields) > 3 {
		fields = fields[:3]
	}
	var v Version
	nums := []*int{&v.Major, &v.Minor, &v.Patch}
	for i, f := range fields {
		n, err := strconv.Atoi(f)
		if err != nil {
			return Version{}, false
		}
		*nums[i] = n
	}
	v.parts = len(fields)
	return v, true
}

// V is a Version literal for tables.
func V(major, minor, patch int) Version { return Version{major, minor, patch, 3} }

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// Compare returns -1, 0 or 1.
func (v Version) Compare(o Version) int {
	for _, d := range [][2]int{{v.Major, o.Major}, {v.Minor, o.Minor}, {v.Patch, o.Patch}} {
		if d[0] < d[1] {
			return -1
		}
		if d[0] > d[1] {
			return 1
		}
	}
	return 0
}

// Less reports v < o.
func (v Version) Less(o Version) bool { return v.Compare(o) < 0 }

// Constraint is a version constraint: clauses separated by spaces or commas
// must all hold; alternatives are separated by "||". A clause is an operator
// (>=, >, <=, <, =, ==, !=) and a version, or a bare version, which matches
// every version that starts with it ("7.2" matches 7.2.x, "7" matches 7.x).
type Constraint struct {
	text string
	any  [][]clause
}

type clause struct {
	op string
	v  Version
}

// ParseConstraint parses a constraint such as ">=7.0 <8" or "1.6 || >=2".
func ParseConstraint(s string) (Constraint, error) {
	c := Constraint{text: strings.TrimSpace(s)}
	if c.text == "" {
		return c, fmt.Errorf("empty version constraint")
	}
	for _, alt := range strings.Split(c.text, "||") {
		var all []clause
		fields := strings.FieldsFunc(alt, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' })
		for i := 0; i < len(fields); i++ {
			f := fields[i]
			op := ""
			for _, o := range []string{">=", "<=", "==", "!=", ">", "<", "="} {
				if strings.HasPrefix(f, o) {
					op, f = o, f[len(o):]
					break
				}
			}
			if f == "" && op != "" && i+1 < len(fields) {
				// ">= 7.0" written with a space.
				i++
				f = fields[i]
			}
			if f == "" || strings.IndexFunc(f, func(r rune) bool { return (r < '0' || r > '9') && r != '.' }) >= 0 {
				return Constraint{}, fmt.Errorf("bad version %q in constraint %q", f, c.text)
			}
			v, ok := ParseVersion(f)
			if !ok {
				return Constraint{}, fmt.Errorf("bad version %q in constraint %q", f, c.text)
			}
			if op == "" || op == "==" {
				op = "="
			}
			all = append(all, clause{op, v})
		}
		if len(all) == 0 {
			return Constraint{}, fmt.Errorf("empty alternative in constraint %q", c.text)
		}
		c.any = append(c.any, all)
	}
	return c, nil
}

func (c Constraint) String() string { return c.text }

// Match reports whether v satisfies the constraint.
func (c Constraint) Match(v Version) bool {
	for _, all := range c.any {
		ok := true
		for _, cl := range all {
			if !cl.match(v) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func (cl clause) match(v Version) bool {
	cmp := v.Compare(cl.v)
	switch cl.op {
	case "=":
		return prefixEqual(v, cl.v)
	case "!=":
		return !prefixEqual(v, cl.v)
	case ">=":
		return cmp >= 0
	case ">":
		// ">7" means after every 7.x, like "<8" means before 8.0.0.
		return cmp > 0 && !prefixEqual(v, cl.v)
	case "<=":
		return cmp <= 0 || prefixEqual(v, cl.v)
	case "<":
		return cmp < 0
	}
	return false
}

// prefixEqual compares only as many parts as the constraint version gave.
func prefixEqual(v, want Version) bool {
	got := []int{v.Major, v.Minor, v.Patch}
	exp := []int{want.Major, want.Minor, want.Patch}
	for i := 0; i < want.parts; i++ {
		if got[i] != exp[i] {
			return false
		}
	}
	return true
}
