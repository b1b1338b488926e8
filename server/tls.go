package server

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// certReloader re-reads the key pair when the certificate file changes, so
// that rotated certificates (cert-manager, mounted secrets) need no restart.
// A broken new pair is logged and the previous one kept.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	modTime time.Time
	checked time.Time
}

// certCheckEvery bounds how often a handshake stats the certificate file.
const certCheckEvery = 10 * time.Second

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	if err := r.load(time.Now()); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *certReloader) load(now time.Time) error {
	fi, err := os.Stat(r.certFile)
	if err != nil {
		return fmt.Errorf("server: TLS certificate: %w", err)
	}
	pair, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("server: TLS key pair: %w", err)
	}
	r.cert, r.modTime, r.checked = &pair, fi.ModTime(), now
	return nil
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.checked) < certCheckEvery {
		return r.cert, nil
	}
	r.checked = now
	if fi, err := os.Stat(r.certFile); err == nil && !fi.ModTime().Equal(r.modTime) {
		if err := r.load(now); err != nil {
			r.log.Warn("keeping previous TLS certificate", "error", err)
		} else {
			r.log.Info("reloaded TLS certificate", "file", r.certFile)
		}
	}
	return r.cert, nil
}
