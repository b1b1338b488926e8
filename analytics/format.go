package analytics

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Decimal is a PostgreSQL numeric carried as its exact text. Tasker's Ruby
// wrappers turn these values into Floats, which Rails renders in the
// shortest form with at least one decimal ("50.0", "180.003"); Decimal
// renders the same text without a detour through float64, so rounding done
// by PostgreSQL survives byte for byte. The empty Decimal renders as null.
type Decimal string

// MarshalJSON renders d as Ruby's Float#to_s does for the same value.
func (d Decimal) MarshalJSON() ([]byte, error) {
	if d == "" {
		return []byte("null"), nil
	}
	return []byte(d.Ruby()), nil
}

// UnmarshalJSON accepts a JSON number or a string holding one, as our SQL
// emits numerics inside json_build_object as text to keep them exact.
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
		return rubyFloat(f)
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

// rubyFloat formats f like Ruby's Float#to_s: shortest round-trip digits,
// scientific notation below 1e-4 and from 1e16 on.
func rubyFloat(f float64) string {
	abs := f
	if abs < 0 {
		abs = -abs
	}
	if abs != 0 && (abs < 1e-4 || abs >= 1e16) {
		s := strconv.FormatFloat(f, 'e', -1, 64)
		mant, exp, _ := strings.Cut(s, "e")
		if !strings.Contains(mant, ".") {
			mant += ".0"
		}
		sign := exp[:1]
		exp = strings.TrimLeft(exp[1:], "0")
		if len(exp) < 2 {
			exp = strings.Repeat("0", 2-len(exp)) + exp
		}
		return mant + "e" + sign + exp
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	return s
}

// Time renders as Rails renders a TimeWithZone in JSON (UTC, milliseconds),
// so clients written against Tasker parse it unchanged. The zero Time
// renders as null.
type Time time.Time

// railsLayout is ActiveSupport's JSON time format with the default 3 digits.
const railsLayout = "2006-01-02T15:04:05.000Z"

// MarshalJSON renders t in UTC with milliseconds, or null when zero.
func (t Time) MarshalJSON() ([]byte, error) {
	if time.Time(t).IsZero() {
		return []byte("null"), nil
	}
	return []byte(`"` + time.Time(t).UTC().Format(railsLayout) + `"`), nil
}

// UnmarshalJSON reads RFC 3339 text, or PostgreSQL's JSON rendering of a
// timestamp without time zone, which is naive UTC in Tasker's tables.
func (t *Time) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*t = Time{}
		return nil
	}
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return fmt.Errorf("time %s: %w", b, err)
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999"} {
		if v, err := time.Parse(layout, s); err == nil {
			*t = Time(v.UTC())
			return nil
		}
	}
	return fmt.Errorf("time %q: unknown format", s)
}

// Std returns t as a time.Time.
func (t Time) Std() time.Time { return time.Time(t) }

// timeOf converts a nullable scan target.
func timeOf(p *time.Time) Time {
	if p == nil {
		return Time{}
	}
	return Time(*p)
}

var _ json.Marshaler = Decimal("")
var _ json.Marshaler = Time{}
