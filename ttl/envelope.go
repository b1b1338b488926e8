package ttl

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"time"
)

// envelope is a value with what every replica needs to judge it without
// another round trip: when it was computed, how long it stays fresh, what it
// cost, and a digest that tells whether the next value differs.
type envelope struct {
	at     time.Time     // start of the computation: the data is at least this fresh
	ttl    time.Duration // freshness lifetime chosen by the writer
	cost   time.Duration // duration of the computation
	digest uint64        // FNV-1a of value
	value  []byte
}

// Wire form: a one-line text header, then the value as computed.
//
//	tsc1 <at unix µs> <ttl ms> <cost µs> <digest hex>\n<value>
//
// Text keeps it readable with redis-cli and memcached's get; the value is
// opaque bytes, so a non-JSON value survives too.
const envelopeMagic = "tsc1 "

var errEnvelope = errors.New("not a cache envelope")

func digestOf(v []byte) uint64 {
	h := fnv.New64a()
	_, _ = h.Write(v)
	return h.Sum64()
}

func (e *envelope) encode() []byte {
	b := make([]byte, 0, len(e.value)+64)
	b = append(b, envelopeMagic...)
	b = strconv.AppendInt(b, e.at.UnixMicro(), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.ttl.Milliseconds(), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.cost.Microseconds(), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, e.digest, 16)
	b = append(b, '\n')
	return append(b, e.value...)
}

func decodeEnvelope(raw []byte) (*envelope, error) {
	rest, ok := bytes.CutPrefix(raw, []byte(envelopeMagic))
	if !ok {
		return nil, errEnvelope
	}
	header, value, ok := bytes.Cut(rest, []byte{'\n'})
	if !ok {
		return nil, fmt.Errorf("%w: no header end", errEnvelope)
	}
	f := bytes.Fields(header)
	if len(f) != 4 {
		return nil, fmt.Errorf("%w: %d header fields", errEnvelope, len(f))
	}
	var n [3]int64
	for i := range n {
		v, err := strconv.ParseInt(string(f[i]), 10, 64)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("%w: bad header field %q", errEnvelope, f[i])
		}
		n[i] = v
	}
	dg, err := strconv.ParseUint(string(f[3]), 16, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: bad digest %q", errEnvelope, f[3])
	}
	return &envelope{
		at:     time.UnixMicro(n[0]),
		ttl:    time.Duration(n[1]) * time.Millisecond,
		cost:   time.Duration(n[2]) * time.Microsecond,
		digest: dg,
		value:  value,
	}, nil
}

// freshness of a value at a moment, from its own envelope and its policy.
type freshness int

const (
	fresh   freshness = iota // within its TTL, refresh not yet due
	due                      // within its TTL, in the refresh-ahead window
	stale                    // past its TTL, within the grace: served while one replica refreshes it
	expired                  // past the grace: served only while refreshes fail (stale-if-error)
	dead                     // past max staleness: never served
)

func (f freshness) String() string {
	return [...]string{"fresh", "due", "stale", "expired", "dead"}[f]
}

// window is how long before expiry a refresh starts: enough to recompute
// before anyone sees the value expire, never more than a tenth of the TTL so
// early refreshes waste little freshness.
func (c *Cache) window(e *envelope) time.Duration {
	w := max(time.Duration(c.cfg.RefreshAheadFactor*float64(e.cost)), c.cfg.RefreshAheadMin)
	return min(w, e.ttl/10)
}

func (c *Cache) freshness(e *envelope, p Policy, now time.Time) freshness {
	age := now.Sub(e.at)
	switch {
	case age > p.MaxStaleness:
		return dead
	case age >= e.ttl+time.Duration(c.cfg.StaleWhileRevalidate*float64(e.ttl)):
		return expired
	case age >= e.ttl:
		return stale
	case age >= e.ttl-c.window(e):
		return due
	}
	return fresh
}
