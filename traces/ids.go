package traces

import (
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/binary"

	"go.opentelemetry.io/otel/trace"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// A task's trace id and every span id in it are hashes of the task's
// database identity, so exporting the same task again (after a restart, by
// another replica, after a failed export) yields the same spans in the same
// trace instead of a second trace. SHA-256 also spreads sequential task ids
// uniformly over the id space, which ratio sampling relies on: it looks at
// the low 8 bytes. tasker-core's UUIDv7 keys share their leading bytes
// within a millisecond; hashing spreads them too.

// TaskTraceID is the trace id of a task's trace. salt separates Tasker
// databases that share a tracing backend. The hash is of the key as
// engine.ID.String prints it: decimal for a Rails key, which keeps the ids
// of earlier versions, and the canonical UUID for a tasker-core key.
func TaskTraceID(salt string, taskID engine.ID) trace.TraceID {
	h := sha256.New()
	h.Write([]byte("tasker.task\x00"))
	h.Write([]byte(salt))
	h.Write([]byte{0})
	h.Write([]byte(taskID.String()))
	var id trace.TraceID
	copy(id[:], h.Sum(nil))
	if !id.IsValid() {
		id[0] = 1 // all zero is invalid; 2^-128, but cheap to rule out
	}
	return id
}

// spanIDFor derives a span id inside a trace from a kind and keys (a step
// id, a transition's sort_key on Rails or key on core). A number is
// hashed as 8 big-endian bytes, as ids always were; a UUID as its 16.
func spanIDFor(traceID trace.TraceID, kind string, keys ...engine.ID) trace.SpanID {
	h := sha256.New()
	h.Write(traceID[:])
	h.Write([]byte(kind))
	var buf [8]byte
	for _, k := range keys {
		if k.IsUUID() {
			u := k.UUID()
			h.Write(u[:])
			continue
		}
		binary.BigEndian.PutUint64(buf[:], uint64(k.Int()))
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
