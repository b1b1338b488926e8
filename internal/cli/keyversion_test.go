package cli

import (
	"testing"
	"time"

	"github.com/prometheus/common/version"

	"github.com/tasker-systems/tasker-sidecar/internal/config"
)

// The cache key version names the build exactly: builds with different
// revisions never share entries, even with the same version string (a plain
// go build has none, the Dockerfile's default is "dev"); a build whose
// revision is unknown is told apart by its executable, and replicas running
// one binary with one configuration agree on it.
func TestKeyVersionNamesTheBuild(t *testing.T) {
	oldVersion, oldRevision := version.Version, version.Revision
	t.Cleanup(func() { version.Version, version.Revision = oldVersion, oldRevision })
	cfg := config.Default()
	cfg.Database.URL = "postgres://sidecar@db:5432/tasker"

	key := func(v, rev string) string {
		version.Version, version.Revision = v, rev
		return keyVersion(cfg)
	}
	a1, a2 := key("dev", "1f2e3d4"), key("dev", "1f2e3d4")
	if a1 != a2 {
		t.Fatalf("one build, one configuration: keys %s and %s differ", a1, a2)
	}
	if b := key("dev", "9a8b7c6"); b == a1 {
		t.Fatalf("revisions 1f2e3d4 and 9a8b7c6 of version dev share key %s", a1)
	}
	if b := key("", "9a8b7c6"); b == key("", "1f2e3d4") {
		t.Fatalf("revisions without a version share key %s", b)
	}
	// No revision at all (test binaries carry no VCS stamp): the
	// executable names the build, the same for every call.
	u1, u2 := key("dev", "unknown"), key("dev", "")
	if u1 == a1 || u2 == a1 {
		t.Fatalf("a build of unknown revision shares key %s with revision 1f2e3d4", a1)
	}
	if u3 := key("dev", "unknown"); u3 != u1 {
		t.Fatalf("one binary of unknown revision: keys %s and %s differ", u1, u3)
	}
	// A dirty tree is not its revision.
	if d := key("v1.2.0-3-g1f2e3d4-dirty", "1f2e3d4"); d == key("v1.2.0-3-g1f2e3d4", "1f2e3d4") {
		t.Fatalf("a dirty build shares key %s with its clean revision", d)
	}

	// What the computations read is in the key; per-pod settings are not.
	version.Version, version.Revision = "dev", "1f2e3d4"
	other := cfg
	other.Analytics.StatementTimeout = cfg.Analytics.StatementTimeout + time.Second
	if keyVersion(other) == a1 {
		t.Fatal("another analytics statement timeout shares the key")
	}
	other = cfg
	other.Database.URL = "postgres://sidecar@db:5432/other"
	if keyVersion(other) == a1 {
		t.Fatal("another database shares the key")
	}
	other = cfg
	other.Server.Listen = "127.0.0.1:1"
	if keyVersion(other) != a1 {
		t.Fatal("the listen address changes the key: replicas would never share an entry")
	}
}
