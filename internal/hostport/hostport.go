// Package hostport checks the host:port parts of the addresses the sidecar
// dials or listens on, so that every section of the configuration refuses
// the same mistakes with the same message.
package hostport

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
)

// CheckListen accepts host:port or :port with a decimal port from 0 to
// 65535 (0 picks a free port) and a host that is empty (every interface),
// an IP address or localhost. A name that needs DNS is refused: a listen
// address is this machine's, and a name could resolve differently when run
// starts than when check-config ran (or not at all), which would make run
// fail on what check-config accepted. Service names (":http") are refused
// for the same reason.
func CheckListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("must be host:port or :port (got %q)", Clip(addr))
	}
	if err := CheckPort(port, 0); err != nil {
		return err
	}
	if host != "" && host != "localhost" {
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("host must be empty (every interface), an IP address or localhost (got %q)", Clip(host))
		}
	}
	return nil
}

// CheckPort accepts a decimal port number from min to 65535.
func CheckPort(port string, min int) error {
	n, err := strconv.ParseUint(port, 10, 32)
	if err != nil || n < uint64(min) || n > 65535 {
		return fmt.Errorf("port must be a number from %d to 65535 (got %q)", min, Clip(port))
	}
	return nil
}

// Check checks the port of each host[:port] in hosts; a host without a port
// takes its client's default, and a malformed host is left to the client's
// own parser, which reports it.
func Check(hosts []string) error {
	for _, h := range hosts {
		if h == "" {
			continue
		}
		host, port, err := net.SplitHostPort(h)
		if err != nil {
			continue
		}
		if err := CheckPort(port, 1); err != nil {
			return fmt.Errorf("%s: %w", Clip(host), err)
		}
	}
	return nil
}

// Clip bounds input echoed in an error message.
func Clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
