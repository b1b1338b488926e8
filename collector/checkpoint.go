package collector

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
)

// checkpointVersion changes when the format does; an unknown version is
// ignored (the stream starts from a fresh count) rather than misread.
const checkpointVersion = 1

// Checkpoint is the stream's saved position in the two transition tables:
// every row it contains has been emitted (counters, histograms and the
// trace exporter). The counts are not saved: a restart recounts them, and
// rows between the checkpoint and that count are emitted but not counted
// again.
type Checkpoint struct {
	Version int `json:"version"`
	// Database identifies the database the position belongs to (name and
	// the transition tables' OIDs), so a checkpoint is never applied to a
	// restored or different database.
	Database        string    `json:"database"`
	SavedAt         time.Time `json:"saved_at"`
	TaskTransitions Cursor    `json:"task_transitions"`
	StepTransitions Cursor    `json:"step_transitions"`
}

// Checkpointer loads and saves the stream's checkpoint.
type Checkpointer interface {
	// Load returns false when there is no checkpoint yet.
	Load(ctx context.Context) (Checkpoint, bool, error)
	Save(ctx context.Context, c Checkpoint) error
	// Shared reports whether several replicas see the same checkpoint, in
	// which case only the lease holder writes it.
	Shared() bool
	// String names the location for logs.
	String() string
}

// Engine names the Tasker engine whose tables the stream reads: the Rails
// engine's (tasker_tasks, tasker_task_transitions, ...). It is part of the
// local checkpoint's name, so a sidecar for another engine's schema on the
// same database never reads this one's position.
const Engine = "rails"

// Path is the local checkpoint file for the database at databaseURL: File
// when set; else a name derived from the engine and the database's identity
// (its hosts, ports and database name, as pgx resolves them from the URL
// and the PG* variables, never the user or password) under StateDir, so
// two sidecars on one host watching different databases never share a
// file, and a restarted sidecar finds its own; "" when both are empty.
// The database check of the checkpoint's contents (see Checkpoint) still
// applies on top.
func (c CheckpointConfig) Path(databaseURL string) (string, error) {
	if c.File != "" || c.StateDir == "" {
		return c.File, nil
	}
	id, err := databaseIdentity(databaseURL)
	if err != nil {
		return "", err
	}
	return filepath.Join(c.StateDir, "tasker-sidecar-stream-"+id+".json"), nil
}

// ScopedKey is key, a shared-store key of the stream (checkpoint.key,
// lease.key), followed by the engine and the database's identity: sidecars
// of different databases that share a cache store and its key prefix must
// not share a checkpoint, nor let one database's lease holder keep the
// other database's replicas from exporting traces. Replicas of one
// database get the same key.
func ScopedKey(key, databaseURL string) (string, error) {
	id, err := databaseIdentity(databaseURL)
	if err != nil {
		return "", err
	}
	return key + ":" + id, nil
}

// databaseIdentity names the database at databaseURL for the engine: its
// name (recognisable) and a hash of its hosts, ports and name (unique: hosts,
// and names that differ only in dropped characters), as pgx resolves them
// from the URL and the PG* variables, never the user or password.
func databaseIdentity(databaseURL string) (string, error) {
	pc, err := pgconn.ParseConfig(databaseURL)
	if err != nil {
		return "", parseError(databaseURL, err)
	}
	hosts := []string{net.JoinHostPort(pc.Host, strconv.Itoa(int(pc.Port)))}
	for _, fb := range pc.Fallbacks {
		hosts = append(hosts, net.JoinHostPort(fb.Host, strconv.Itoa(int(fb.Port))))
	}
	slices.Sort(hosts)
	hosts = slices.Compact(hosts)
	sum := sha256.Sum256([]byte(Engine + "\x00" + strings.Join(hosts, ",") + "\x00" + pc.Database))
	return fmt.Sprintf("%s-%s-%s", Engine, fileSafe(pc.Database, 40), hex.EncodeToString(sum[:6])), nil
}

// fileSafe keeps letters, digits, '-', '_' and '.' of s, at most n of them.
func fileSafe(s string, n int) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= n {
			break
		}
		if r < utf8.RuneSelf && (r == '-' || r == '_' || r == '.' || unicode.IsLetter(r) || unicode.IsDigit(r)) {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		return "db"
	}
	return b.String()
}

