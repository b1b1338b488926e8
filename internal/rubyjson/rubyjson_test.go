package rubyjson

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

// Rows marked Ruby are what Ruby 3.x prints for the same Float; the rest
// come from the tests of the copies this package replaced
// (analytics/format_test.go, exporters/health_test.go).
func TestFloat(t *testing.T) {
	for _, tc := range []struct {
		in          float64
		ruby, plain string
	}{
		{5, "5.0", "5.0"},
		{2, "2.0", "2.0"},
		{0, "0.0", "0.0"},
		{math.Copysign(0, -1), "-0.0", "-0.0"},
		{1.25, "1.25", "1.25"},
		{90.01, "90.01", "90.01"},
		{-2, "-2.0", "-2.0"},
		{0.30000000000000004, "0.30000000000000004", "0.30000000000000004"},
		{0.0001, "0.0001", "0.0001"},
		{0.00001, "1.0e-05", "1.0e-05"},
		{1.5e-7, "1.5e-07", "1.5e-07"},
		{-0.00001, "-1.0e-05", "-1.0e-05"},
		{9999999999999998, "9999999999999998.0", "9999999999999998.0"},
		{1e16, "1.0e+16", "10000000000000000.0"},
		{12345678901234567, "1.2345678901234568e+16", "12345678901234568.0"},
		{1e21, "1.0e+21", "1000000000000000000000.0"},
		{1e100, "1.0e+100", "1" + strings.Repeat("0", 100) + ".0"},
	} {
		if b, err := json.Marshal(Float(tc.in)); err != nil || string(b) != tc.ruby {
			t.Errorf("Float(%v) = %s, %v; want %s", tc.in, b, err, tc.ruby)
		}
		if s := Float(tc.in).String(); s != tc.ruby {
			t.Errorf("Float(%v).String() = %s; want %s", tc.in, s, tc.ruby)
		}
		if b, err := json.Marshal(PlainFloat(tc.in)); err != nil || string(b) != tc.plain {
			t.Errorf("PlainFloat(%v) = %s, %v; want %s", tc.in, b, err, tc.plain)
		}
	}
	for _, v := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		if b, err := json.Marshal(Float(v)); err != nil || string(b) != "null" {
			t.Errorf("Float(%v) = %s, %v", v, b, err)
		}
		if b, err := json.Marshal(PlainFloat(v)); err != nil || string(b) != "null" {
			t.Errorf("PlainFloat(%v) = %s, %v", v, b, err)
		}
	}
	for v, want := range map[float64]string{math.NaN(): "NaN", math.Inf(1): "+Inf", math.Inf(-1): "-Inf"} {
		if got := Float(v).String(); got != want {
			t.Errorf("Float(%v).String() = %s, want %s", v, got, want)
		}
	}
}

func TestRound(t *testing.T) {
	for _, tc := range []struct {
		x      float64
		places int
		want   float64
	}{
		{2.5, 0, 3}, {-2.5, 0, -3}, {0.5, 0, 1}, {1.25, 1, 1.3}, {-1.25, 1, -1.3},
		{33.333333, 1, 33.3}, {66.666666, 2, 66.67}, {0.125, 2, 0.13}, {88.5, 0, 89},
		{1.0000005, 6, 1.000001}, {5, 6, 5}, {12.344, 2, 12.34},
	} {
		if got := Round(tc.x, tc.places); got != tc.want {
			t.Errorf("Round(%v, %d) = %v, want %v", tc.x, tc.places, got, tc.want)
		}
	}
	for d, want := range map[time.Duration]string{
		5 * time.Second:              "5.0",
		1500 * time.Millisecond:      "1.5",
		1234567891 * time.Nanosecond: "1.234568",
		500 * time.Nanosecond:        "1.0e-06",
		0:                            "0.0",
	} {
		if b, _ := json.Marshal(Seconds(d)); string(b) != want {
			t.Errorf("Seconds(%v) = %s, want %s", d, b, want)
		}
	}
}

func TestDecimal(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"50.00", "50.0"},
		{"0.500", "0.5"},
		{"180.003", "180.003"},
		{"0", "0.0"},
		{"0.0", "0.0"},
		{"-0.00", "0.0"},
		{"100.00", "100.0"},
		{"255.001", "255.001"},
		{"-1.50", "-1.5"},
		{"0.0001", "0.0001"},
		{"0.00001", "1.0e-05"},
		{"12345678901234567", "1.2345678901234568e+16"},
		{"1234567890.12345", "1234567890.12345"},
		{"1.5e3", "1500.0"},
		{"", "null"},
		// PostgreSQL's non-finite numerics: JSON has no text for them.
		{"NaN", "null"},
		{"Infinity", "null"},
		{"-Infinity", "null"},
	} {
		b, err := json.Marshal(Decimal(tc.in))
		if err != nil || string(b) != tc.want {
			t.Errorf("%q: got %s (%v), want %s", tc.in, b, err, tc.want)
		}
	}
	var d Decimal
	for in, want := range map[string]Decimal{`"12.50"`: "12.50", `7`: "7", `null`: ""} {
		if err := json.Unmarshal([]byte(in), &d); err != nil || d != want {
			t.Errorf("unmarshal %s: %q %v", in, d, err)
		}
	}
	if err := json.Unmarshal([]byte(`"x"`), &d); err == nil {
		t.Error("accepted a non-number")
	}
	if f := Decimal("12.50").Float(); f != 12.5 {
		t.Errorf("Float() = %v", f)
	}
}

func TestTime(t *testing.T) {
	at := time.Date(2025, 6, 18, 15, 30, 0, 123456789, time.FixedZone("X", 3600))
	for _, tc := range []struct {
		v    any
		want string
	}{
		{Time(at), `"2025-06-18T14:30:00.123Z"`},
		{Time(time.Date(2025, 6, 18, 14, 30, 0, 0, time.UTC)), `"2025-06-18T14:30:00.000Z"`},
		{Time{}, "null"},
		{ISO8601(at), `"2025-06-18T14:30:00Z"`},
		{ISO8601{}, "null"},
	} {
		if b, err := json.Marshal(tc.v); err != nil || string(b) != tc.want {
			t.Errorf("%T %v: got %s (%v), want %s", tc.v, tc.v, b, err, tc.want)
		}
	}
	for in, want := range map[string]time.Time{
		`"2025-06-18T14:30:00.123456"`:  time.Date(2025, 6, 18, 14, 30, 0, 123456000, time.UTC),
		`"2025-06-18T14:30:00"`:         time.Date(2025, 6, 18, 14, 30, 0, 0, time.UTC),
		`"2025-06-18T15:30:00.5+01:00"`: time.Date(2025, 6, 18, 14, 30, 0, 500000000, time.UTC),
		`"2025-06-18T14:30:00.123Z"`:    time.Date(2025, 6, 18, 14, 30, 0, 123000000, time.UTC),
		`null`:                          {},
	} {
		var back Time
		if err := json.Unmarshal([]byte(in), &back); err != nil || !back.Std().Equal(want) {
			t.Errorf("unmarshal %s: %v %v", in, back.Std(), err)
		}
	}
	for _, bad := range []string{`"yesterday"`, `"2025-06-18"`, `12`} {
		var back Time
		if err := json.Unmarshal([]byte(bad), &back); err == nil {
			t.Errorf("unmarshal %s accepted", bad)
		}
	}
}
