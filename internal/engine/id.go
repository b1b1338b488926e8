package engine

import (
	"bytes"
	"cmp"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
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
