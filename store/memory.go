package store

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// Memory is an in-process store with TTLs, safe for concurrent use. Every
// operation holds one mutex, so SetNX, Incr and the compare operations are
// trivially atomic, but only within this process: two sidecar replicas with
// memory:// share nothing.
//
// Expired items are dropped when touched and by a sweep that runs after the
// map has grown by sweepEvery items, so the map never holds much more than
// the live items plus one sweep's worth of expired ones. There is no size
// bound beyond that.
type Memory struct {
	prefix string
	now    func() time.Time

	mu         sync.Mutex
	items      map[string]memItem
	sinceSweep int
}

type memItem struct {
	val     []byte
	expires time.Time // zero: never
}

const sweepEvery = 1024

// NewMemory returns an empty in-process store.
func NewMemory(keyPrefix string) *Memory {
	return &Memory{prefix: keyPrefix, now: time.Now, items: map[string]memItem{}}
}

// Key returns the key as stored, prefix included.
func (m *Memory) Key(key string) string { return m.prefix + key }

func (m *Memory) Kind() string    { return KindMemory }
func (m *Memory) Address() string { return "in-process" }
func (m *Memory) URL() string     { return "memory://" }

// Len is the number of items held, expired ones not yet swept included.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.items)
}

// live returns the item under lock, dropping it if expired.
func (m *Memory) live(k string, now time.Time) (memItem, bool) {
	it, ok := m.items[k]
	if !ok {
		return memItem{}, false
	}
	if !it.expires.IsZero() && !now.Before(it.expires) {
		delete(m.items, k)
		return memItem{}, false
	}
	return it, true
}

func (m *Memory) put(k string, val []byte, ttl time.Duration, now time.Time) {
	it := memItem{val: bytes.Clone(val)}
	if it.val == nil {
		it.val = []byte{}
	}
	if ttl > 0 {
		it.expires = now.Add(ttl)
	}
	if _, exists := m.items[k]; !exists {
		m.sinceSweep++
	}
	m.items[k] = it
	if m.sinceSweep >= sweepEvery {
		m.sinceSweep = 0
		for key, v := range m.items {
			if !v.expires.IsZero() && !now.Before(v.expires) {
				delete(m.items, key)
			}
		}
	}
}

func (m *Memory) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	it, ok := m.live(m.prefix+key, m.now())
	if !ok {
		return nil, false, nil
	}
	return bytes.Clone(it.val), true, nil
}

func (m *Memory) Set(ctx context.Context, key string, val []byte, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.put(m.prefix+key, val, ttl, m.now())
	return nil
}

func (m *Memory) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.items, m.prefix+key)
	return nil
}

func (m *Memory) Ping(ctx context.Context) error { return ctx.Err() }

func (m *Memory) Close() error { return nil }

func (m *Memory) SetNX(ctx context.Context, key string, val []byte, ttl time.Duration) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if _, ok := m.live(m.prefix+key, now); ok {
		return false, nil
	}
	m.put(m.prefix+key, val, ttl, now)
	return true, nil
}

func (m *Memory) Incr(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	k, now := m.prefix+key, m.now()
	it, ok := m.live(k, now)
	if !ok {
		m.put(k, []byte(strconv.FormatInt(delta, 10)), ttl, now)
		return delta, nil
	}
	n, err := strconv.ParseInt(string(it.val), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("memory incr: value is not an integer")
	}
	n += delta
	it.val = []byte(strconv.FormatInt(n, 10))
	m.items[k] = it
	return n, nil
}

func (m *Memory) CompareAndSwap(ctx context.Context, key string, old, new []byte, ttl time.Duration) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	k, now := m.prefix+key, m.now()
	it, ok := m.live(k, now)
	if !ok || !bytes.Equal(it.val, old) {
		return false, nil
	}
	m.put(k, new, ttl, now)
	return true, nil
}

func (m *Memory) CompareAndDelete(ctx context.Context, key string, old []byte) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	k := m.prefix + key
	it, ok := m.live(k, m.now())
	if !ok || !bytes.Equal(it.val, old) {
		return false, nil
	}
	delete(m.items, k)
	return true, nil
}

func (m *Memory) TTL(ctx context.Context, key string) (time.Duration, bool, error) {
	if err := ctx.Err(); err != nil {
		return 0, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	it, ok := m.live(m.prefix+key, now)
	if !ok {
		return 0, false, nil
	}
	if it.expires.IsZero() {
		return NoExpiry, true, nil
	}
	return it.expires.Sub(now), true, nil
}
