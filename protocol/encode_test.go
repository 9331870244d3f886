package protocol

import (
	"encoding/json"
	"testing"
)

func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	events := []Event{
		{Type: TypeStatus, User: "alice", Status: "online"},
		{Type: TypeCall, User: "a", Peer: "b", Tx: "0.4194567419"},
		{Type: TypeUnpair, User: "a", Peer: "b", Reason: ReasonHangup},
		{Type: TypeForceCall, Peer: "b", Ticket: "k3J-_x", Media: MediaPath},
		{Type: TypeMissedCall, User: "a", Peer: "b", At: "2026-01-01T00:00:00Z", Reason: ReasonTimeout},
		{Type: TypeStatus, User: "ü<é>", Status: "in \"a\" meeting \\ \n & \u2028 \x00"},
		{},
	}
	for _, e := range events {
		want, _ := json.Marshal(e)
		if got := e.AppendJSON(nil); string(got) != string(want) {
			t.Errorf("event:\n got %s\nwant %s", got, want)
		}
	}
	responses := []Response{
		{Type: TypeRes, For: "whoami", Tx: "1", OK: true, Device: "d1"},
		{Type: TypeRes, For: "whoami", Tx: "1", OK: true, Device: "d1", Session: "abc_-9"},
		{Type: TypeRes, For: "missed-calls", Tx: "4", OK: true, Calls: json.RawMessage(`[]`)},
		{Type: TypeRes, For: "missed-calls", Tx: "4", OK: true, Calls: json.RawMessage(`[{"user":"b","at":"2026-01-01T00:00:00Z","reason":"offline"}]`)},
		{Type: TypeRes, For: "", OK: false, Error: ErrBadJSON, Reason: "the frame is not a JSON object"},
		{Type: TypeRes, For: "add-peers", Tx: "-2.5", Error: ErrNotFound, Reason: "x", Missing: []string{"g", "h"}},
		{Type: TypeRes, For: "peers", Tx: "3", OK: true, Peers: json.RawMessage(`[{"user":"b","mutual":true,"online":false,"status":null}]`)},
	}
	for _, r := range responses {
		want, _ := json.Marshal(r)
		if got := r.AppendJSON(nil); string(got) != string(want) {
			t.Errorf("response:\n got %s\nwant %s", got, want)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "ü", "\x00", "\"\\", "<&>", "\xff\xfe", "\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := appendString(nil, s); string(got) != string(want) {
			t.Fatalf("got %s want %s", got, want)
		}
	})
}
