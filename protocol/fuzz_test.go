package protocol

import (
	"encoding/json"
	"testing"
)

// seeds are real client messages of the contract, plus near misses.
var seeds = []string{
	`{"type":"reg-user","user":"userA","password":"sesameopen","peers":[],"tx":0.4194567419}`,
	`{"type":"whoami","user":"userA","password":"sesameopen","tx":1}`,
	`{"type":"add-peers","user":"userA","peers":["userB","userC"],"tx":2}`,
	`{"type":"del-peers","user":"userA","peers":["userB"],"tx":3}`,
	`{"type":"peers","user":"userA","tx":4}`,
	`{"type":"peers-online","user":"userA","tx":5}`,
	`{"type":"status","user":"userA","status":"away","tx":6}`,
	`{"type":"call","user":"userA","peer":"userB","tx":0.4194567419}`,
	`{"type":"accept","user":"userB","peer":"userA","tx":0.4194567419}`,
	`{"type":"reject","user":"userB","peer":"userA","tx":0.4194567419}`,
	`{"type":"cancel","user":"userA","peer":"userB","tx":7}`,
	`{"type":"unpair","user":"userA","peer":"userB","tx":8}`,
	`{"type":"media","ticket":"k3J"}`,
	`{"type":"whoami","user":"userA","session":"q7Yp3xk0bXc2nN4aZ1mQ8rT5vW9yE6uI0oPaSdFgHjK","tx":9}`,
	`{"type":"passwd","user":"userA","password":"sesameopen","new":"opensesame","tx":10}`,
	`{"type":"logout","user":"userA","tx":11}`,
	`{"type":"missed-calls","user":"userA","tx":12}`,
	`{"type":"missed-calls","user":"userA","clear":true,"tx":13}`,
	`{"type":"whoami","user":"a","password":"x","session":"y","tx":1}`, `{"type":"missed-calls","user":"a","clear":"yes","tx":1}`,
	`{"type":5,"tx":"x"}`, `[]`, `null`, `{"tx":1e400}`, `{"peers":[1,2]}`, `{"type":"call","user":"a","peer":"a","tx":-0}`,
}

func FuzzDecodeRequest(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, perr := DecodeRequest(b)
		if perr != nil {
			if perr.Code != ErrBadJSON || perr.Reason == "" {
				t.Fatalf("decode error %v", perr)
			}
			return
		}
		if e := r.CheckEnvelope(); e == nil {
			if e := r.Validate(); e != nil && e.Reason == "" {
				t.Fatalf("error without reason: %v", e)
			}
		} else if e.Reason == "" {
			t.Fatalf("error without reason: %v", e)
		}
		// Whatever came in, the response built from it must encode, and
		// its tx must be a number or null.
		out, err := json.Marshal(Response{Type: TypeRes, For: r.Type, Tx: r.Tx})
		if err != nil {
			t.Fatalf("response does not encode: %v", err)
		}
		var back map[string]any
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("response is not JSON: %s", out)
		}
		if tx := back["tx"]; tx != nil {
			if _, ok := tx.(float64); !ok {
				t.Fatalf("tx echoed as %T", tx)
			}
		}
	})
}

