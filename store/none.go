package store

import (
	"context"
	"time"
)

// None is the store for deployments without a cache (none://), like Rails'
// NullStore: writes succeed and are thrown away, reads always miss. It
// deliberately implements none of the coordination interfaces: "you got the
// lock" from a store that remembers nothing would make every replica a
// winner.
type None struct{}

func (None) Kind() string    { return KindNone }
func (None) Address() string { return "none" }
func (None) URL() string     { return "none://" }

func (None) Get(ctx context.Context, _ string) ([]byte, bool, error) { return nil, false, ctx.Err() }

func (None) Set(ctx context.Context, _ string, _ []byte, _ time.Duration) error { return ctx.Err() }

func (None) Delete(ctx context.Context, _ string) error { return ctx.Err() }

func (None) Ping(ctx context.Context) error { return ctx.Err() }

func (None) Close() error { return nil }
