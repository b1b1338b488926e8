// Package pgtest gives integration tests a throwaway PostgreSQL database with the
// Tasker schema applied. Tests fail, never skip, when PostgreSQL is unreachable:
// CI starts it, and a silent skip would hide a broken suite.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasker-systems/tasker-sidecar/internal/schema"
)

// AdminURL is the server the tests create their databases on. Override with
// SIDECAR_TEST_DATABASE_URL.
func AdminURL() string {
	if u := os.Getenv("SIDECAR_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// DB is a throwaway database.
type DB struct {
	Name string
	URL  string // connection URL for the database itself
}

// Conn opens a new connection to the database; the test closes it at cleanup.
func (d DB) Conn(t testing.TB) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, d.URL)
	if err != nil {
		t.Fatalf("connect to %s: %v", d.Name, err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// New creates an empty database and drops it when the test ends.
func New(t testing.TB) DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		t.Fatalf("PostgreSQL is required for this test (set SIDECAR_TEST_DATABASE_URL or start it on 127.0.0.1:5432): %v", err)
	}
	defer admin.Close(context.Background())

	buf := make([]byte, 6)
	_, _ = rand.Read(buf)
	name := "sidecar_test_" + sanitize(t.Name()) + "_" + hex.EncodeToString(buf)
	if len(name) > 63 {
		name = name[len(name)-63:]
		name = "t" + strings.TrimLeft(name[1:], "_")
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := pgx.Connect(ctx, AdminURL())
		if err != nil {
			t.Logf("drop database %s: %v", name, err)
			return
		}
		defer admin.Close(context.Background())
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Logf("drop database %s: %v", name, err)
		}
	})

	u, err := url.Parse(AdminURL())
	if err != nil {
		t.Fatalf("parse admin URL: %v", err)
	}
	u.Path = "/" + name
	return DB{Name: name, URL: u.String()}
}

// NewTasker creates a database with the Tasker schema applied.
func NewTasker(t testing.TB) DB {
	t.Helper()
	db := New(t)
	conn := db.Conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := schema.Apply(ctx, conn); err != nil {
		t.Fatal(err)
	}
	return db
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// NewCore creates a database with tasker-core's schema applied
// (schema.ApplyCore).
func NewCore(t testing.TB) DB {
	t.Helper()
	db := New(t)
	conn := db.Conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := schema.ApplyCore(ctx, conn); err != nil {
		t.Fatal(err)
	}
	return db
}
