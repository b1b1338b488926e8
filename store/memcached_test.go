package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/tasker-systems/tasker-sidecar/store"
	"github.com/tasker-systems/tasker-sidecar/store/storetest"
)

func TestMemcachedMetaCommands(t *testing.T) {
	prefix := storetest.Prefix(t)
	m := mustOpen(t, storetest.MemcachedURL(t), store.Config{KeyPrefix: prefix}).(*store.Memcached)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addr := m.Servers()[0]

	if err := m.MetaNoop(ctx, addr); err != nil {
		t.Fatalf("mn: %v", err)
	}
	v, err := m.Version(ctx, addr)
	if err != nil || !strings.HasPrefix(v, "1.") {
		t.Fatalf("version = %q %v", v, err)
	}
	settings, err := m.Stats(ctx, addr, "settings")
	if err != nil || settings["cas_enabled"] == "" {
		t.Fatalf("stats settings = %v %v", settings, err)
	}

	// A lease: the first mg with N on a miss wins (W), the next sees Z.
	first, err := m.MetaGet(ctx, "lease", "v", "c", "t", "N5")
	if err != nil {
		t.Fatal(err)
	}
	if _, won := first.Flag('W'); first.Status != store.MetaVA || !won {
		t.Fatalf("first lease mg = %+v, want VA with W", first)
	}
	second, err := m.MetaGet(ctx, "lease", "v", "c", "t", "N5")
	if err != nil {
		t.Fatal(err)
	}
	_, won := second.Flag('W')
	_, lost := second.Flag('Z')
	if won || !lost {
		t.Fatalf("second lease mg = %+v, want Z without W", second)
	}
	if rep, err := m.MetaDelete(ctx, "lease"); err != nil || rep.Status != store.MetaHD {
		t.Fatalf("md = %+v %v", rep, err)
	}

	// Conditional meta set: C with a stale CAS value is refused.
	if rep, err := m.MetaSet(ctx, "cas", []byte("ab"), "T30"); err != nil || rep.Status != store.MetaHD {
		t.Fatalf("ms = %+v %v", rep, err)
	}
	got, err := m.MetaGet(ctx, "cas", "v", "c")
	if err != nil || string(got.Value) != "ab" {
		t.Fatalf("mg = %+v %v", got, err)
	}
	casID, _ := got.Flag('c')
	if rep, _ := m.MetaSet(ctx, "cas", []byte("zz"), "C"+casID+"9"); rep.Status != store.MetaEX {
		t.Fatalf("ms with a wrong CAS = %+v, want EX", rep)
	}
	if rep, _ := m.MetaSet(ctx, "cas", []byte("cd"), "C"+casID); rep.Status != store.MetaHD {
		t.Fatalf("ms with the right CAS = %+v, want HD", rep)
	}
	if rep, _ := m.MetaDelete(ctx, "cas", "q"); rep.Status != store.MetaHD {
		// q suppresses HD on success, but this client waits for a reply,
		// so it is only safe without q; make sure the key is gone anyway.
		_, _ = m.MetaDelete(ctx, "cas")
	}

	// Meta arithmetic with autovivify.
	rep, err := m.MetaArithmetic(ctx, "ma", "N30", "J5", "D3", "v")
	if err != nil || string(rep.Value) != "5" {
		t.Fatalf("ma = %+v %v", rep, err)
	}
	_, _ = m.MetaDelete(ctx, "ma")

	if _, err := m.MetaGet(ctx, "bad key", "v"); err == nil {
		t.Fatal("mg with a space in the key succeeded")
	}
	for _, k := range []string{"lease", "cas", "ma"} {
		if storetest.MemcachedHas(t, addr, prefix+k) {
			t.Errorf("key %s left behind", k)
		}
	}
}

func TestMemcachedMetaRefusedByOldServer(t *testing.T) {
	// A fake memcached that answers every command with ERROR, as a server
	// before 1.5.19 or a proxy without meta support does.
	addr := fakeServer(t, "ERROR\r\n")
	m := mustOpen(t, "memcached://"+addr, store.Config{}).(*store.Memcached)
	ctx := context.Background()
	err := m.MetaNoop(ctx, addr)
	if !errors.Is(err, store.ErrProtocol) || store.Classify(err) != store.ClassProtocol {
		t.Fatalf("mn = %v, want a protocol error", err)
	}
	if _, _, err := m.TTL(ctx, "k"); !errors.Is(err, store.ErrUnsupported) {
		t.Fatalf("TTL = %v, want ErrUnsupported", err)
	}
}

func TestMemcachedSeveralServers(t *testing.T) {
	a, b := storetest.StartMemcached(t), storetest.StartMemcached(t)
	m := mustOpen(t, "memcached://"+a.Addr+","+b.Addr, store.Config{}).(*store.Memcached)
	ctx := context.Background()
	onA, onB := 0, 0
	for i := range 40 {
		k := "k" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		if err := m.Set(ctx, k, []byte("v"), time.Minute); err != nil {
			t.Fatal(err)
		}
		if v, ok, err := m.Get(ctx, k); err != nil || !ok || string(v) != "v" {
			t.Fatalf("Get(%s) = %q %v %v", k, v, ok, err)
		}
		if storetest.MemcachedHas(t, a.Addr, k) {
			onA++
		}
		if storetest.MemcachedHas(t, b.Addr, k) {
			onB++
		}
	}
	if onA == 0 || onB == 0 || onA+onB != 40 {
		t.Errorf("keys on a=%d b=%d, want both used and 40 in total", onA, onB)
	}
	if err := m.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	b.Stop(t)
	if err := m.Ping(ctx); err == nil {
		t.Error("Ping succeeded with one server down")
	}
}