func TestTxEchoedExactly(t *testing.T) {
	for _, in := range []string{"0.4194567419", "1", "-3", "12345678901234567890", "1e5", "0.1000000000000000055511151231257827"} {
		r, perr := DecodeRequest([]byte(`{"type":"peers","tx":` + in + `}`))
		if perr != nil {
			t.Fatal(perr)
		}
		b, _ := json.Marshal(Response{Tx: r.Tx})
		if want := `"tx":` + in + `,`; !contains(string(b), want) {
			t.Errorf("tx %s echoed as %s", in, b)
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestValidateTable(t *testing.T) {
	cases := []struct {
		name string
		in   string
		code Code // "" = valid
		in2  string
	}{
		{"ok call", `{"type":"call","user":"a","peer":"b","tx":1}`, "", ""},
		{"missing type", `{"user":"a","tx":1}`, ErrBadRequest, "type"},
		{"type not string", `{"type":1,"tx":1}`, ErrBadRequest, "type"},
		{"unknown type", `{"type":"force-call","tx":1}`, ErrUnknownType, "type"},
		{"no tx", `{"type":"peers","user":"a"}`, ErrBadRequest, "tx"},
		{"tx string", `{"type":"peers","user":"a","tx":"1"}`, ErrBadRequest, "tx"},
		{"user missing", `{"type":"peers","tx":1}`, ErrBadRequest, "user"},
		{"user number", `{"type":"peers","user":7,"tx":1}`, ErrBadRequest, "user"},
		{"user too long", `{"type":"peers","user":"` + string(make65()) + `","tx":1}`, ErrBadRequest, "user"},
		{"user bad char", `{"type":"peers","user":"a b","tx":1}`, ErrBadRequest, "user"},
		{"user allowed chars", `{"type":"peers","user":"A.z_0-9@x","tx":1}`, "", ""},
		{"password short", `{"type":"reg-user","user":"a","password":"1234567","tx":1}`, ErrBadRequest, "password"},
		{"password only spaces", `{"type":"reg-user","user":"a","password":"        ","tx":1}`, ErrBadRequest, "password"},
		{"password only white space", `{"type":"reg-user","user":"a","password":"\t \n \r \u00a0  ","tx":1}`, ErrBadRequest, "password"},
		{"password with spaces inside", `{"type":"reg-user","user":"a","password":"  a     ","tx":1}`, "", ""},
		{"whoami short password allowed", `{"type":"whoami","user":"a","password":"x","tx":1}`, "", ""},
		{"peers not array", `{"type":"add-peers","user":"a","peers":"b","tx":1}`, ErrBadRequest, "peers"},
		{"peers bad name", `{"type":"add-peers","user":"a","peers":["b c"],"tx":1}`, ErrBadRequest, "peers[0]"},
		{"peers self", `{"type":"add-peers","user":"a","peers":["a"],"tx":1}`, ErrBadRequest, "peers[0]"},
		{"del self ok", `{"type":"del-peers","user":"a","peers":["a"],"tx":1}`, "", ""},
		{"call self", `{"type":"call","user":"a","peer":"a","tx":1}`, ErrBadRequest, "peer"},
		{"status empty", `{"type":"status","user":"a","status":"","tx":1}`, ErrBadRequest, "status"},
		{"whoami session", `{"type":"whoami","user":"a","session":"x","tx":1}`, "", ""},
		{"whoami truncated session is not bad-request", `{"type":"whoami","user":"a","session":"q7","tx":1}`, "", ""},
		{"whoami neither", `{"type":"whoami","user":"a","tx":1}`, ErrBadRequest, "password"},
		{"whoami both", `{"type":"whoami","user":"a","password":"x","session":"y","tx":1}`, ErrBadRequest, "session"},
		{"whoami session number", `{"type":"whoami","user":"a","session":5,"tx":1}`, ErrBadRequest, "session"},
		{"whoami session too long", `{"type":"whoami","user":"a","session":"` + string(aaa(1025)) + `","tx":1}`, ErrBadRequest, "session"},
		{"passwd ok", `{"type":"passwd","user":"a","password":"x","new":"longenough","tx":1}`, "", ""},
		{"passwd no new", `{"type":"passwd","user":"a","password":"x","tx":1}`, ErrBadRequest, "new"},
		{"passwd short new", `{"type":"passwd","user":"a","password":"x","new":"short","tx":1}`, ErrBadRequest, "new"},
		{"passwd no password", `{"type":"passwd","user":"a","new":"longenough","tx":1}`, ErrBadRequest, "password"},
		{"logout", `{"type":"logout","user":"a","tx":1}`, "", ""},
		{"missed-calls", `{"type":"missed-calls","user":"a","tx":1}`, "", ""},
		{"missed-calls clear", `{"type":"missed-calls","user":"a","clear":true,"tx":1}`, "", ""},
		{"missed-calls clear not bool", `{"type":"missed-calls","user":"a","clear":1,"tx":1}`, ErrBadRequest, "clear"},
		{"unknown fields ignored", `{"type":"peers","user":"a","tx":1,"nested":{"x":[1]}}`, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, perr := DecodeRequest([]byte(tc.in))
			if perr != nil {
				t.Fatal(perr)
			}
			e := r.CheckEnvelope()
			if e == nil {
				e = r.Validate()
			}
			switch {
			case tc.code == "" && e != nil:
				t.Fatalf("want valid, got %v", e)
			case tc.code != "" && (e == nil || e.Code != tc.code || !contains(e.Reason, tc.in2)):
				t.Fatalf("want %s naming %q, got %v", tc.code, tc.in2, e)
			}
		})
	}
}

func aaa(n int) []byte {
	b := []byte{}
	for range n {
		b = append(b, 'a')
	}
	return b
}

func make65() []byte {
	b := make([]byte, 65)
	for i := range b {
		b[i] = 'a'
	}
	return b
}

func TestTxSame(t *testing.T) {
	cases := []struct {
		a, b Tx
		want bool
	}{
		{"1", "1", true}, {"1.0", "1", true}, {"1e2", "100", true}, {"0.4194567419", "0.4194567419", true},
		{"0.1", "0.10000000000000001", true}, {"1", "2", false}, {"", "1", false}, {"", "", true},
	}
	for _, c := range cases {
		if got := c.a.Same(c.b); got != c.want {
			t.Errorf("%q.Same(%q) = %v", c.a, c.b, got)
		}
	}
}