// CheckpointStore is a key-value store the checkpoint can live in: the
// cache store, as package coord offers it (coord.KeysOf), so that this
// package does not import the store.
type CheckpointStore interface {
	Get(ctx context.Context, key string) ([]byte, bool, error)
	Set(ctx context.Context, key string, val []byte, ttl time.Duration) error
	// Shared reports whether other processes see the keys (Redis,
	// Memcached), not only this one (in-process).
	Shared() bool
	// String names the store in logs.
	String() string
}

// NewCheckpointer picks where the checkpoint lives: in st when it is a
// shared store, shared by all replicas; else in cfg.File (resolve it with
// Path first); nil when neither is available (the stream then starts from
// a fresh count after every restart).
func NewCheckpointer(st CheckpointStore, cfg CheckpointConfig) Checkpointer {
	if st != nil && st.Shared() {
		return NewStoreCheckpointer(st, cfg.Key)
	}
	if cfg.File != "" {
		return NewFileCheckpointer(cfg.File)
	}
	return nil
}

func encodeCheckpoint(c Checkpoint) ([]byte, error) {
	c.Version = checkpointVersion
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode checkpoint: %w", err)
	}
	return b, nil
}

func decodeCheckpoint(b []byte) (Checkpoint, error) {
	var c Checkpoint
	if err := json.Unmarshal(b, &c); err != nil {
		return Checkpoint{}, fmt.Errorf("decode checkpoint: %w", err)
	}
	if c.Version != checkpointVersion {
		return Checkpoint{}, fmt.Errorf("checkpoint version %d, want %d", c.Version, checkpointVersion)
	}
	return c, nil
}

// FileCheckpointer keeps the checkpoint in a local file, replaced
// atomically (write, fsync, rename) so a crash leaves the old or the new
// checkpoint, never half of one.
type FileCheckpointer struct{ path string }

// NewFileCheckpointer returns a checkpointer for path; its directory is
// created on the first save.
func NewFileCheckpointer(path string) *FileCheckpointer { return &FileCheckpointer{path: path} }

// Load reads the file; a missing file is no checkpoint.
func (f *FileCheckpointer) Load(context.Context) (Checkpoint, bool, error) {
	b, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return Checkpoint{}, false, nil
	}
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("read checkpoint: %w", err)
	}
	c, err := decodeCheckpoint(b)
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("%s: %w", f.path, err)
	}
	return c, true, nil
}

// Save replaces the file.
func (f *FileCheckpointer) Save(_ context.Context, c Checkpoint) error {
	b, err := encodeCheckpoint(c)
	if err != nil {
		return err
	}
	dir := filepath.Dir(f.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create checkpoint directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, filepath.Base(f.path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write checkpoint: %w", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // a no-op after the rename
	if _, err := tmp.Write(b); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write checkpoint: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write checkpoint: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write checkpoint: %w", err)
	}
	if err := os.Rename(tmp.Name(), f.path); err != nil {
		return fmt.Errorf("write checkpoint: %w", err)
	}
	// The rename is only durable once the directory entry is.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// Shared is false: the file belongs to one process.
func (f *FileCheckpointer) Shared() bool { return false }

func (f *FileCheckpointer) String() string { return "file " + f.path }

// StoreCheckpointer keeps the checkpoint under a key of a cache store.
type StoreCheckpointer struct {
	st  CheckpointStore
	key string
}

// NewStoreCheckpointer returns a checkpointer on st under key.
func NewStoreCheckpointer(st CheckpointStore, key string) *StoreCheckpointer {
	return &StoreCheckpointer{st: st, key: key}
}

// Load reads the key; a miss is no checkpoint.
func (s *StoreCheckpointer) Load(ctx context.Context) (Checkpoint, bool, error) {
	b, ok, err := s.st.Get(ctx, s.key)
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("read checkpoint: %w", err)
	}
	if !ok {
		return Checkpoint{}, false, nil
	}
	c, err := decodeCheckpoint(b)
	if err != nil {
		return Checkpoint{}, false, err
	}
	return c, true, nil
}

// Save writes the key without expiry: a checkpoint is only useful if it is
// still there after a long outage.
func (s *StoreCheckpointer) Save(ctx context.Context, c Checkpoint) error {
	b, err := encodeCheckpoint(c)
	if err != nil {
		return err
	}
	if err := s.st.Set(ctx, s.key, b, 0); err != nil {
		return fmt.Errorf("write checkpoint: %w", err)
	}
	return nil
}

// Shared reports whether other processes can see the key.
func (s *StoreCheckpointer) Shared() bool { return s.st.Shared() }

func (s *StoreCheckpointer) String() string { return s.st.String() + " key " + s.key }
