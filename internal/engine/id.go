package engine

import (
	"bytes"
	"cmp"
	"database/sql/driver"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ID is a row key of either engine: a Rails bigint (from a sequence) or a
// tasker-core UUID (version 7). It is comparable, so it keys maps, and
// ordered (Compare) the way PostgreSQL orders the key column: numbers
// numerically, UUIDs bytewise, which for version 7 is creation order to
// the millisecond.
type ID struct {
	uuid [16]byte
	n    int64
	// isUUID tells a UUID from a number; the zero ID is the number 0,
	// which no Tasker row has.
	isUUID bool
}

// IntID is a Rails key.
func IntID(n int64) ID { return ID{n: n} }

// UUIDID is a tasker-core key.
func UUIDID(u [16]byte) ID { return ID{uuid: u, isUUID: true} }

// ParseID reads a key as String writes it: decimal, or a UUID in its
// canonical or compact hex form.
func ParseID(s string) (ID, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return IntID(n), nil
	}
	h := strings.ReplaceAll(s, "-", "")
	var u [16]byte
	if len(h) != 32 {
		return ID{}, fmt.Errorf("key %q is neither a number nor a UUID", s)
	}
	if _, err := hex.Decode(u[:], []byte(h)); err != nil {
		return ID{}, fmt.Errorf("key %q is neither a number nor a UUID", s)
	}
	return UUIDID(u), nil
}

// IsZero reports whether id is unset.
func (id ID) IsZero() bool { return id == ID{} }

// IsUUID reports whether id is a tasker-core key.
func (id ID) IsUUID() bool { return id.isUUID }

// Int is a Rails key's number (0 for a UUID).
func (id ID) Int() int64 { return id.n }

// UUID is a tasker-core key's bytes (zero for a number).
func (id ID) UUID() [16]byte { return id.uuid }

// String is the key as PostgreSQL prints it: decimal, or the canonical
// UUID form.
func (id ID) String() string {
	if !id.isUUID {
		return strconv.FormatInt(id.n, 10)
	}
	var b [36]byte
	hex.Encode(b[0:8], id.uuid[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], id.uuid[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], id.uuid[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], id.uuid[8:10])
	b[23] = '-'
	hex.Encode(b[24:], id.uuid[10:])
	return string(b[:])
}

// Compare orders IDs as PostgreSQL orders the key column; numbers sort
// before UUIDs (a database holds only one kind).
func (id ID) Compare(o ID) int {
	if id.isUUID != o.isUUID {
		if id.isUUID {
			return 1
		}
		return -1
	}
	if id.isUUID {
		return bytes.Compare(id.uuid[:], o.uuid[:])
	}
	return cmp.Compare(id.n, o.n)
}

// MarshalText writes String, so IDs key JSON objects and read back with
// UnmarshalText.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText reads what MarshalText wrote.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// Scan reads a key column: pgx hands bigint as int64 and uuid as its text
// form or bytes (database/sql's Scanner, which pgx honours).
func (id *ID) Scan(src any) error {
	switch v := src.(type) {
	case int64:
		*id = IntID(v)
	case int32:
		*id = IntID(int64(v))
	case [16]byte:
		*id = UUIDID(v)
	case []byte:
		if len(v) == 16 {
			*id = UUIDID([16]byte(v))
			return nil
		}
		return id.UnmarshalText(v)
	case string:
		return id.UnmarshalText([]byte(v))
	case nil:
		*id = ID{}
	default:
		return fmt.Errorf("cannot scan %T into a key", src)
	}
	return nil
}

// Value writes the key as a query argument: a number, or the UUID's text
// form, which PostgreSQL casts to uuid.
func (id ID) Value() (driver.Value, error) {
	if id.isUUID {
		return id.String(), nil
	}
	return id.n, nil
}

// UUIDLowerBound is the least version 7 UUID of the millisecond t: every
// key generated at t or later sorts at or above it.
func UUIDLowerBound(t time.Time) ID {
	var u [16]byte
	ms := uint64(max(t.UnixMilli(), 0))
	for i := range 6 {
		u[i] = byte(ms >> (8 * (5 - i)))
	}
	return UUIDID(u)
}

// UUIDTime is the millisecond a version 7 UUID was generated at.
func (id ID) UUIDTime() time.Time {
	var ms int64
	for i := range 6 {
		ms = ms<<8 | int64(id.uuid[i])
	}
	return time.UnixMilli(ms).UTC()
}
