package store

import (
	"strings"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/secret"
)

func TestOpenParsesURLs(t *testing.T) {
	tests := []struct {
		url      string
		kind     string
		address  string
		redacted string
		topology string
	}{
		{"redis://127.0.0.1:6379", KindRedis, "127.0.0.1:6379", "redis://127.0.0.1:6379", TopologyStandalone},
		{"redis://localhost", KindRedis, "localhost:6379", "redis://localhost", TopologyStandalone},
		{"redis://:s3cret@10.0.0.1:6380/2", KindRedis, "10.0.0.1:6380", "redis://:xxxxx@10.0.0.1:6380/2", TopologyStandalone},
		{"redis://app:s3cret@10.0.0.1:6380/2?dial_timeout=2s", KindRedis, "10.0.0.1:6380", "redis://app:xxxxx@10.0.0.1:6380/2?dial_timeout=2s", TopologyStandalone},
		{"valkey://cache:6379", KindRedis, "cache:6379", "valkey://cache:6379", TopologyStandalone},
		{"rediss://u:p@cache.example:6380", KindRedis, "cache.example:6380", "rediss://u:xxxxx@cache.example:6380", TopologyStandalone},
		{"redis+cluster://u:p@n1:7000?addr=n2:7001&addr=n3:7002", KindRedis, "n1:7000,n2:7001,n3:7002", "redis+cluster://u:xxxxx@n1:7000?addr=n2:7001&addr=n3:7002", TopologyCluster},
		{"redis://n1:7000?addr=n2:7001", KindRedis, "n1:7000,n2:7001", "redis://n1:7000?addr=n2:7001", TopologyCluster},
		{"redis+sentinel://s1:26379/0?master_name=mymaster&addr=s2:26379&password=pw", KindRedis, "s1:26379,s2:26379", "redis+sentinel://s1:26379/0?master_name=mymaster&addr=s2:26379&password=xxxxx", TopologySentinel},
		{"memcached://127.0.0.1:11211", KindMemcached, "127.0.0.1:11211", "memcached://127.0.0.1:11211", ""},
		{"memcached://a,b:11212,[::1]", KindMemcached, "a:11211,b:11212,[::1]:11211", "memcached://a,b:11212,[::1]", ""},
		{"memcache://u:p@mc:11211", KindMemcached, "mc:11211", "memcache://u:xxxxx@mc:11211", ""},
		{"memory://", KindMemory, "in-process", "memory://", ""},
		{"none://", KindNone, "none", "none://", ""},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			st, err := Open(Config{URL: secret.URL(tt.url)})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer st.Close()
			if st.Kind() != tt.kind || st.Address() != tt.address || st.URL() != tt.redacted {
				t.Errorf("got kind=%q address=%q url=%q, want %q %q %q", st.Kind(), st.Address(), st.URL(), tt.kind, tt.address, tt.redacted)
			}
			if r, ok := st.(*Redis); ok && r.Topology() != tt.topology {
				t.Errorf("topology %q, want %q", r.Topology(), tt.topology)
			}
		})
	}
}

func TestOpenRejectsInvalidURLs(t *testing.T) {
	tests := []struct {
		url  string
		want string
	}{
		{"", "empty"},
		{"localhost:6379", "want scheme://address"},
		{"127.0.0.1:6379", "invalid cache URL"},
		{"ftp://u:hunter2@host", `unsupported scheme "ftp"`},
		{"redis://u:hunter2@host:6379/notanumber", "invalid database number"},
		{"redis://u:hunter2@host:6379?bogus=1", "unexpected option: bogus"},
		{"redis://u:hunter2@host:abc", "invalid port"},
		{"redis+sentinel://u:hunter2@s1:26379", "needs master_name="},
		{"redis://u:hunter2%zz@host", "invalid %-escape"},
		{"redis://u:hun%zzter2@host", "invalid %-escape"},
		{"memcached://u:hunter2@", "missing host"},
		{"memcached://u:hunter2@a:1/path", "no path"},
		{"memcached://u:hunter2@a:1,:2", "bad host:port"},
		{"memcached://a:1?timeout=1s", "no options"},
		{"memcached://u@a:1", "both a username and a password"},
		{"memory://somewhere", "takes no address"},
		{"none://x?y=1", "takes no address"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			_, err := Open(Config{URL: secret.URL(tt.url)})
			if err == nil {
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "zz") {
				t.Errorf("error leaks the password: %q", err)
			}
		})
	}
}

