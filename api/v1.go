package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/tasker-systems/tasker-sidecar/analytics"
	"github.com/tasker-systems/tasker-sidecar/ttl"
)

// tasker-core's analytics API, drop-in (docs/endpoints.md#tasker-cores-api-v1):
// the paths, parameters, bodies and error answers of tasker-core's
// crates/tasker-orchestration/src/web/handlers/analytics.rs, served only
// while the attached database is tasker-core's.
const (
	PathV1Performance = "/v1/analytics/performance"
	PathV1Bottlenecks = "/v1/analytics/bottlenecks"
)

// The handlers' defaults (hours 24; limit 10, min_executions 5).
const (
	v1DefaultHours         = 24
	v1DefaultLimit         = 10
	v1DefaultMinExecutions = 5
)

// v1Error is tasker-core's ApiError body (crates/tasker-shared/src/types/web.rs).
type v1Error struct {
	Error v1ErrorDetail `json:"error"`
}

type v1ErrorDetail struct {
	Code              string `json:"code"`
	Message           string `json:"message"`
	RetryAfterSeconds *int   `json:"retry_after_seconds,omitempty"`
}

func (a *analyticsAPI) mountV1(r *gin.Engine) {
	r.GET(PathV1Performance, noCache, a.v1Performance)
	r.GET(PathV1Bottlenecks, noCache, a.v1Bottlenecks)
}

// v1Param is one query parameter of tasker-core's query structs
// (MetricsQuery, BottleneckQuery): an Option of an integer type.
type v1Param struct {
	name     string
	unsigned bool // u32, else i32
	set      bool
	value    int64
}

// parseV1Query reads raw as axum's Query extractor does (form_urlencoded,
// serde_urlencoded and serde_path_to_error): pairs split on '&', '+' is a
// space, bad percent escapes are kept as written, unknown names are
// ignored, and the first failure in query order ends the parse. Its
// message is the body of axum's 400 ("Failed to deserialize query string:"
// is added by the caller).
func parseV1Query(raw string, params ...*v1Param) error {
	for _, pair := range strings.Split(raw, "&") {
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		name, value := formDecode(k), formDecode(v)
		for _, p := range params {
			if p.name != name {
				continue
			}
			if p.set {
				return errors.New("duplicate field `" + p.name + "`")
			}
			n, err := parseRustInt(value, p.unsigned)
			if err != nil {
				return errors.New(p.name + ": " + err.Error())
			}
			p.set, p.value = true, n
		}
	}
	return nil
}

// parseRustInt is Rust's u32::from_str or i32::from_str: an optional sign
// ('+', or '-' for signed types) and ASCII digits, with Rust's error texts.
func parseRustInt(s string, unsigned bool) (int64, error) {
	if s == "" {
		return 0, errors.New("cannot parse integer from empty string")
	}
	neg := false
	digits := s
	switch s[0] {
	case '+':
		digits = s[1:]
	case '-':
		if !unsigned {
			neg, digits = true, s[1:]
		}
	}
	if digits == "" {
		return 0, errors.New("invalid digit found in string")
	}
	lo, hi := int64(-1<<31), int64(1<<31-1)
	if unsigned {
		lo, hi = 0, 1<<32-1
	}
	var n int64
	for i := 0; i < len(digits); i++ {
		c := digits[i]
		if c < '0' || c > '9' {
			return 0, errors.New("invalid digit found in string")
		}
		d := int64(c - '0')
		if neg {
			n = n*10 - d
			if n < lo {
				return 0, errors.New("number too small to fit in target type")
			}
		} else {
			n = n*10 + d
			if n > hi {
				return 0, errors.New("number too large to fit in target type")
			}
		}
	}
	return n, nil
}

