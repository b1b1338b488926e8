package coord

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tasker-systems/tasker-sidecar/store"
)

// Grant is the right to recompute one key, cluster-wide for the shared
// mechanisms, replica-wide for the others.
type Grant struct {
	// Won says whether this caller holds it.
	Won bool
	tok []byte // token written into the lock (Redis, add)
	cas string // memcached meta: CAS of the stub or lock item, the token of a checked release
	// onValue: memcached meta cold lease, held as a stub on the value key
	// itself rather than on the lock key.
	onValue bool
	// Recheck: the lease was not taken in the same step as the read, so
	// another replica may have written the value in between; read again
	// before recomputing.
	Recheck bool
}

// Mechanism is one coordination mechanism (Mechanism*), as package ttl's
// cache uses it: how values are shared and who recomputes. Keys are cache keys; the lock of
// key k is k+LockSuffix, in the same Redis Cluster slot (the hash tag is in
// k).
type Mechanism interface {
	// Name is the mechanism's name (Mechanism*).
	Name() string
	// Shared says whether values go to the shared store.
	Shared() bool
	// Get reads key. When it is absent and leaseTTL > 0, it also tries to
	// take the cold-miss lease, in the same round trip where the
	// mechanism can.
	Get(ctx context.Context, key string, leaseTTL time.Duration) ([]byte, Grant, error)
	// Gate takes the refresh lease of a key whose value exists.
	Gate(ctx context.Context, key string, ttl time.Duration) (Grant, error)
	// Put writes the value and gives the lease back.
	Put(ctx context.Context, key string, val []byte, ttl time.Duration, l Grant) error
	// Release gives the lease back without writing.
	Release(ctx context.Context, key string, l Grant) error
	// Hold keeps the lease for d more, so that after a failed refresh the
	// whole cluster waits the backoff, not only this replica.
	Hold(ctx context.Context, key string, l Grant, d time.Duration) error
	// Failed counts a failed recomputation of key for the whole cluster
	// and returns how many the cluster has had since the last value was
	// written, this one included, so that the backoff grows cluster-wide.
	// ok is false for the mechanisms without a shared gate: their backoff
	// is per replica. ttl bounds how long the count is remembered.
	Failed(ctx context.Context, key string, ttl time.Duration) (n int64, ok bool, err error)
	// Failures reads that count (0 when nothing failed since the last
	// write); ok as for Failed.
	Failures(ctx context.Context, key string) (n int64, ok bool, err error)
}

// The lock of key k is k+LockSuffix; the cluster's count of failed
// recomputations since the last write is k+FailSuffix. Both share k's hash
// tag, and are at most 69 bytes long.
const (
	LockSuffix = ":lease"
	FailSuffix = ":fail"
)

func newToken() []byte {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return []byte(hex.EncodeToString(b))
}

// For picks the coordinator of a mechanism (the detector's report names
// it), or the in-process one when the store does not offer what the
// mechanism needs (a declaration may claim more than a store type can do).
func (c *Coordinator) For(mechanism string) Mechanism {
	st := c.st
	switch mechanism {
	case MechanismRedisLua:
		if r, ok := st.(*store.Redis); ok {
			return luaCoord{failCount: failCount{r}, r: r}
		}
	case MechanismRedisCheckedRelease, MechanismMemcachedAddLeases:
		if a, ok := st.(store.Adder); ok {
			return nxCoord{failCount: failCount{st}, mech: mechanism, st: st, add: a, del: c.CompareAndDelete}
		}
	case MechanismRedisSetNX:
		if a, ok := st.(store.Adder); ok {
			// No checked release: a plain DEL could remove another
			// holder's lock, so the lock only expires.
			return nxCoord{failCount: failCount{st}, mech: mechanism, st: st, add: a}
		}
	case MechanismMemcachedMetaLeases:
		if m, ok := st.(*store.Memcached); ok {
			return metaCoord{m: m}
		}
	case MechanismSharedLocalCoalescing:
		if st.Kind() == store.KindRedis || st.Kind() == store.KindMemcached {
			return sharedCoord{st: st}
		}
	}
	return localCoord{}
}

// Local is the in-process coordinator: every lease is won, nothing is
// shared. The cache falls back to it while the shared store fails.
func Local() Mechanism { return localCoord{} }

// ---- in_process --------------------------------------------------------------

// localCoord shares nothing: every lease is won, and the replica's own
// coalescing keeps it to one computation per key.
type localCoord struct{}