// TestMemcachedASCIIAuth: credentials are sent only to a server that
// demands them (memcached -Y). To a server without -Y, "set auth" would be
// an ordinary write leaving the password in an item anyone can read.
func TestMemcachedASCIIAuth(t *testing.T) {
	// memcached drops privileges before reading the file, so it must not
	// live in the test's private temp dir.
	f, err := os.CreateTemp("", "sidecar-memcached-auth-*")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(f.Name()) })
	if _, err := f.WriteString("sidecar:s3cret\n"); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		t.Fatal(err)
	}
	withAuth := storetest.StartMemcached(t, "-Y", f.Name())
	plain := storetest.StartMemcached(t)

	tests := []struct {
		name     string
		srv      *storetest.Server
		opts     store.Config
		url      func(addr string) string
		class    store.ErrorClass // of Ping; ClassNone: everything works
		errWords string           // in the error, when it fails
		warning  string           // in Warnings()
	}{
		{name: "-Y server, right password", srv: withAuth, url: func(a string) string { return "memcached://sidecar:s3cret@" + a }},
		{name: "-Y server, password from options", srv: withAuth, opts: store.Config{Username: "sidecar", Password: "s3cret"},
			url: func(a string) string { return "memcached://" + a }},
		{name: "-Y server, wrong password", srv: withAuth, opts: store.Config{Username: "sidecar", Password: "wrong"},
			url: func(a string) string { return "memcached://" + a }, class: store.ClassPermission, errWords: "authentication failure"},
		{name: "plain server, credentials", srv: plain, url: func(a string) string { return "memcached://sidecar:s3cret@" + a },
			warning: "does not require authentication (not started with -Y): the configured credentials were not sent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			m := mustOpen(t, tt.url(tt.srv.Addr), tt.opts).(*store.Memcached)
			pingErr := m.Ping(ctx) // raw client
			setErr := m.Set(ctx, "k", []byte("v"), time.Minute)
			if tt.class != store.ClassNone {
				for _, err := range []error{pingErr, setErr} {
					if store.Classify(err) != tt.class || !strings.Contains(fmt.Sprint(err), tt.errWords) {
						t.Errorf("error %v (%v), want %v mentioning %q", err, store.Classify(err), tt.class, tt.errWords)
					}
					if strings.Contains(fmt.Sprint(err), "wrong") {
						t.Errorf("password leaked: %v", err)
					}
				}
				return
			}
			if pingErr != nil || setErr != nil {
				t.Fatalf("Ping: %v, Set: %v", pingErr, setErr)
			}
			if v, ok, err := m.Get(ctx, "k"); err != nil || !ok || string(v) != "v" {
				t.Fatalf("Get = %q %v %v", v, ok, err)
			}
			warnings := strings.Join(m.Warnings(), "\n")
			if tt.warning == "" && warnings != "" || !strings.Contains(warnings, tt.warning) {
				t.Errorf("warnings %q, want %q", warnings, tt.warning)
			}
			if strings.Contains(warnings, "s3cret") {
				t.Errorf("password leaked: %s", warnings)
			}
			if tt.srv == plain {
				// The key that "set auth" would have written.
				if out, _ := storetest.MemcachedCommand(plain.Addr, "get auth"); strings.HasPrefix(out, "VALUE ") {
					t.Errorf("the credentials were stored as an item: %q", out)
				}
			}
		})
	}
}

// TestMemcachedRespectsDeadlines: gomemcache takes no context, yet every
// operation returns at its caller's deadline, even when the server answers
// much later (a proxy that delays every reply by 500ms).
func TestMemcachedRespectsDeadlines(t *testing.T) {
	srv := storetest.StartMemcached(t)
	slow := storetest.LatencyProxy(t, srv.Addr, 500*time.Millisecond)
	// The client's own I/O timeout is far longer than the deadlines.
	m := mustOpen(t, "memcached://"+slow, store.Config{ReadTimeout: 3 * time.Second, WriteTimeout: 3 * time.Second}).(*store.Memcached)
	ops := map[string]func(ctx context.Context) error{
		"Get":    func(ctx context.Context) error { _, _, err := m.Get(ctx, "k"); return err },
		"Set":    func(ctx context.Context) error { return m.Set(ctx, "k", []byte("v"), time.Minute) },
		"Delete": func(ctx context.Context) error { return m.Delete(ctx, "k") },
		"SetNX":  func(ctx context.Context) error { _, err := m.SetNX(ctx, "k", []byte("v"), time.Minute); return err },
		"Incr":   func(ctx context.Context) error { _, err := m.Incr(ctx, "n", 1, time.Minute); return err },
		"Gets":   func(ctx context.Context) error { _, _, err := m.Gets(ctx, "k"); return err },
		"CAS": func(ctx context.Context) error {
			_, err := m.CAS(ctx, &memcache.Item{Key: m.Key("k"), Value: []byte("w")})
			return err
		},
		"Ping": m.Ping,
		"TTL":  func(ctx context.Context) error { _, _, err := m.TTL(ctx, "k"); return err },
	}
	const deadline = 100 * time.Millisecond
	for name, op := range ops {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			start := time.Now()
			err := op(ctx)
			took := time.Since(start)
			if !errors.Is(err, context.DeadlineExceeded) || store.Classify(err) != store.ClassUnavailable {
				t.Errorf("error %v (%v), want the deadline", err, store.Classify(err))
			}
			if took > deadline+150*time.Millisecond {
				t.Errorf("returned after %v with a %v deadline", took, deadline)
			}
		})
	}
	// The store still works for a caller who can wait, and Close ends once
	// the abandoned calls are over.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.Set(ctx, "k", []byte("v"), time.Minute); err != nil {
		t.Fatalf("Set with time to wait: %v", err)
	}
	start := time.Now()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Close took %v", took)
	}
}
