package readiness

import (
	"strings"
	"testing"
	"time"
)

func TestRedact(t *testing.T) {
	tests := map[string]string{
		"dial postgres://u:hunter2@db:5432/x": "dial postgres://u:xxxxx@db:5432/x",
		"redis://:hunter2@cache:6379/0 down":  "redis://:xxxxx@cache:6379/0 down",
		"host=db password=hunter2 user=u":     "host=db password=xxxxx user=u",
		"password='hun ter2' sslmode=require": "password=xxxxx sslmode=require",
		"PASSWORD: hunter2":                   "PASSWORD: xxxxx",
		"connection refused":                  "connection refused",
	}
	for in, want := range tests {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
	long := strings.Repeat("é", 2*maxMessage)
	if got := []rune(Redact(long)); len(got) != maxMessage+1 {
		t.Errorf("long message not truncated: %d runes", len(got))
	}
}

// Tasker's timeout message interpolates a Ruby Float ("after 5.0 seconds").
func TestTimeoutMessage(t *testing.T) {
	e, err := NewEvaluator(nil, 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.TimeoutMessage("Readiness check timed out after"); got != "Readiness check timed out after 5.0 seconds" {
		t.Errorf("TimeoutMessage = %q", got)
	}
}