func (localCoord) Name() string { return MechanismInProcess }
func (localCoord) Shared() bool { return false }
func (localCoord) Get(context.Context, string, time.Duration) ([]byte, Grant, error) {
	return nil, Grant{Won: true}, nil
}
func (localCoord) Gate(context.Context, string, time.Duration) (Grant, error) {
	return Grant{Won: true}, nil
}
func (localCoord) Put(context.Context, string, []byte, time.Duration, Grant) error { return nil }
func (localCoord) Release(context.Context, string, Grant) error                    { return nil }
func (localCoord) Hold(context.Context, string, Grant, time.Duration) error        { return nil }
func (localCoord) Failed(context.Context, string, time.Duration) (int64, bool, error) {
	return 0, false, nil
}
func (localCoord) Failures(context.Context, string) (int64, bool, error) { return 0, false, nil }

// ---- shared_values_local_coalescing -------------------------------------------

// sharedCoord shares values but has no atomic create-if-absent, so leases are
// per replica: at most one computation per replica per window.
type sharedCoord struct{ st store.Store }

func (sharedCoord) Name() string { return MechanismSharedLocalCoalescing }
func (sharedCoord) Shared() bool { return true }

func (s sharedCoord) Get(ctx context.Context, key string, leaseTTL time.Duration) ([]byte, Grant, error) {
	v, ok, err := s.st.Get(ctx, key)
	if err != nil || ok {
		return v, Grant{}, err
	}
	return nil, Grant{Won: leaseTTL > 0}, nil
}

func (sharedCoord) Gate(context.Context, string, time.Duration) (Grant, error) {
	return Grant{Won: true}, nil
}

func (s sharedCoord) Put(ctx context.Context, key string, val []byte, ttl time.Duration, _ Grant) error {
	return s.st.Set(ctx, key, val, ttl)
}
func (sharedCoord) Release(context.Context, string, Grant) error             { return nil }
func (sharedCoord) Hold(context.Context, string, Grant, time.Duration) error { return nil }

// Without a shared gate every replica retries on its own: the backoff stays
// per replica.
func (sharedCoord) Failed(context.Context, string, time.Duration) (int64, bool, error) {
	return 0, false, nil
}
func (sharedCoord) Failures(context.Context, string) (int64, bool, error) { return 0, false, nil }

// ---- the cluster's failure count, for the mechanisms with a shared gate -------

// failCount keeps the number of failed recomputations of a key since its
// last write in the shared store, with atomic increments: the replica that
// fails next backs off from the cluster's count, not from its own, so the
// whole cluster retries with one growing backoff. Every write clears it.
type failCount struct{ st store.Store }

func (f failCount) Failed(ctx context.Context, key string, ttl time.Duration) (int64, bool, error) {
	inc, ok := f.st.(store.Incrementer)
	if !ok {
		return 0, false, nil
	}
	n, err := inc.Incr(ctx, key+FailSuffix, 1, ttl)
	if err != nil {
		return 0, false, err
	}
	return n, true, nil
}

func (f failCount) Failures(ctx context.Context, key string) (int64, bool, error) {
	if _, ok := f.st.(store.Incrementer); !ok {
		return 0, false, nil
	}
	raw, found, err := f.st.Get(ctx, key+FailSuffix)
	if err != nil || !found {
		return 0, err == nil, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("failure count of %s: %w: %q", key, store.ErrProtocol, raw)
	}
	return n, true, nil
}

// clear forgets the count once a value is written.
func (f failCount) clear(ctx context.Context, key string) error {
	if _, ok := f.st.(store.Incrementer); !ok {
		return nil
	}
	return f.st.Delete(ctx, key+FailSuffix)
}

// ---- redis_set_nx, redis_set_nx_checked_release, memcached_add_leases ----------

// nxCoord takes leases with create-if-absent (SET NX PX, add) on the lock key
// and, where the store can, releases them with a token-checked delete.
type nxCoord struct {
	failCount
	mech string
	st   store.Store
	add  store.Adder
	// del is the token-checked delete; nil: locks only expire.
	del func(ctx context.Context, key string, old []byte) (bool, error)
}

func (n nxCoord) Name() string { return n.mech }
func (nxCoord) Shared() bool   { return true }

func (n nxCoord) Get(ctx context.Context, key string, leaseTTL time.Duration) ([]byte, Grant, error) {
	v, ok, err := n.st.Get(ctx, key)
	if err != nil || ok || leaseTTL <= 0 {
		return v, Grant{}, err
	}
	l, err := n.Gate(ctx, key, leaseTTL)
	return nil, l, err
}

func (n nxCoord) Gate(ctx context.Context, key string, ttl time.Duration) (Grant, error) {
	tok := newToken()
	if n.st.Kind() == store.KindMemcached {
		// Whole seconds that may end a second early (see leaseSecs).
		ttl += time.Second
	}
	won, err := n.add.SetNX(ctx, key+LockSuffix, tok, ttl)
	if err != nil {
		return Grant{}, err
	}
	return Grant{Won: won, tok: tok, Recheck: true}, nil
}

