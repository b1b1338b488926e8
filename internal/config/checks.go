package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/netip"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/tasker-systems/tasker-sidecar/collector"
)

// checkListen accepts host:port or :port with a decimal port from 0 to
// 65535 (0 picks a free port) and a host that is empty (every interface),
// an IP address or localhost. A name that needs DNS is refused: a listen
// address is this machine's, and a name could resolve differently when run
// starts than when check-config ran (or not at all), which would make run
// fail on what check-config accepted. Service names (":http") are refused
// for the same reason.
func checkListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("must be host:port or :port (got %q)", addr)
	}
	if err := checkPort(port, 0); err != nil {
		return err
	}
	if host != "" && host != "localhost" {
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("host must be empty (every interface), an IP address or localhost (got %q)", host)
		}
	}
	return nil
}

// checkPort accepts a decimal port number from min to 65535.
func checkPort(port string, min int) error {
	n, err := strconv.ParseUint(port, 10, 32)
	if err != nil || n < uint64(min) || n > 65535 {
		return fmt.Errorf("port must be a number from %d to 65535 (got %q)", min, clip(port))
	}
	return nil
}

// checkHostPorts checks the port of each host[:port] in hosts; a host
// without a port takes its client's default.
func checkHostPorts(hosts []string) error {
	for _, h := range hosts {
		if h == "" {
			continue
		}
		host, port, err := net.SplitHostPort(h)
		if err != nil {
			continue // no port; the parsers report a malformed host
		}
		if err := checkPort(port, 1); err != nil {
			return fmt.Errorf("%s: %w", clip(host), err)
		}
	}
	return nil
}

// checkDatabaseURL accepts what collector.Open accepts (pgx's parser,
// ports included), with clearer messages for the common mistakes.
func checkDatabaseURL(raw string) error {
	if strings.Contains(raw, "://") {
		u, err := url.Parse(raw)
		if err != nil {
			return fmt.Errorf("not a valid URL: %s", scrubURLError(err))
		}
		if u.Scheme != "postgres" && u.Scheme != "postgresql" {
			return fmt.Errorf("scheme must be postgres or postgresql (got %q)", u.Scheme)
		}
		// pgx takes a comma-separated list of hosts.
		if err := checkHostPorts(strings.Split(u.Host, ",")); err != nil {
			return err
		}
	} else if !strings.Contains(raw, "=") {
		// pgx also accepts the key=value form (host=… dbname=…).
		return fmt.Errorf("must be a postgres:// URL or a key=value connection string")
	}
	if err := collector.CheckURL(raw); err != nil {
		// collector's message starts with the redacted URL; the key path
		// already says which setting it is.
		msg := err.Error()
		if i := strings.Index(msg, ": "); i >= 0 && strings.HasPrefix(msg, "invalid database URL ") {
			msg = msg[i+2:]
		}
		return errors.New(msg)
	}
	return nil
}

// cacheHosts lists the host[:port] entries of a cache URL that store.CheckURL
// accepted: memcached's comma-separated list, Redis's host and addr=
// parameters (cluster and sentinel seeds).
func cacheHosts(raw string) []string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil
	}
	switch strings.ToLower(scheme) {
	case "memory", "none":
		return nil
	case "memcached", "memcache":
		authority, _, _ := strings.Cut(rest, "/")
		if at := strings.LastIndex(authority, "@"); at >= 0 {
			authority = authority[at+1:]
		}
		return strings.Split(authority, ",")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil
	}
	return append(strings.Split(u.Host, ","), u.Query()["addr"]...)
}

// checkTLSFiles loads the server's key pair as exporters.New does, so a
// missing or mismatched file fails check-config and not only run.
func checkTLSFiles(c TLSConfig) error {
	if c.CertFile == "" || c.KeyFile == "" {
		return nil
	}
	if _, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile); err != nil {
		return err
	}
	return nil
}

// nonFinite returns the key path and value of every NaN or infinite float
// under v (a struct, map, slice or float), named as the YAML keys are. No
// setting means anything by NaN, and every range check passes it
// (NaN < 0 and NaN > 1 are both false).
func nonFinite(v reflect.Value, path string) []error {
	var errs []error
	switch v.Kind() {
	case reflect.Float32, reflect.Float64:
		if f := v.Float(); math.IsNaN(f) || math.IsInf(f, 0) {
			errs = append(errs, fmt.Errorf("%s: must be a finite number (got %v)", where(path), f))
		}
	case reflect.Struct:
		fields := structFields(v) // load.go: the keys as the decoder knows them
		for _, name := range slices.Sorted(maps.Keys(fields)) {
			errs = append(errs, nonFinite(fields[name], join(path, name))...)
		}
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String {
			return nil
		}
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(a.String(), b.String()) })
		for _, k := range keys {
			errs = append(errs, nonFinite(v.MapIndex(k), join(path, k.String()))...)
		}
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			errs = append(errs, nonFinite(v.Index(i), fmt.Sprintf("%s[%d]", path, i))...)
		}
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			errs = append(errs, nonFinite(v.Elem(), path)...)
		}
	}
	return errs
}

func where(path string) string {
	if path == "" {
		return "(top level)"
	}
	return path
}

// clip bounds input echoed in an error message.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
