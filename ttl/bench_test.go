package ttl

import (
	"context"
	"testing"
)

// BenchmarkGetHit is the hot path: a value served from the in-process level.
func BenchmarkGetHit(b *testing.B) {
	c, err := New(memoryStore(nil, ""), nil, nil, DefaultConfig(), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = c.Shutdown(context.Background()) }()
	compute := func(context.Context) ([]byte, error) { return []byte(`{"ok":true}`), nil }
	ctx := context.Background()
	if _, _, err := c.Get(ctx, ResourceStatus, "", compute); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := c.Get(ctx, ResourceStatus, "", compute); err != nil {
				b.Error(err)
			}
		}
	})
}
