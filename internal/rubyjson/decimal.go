package rubyjson

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Decimal is a PostgreSQL numeric carried as its exact text. Tasker's Ruby
// wrappers turn these values into Floats, which Rails renders in the
// shortest form with at least one decimal ("50.0", "180.003"); Decimal
// renders the same text without a detour through float64, so rounding done
// by PostgreSQL survives byte for byte (docs/analytics.md, "Exact
// decimals"). The empty Decimal renders as null.
type Decimal string

// MarshalJSON renders d as Ruby's Float#to_s does for the same value.
// PostgreSQL's NaN and ±Infinity numerics render as null, as Float's do:
// JSON has no text for them.
func (d Decimal) MarshalJSON() ([]byte, error) {
	if f := d.Float(); d == "" || math.IsNaN(f) || math.IsInf(f, 0) {
		return []byte("null"), nil
	}
	return []byte(d.Ruby()), nil
}

// UnmarshalJSON accepts a JSON number or a string holding one, as the
// analytics SQL emits numerics inside json_build_object as text to keep
// them exact.
func (d *Decimal) UnmarshalJSON(b []byte) error {
	s := string(b)
	if s == "null" {
		*d = ""
		return nil
	}
	if unq, err := strconv.Unquote(s); err == nil {
		s = unq
	}
	if _, err := strconv.ParseFloat(s, 64); err != nil {
		return fmt.Errorf("decimal %q: %w", s, err)
	}
	*d = Decimal(s)
	return nil
}

// Float is d as a float64, for gauges and comparisons.
func (d Decimal) Float() float64 {
	f, _ := strconv.ParseFloat(string(d), 64)
	return f
}

// Ruby is the text Ruby prints for the Float nearest to d. Plain decimals
// with up to 15 significant digits print as themselves with trailing zeros
// dropped (keeping one); anything else goes through float64 and Ruby's
// exponent rules, which only matter for values our queries never produce.
func (d Decimal) Ruby() string {
	s := strings.TrimSpace(string(d))
	neg := strings.HasPrefix(s, "-")
	digits := strings.TrimPrefix(s, "-")
	intPart, frac, _ := strings.Cut(digits, ".")
	frac = strings.TrimRight(frac, "0")
	intPart = strings.TrimLeft(intPart, "0")
	sig := len(intPart) + len(frac)
	if intPart == "" {
		sig = len(strings.TrimLeft(frac, "0"))
	}
	plain := !strings.ContainsAny(digits, "eE") && sig <= 15 && len(intPart) <= 16 &&
		(intPart != "" || frac == "" || len(frac)-len(strings.TrimLeft(frac, "0")) < 4)
	if !plain {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return "null"
		}
		return rubyFloat(f, true)
	}
	if intPart == "" {
		intPart = "0"
	}
	if frac == "" {
		frac = "0"
	}
	if neg && (intPart != "0" || frac != "0") {
		return "-" + intPart + "." + frac
	}
	return intPart + "." + frac
}
