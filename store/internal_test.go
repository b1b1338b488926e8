package store

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

type redisOptions = redis.Options

func mustDuration(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
