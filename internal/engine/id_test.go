package engine

import (
	"encoding/json"
	"testing"
)

func TestIDRoundTripAndOrder(t *testing.T) {
	u1, err := ParseID("0190a1b2-c3d4-7e5f-8a6b-0c1d2e3f4a5b")
	if err != nil {
		t.Fatal(err)
	}
	u2, _ := ParseID("0190a1b2c3d57e5f8a6b0c1d2e3f4a5b")
	for _, tc := range []struct {
		id   ID
		text string
	}{
		{IntID(42), "42"},
		{IntID(-1), "-1"},
		{u1, "0190a1b2-c3d4-7e5f-8a6b-0c1d2e3f4a5b"},
		{u2, "0190a1b2-c3d5-7e5f-8a6b-0c1d2e3f4a5b"},
	} {
		if got := tc.id.String(); got != tc.text {
			t.Errorf("String = %s, want %s", got, tc.text)
		}
		b, _ := json.Marshal(map[ID]ID{tc.id: tc.id})
		var back map[ID]ID
		if err := json.Unmarshal(b, &back); err != nil || back[tc.id] != tc.id {
			t.Errorf("JSON round trip of %s: %s, %v", tc.text, b, err)
		}
	}
	if !(IntID(2).Compare(IntID(10)) < 0 && u1.Compare(u2) < 0 && u2.Compare(u1) > 0 && u1.Compare(u1) == 0) {
		t.Error("Compare does not follow PostgreSQL's order")
	}
	if !u1.IsUUID() || IntID(3).IsUUID() || !(ID{}).IsZero() || u1.IsZero() {
		t.Error("IsUUID/IsZero wrong")
	}
	for _, bad := range []string{"", "x", "0190a1b2-c3d4-7e5f-8a6b-0c1d2e3f4a5", "zz90a1b2c3d57e5f8a6b0c1d2e3f4a5b"} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) accepted", bad)
		}
	}
}