// formDecode is form_urlencoded's lenient decoding: '+' is a space, a '%'
// not followed by two hex digits stays as written, and bytes that are not
// UTF-8 become U+FFFD.
func formDecode(s string) string {
	if !strings.ContainsAny(s, "+%") {
		return strings.ToValidUTF8(s, "\uFFFD")
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '+':
			b = append(b, ' ')
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			v, _ := strconv.ParseUint(s[i+1:i+3], 16, 8)
			b = append(b, byte(v))
			i += 2
		default:
			b = append(b, c)
		}
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// v1Rejected answers a query string axum's Query extractor rejects: 400,
// text/plain, as axum's FailedToDeserializeQueryString renders.
func v1Rejected(c *gin.Context, err error) {
	c.Data(http.StatusBadRequest, "text/plain; charset=utf-8", []byte("Failed to deserialize query string: "+err.Error()))
}

func (a *analyticsAPI) v1Performance(c *gin.Context) {
	hours := &v1Param{name: "hours", unsigned: true}
	if err := parseV1Query(c.Request.URL.RawQuery, hours); err != nil {
		v1Rejected(c, err)
		return
	}
	h := uint32(v1DefaultHours)
	if hours.set {
		h = uint32(hours.value)
	}
	var opts []ttl.Option
	if h != v1DefaultHours {
		// A client can name 4 billion windows: only the default, which
		// tasker-core's clients ask for, is shared between replicas.
		opts = append(opts, ttl.LocalOnly())
	}
	params := url.Values{"api": {"v1"}, "hours": {strconv.FormatUint(uint64(h), 10)}}.Encode()
	a.serveV1(c, ttl.ResourcePerformance, params, func(ctx context.Context) (any, error) {
		return a.svc.CorePerformanceMetrics(ctx, h)
	}, opts...)
}

func (a *analyticsAPI) v1Bottlenecks(c *gin.Context) {
	limit := &v1Param{name: "limit"}
	minExec := &v1Param{name: "min_executions"}
	if err := parseV1Query(c.Request.URL.RawQuery, limit, minExec); err != nil {
		v1Rejected(c, err)
		return
	}
	l, m := int32(v1DefaultLimit), int32(v1DefaultMinExecutions)
	if limit.set {
		l = int32(limit.value)
	}
	if minExec.set {
		m = int32(minExec.value)
	}
	var opts []ttl.Option
	if l != v1DefaultLimit || m != v1DefaultMinExecutions {
		opts = append(opts, ttl.LocalOnly())
	}
	params := url.Values{"api": {"v1"}, "limit": {strconv.Itoa(int(l))}, "min_executions": {strconv.Itoa(int(m))}}.Encode()
	a.serveV1(c, ttl.ResourceBottlenecks, params, func(ctx context.Context) (any, error) {
		return a.svc.CoreBottleneckAnalysis(ctx, l, m)
	}, opts...)
}

// serveV1 answers through the coordinated cache with the bare body, as
// tasker-core does (no cache_info: its shape has none); how the cache
// served it goes in X-Cache-* headers.
func (a *analyticsAPI) serveV1(c *gin.Context, resource, params string, compute func(ctx context.Context) (any, error), opts ...ttl.Option) {
	body, info, err := a.cache.Get(c.Request.Context(), resource, params, func(ctx context.Context) ([]byte, error) {
		v, err := compute(ctx)
		if err != nil {
			return nil, err
		}
		return json.Marshal(v)
	}, opts...)
	if err != nil {
		a.failV1(c, err)
		return
	}
	c.Header("X-Cache", map[bool]string{true: "hit", false: "miss"}[info.Cached])
	c.Header("X-Cache-Age-Seconds", strconv.FormatFloat(info.AgeSeconds, 'f', 3, 64))
	c.Data(http.StatusOK, "application/json", body)
}

// failV1 answers a failed /v1 request in tasker-core's ApiError shapes:
// 404 NOT_FOUND off tasker-core, 400 BAD_REQUEST for a parameter the
// database cannot take, 503 BACKPRESSURE with Retry-After when the sidecar
// is overloaded or the request's deadline passed, and 500 DATABASE_ERROR
// when the computation failed (tasker-core's answer to a failed query).
func (a *analyticsAPI) failV1(c *gin.Context, err error) {
	ctxErr := c.Request.Context().Err()
	if errors.Is(ctxErr, context.Canceled) {
		a.log.Debug("analytics request abandoned by its client", "route", c.FullPath(), "err", err)
		c.AbortWithStatus(StatusClientClosedRequest)
		return
	}
	var pe *analytics.ParamError
	switch {
	case errors.Is(err, analytics.ErrNotCore):
		c.JSON(http.StatusNotFound, v1Error{v1ErrorDetail{Code: "NOT_FOUND", Message: err.Error()}})
	case errors.As(err, &pe):
		c.JSON(http.StatusBadRequest, v1Error{v1ErrorDetail{Code: "BAD_REQUEST", Message: pe.Error()}})
	case errors.Is(err, ttl.ErrOverloaded) || ctxErr != nil:
		secs := retryAfterSeconds(err)
		c.Header("Retry-After", strconv.Itoa(secs))
		a.log.Debug("analytics request turned away", "route", c.FullPath(), "err", err)
		c.JSON(http.StatusServiceUnavailable, v1Error{v1ErrorDetail{Code: "BACKPRESSURE",
			Message: "Service under backpressure: " + errorText(err), RetryAfterSeconds: &secs}})
	default:
		a.log.Warn("analytics request failed", "route", c.FullPath(), "err", err, "class", errorClass(err))
		c.JSON(http.StatusInternalServerError, v1Error{v1ErrorDetail{Code: "DATABASE_ERROR",
			Message: "Operation failed: " + errorText(err)}})
	}
}
