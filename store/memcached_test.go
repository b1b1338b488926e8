package store_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/store"
	"github.com/tasker-systems/tasker-sidecar/store/storetest"
)

func TestMemcachedMetaCommands(t *testing.T) {
	prefix := storetest.Prefix(t)
	m := mustOpen(t, storetest.MemcachedURL(t), store.Options{KeyPrefix: prefix}).(*store.Memcached)
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
	m := mustOpen(t, "memcached://"+addr, store.Options{}).(*store.Memcached)
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
	m := mustOpen(t, "memcached://"+a.Addr+","+b.Addr, store.Options{}).(*store.Memcached)
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
	authfile := f.Name()
	srv := storetest.StartMemcached(t, "-Y", authfile)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	good := mustOpen(t, "memcached://sidecar:s3cret@"+srv.Addr, store.Options{})
	if err := good.Set(ctx, "k", []byte("v"), time.Minute); err != nil {
		t.Fatalf("Set with credentials: %v", err)
	}
	if v, ok, err := good.Get(ctx, "k"); err != nil || !ok || string(v) != "v" {
		t.Fatalf("Get = %q %v %v", v, ok, err)
	}
	if err := good.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}

	bad := mustOpen(t, "memcached://"+srv.Addr, store.Options{Username: "sidecar", Password: "wrong"})
	err = bad.Ping(ctx)
	if store.Classify(err) != store.ClassPermission {
		t.Fatalf("Ping with a wrong password = %v (%v), want a permission error", err, store.Classify(err))
	}
	if strings.Contains(err.Error(), "wrong") || strings.Contains(bad.URL(), "wrong") {
		t.Errorf("password leaked: %v %s", err, bad.URL())
	}
}
