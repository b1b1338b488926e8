package redact

import (
	"strings"
	"testing"
)

// The cases are those of the four redactors this package replaced
// (internal/config, collector, exporters, store) and of the CLI's.
func TestURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		// PostgreSQL URLs.
		{"postgres://sidecar:s3cr3t@db:5432/tasker?sslmode=disable", "postgres://sidecar:xxxxx@db:5432/tasker?sslmode=disable"},
		{"postgres://u:pw@h:5432/db?sslmode=disable", "postgres://u:xxxxx@h:5432/db?sslmode=disable"},
		{"postgres://sidecar@db/tasker", "postgres://sidecar@db/tasker"},
		{"postgres://u@h/db", "postgres://u@h/db"},
		{"postgresql://db/tasker?password=s3cr3t", "postgresql://db/tasker?password=xxxxx"},
		{"postgres://h/db?password=pw&sslmode=require", "postgres://h/db?password=xxxxx&sslmode=require"},
		{"postgres://db/tasker?user=x&sslpassword=s3cr3t", "postgres://db/tasker?user=x&sslpassword=xxxxx"},
		{"postgres://db/tasker?sslkey=/etc/key.pem&sslmode=verify-full", "postgres://db/tasker?sslkey=xxxxx&sslmode=verify-full"},
		// URLs that net/url rejects: mask from the first ':' to the last '@'.
		{"postgres://u:p%zz@h/db", "postgres://u:xxxxx@h/db"},
		{"postgres://sidecar:s3cr3t@db.example:notaport/tasker", "postgres://sidecar:xxxxx@db.example:notaport/tasker"},
		{"postgres://sidecar:s3cr3t@[::1/tasker", "postgres://sidecar:xxxxx@[::1/tasker"},
		{"postgres://sidecar:s3c@r3t@db.example:x/tasker", "postgres://sidecar:xxxxx@db.example:x/tasker"},
		{"postgres://sidecar:s3cr3t%zz@db.example/tasker?password=s3cr3t", "postgres://sidecar:xxxxx@db.example/tasker?password=xxxxx"},
		{"postgres://sidecar@db.example:x/tasker?password=s3cr3t&connect_timeout=soon", "postgres://sidecar@db.example:x/tasker?password=xxxxx&connect_timeout=soon"},
		{"redis://u:pw%zz@h:1", "redis://u:xxxxx@h:1"},
		{"redis://u:pw%zz@h:1?password=x&a=b", "redis://u:xxxxx@h:1?password=xxxxx&a=b"},
		{"redis://u:p@ss@h:1/0#frag", "redis://u:xxxxx@h:1/0#frag"},
		{"redis://u:p/ss@h:1/0", "redis://u:xxxxx@h:1/0"},
		// Cache store URLs.
		{"redis://:pw@h:6379/0", "redis://:xxxxx@h:6379/0"},
		{"redis://user:pw@h:1/0", "redis://user:xxxxx@h:1/0"},
		{"redis://user@h:1", "redis://user@h:1"},
		{"redis://app:s3cret@10.0.0.1:6380/2?dial_timeout=2s", "redis://app:xxxxx@10.0.0.1:6380/2?dial_timeout=2s"},
		{"redis://h:6379/0?dial_timeout=2s&a=1", "redis://h:6379/0?dial_timeout=2s&a=1"},
		{"redis://h:1?password=pw&db=1", "redis://h:1?password=xxxxx&db=1"},
		{"redis://h:1?sentinel_password=pw", "redis://h:1?sentinel_password=xxxxx"},
		{"redis://h:1?db=1&token=abc#x", "redis://h:1?db=1&token=xxxxx#x"},
		{"rediss://u:p@cache.example:6380", "rediss://u:xxxxx@cache.example:6380"},
		{"rediss://h:6380/0?auth_token=t0k", "rediss://h:6380/0?auth_token=xxxxx"},
		{"redis+cluster://u:p@n1:7000?addr=n2:7001&addr=n3:7002", "redis+cluster://u:xxxxx@n1:7000?addr=n2:7001&addr=n3:7002"},
		{"redis+sentinel://h:26379/0?master_name=m&sentinel_password=s3", "redis+sentinel://h:26379/0?master_name=m&sentinel_password=xxxxx"},
		{"redis+sentinel://s1:26379/0?master_name=mymaster&addr=s2:26379&password=pw", "redis+sentinel://s1:26379/0?master_name=mymaster&addr=s2:26379&password=xxxxx"},
		{"redis://h:1?pass%77ord=pw", "redis://h:1?pass%77ord=xxxxx"},
		{"memcached://u:pw@a:1,b:2", "memcached://u:xxxxx@a:1,b:2"},
		{"memcache://u:p@mc:11211", "memcache://u:xxxxx@mc:11211"},
		{"memory://", "memory://"},
		// PostgreSQL key=value connection strings.
		{"host=db password=s3cr3t dbname=tasker", "host=db password=xxxxx dbname=tasker"},
		{"host=h user=u password=pw dbname=d", "host=h user=u password=xxxxx dbname=d"},
		{"host=h password='p w' dbname=d", "host=h password=xxxxx dbname=d"},
		{"host=db password = 's3 cr3t' dbname=tasker", "host=db password = xxxxx dbname=tasker"},
		{`host=db password='it\'s' dbname=tasker`, "host=db password=xxxxx dbname=tasker"},
		{"host=db sslpassword=s3cr3t", "host=db sslpassword=xxxxx"},
		{"not a url", "not a url"},
		{"", ""},
	} {
		if got := URL(tc.in); got != tc.want {
			t.Errorf("URL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"dial postgres://u:hunter2@db:5432/x", "dial postgres://u:xxxxx@db:5432/x"},
		{"redis://:hunter2@cache:6379/0 down", "redis://:xxxxx@cache:6379/0 down"},
		{"cannot parse `postgres://u:p@ss@h:x/db`: invalid port", "cannot parse `postgres://u:xxxxx@h:x/db`: invalid port"},
		{"host=db password=hunter2 user=u", "host=db password=xxxxx user=u"},
		{"password='hun ter2' sslmode=require", "password=xxxxx sslmode=require"},
		{`password="hun ter2" sslmode=require`, "password=xxxxx sslmode=require"},
		{"PASSWORD: hunter2", "PASSWORD: xxxxx"},
		{"pwd=hunter2 passwd=hunter2 pass=hunter2", "pwd=xxxxx passwd=xxxxx pass=xxxxx"},
		{"secret=abc token: abc", "secret=xxxxx token: xxxxx"},
		{"dial redis://h:1?db=0&sentinel_password=hunter2 refused", "dial redis://h:1?db=0&sentinel_password=xxxxx refused"},
		{"X-Auth-Token: abc", "X-Auth-Token: xxxxx"},
		{"connection refused", "connection refused"},
		{"3 checks passed: all good", "3 checks passed: all good"},
	} {
		if got := Text(tc.in); got != tc.want {
			t.Errorf("Text(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestScrub(t *testing.T) {
	// Connection strings the drivers reject, with the errors they could
	// produce by quoting their input in any spelling.
	for _, conn := range []string{
		"postgres://sidecar:s3cr3t@db.example:notaport/tasker",
		"postgres://sidecar:s3cr3t@[::1/tasker",
		"postgres://sidecar:s3cr3t@db.example/tasker?sslmode=bogus",
		"postgres://sidecar:s3cr3t%zz@db.example/tasker",
		"postgres://sidecar:s3c@r3t@db.example:x/tasker",
		"postgres://sidecar:s3c%40r3t@db.example:x/tasker",
		"postgres://sidecar@db.example/tasker?password=s3cr3t&connect_timeout=soon",
		"host=db.example password=s3cr3t port=notaport",
		"host=db.example password='s3cr3t' sslmode=bogus",
		"host=db.example password = 's3c r3t' sslmode=bogus",
	} {
		secrets := Secrets(conn)
		if len(secrets) == 0 {
			t.Errorf("Secrets(%q) found none", conn)
			continue
		}
		for _, quoted := range []string{
			"cannot parse `" + conn + "`: failed",
			"parse " + strings.ReplaceAll(conn, "@", "%40") + ": bad",
		} {
			got := Scrub(quoted, secrets...)
			for _, leak := range []string{"s3cr3t", "s3c@r3t", "s3c%40r3t", "s3c r3t", "r3t@"} {
				if strings.Contains(got, leak) && strings.Contains(conn, leak) {
					t.Errorf("Scrub(%q, %q) = %q leaks %q", quoted, secrets, got, leak)
				}
			}
		}
	}
	if got := Scrub("auth failed for pw", "pw"); got != "auth failed for xxxxx" {
		t.Errorf("Scrub = %q", got)
	}
	if got := Scrub("nothing to hide", ""); got != "nothing to hide" {
		t.Errorf("Scrub with an empty secret = %q", got)
	}
}
