package rubyjson

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// Float renders as Ruby's Float#to_s, which is what Rails puts in JSON:
// the shortest text that reads back as the same float, always with a
// decimal point ("5.0", "0.5"), and the exponent form ("1.0e-05",
// "1.2e+16") below 1e-4 and from 1e16 on. NaN and the infinities render as
// null in JSON, as Rails' Float#as_json makes them nil.
type Float float64

// MarshalJSON renders f as Ruby's Float#to_s, or null when not finite.
func (f Float) MarshalJSON() ([]byte, error) { return marshal(float64(f), true), nil }

// String is the text Ruby interpolates for f ("after 5.0 seconds"). Not
// finite values print as Go prints them (NaN, +Inf, -Inf), not as Ruby's
// NaN, Infinity, -Infinity: ttl/config_test.go pins "-Inf" in messages.
func (f Float) String() string {
	v := float64(f)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
	return rubyFloat(v, true)
}

// PlainFloat is a Float that never takes the exponent form for large
// values: from 1e16 on it prints every digit and ".0"
// ("1000000000000000000000.0" where Ruby prints "1.0e+21"). The health
// endpoints' durations, ages, percentages and response times use it, and
// exporters' TestJSONFloat pins that rendering; those values never come
// near 1e16, so below it PlainFloat and Float agree, exponent form for tiny
// values included.
type PlainFloat float64

// MarshalJSON renders f as Float does below 1e16 and in full above, or
// null when not finite.
func (f PlainFloat) MarshalJSON() ([]byte, error) { return marshal(float64(f), false), nil }

// marshal is the JSON of v: null when not finite, else Ruby's text, with
// the exponent form for large values or not.
func marshal(v float64, bigExponent bool) []byte {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return []byte("null")
	}
	return []byte(rubyFloat(v, bigExponent))
}

// Seconds is d in seconds rounded to the microsecond, as Tasker reports
// durations and ages.
func Seconds(d time.Duration) PlainFloat { return PlainFloat(Round(d.Seconds(), 6)) }

// Round rounds x to places decimals, half away from zero, as Ruby's
// Float#round does. It scales by a power of ten in float64, as Ruby does
// for the magnitudes we round (percentages, milliseconds, seconds); Ruby's
// extra correction for products that land just off a half is not copied.
func Round(x float64, places int) float64 {
	p := math.Pow(10, float64(places))
	return math.Round(x*p) / p
}

// rubyFloat formats a finite f like Ruby's Float#to_s (flo_to_s in Ruby's
// numeric.c): shortest round-trip digits, scientific notation below 1e-4
// and, when bigExponent, from 1e16 on; always a decimal point.
func rubyFloat(f float64, bigExponent bool) string {
	abs := math.Abs(f)
	if abs != 0 && (abs < 1e-4 || bigExponent && abs >= 1e16) {
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
