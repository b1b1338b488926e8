package analytics

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// Decimal, Time and Float are internal/rubyjson's, tested there.

func TestPercent(t *testing.T) {
	for _, tc := range []struct {
		part, whole int64
		want        Decimal
	}{{1, 3, "33.33"}, {2, 3, "66.67"}, {1, 8, "12.50"}, {0, 5, "0.00"}, {5, 5, "100.00"}, {0, 0, "0.0"}, {1, 200000, "0.00"}, {1, 40000, "0.00"}, {1, 20000, "0.01"}} {
		if got := percent(tc.part, tc.whole, 2); got != tc.want {
			t.Errorf("percent(%d, %d) = %s, want %s", tc.part, tc.whole, got, tc.want)
		}
	}
}

func TestParams(t *testing.T) {
	ok := func(q BottleneckQuery, err error) BottleneckQuery {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	if q := ok(ParseBottleneckQuery("", " ", "", "")); q.PeriodHours != 24 || q.Scope != (Scope{}) {
		t.Errorf("defaults %+v", q)
	}
	if q := ok(ParseBottleneckQuery("pay", "charge", "1.0.0", "12")); q.PeriodHours != 12 || q.Params() != "name=charge&namespace=pay&period=12&version=1.0.0" {
		t.Errorf("%+v %s", q, q.Params())
	}
	for _, bad := range [][4]string{
		{"", "", "", "abc"}, {"", "", "", "0"}, {"", "", "", "-3"}, {"", "", "", "8761"}, {"", "", "", "1.5"},
		{string(make([]byte, 65)), "", "", ""}, {"", "", "12345678901234567", ""}, {"\xff", "", "", ""},
	} {
		_, err := ParseBottleneckQuery(bad[0], bad[1], bad[2], bad[3])
		var pe *ParamError
		if !errors.As(err, &pe) {
			t.Errorf("%q accepted", bad)
		}
	}
	now := time.Date(2025, 6, 18, 15, 30, 0, 0, time.UTC)
	if s, err := ParseSince("2025-06-18T14:30:00.1234567+00:00", now); err != nil || !s.Equal(time.Date(2025, 6, 18, 14, 30, 0, 123456000, time.UTC)) {
		t.Errorf("since %v %v", s, err)
	}
	if s, err := ParseSince("", now); s != nil || err != nil {
		t.Errorf("empty since %v %v", s, err)
	}
	for _, bad := range []string{"yesterday", "2025-06-18", "2025-06-19T00:00:00Z", "2000-01-01T00:00:00Z"} {
		if _, err := ParseSince(bad, now); err == nil {
			t.Errorf("since %q accepted", bad)
		}
	}
	if ids, err := ParseTaskIDs("3, 1,3,2", 3); err != nil || !slices.Equal(ids, []int64{1, 2, 3}) {
		t.Errorf("ids %v %v", ids, err)
	}
	for _, bad := range []string{"", "1,x", "0", "1,2,3,4", "-1", "99999999999999999999"} {
		if _, err := ParseTaskIDs(bad, 3); err == nil {
			t.Errorf("ids %q accepted", bad)
		}
	}
}
