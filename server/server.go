package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
)

// maxHeaderBytes bounds a request's headers; error messages that echo the
// path bound it further (api's echo).
const maxHeaderBytes = 64 << 10

// Server listens on Config.Listen and serves a handler until shut down. Its
// lifecycle follows the OpenTelemetry Collector's component.Component
// (component/component.go): Start does not block, Shutdown may be called
// without Start and more than once.
type Server struct {
	cfg     Config
	handler http.Handler
	log     *slog.Logger
	cert    *certReloader

	mu       sync.Mutex
	started  bool
	startErr error // the first Start's, returned again by later calls
	srv      *http.Server
	addr     net.Addr
	bound    chan struct{}
	done     chan struct{} // closed when Serve has returned
	served   error         // what Serve returned, set before done closes
}

// New loads the TLS key pair when cfg sets one; nothing listens until Start.
// cfg is expected to be valid (Config.Validate); log may be nil.
func New(cfg Config, h http.Handler, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, handler: h, log: log, bound: make(chan struct{}), done: make(chan struct{})}
	if cfg.TLS.CertFile != "" {
		var err error
		if s.cert, err = newCertReloader(cfg.TLS.CertFile, cfg.TLS.KeyFile, log); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Addr is the bound address, nil before Start has bound the listener.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Bound is closed once Start has bound the listener, after which Addr is set.
func (s *Server) Bound() <-chan struct{} { return s.bound }

// Start binds the listener and serves on a goroutine of its own. A bind
// error is returned at once; a second call does nothing and returns the
// first one's error.
func (s *Server) Start(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return s.startErr
	}
	s.started = true

	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		close(s.done)
		s.startErr = fmt.Errorf("server: listen on %s: %w", s.cfg.Listen, err)
		return s.startErr
	}
	s.srv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		// Port scanners and TCP probes against a TLS port make this noisy.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	if s.cert != nil {
		s.srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.cert.get}
	}
	s.addr = ln.Addr()
	close(s.bound)
	s.log.Info("listening", "addr", ln.Addr().String(), "tls", s.cert != nil)

	srv, cert := s.srv, s.cert
	go func() {
		var err error
		if cert != nil {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		s.served = err
		close(s.done)
	}()
	return nil
}

// Done is closed when the server stopped serving: after Shutdown, after a
// failed Start, or when serving failed (Err says why).
func (s *Server) Done() <-chan struct{} { return s.done }

// Err is why serving stopped, nil while serving and after a clean
// shutdown.
func (s *Server) Err() error {
	select {
	case <-s.done:
	default:
		return nil
	}
	if s.served == nil || errors.Is(s.served, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("server: serve: %w", s.served)
}

// Shutdown stops accepting connections and waits for the requests in
// flight until ctx is done, then closes what is left. It returns nil
// without Start and on later calls once the server has stopped.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	srv := s.srv
	if !s.started {
		// A Start after Shutdown does nothing, as for every part's
		// lifecycle (internal/lifecycle).
		s.started = true
		close(s.done)
	}
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	if err := srv.Shutdown(ctx); err != nil {
		_ = srv.Close()
		<-s.done
		return fmt.Errorf("server: graceful shutdown: %w", err)
	}
	<-s.done
	return s.Err()
}

// Run starts the server, serves until ctx is done, then shuts down
// gracefully within Config.ShutdownTimeout. A bind error is returned at
// once; a clean shutdown returns nil.
func (s *Server) Run(ctx context.Context) error {
	// Run owns the whole lifecycle, so a server already started elsewhere
	// is a wiring bug rather than a second Start to ignore.
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	if started {
		return errors.New("server: Run on a server already started")
	}
	if err := s.Start(ctx); err != nil {
		return err
	}
	select {
	case <-s.done:
		return s.Err()
	case <-ctx.Done():
	}
	s.log.Info("shutting down", "timeout", s.cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	return s.Shutdown(sctx)
}
