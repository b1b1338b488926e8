// Package testlog has what tests use to read the logs of code under test.
package testlog

import (
	"bytes"
	"sync"
)

// Buffer collects log output written from other goroutines (handlers,
// background loops) while the test reads it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String is everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
