package store

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/tasker-systems/tasker-sidecar/internal/redact"
)

// Redis topologies, as reported by (*Redis).Topology.
const (
	TopologyStandalone = "standalone"
	TopologyCluster    = "cluster"
	TopologySentinel   = "sentinel"
)

// parsedURL is a cache URL split into what the openers need. raw keeps the
// credentials and must never be logged or put in an error.
type parsedURL struct {
	kind     string
	topology string // Redis only
	tls      bool
	raw      *url.URL
	goRedis  string   // URL rewritten to the redis/rediss scheme go-redis parses
	hosts    []string // host:port for memcached
	user     string   // memcached credentials
	pass     string
	redacted string
}

func invalidURL(raw, reason string) error {
	return fmt.Errorf("invalid cache URL %q: %s", redact.URL(raw), reason)
}

func parseURL(raw string) (*parsedURL, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, errors.New("invalid cache URL: empty")
	}
	if scheme, _, _ := strings.Cut(raw, "://"); strings.EqualFold(scheme, "memcached") || strings.EqualFold(scheme, "memcache") {
		return parseMemcachedURL(raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the whole URL, password included; keep only
		// the reason.
		// and an EscapeError quotes the bad escape, which may be part of
		// the password.
		var ee url.EscapeError
		if errors.As(err, &ee) {
			return nil, invalidURL(raw, "invalid %-escape")
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			return nil, invalidURL(raw, ue.Err.Error())
		}
		return nil, invalidURL(raw, "does not parse")
	}
	if u.Opaque != "" || (u.Scheme != "" && !strings.Contains(raw, "://")) {
		return nil, invalidURL(raw, "want scheme://address")
	}
	p := &parsedURL{raw: u, redacted: redact.URL(raw)}
	scheme := strings.ToLower(u.Scheme)
	switch scheme {
	case "redis", "valkey", "rediss", "valkeys",
		"redis+cluster", "valkey+cluster", "rediss+cluster", "valkeys+cluster",
		"redis+sentinel", "valkey+sentinel", "rediss+sentinel", "valkeys+sentinel":
		return parseRedisURL(raw, u, scheme, p)
	case "memory", "none":
		if u.Host != "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			return nil, invalidURL(raw, scheme+":// takes no address, path or options")
		}
		p.kind = scheme
		return p, nil
	case "":
		return nil, invalidURL(raw, "missing scheme (want redis://, rediss://, redis+cluster://, redis+sentinel://, memcached://, memory:// or none://)")
	}
	return nil, invalidURL(raw, fmt.Sprintf("unsupported scheme %q (want redis://, rediss://, redis+cluster://, redis+sentinel://, memcached://, memory:// or none://)", u.Scheme))
}

func parseRedisURL(raw string, u *url.URL, scheme string, p *parsedURL) (*parsedURL, error) {
	base, variant, _ := strings.Cut(scheme, "+")
	p.kind = KindRedis
	p.tls = base == "rediss" || base == "valkeys"
	p.topology = TopologyStandalone
	switch {
	case variant == "cluster":
		p.topology = TopologyCluster
	case variant == "sentinel":
		p.topology = TopologySentinel
	case u.Query().Has("addr"):
		// go-redis's convention: several addr= parameters make a cluster URL.
		p.topology = TopologyCluster
	}
	rewritten := *u
	rewritten.Scheme = "redis"
	if p.tls {
		rewritten.Scheme = "rediss"
	}
	p.goRedis = rewritten.String()
	if u.Host != "" {
		if _, _, err := net.SplitHostPort(withDefaultPort(u.Host, "6379")); err != nil {
			return nil, invalidURL(raw, "bad host:port")
		}
	}
	return p, nil
}

// parseMemcachedURL is done by hand because a list of hosts with IPv6
// literals is not something net/url accepts as a host.
func parseMemcachedURL(raw string) (*parsedURL, error) {
	p := &parsedURL{kind: KindMemcached, redacted: redact.URL(raw)}
	_, rest, _ := strings.Cut(raw, "://")
	if strings.ContainsAny(rest, "?#") {
		return nil, invalidURL(raw, "memcached URLs take no options")
	}
	authority, path, _ := strings.Cut(rest, "/")
	if path != "" {
		return nil, invalidURL(raw, "memcached URLs take no path")
	}
	hosts := authority
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		userinfo := authority[:at]
		hosts = authority[at+1:]
		user, pass, hasPass := strings.Cut(userinfo, ":")
		var err error
		if user, err = url.PathUnescape(user); err != nil {
			return nil, invalidURL(raw, "bad escape in user name")
		}
		if pass, err = url.PathUnescape(pass); err != nil {
			return nil, invalidURL(raw, "bad escape in password")
		}
		if hasPass {
			p.user, p.pass = user, pass
		} else {
			p.user = user
		}
	}
	if hosts == "" {
		return nil, invalidURL(raw, "missing host")
	}
	for _, h := range strings.Split(hosts, ",") {
		hp := withDefaultPort(h, "11211")
		host, port, err := net.SplitHostPort(hp)
		if err != nil || host == "" || port == "" {
			return nil, invalidURL(raw, fmt.Sprintf("bad host:port %q", h))
		}
		p.hosts = append(p.hosts, hp)
	}
	return p, nil
}

// withDefaultPort adds port to a host that has none, minding IPv6 brackets.
func withDefaultPort(host, port string) string {
	if host == "" {
		return host
	}
	if strings.HasPrefix(host, "[") {
		if strings.HasSuffix(host, "]") {
			return host + ":" + port
		}
		return host
	}
	if strings.Count(host, ":") == 0 {
		return host + ":" + port
	}
	return host
}

func (p *parsedURL) invalid(reason string) error {
	return fmt.Errorf("invalid cache URL %q: %s", p.redacted, reason)
}

// CheckURL reports whether Open would accept the URL, without opening
// anything, so configuration validation and Open cannot disagree.
func CheckURL(rawURL string) error {
	p, err := parseURL(rawURL)
	if err != nil || p.kind != KindRedis {
		return err
	}
	// go-redis checks the query options only when a client is built; parse
	// them the same way here without building one.
	switch p.topology {
	case TopologyCluster:
		_, err = redis.ParseClusterURL(p.goRedis)
	case TopologySentinel:
		var o *redis.FailoverOptions
		if o, err = redis.ParseFailoverURL(p.goRedis); err == nil && o.MasterName == "" {
			return p.invalid("redis+sentinel:// needs master_name=") // as openRedis
		}
	default:
		_, err = redis.ParseURL(p.goRedis)
	}
	if err != nil {
		secret, _ := p.raw.User.Password()
		return p.invalid(redact.Scrub(err.Error(), secret))
	}
	return nil
}

// CheckKeyPrefix reports whether Open would accept prefix as the key prefix
// of rawURL's store: memcached limits its keys (see openMemcached), the
// others take any prefix.
func CheckKeyPrefix(rawURL, prefix string) error {
	p, err := parseURL(rawURL)
	if err != nil || p.kind != KindMemcached || prefix == "" {
		return nil
	}
	if len(prefix) > maxMemcachedPrefix || !legalMemcachedKey(prefix) {
		return fmt.Errorf("at most %d bytes, no spaces or control characters, for memcached", maxMemcachedPrefix)
	}
	return nil
}
