package traces

import (
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"strconv"

	"go.opentelemetry.io/otel/trace"
)

// A task's trace id and every span id in it are hashes of the task's
// database identity, so exporting the same task again (after a restart, by
// another replica, after a failed export) yields the same spans in the same
// trace instead of a second trace. SHA-256 also spreads sequential task ids
// uniformly over the id space, which ratio sampling relies on: it looks at
// the low 8 bytes.

// TaskTraceID is the trace id of a task's trace. salt separates Tasker
// databases that share a tracing backend.
func TaskTraceID(salt string, taskID int64) trace.TraceID {
	h := sha256.New()
	h.Write([]byte("tasker.task\x00"))
	h.Write([]byte(salt))
	h.Write([]byte{0})
	h.Write(strconv.AppendInt(nil, taskID, 10))
	var id trace.TraceID
	copy(id[:], h.Sum(nil))
	if !id.IsValid() {
		id[0] = 1 // all zero is invalid; 2^-128, but cheap to rule out
	}
	return id
}

// spanIDFor derives a span id inside a trace from a kind and numbers (a
// step id, a transition's sort_key).
func spanIDFor(traceID trace.TraceID, kind string, nums ...int64) trace.SpanID {
	h := sha256.New()
	h.Write(traceID[:])
	h.Write([]byte(kind))
	var buf [8]byte
	for _, n := range nums {
		binary.BigEndian.PutUint64(buf[:], uint64(n))
		h.Write(buf[:])
	}
	var id trace.SpanID
	copy(id[:], h.Sum(nil))
	if !id.IsValid() {
		id[0] = 1
	}
	return id
}

// fixedIDs carries the ids the next span must get through the context, to
// idGenerator.
type fixedIDs struct {
	trace trace.TraceID
	span  trace.SpanID
}

type fixedIDsKey struct{}

func withIDs(ctx context.Context, traceID trace.TraceID, spanID trace.SpanID) context.Context {
	return context.WithValue(ctx, fixedIDsKey{}, fixedIDs{traceID, spanID})
}

// idGenerator makes the SDK use the ids in the context. Spans started
// without them (none in this package) get random ids.
type idGenerator struct{}

func (idGenerator) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	if ids, ok := ctx.Value(fixedIDsKey{}).(fixedIDs); ok {
		return ids.trace, ids.span
	}
	var t trace.TraceID
	var s trace.SpanID
	_, _ = crand.Read(t[:])
	_, _ = crand.Read(s[:])
	return t, s
}

func (idGenerator) NewSpanID(ctx context.Context, _ trace.TraceID) trace.SpanID {
	if ids, ok := ctx.Value(fixedIDsKey{}).(fixedIDs); ok {
		return ids.span
	}
	var s trace.SpanID
	_, _ = crand.Read(s[:])
	return s
}
