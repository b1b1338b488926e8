package analytics

import (
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// Properties every parser shares: it never panics; whatever it accepts is
// valid UTF-8 without control characters and within its cap; whatever it
// refuses is a *ParamError whose message stays short, whatever the input's
// size (issue 10: 400s echoed up to 64 KB). The seed corpus is in
// testdata/fuzz/<FuzzName>/; CI runs each for a few seconds.

// maxMessage bounds a refusal's message: a parameter name, a reason, and
// an Echo (MaxEcho bytes, each escaped to at most 10 bytes by strconv.Quote).
const maxMessage = 160 + 10*MaxEcho

func checkRefusal(t *testing.T, err error) {
	t.Helper()
	var pe *ParamError
	if !errors.As(err, &pe) {
		t.Fatalf("refusal is not a *ParamError: %T %v", err, err)
	}
	if n := len(err.Error()); n > maxMessage {
		t.Fatalf("refusal message of %d bytes: %.200q…", n, err.Error())
	}
	if !utf8.ValidString(err.Error()) {
		t.Fatalf("refusal message is not valid UTF-8: %q", err.Error())
	}
}

func checkAccepted(t *testing.T, param, v string, limit int) {
	t.Helper()
	if !utf8.ValidString(v) || strings.ContainsFunc(v, unicode.IsControl) || utf8.RuneCountInString(v) > limit {
		t.Fatalf("%s accepted %q", param, v)
	}
}

func FuzzParseBottleneckQuery(f *testing.F) {
	f.Add("", "", "", "")
	f.Add("pay", "charge", "1.0.0", "12")
	f.Add("\x00", "", "", "")
	f.Add("", "\xff\xfe", "", "24")
	f.Add("", "", "", " 8760 ")
	f.Add(strings.Repeat("é", 65), "", "", "")
	f.Fuzz(func(t *testing.T, namespace, name, version, period string) {
		q, err := ParseBottleneckQuery(namespace, name, version, period)
		if err != nil {
			checkRefusal(t, err)
			return
		}
		checkAccepted(t, "namespace", q.Scope.Namespace, maxNameLength)
		checkAccepted(t, "name", q.Scope.Name, maxNameLength)
		checkAccepted(t, "version", q.Scope.Version, maxVersionLength)
		if q.PeriodHours < 1 || q.PeriodHours > MaxPeriodHours {
			t.Fatalf("period %d accepted", q.PeriodHours)
		}
		if _, err := url.ParseQuery(q.Params()); err != nil {
			t.Fatalf("cache key %q does not parse: %v", q.Params(), err)
		}
	})
}

func FuzzParseSince(f *testing.F) {
	f.Add("")
	f.Add("2025-06-18T14:30:00.1234567+00:00")
	f.Add("2025-06-18T14:30:00Z\x00")
	f.Add("yesterday")
	f.Add("2024-06-18T15:30:00-23:59")
	now := time.Date(2025, 6, 18, 15, 30, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, raw string) {
		s, err := ParseSince(raw, now)
		if err != nil {
			checkRefusal(t, err)
			return
		}
		if s == nil {
			if strings.TrimSpace(raw) != "" {
				t.Fatalf("%q read as no since", raw)
			}
			return
		}
		checkAccepted(t, "since", raw, maxSinceLength)
		if s.After(now) || now.Sub(*s) > MaxPeriodHours*time.Hour || s.Location() != time.UTC || s.Nanosecond()%1000 != 0 {
			t.Fatalf("since %q accepted as %v", raw, s)
		}
	})
}

func FuzzParseTaskID(f *testing.F) {
	f.Add("1")
	f.Add("0")
	f.Add("-1")
	f.Add("+7")
	f.Add("9223372036854775808")
	f.Add("1\x00")
	f.Fuzz(func(t *testing.T, raw string) {
		id, err := ParseTaskID(raw)
		if err != nil {
			checkRefusal(t, err)
			return
		}
		checkAccepted(t, "id", raw, maxIDLength)
		if id < 1 {
			t.Fatalf("%q accepted as %d", raw, id)
		}
	})
}

func FuzzParseTaskIDs(f *testing.F) {
	f.Add("3, 1,3,2", 3)
	f.Add("", 50)
	f.Add("1,,2", 50)
	f.Add("1,2,3,4", 3)
	f.Add(strings.Repeat("1,", 200)+"1", 50)
	f.Add("1\x00,2", 50)
	f.Fuzz(func(t *testing.T, raw string, limit int) {
		if limit < 1 || limit > 1000 {
			return // the configuration allows 1 to 1000
		}
		ids, err := ParseTaskIDs(raw, limit)
		if err != nil {
			checkRefusal(t, err)
			return
		}
		if len(ids) == 0 || len(ids) > limit || !slices.IsSorted(ids) || len(slices.Compact(slices.Clone(ids))) != len(ids) || ids[0] < 1 {
			t.Fatalf("%q (limit %d) accepted as %v", raw, limit, ids)
		}
		if len(raw) > idListBytesPerID*limit {
			t.Fatalf("%d bytes accepted for %d ids", len(raw), limit)
		}
	})
}