func TestOpenRejectsBadOptions(t *testing.T) {
	if _, err := Open(Config{URL: "memory://", DialTimeout: -1}); err == nil {
		t.Error("negative timeout accepted")
	}
	if _, err := Open(Config{URL: "memcached://a:1", KeyPrefix: "has space"}); err == nil {
		t.Error("memcached prefix with a space accepted")
	}
}

func TestOptionsOverrideURLCredentials(t *testing.T) {
	st, err := Open(Config{URL: "redis://urluser:urlpass@h:1", Username: "u2", Password: "p2"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	o := st.(*Redis).Client().(interface{ Options() *redisOptions }).Options()
	if o.Username != "u2" || o.Password != "p2" {
		t.Errorf("credentials %q/%q, want u2/p2", o.Username, o.Password)
	}
	if strings.Contains(st.URL(), "urlpass") || strings.Contains(st.Address(), "urlpass") {
		t.Errorf("URL/Address leak the password: %q %q", st.URL(), st.Address())
	}
}

func TestExpiration(t *testing.T) {
	tests := []struct {
		ttl  string
		want int32
	}{
		{"0s", 0}, {"-1s", 0}, {"1ms", 1}, {"1s", 1}, {"1500ms", 2}, {"720h", 2592000},
	}
	for _, tt := range tests {
		d := mustDuration(t, tt.ttl)
		if got := Expiration(d); got != tt.want {
			t.Errorf("Expiration(%s) = %d, want %d", tt.ttl, got, tt.want)
		}
	}
	// Past 30 days memcached reads the number as a Unix time.
	if got := Expiration(mustDuration(t, "721h")); got < 1_000_000_000 {
		t.Errorf("Expiration(721h) = %d, want an absolute Unix time", got)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(c *Config)
		want []string // each error's prefix, in order
	}{
		{"defaults", func(*Config) {}, nil},
		{"no url", func(c *Config) { c.URL = "" }, []string{"url: required"}},
		{"bad scheme", func(c *Config) { c.URL = "ftp://h" }, []string{"url: "}},
		{"bad port", func(c *Config) { c.URL = "redis://h:99999" }, []string{"url: "}},
		{"memcached port", func(c *Config) { c.URL = "memcached://a:1,b:0" }, []string{"url: b: port must be"}},
		{"memcached prefix", func(c *Config) { c.URL = "memcached://a:1"; c.KeyPrefix = "has space" }, []string{"key_prefix: "}},
		{"timeouts", func(c *Config) { c.DialTimeout, c.ReadTimeout, c.WriteTimeout = 0, -time.Second, 0 },
			[]string{"dial_timeout: must be positive", "read_timeout: must be positive", "write_timeout: must be positive"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.edit(&c)
			errs := c.Validate()
			if len(errs) != len(tt.want) {
				t.Fatalf("Validate = %v, want %d errors", errs, len(tt.want))
			}
			for i, err := range errs {
				want := strings.Replace(tt.want[i], "must be positive", "must be a positive duration", 1)
				if !strings.HasPrefix(err.Error(), want) {
					t.Errorf("error %d = %q, want prefix %q", i, err, want)
				}
			}
		})
	}
	// The defaults are the configuration's (internal/config Default).
	if c := DefaultConfig(); c.URL != "memory://" || c.DialTimeout != 2*time.Second || c.ReadTimeout != time.Second ||
		c.WriteTimeout != time.Second || c.KeyPrefix != "tasker_sidecar:" {
		t.Errorf("DefaultConfig = %+v", c)
	}
}
