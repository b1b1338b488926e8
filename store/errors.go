package store

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/redis/go-redis/v9"
)

// ErrorClass says what kind of failure an error from a store is, which
// decides what the caller does next: an unavailable store is retried later, a
// permission or protocol error means the detected capabilities are stale.
type ErrorClass int

const (
	ClassNone        ErrorClass = iota // nil, or a miss
	ClassUnavailable                   // cannot reach the server: refused, timed out, closed, loading
	ClassPermission                    // refused by ACL or auth, or a read-only replica
	ClassProtocol                      // unknown or renamed command, bad syntax, unparsable reply, cluster redirection
	ClassUnsupported                   // ErrUnsupported
	ClassOther                         // anything else (out of memory, wrong type, our own bugs)
)

func (c ErrorClass) String() string {
	switch c {
	case ClassNone:
		return "none"
	case ClassUnavailable:
		return "unavailable"
	case ClassPermission:
		return "permission"
	case ClassProtocol:
		return "protocol"
	case ClassUnsupported:
		return "unsupported"
	}
	return "other"
}

var (
	permissionPrefixes  = []string{"NOPERM", "NOAUTH", "WRONGPASS", "READONLY"}
	protocolPrefixes    = []string{"ERR unknown command", "ERR unknown subcommand", "ERR syntax error", "ERR wrong number of arguments", "CROSSSLOT", "MOVED", "ASK", "NOPROTO"}
	unavailablePrefixes = []string{"LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "BUSY"}
)

// Classify sorts an error returned by any store in this package.
func Classify(err error) ErrorClass {
	switch {
	case err == nil, errors.Is(err, redis.Nil), errors.Is(err, memcache.ErrCacheMiss):
		return ClassNone
	case errors.Is(err, ErrUnsupported):
		return ClassUnsupported
	case errors.Is(err, errBacklog):
		return ClassUnavailable
	case errors.Is(err, errPermission):
		return ClassPermission
	case errors.Is(err, ErrProtocol):
		return ClassProtocol
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		msg := rerr.Error()
		for _, p := range permissionPrefixes {
			if strings.HasPrefix(msg, p) {
				return ClassPermission
			}
		}
		for _, p := range protocolPrefixes {
			if strings.HasPrefix(msg, p) {
				return ClassProtocol
			}
		}
		for _, p := range unavailablePrefixes {
			if strings.HasPrefix(msg, p) {
				return ClassUnavailable
			}
		}
		if strings.HasPrefix(msg, "redis: ") {
			// go-redis's own errors that are not server replies, mostly
			// reply parsing.
			if strings.Contains(msg, "parse") || strings.Contains(msg, "unexpected") {
				return ClassProtocol
			}
		}
		return ClassOther
	}
	var cte *memcache.ConnectTimeoutError
	var nerr net.Error
	switch {
	case errors.Is(err, redis.ErrClosed), errors.Is(err, redis.ErrPoolTimeout), errors.Is(err, redis.ErrPoolExhausted),
		errors.Is(err, memcache.ErrNoServers), errors.As(err, &cte),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, net.ErrClosed), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.As(err, &nerr):
		return ClassUnavailable
	case errors.Is(err, memcache.ErrServerError):
		return ClassOther
	}
	if msg := err.Error(); strings.Contains(msg, "memcache: unexpected response") || strings.Contains(msg, "memcache: unexpected line") {
		return ClassProtocol
	}
	return ClassOther
}