func FuzzParseHandlerParams(f *testing.F) {
	f.Add("pay", "charge", "latest")
	f.Add("pay", "", "")
	f.Add("\x00", "charge", "")
	f.Add("pay", "ch\u0085arge", "1.0.0")
	f.Add("pay", "charge", "12345678901234567")
	f.Fuzz(func(t *testing.T, namespace, name, version string) {
		h, err := ParseHandlerParams(namespace, name, version)
		if err != nil {
			checkRefusal(t, err)
			return
		}
		if h != (HandlerParams{namespace, name, version}) {
			t.Fatalf("accepted as %+v", h)
		}
		checkAccepted(t, "namespace", namespace, maxNameLength)
		checkAccepted(t, "name", name, maxNameLength)
		checkAccepted(t, "version", version, maxVersionLength)
	})
}

// FuzzParseQuery: a query string is parsed strictly, and a parameter of
// the routes is read only when given once.
func FuzzParseQuery(f *testing.F) {
	f.Add("period=12&namespace=pay")
	f.Add("period=1&period=2")
	f.Add("namespace=%00")
	f.Add("namespace=%zz")
	f.Add("a=1;b=2")
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := ParseQuery(raw)
		if err != nil {
			checkRefusal(t, err)
			return
		}
		for _, name := range []string{"ids", "since", "namespace", "name", "version", "period"} {
			values := q[name]
			v, err := QueryValue(q, name)
			switch {
			case len(values) > 1:
				if err == nil {
					t.Fatalf("%s given %d times accepted", name, len(values))
				}
				checkRefusal(t, err)
			case len(values) == 0:
				if err != nil || v != "" {
					t.Fatalf("absent %s read as %q, %v", name, v, err)
				}
			case err != nil || v != values[0]:
				t.Fatalf("%s = %q read as %q, %v", name, values[0], v, err)
			}
		}
	})
}

func TestEcho(t *testing.T) {
	long := strings.Repeat("a", MaxEcho-1) + "é" + strings.Repeat("b", 1000)
	for _, tc := range []struct{ in, want string }{
		{"abc", `"abc"`},
		{"\x00", `"\x00"`},
		{"\xff", `"\xff"`},
		// The cut never splits a character: é straddles the limit.
		{long, `"` + strings.Repeat("a", MaxEcho-1) + `"…`},
	} {
		if got := Echo(tc.in); got != tc.want {
			t.Errorf("Echo(%.20q…) = %.120s, want %.120s", tc.in, got, tc.want)
		}
	}
}

func TestParamRefusals(t *testing.T) {
	huge := strings.Repeat("x", 64<<10)
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"nul namespace", second(ParseBottleneckQuery("\x00", "", "", "")), `namespace: must not contain control characters, got "\x00"`},
		{"nul name", second(ParseBottleneckQuery("", "a\x00", "", "")), `name: must not contain control characters`},
		{"invalid UTF-8", second(ParseBottleneckQuery("", "", "\xff", "")), `version: must be valid UTF-8`},
		{"long namespace", second(ParseBottleneckQuery(huge, "", "", "")), `namespace: must be at most 64 characters, got 65536`},
		{"huge period", second(ParseBottleneckQuery("", "", "", huge)), `…`},
		{"huge since", second(ParseSince(huge, time.Now())), `since: must be at most 64 characters`},
		{"since with NUL", second(ParseSince("2025-06-18T14:30:00Z\x00", time.Now())), `since: must not contain control characters`},
		{"huge id", second(ParseTaskID(huge)), `id: must be a positive integer, got "xxx`},
		{"huge ids", second(ParseTaskIDs(huge, 50)), `ids: must be at most 1200 bytes for 50 task ids, got 65536`},
		{"handler", second(ParseHandlerParams("pay", "\x7f", "")), `name: must not contain control characters`},
		{"repeated", second(QueryValue(url.Values{"period": {"1", "2"}}, "period")), `period: given 2 times`},
		{"bad escape", second(ParseQuery("namespace=%zz")), `query: invalid URL escape "%zz"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
				t.Errorf("got %v, want %s", tc.err, tc.want)
			}
			checkRefusal(t, tc.err)
		})
	}
}

func second[T any](_ T, err error) error { return err }
