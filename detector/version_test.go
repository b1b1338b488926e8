package detector

import "testing"

func TestParseVersion(t *testing.T) {
	tests := []struct {
		in   string
		want Version
		ok   bool
	}{
		{"7.0.15", V(7, 0, 15), true},
		{"1.6.18", V(1, 6, 18), true},
		{"df-v1.37.0", V(1, 37, 0), true},
		{"v7.2.4", V(7, 2, 4), true},
		{"8.1.0-rc1", V(8, 1, 0), true},
		{"7.2", Version{7, 2, 0, 2}, true},
		{"255.255.255", V(255, 255, 255), true},
		{"", Version{}, false},
		{"unknown", Version{}, false},
	}
	for _, tt := range tests {
		got, ok := ParseVersion(tt.in)
		if ok != tt.ok || (ok && got.Compare(tt.want) != 0) {
			t.Errorf("ParseVersion(%q) = %v %v, want %v %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestConstraint(t *testing.T) {
	tests := []struct {
		constraint string
		version    string
		want       bool
	}{
		{">=7.0 <8", "7.0.15", true},
		{">=7.0 <8", "8.0.0", false},
		{">=7.0 <8", "6.2.14", false},
		{">=7.0, <8", "7.4.1", true},
		{">= 7.0", "7.0.0", true},
		{"7.2", "7.2.9", true},
		{"7.2", "7.3.0", false},
		{"7", "7.9.9", true},
		{"=1.6.18", "1.6.18", true},
		{"==1.6.18", "1.6.19", false},
		{"!=7.0", "7.0.5", false},
		{"!=7.0", "7.1.0", true},
		{">7", "7.9.0", false},
		{">7", "8.0.0", true},
		{"<=7.2", "7.2.5", true},
		{"<=7.2", "7.3.0", false},
		{"<1.6 || >=1.6.27", "1.6.18", false},
		{"<1.6 || >=1.6.27", "1.6.27", true},
		{"<1.6 || >=1.6.27", "1.5.22", true},
	}
	for _, tt := range tests {
		c, err := ParseConstraint(tt.constraint)
		if err != nil {
			t.Fatalf("ParseConstraint(%q): %v", tt.constraint, err)
		}
		v, _ := ParseVersion(tt.version)
		if got := c.Match(v); got != tt.want {
			t.Errorf("%q.Match(%s) = %v, want %v", tt.constraint, tt.version, got, tt.want)
		}
	}
	for _, bad := range []string{"", ">=", ">=seven", "7.x", "~7.0", ">=7 ||", "=>7"} {
		if _, err := ParseConstraint(bad); err == nil {
			t.Errorf("ParseConstraint(%q) accepted", bad)
		}
	}
}