func (n nxCoord) Put(ctx context.Context, key string, val []byte, ttl time.Duration, l Grant) error {
	if err := n.st.Set(ctx, key, val, ttl); err != nil {
		return err
	}
	// The lease is given back even if the count could not be cleared.
	return errors.Join(n.clear(ctx, key), n.Release(ctx, key, l))
}

func (n nxCoord) Release(ctx context.Context, key string, l Grant) error {
	if n.del == nil || !l.Won || l.tok == nil {
		return nil
	}
	_, err := n.del(ctx, key+LockSuffix, l.tok)
	if errors.Is(err, store.ErrUnsupported) {
		// The detector chose checked release but the store lost the
		// method since: expiry still releases the lock.
		return nil
	}
	return err
}

func (n nxCoord) Hold(ctx context.Context, key string, l Grant, d time.Duration) error {
	if !l.Won || l.tok == nil {
		return nil
	}
	return n.st.Set(ctx, key+LockSuffix, l.tok, d)
}

// ---- redis_lua_scripts --------------------------------------------------------

// Lua makes the cold-miss path one round trip (read the value or take the
// lock) and the write one more (store and release, token-checked). Both keys
// are declared, as Dragonfly requires, and share a hash tag.
var (
	getOrLockScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then return {1, v} end
if ARGV[2] ~= '0' and redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
return {0}`)
	putAndReleaseScript = redis.NewScript(`
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[3])
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1`)
)

type luaCoord struct {
	failCount
	r *store.Redis
}

func (luaCoord) Name() string { return MechanismRedisLua }
func (luaCoord) Shared() bool { return true }

func (c luaCoord) Get(ctx context.Context, key string, leaseTTL time.Duration) ([]byte, Grant, error) {
	tok := newToken()
	res, err := getOrLockScript.Run(ctx, c.r.Client(), []string{c.r.Key(key), c.r.Key(key + LockSuffix)},
		tok, max(leaseTTL, 0).Milliseconds()).Slice()
	if err != nil {
		return nil, Grant{}, fmt.Errorf("redis get-or-lock script: %w", err)
	}
	if len(res) == 0 {
		return nil, Grant{}, fmt.Errorf("redis get-or-lock script: %w: empty reply", store.ErrProtocol)
	}
	code, _ := res[0].(int64)
	switch code {
	case 1:
		if len(res) < 2 {
			return nil, Grant{}, fmt.Errorf("redis get-or-lock script: %w: value missing", store.ErrProtocol)
		}
		s, _ := res[1].(string)
		return []byte(s), Grant{}, nil
	case 2:
		return nil, Grant{Won: true, tok: tok}, nil
	}
	return nil, Grant{}, nil
}

func (c luaCoord) Gate(ctx context.Context, key string, ttl time.Duration) (Grant, error) {
	tok := newToken()
	won, err := c.r.SetNX(ctx, key+LockSuffix, tok, ttl)
	if err != nil {
		return Grant{}, err
	}
	return Grant{Won: won, tok: tok, Recheck: true}, nil
}

func (c luaCoord) Put(ctx context.Context, key string, val []byte, ttl time.Duration, l Grant) error {
	tok := ""
	if l.Won {
		tok = string(l.tok)
	}
	// The write also clears the failure count, in the same round trip.
	err := putAndReleaseScript.Run(ctx, c.r.Client(), []string{c.r.Key(key), c.r.Key(key + LockSuffix), c.r.Key(key + FailSuffix)},
		val, max(ttl.Milliseconds(), 1), tok).Err()
	if err != nil {
		return fmt.Errorf("redis put-and-release script: %w", err)
	}
	return nil
}

func (c luaCoord) Release(ctx context.Context, key string, l Grant) error {
	if !l.Won || l.tok == nil {
		return nil
	}
	_, err := CompareAndDelete(ctx, c.r, CondScript, key+LockSuffix, l.tok)
	return err
}

func (c luaCoord) Hold(ctx context.Context, key string, l Grant, d time.Duration) error {
	if !l.Won || l.tok == nil {
		return nil
	}
	return c.r.Set(ctx, key+LockSuffix, l.tok, d)
}

// ---- memcached_meta_leases ----------------------------------------------------

// metaCoord uses memcached's own leases: "mg k v c N<s>" returns the value,
// or vivifies a stub and answers W to exactly one caller (Z to the rest) —
// read and lease in one round trip. The stub expires by itself, so a dead
// holder costs one lease period. Refresh uses the same command on the lock
// key, and releases are checked by CAS ("md k C<cas>").
type metaCoord struct{ m *store.Memcached }

func (metaCoord) Name() string { return MechanismMemcachedMetaLeases }
func (metaCoord) Shared() bool { return true }

// secs rounds up to memcached's whole seconds, never to 0 (no expiry).
func secs(d time.Duration) string {
	return fmt.Sprint(max(int64(math.Ceil(d.Seconds())), 1))
}

// leaseSecs adds a second to a lease: memcached's clock ticks once a second,
// so an item set to live N seconds may expire up to a second early.
func leaseSecs(d time.Duration) string {
	return fmt.Sprint(max(int64(math.Ceil(d.Seconds())), 1) + 1)
}

func (c metaCoord) Get(ctx context.Context, key string, leaseTTL time.Duration) ([]byte, Grant, error) {
	flags := []string{"v"}
	if leaseTTL > 0 {
		flags = append(flags, "c", "N"+leaseSecs(leaseTTL))
	}
	rep, err := c.m.MetaGet(ctx, key, flags...)
	if err != nil {
		return nil, Grant{}, err
	}
	if rep.Status == store.MetaVA && len(rep.Value) > 0 {
		return rep.Value, Grant{}, nil
	}
	// A miss, or an empty stub: someone holds the cold Grant, or we do.
	if _, w := rep.Flag('W'); w {
		cas, _ := rep.Flag('c')
		return nil, Grant{Won: true, cas: cas, onValue: true}, nil
	}
	return nil, Grant{}, nil
}

func (c metaCoord) Gate(ctx context.Context, key string, ttl time.Duration) (Grant, error) {
	rep, err := c.m.MetaGet(ctx, key+LockSuffix, "c", "N"+leaseSecs(ttl))
	if err != nil {
		return Grant{}, err
	}
	_, w := rep.Flag('W')
	cas, _ := rep.Flag('c')
	return Grant{Won: w, cas: cas, Recheck: true}, nil
}

func (c metaCoord) Put(ctx context.Context, key string, val []byte, ttl time.Duration, l Grant) error {
	rep, err := c.m.MetaSet(ctx, key, val, "T"+secs(ttl))
	if err != nil {
		return err
	}
	if rep.Status != store.MetaHD {
		return fmt.Errorf("memcached ms: %w: answered %s", store.ErrProtocol, rep.Status)
	}
	cerr := c.clear(ctx, key)
	if l.onValue {
		// The value replaced the stub: that was the release.
		return cerr
	}
	return errors.Join(cerr, c.Release(ctx, key, l))
}

func (c metaCoord) Release(ctx context.Context, key string, l Grant) error {
	if !l.Won || l.cas == "" {
		return nil
	}
	k := key + LockSuffix
	if l.onValue {
		k = key
	}
	// EX or NF: the lease expired and is someone else's now, or gone.
	_, err := c.m.MetaDelete(ctx, k, "C"+l.cas)
	return err
}

// failed is "ma k:fail N<ttl> J1 v": the count is created at 1 with its
// expiry, or incremented, atomically and in one round trip, on the meta
// client the other operations of this mechanism use.
func (c metaCoord) Failed(ctx context.Context, key string, ttl time.Duration) (int64, bool, error) {
	rep, err := c.m.MetaArithmetic(ctx, key+FailSuffix, "N"+secs(ttl), "J1", "v")
	if err != nil {
		return 0, false, err
	}
	n, err := metaCount(key, rep)
	return n, err == nil, err
}

func (c metaCoord) Failures(ctx context.Context, key string) (int64, bool, error) {
	rep, err := c.m.MetaGet(ctx, key+FailSuffix, "v")
	if err != nil {
		return 0, false, err
	}
	if rep.Status != store.MetaVA {
		return 0, true, nil
	}
	n, err := metaCount(key, rep)
	return n, err == nil, err
}

func (c metaCoord) clear(ctx context.Context, key string) error {
	_, err := c.m.MetaDelete(ctx, key+FailSuffix)
	return err
}

func metaCount(key string, rep store.MetaReply) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(string(rep.Value)), 10, 64)
	if rep.Status != store.MetaVA || err != nil {
		return 0, fmt.Errorf("failure count of %s: %w: %s %q", key, store.ErrProtocol, rep.Status, rep.Value)
	}
	return n, nil
}

func (c metaCoord) Hold(ctx context.Context, key string, l Grant, d time.Duration) error {
	if !l.Won || l.onValue {
		return nil
	}
	// T on mg touches the lock: it keeps its won state for d more.
	_, err := c.m.MetaGet(ctx, key+LockSuffix, "T"+secs(d))
	return err
}
