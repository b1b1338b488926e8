package server

import (
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/testtls"
)

func TestCertReload(t *testing.T) {
	certFile, keyFile, _ := testtls.SelfSigned(t)
	r, err := newCertReloader(certFile, keyFile, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	first, _ := r.get(nil)

	newCert, newKey, _ := testtls.SelfSigned(t)
	for src, dst := range map[string]string{newCert: certFile, newKey: keyFile} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	future := time.Now().Add(time.Minute)
	if err := os.Chtimes(certFile, future, future); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.checked = time.Time{}
	r.mu.Unlock()
	second, _ := r.get(nil)
	if first == second {
		t.Error("certificate not reloaded after the file changed")
	}

	// A broken file keeps the last good pair.
	if err := os.WriteFile(certFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	later := future.Add(time.Minute)
	_ = os.Chtimes(certFile, later, later)
	r.mu.Lock()
	r.checked = time.Time{}
	r.mu.Unlock()
	if third, _ := r.get(nil); third != second {
		t.Error("broken certificate replaced the good one")
	}
}
