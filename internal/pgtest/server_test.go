package pgtest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestServerStopStart(t *testing.T) {
	s := StartServer(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.URL())
	if err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	s.Stop()
	if _, err := pgx.Connect(ctx, s.URL()); err == nil {
		t.Fatal("connect should fail while stopped")
	}
	s.Start()
	conn, err = pgx.Connect(ctx, s.URL())
	if err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
}
