package protocol

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Tx is a transaction id: the exact JSON number text a client sent, so that it
// is echoed back byte for byte (no float rounding). The zero value encodes as
// null, which is what a response carries when the request had no numeric tx.
type Tx string

// Same reports whether t and u are the same number, whatever their spelling
// (1.0 and 1, 1e2 and 100): a client that parsed a tx and wrote it back may
// not reproduce the original text.
func (t Tx) Same(u Tx) bool {
	if t == u {
		return true
	}
	a, err1 := strconv.ParseFloat(string(t), 64)
	b, err2 := strconv.ParseFloat(string(u), 64)
	return err1 == nil && err2 == nil && a == b
}

// TxInt returns the Tx for an integer, as the Go client generates them.
func TxInt(n int64) Tx { return Tx(strconv.FormatInt(n, 10)) }

// MarshalJSON encodes tx as its number text, or null when empty.
func (t Tx) MarshalJSON() ([]byte, error) {
	if t == "" {
		return []byte("null"), nil
	}
	return []byte(t), nil
}

// UnmarshalJSON keeps a JSON number's text; anything else (null, a string, …)
// leaves tx empty, which is how "missing or not a number" is represented.
func (t *Tx) UnmarshalJSON(b []byte) error {
	*t = ""
	b = bytes.TrimSpace(b)
	if len(b) > 0 && (b[0] == '-' || (b[0] >= '0' && b[0] <= '9')) {
		// Only numbers a float64 holds (what JavaScript and Go clients
		// compare) count; 1e400 is JSON but no client could match it.
		var n json.Number
		if err := json.Unmarshal(b, &n); err == nil {
			if _, err := strconv.ParseFloat(string(n), 64); err == nil {
				*t = Tx(n)
			}
		}
	}
	return nil
}

// Request is a decoded client message. Fields absent from the frame are zero;
// Has reports which were present with the right JSON type.
type Request struct {
	Type     string
	Tx       Tx
	User     string
	Password string
	Peer     string
	Status   string
	Ticket   string
	Peers    []string
	Session  string // whoami: instead of password
	New      string // passwd: the new password
	Clear    bool   // missed-calls: empty the list after returning it
	Resume   string // whoami: the device id this device had before (contract section 8)

	present field // fields present and well typed
	badType field // fields present with the wrong JSON type
}

// field is a bit set naming Request fields.
type field uint32

const (
	fType field = 1 << iota
	fTx
	fUser
	fPassword
	fPeer
	fStatus
	fTicket
	fPeers
	fSession
	fNew
	fClear
	fResume
	fLast = fResume
)

var fieldNames = map[field]string{
	fType: "type", fTx: "tx", fUser: "user", fPassword: "password",
	fPeer: "peer", fStatus: "status", fTicket: "ticket", fPeers: "peers",
	fSession: "session", fNew: "new", fClear: "clear", fResume: "resume",
}

// rawRequest decodes every field as raw JSON so that an ill-typed field never
// hides the type and tx needed to answer the message.
type rawRequest struct {
	Type     json.RawMessage `json:"type"`
	Tx       json.RawMessage `json:"tx"`
	User     json.RawMessage `json:"user"`
	Password json.RawMessage `json:"password"`
	Peer     json.RawMessage `json:"peer"`
	Status   json.RawMessage `json:"status"`
	Ticket   json.RawMessage `json:"ticket"`
	Peers    json.RawMessage `json:"peers"`
	Session  json.RawMessage `json:"session"`
	New      json.RawMessage `json:"new"`
	Clear    json.RawMessage `json:"clear"`
	Resume   json.RawMessage `json:"resume"`
}

// DecodeRequest parses one client frame. It fails only when the frame is not
// a JSON object (ErrBadJSON); field problems are reported by Validate so that
// the response can still carry the request's type and tx.
func DecodeRequest(b []byte) (*Request, *Error) {
	trimmed := bytes.TrimLeft(b, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, Errorf(ErrBadJSON, "the frame is not a JSON object")
	}
	var raw rawRequest
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, Errorf(ErrBadJSON, "the frame is not a JSON object: %s", jsonErrText(err))
	}
	r := &Request{}
	r.str(raw.Type, fType, &r.Type)
	if len(raw.Tx) > 0 {
		_ = r.Tx.UnmarshalJSON(raw.Tx)
		if r.Tx != "" {
			r.present |= fTx
		} else if !isNull(raw.Tx) {
			r.badType |= fTx
		}
	}
	r.str(raw.User, fUser, &r.User)
	r.str(raw.Password, fPassword, &r.Password)
	r.str(raw.Peer, fPeer, &r.Peer)
	r.str(raw.Status, fStatus, &r.Status)
	r.str(raw.Ticket, fTicket, &r.Ticket)
	r.str(raw.Session, fSession, &r.Session)
	r.str(raw.New, fNew, &r.New)
	r.str(raw.Resume, fResume, &r.Resume)
	if len(raw.Clear) > 0 && !isNull(raw.Clear) {
		switch string(bytes.TrimSpace(raw.Clear)) {
		case "true":
			r.Clear = true
			r.present |= fClear
		case "false":
			r.present |= fClear
		default:
			r.badType |= fClear
		}
	}
	if len(raw.Peers) > 0 && !isNull(raw.Peers) {
		if err := json.Unmarshal(raw.Peers, &r.Peers); err != nil {
			r.badType |= fPeers
			r.Peers = nil
		} else {
			if r.Peers == nil {
				r.Peers = []string{}
			}
			r.present |= fPeers
		}
	}
	return r, nil
}

func (r *Request) str(raw json.RawMessage, f field, dst *string) {
	if len(raw) == 0 || isNull(raw) {
		return
	}
	if raw[0] != '"' {
		r.badType |= f
		return
	}
	// Fast path: most strings have no escapes and need no decoder.
	if len(raw) >= 2 && raw[len(raw)-1] == '"' && simpleString(raw[1:len(raw)-1]) {
		*dst = string(raw[1 : len(raw)-1])
		r.present |= f
		return
	}
	if json.Unmarshal(raw, dst) != nil {
		r.badType |= f
		return
	}
	r.present |= f
}

// simpleString reports whether b, the inside of a JSON string literal that
// the decoder already validated, holds no escapes or non-ASCII bytes, so its
// bytes are its value.
func simpleString(b []byte) bool {
	for _, c := range b {
		if c == '\\' || c == '"' || c < 0x20 || c >= 0x80 {
			return false
		}
	}
	return true
}

func isNull(b json.RawMessage) bool { return string(bytes.TrimSpace(b)) == "null" }

// jsonErrText keeps the decoder's message but never echoes the client's bytes
// at length.
func jsonErrText(err error) string {
	s := err.Error()
	if len(s) > 120 {
		s = s[:120]
	}
	return s
}

// clientTypes lists the client message types of /meta and the fields each
// requires besides type and tx.
var clientTypes = map[string]field{
	TypeRegUser:     fUser | fPassword,
	TypeWhoami:      fUser, // and password XOR session: see Validate
	TypeAddPeers:    fUser | fPeers,
	TypeDelPeers:    fUser | fPeers,
	TypePeers:       fUser,
	TypePeersOnline: fUser,
	TypeStatus:      fUser | fStatus,
	TypeCall:        fUser | fPeer,
	TypeAccept:      fUser | fPeer,
	TypeReject:      fUser | fPeer,
	TypeCancel:      fUser | fPeer,
	TypeUnpair:      fUser | fPeer,
	TypePasswd:      fUser | fPassword | fNew,
	TypeLogout:      fUser,
	TypeMissedCalls: fUser,
}

// IsClientType reports whether t is a client message type of /meta.
func IsClientType(t string) bool { _, ok := clientTypes[t]; return ok }

// CheckEnvelope checks what every client message needs before anything else:
// a known string type and a numeric tx.
func (r *Request) CheckEnvelope() *Error {
	switch {
	case r.badType&fType != 0:
		return Errorf(ErrBadRequest, "type: must be a string")
	case r.present&fType == 0:
		return Errorf(ErrBadRequest, "type: missing")
	case !IsClientType(r.Type):
		return Errorf(ErrUnknownType, "type: %q is not a client message", truncate(r.Type, 64))
	case r.present&fTx == 0:
		return Errorf(ErrBadRequest, "tx: missing or not a number")
	}
	return nil
}

// Validate checks the fields r.Type requires: presence, JSON type and the
// contract's rules for names, passwords, statuses and peer lists. It assumes
// CheckEnvelope passed.
func (r *Request) Validate() *Error {
	need := clientTypes[r.Type]
	for f := fUser; f <= fLast; f <<= 1 {
		if need&f == 0 {
			continue
		}
		name := fieldNames[f]
		if r.badType&f != 0 {
			if f == fPeers {
				return Errorf(ErrBadRequest, "peers: must be an array of strings")
			}
			return Errorf(ErrBadRequest, "%s: must be a string", name)
		}
		if r.present&f == 0 {
			return Errorf(ErrBadRequest, "%s: missing", name)
		}
	}
	if r.Type == TypeRegUser && r.badType&fPeers != 0 {
		return Errorf(ErrBadRequest, "peers: must be an array of strings")
	}
	if r.Type == TypeWhoami {
		if perr := r.checkCredential(); perr != nil {
			return perr
		}
		if r.badType&fResume != 0 {
			return Errorf(ErrBadRequest, "resume: must be a string")
		}
	}
	if r.Type == TypeMissedCalls && r.badType&fClear != 0 {
		return Errorf(ErrBadRequest, "clear: must be a boolean")
	}
	if need&fNew != 0 {
		if err := CheckPassword(r.New); err != nil {
			return Errorf(ErrBadRequest, "new: %s", err)
		}
	}
	if need&fUser != 0 {
		if err := CheckName(r.User); err != nil {
			return Errorf(ErrBadRequest, "user: %s", err)
		}
	}
	if need&fPassword != 0 && r.Type == TypeRegUser {
		if err := CheckPassword(r.Password); err != nil {
			return Errorf(ErrBadRequest, "password: %s", err)
		}
	}
	if need&fPeer != 0 {
		if err := CheckName(r.Peer); err != nil {
			return Errorf(ErrBadRequest, "peer: %s", err)
		}
		if r.Peer == r.User {
			return Errorf(ErrBadRequest, "peer: cannot be yourself")
		}
	}
	if need&fStatus != 0 {
		if err := CheckStatus(r.Status); err != nil {
			return Errorf(ErrBadRequest, "status: %s", err)
		}
	}
	if r.Peers != nil {
		if len(r.Peers) > MaxPeers {
			return Errorf(ErrBadRequest, "peers: more than %d entries", MaxPeers)
		}
		for i, p := range r.Peers {
			if err := CheckName(p); err != nil {
				return Errorf(ErrBadRequest, "peers[%d]: %s", i, err)
			}
			if p == r.User && r.Type != TypeDelPeers {
				return Errorf(ErrBadRequest, "peers[%d]: cannot be yourself", i)
			}
		}
	}
	return nil
}

// checkCredential checks whoami's credential: exactly one of password and
// session. A session's content is not checked here (a forged or truncated
// one is auth-failed, exactly like a wrong password), only its size.
func (r *Request) checkCredential() *Error {
	for _, f := range []field{fPassword, fSession} {
		if r.badType&f != 0 {
			return Errorf(ErrBadRequest, "%s: must be a string", fieldNames[f])
		}
	}
	hasPw, hasSess := r.present&fPassword != 0, r.present&fSession != 0
	switch {
	case !hasPw && !hasSess:
		return Errorf(ErrBadRequest, "password: missing (send password or session)")
	case hasPw && hasSess:
		return Errorf(ErrBadRequest, "session: send either password or session, not both")
	case hasSess && len(r.Session) > MaxSessionLen:
		return Errorf(ErrBadRequest, "session: longer than %d bytes", MaxSessionLen)
	}
	return nil
}

// CheckName reports why s is not a valid user name, or nil.
func CheckName(s string) error {
	if len(s) == 0 || len(s) > MaxNameLen {
		return fmt.Errorf("must be 1 to %d characters", MaxNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '.', c == '_', c == '-', c == '@':
		default:
			return fmt.Errorf("may only contain A-Z a-z 0-9 . _ - @")
		}
	}
	return nil
}

// CheckPassword reports why p is not an acceptable new password, or nil: 8
// to 1024 bytes, not only white space (eight spaces are no secret).
func CheckPassword(p string) error {
	if len(p) < MinPasswordLen || len(p) > MaxPasswordLen {
		return fmt.Errorf("must be %d to %d bytes", MinPasswordLen, MaxPasswordLen)
	}
	if strings.TrimSpace(p) == "" {
		return fmt.Errorf("must not be only white space")
	}
	return nil
}

// CheckStatus reports why s is not an acceptable status, or nil.
func CheckStatus(s string) error {
	if n := utf8.RuneCountInString(s); n == 0 || n > MaxStatusLen || !utf8.ValidString(s) {
		return fmt.Errorf("must be 1 to %d characters", MaxStatusLen)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Error is a protocol error: a stable code and a human-readable reason.
type Error struct {
	Code    Code
	Reason  string
	Missing []string // with ErrNotFound: the names that are not registered
}

// Errorf returns an *Error with a formatted reason.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Reason: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Reason }

// Is makes errors.Is(err, &Error{Code: c}) match by code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Response answers exactly one client message.
type Response struct {
	Type    string          `json:"type"` // always TypeRes
	For     string          `json:"for"`
	Tx      Tx              `json:"tx"`
	OK      bool            `json:"ok"`
	Error   Code            `json:"error,omitempty"`
	Reason  string          `json:"reason,omitempty"`
	Device  string          `json:"device,omitempty"`  // whoami
	Missing []string        `json:"missing,omitempty"` // not-found
	Peers   json.RawMessage `json:"peers,omitempty"`   // peers: []PeerInfo; peers-online: []string
	Session string          `json:"session,omitempty"` // whoami, passwd: a secret, never log it
	Calls   json.RawMessage `json:"calls,omitempty"`   // missed-calls: []MissedCall, newest first
}

// MissedCall is one entry of the missed-calls response: who called, when
// (RFC 3339, UTC) and why it was missed (a Reason* constant).
type MissedCall struct {
	User   string `json:"user"`
	At     string `json:"at"`
	Reason string `json:"reason"`
}

// PeerInfo is one entry of the peers response. Online and Status are only
// revealed for mutual peers (false and null otherwise).
type PeerInfo struct {
	User   string  `json:"user"`
	Mutual bool    `json:"mutual"`
	Online bool    `json:"online"`
	Status *string `json:"status"`
}

// Err returns the response's error as an *Error, or nil when OK.
func (r *Response) Err() *Error {
	if r.OK {
		return nil
	}
	return &Error{Code: r.Error, Reason: r.Reason, Missing: r.Missing}
}

// Event is a server-initiated message on /meta: status, call, accept, reject,
// cancel, unpair, force-call or missed-call.
type Event struct {
	Type   string `json:"type"`
	User   string `json:"user,omitempty"`
	Peer   string `json:"peer,omitempty"`
	Tx     Tx     `json:"tx,omitempty"`
	Status string `json:"status,omitempty"`
	Reason string `json:"reason,omitempty"`
	Ticket string `json:"ticket,omitempty"` // force-call only; a secret, never log it
	Media  string `json:"media,omitempty"`  // force-call only
	At     string `json:"at,omitempty"`     // missed-call only: RFC 3339
}

// MediaHello is the first frame a device sends on /media.
type MediaHello struct {
	Type   string `json:"type"` // TypeMedia
	Ticket string `json:"ticket"`
	Mode   string `json:"mode,omitempty"` // "" or MediaModeRelay (section 6), MediaModeWebRTC (section 10)
}

// Paired tells a media connection that the other side is connected.
type Paired struct {
	Type string `json:"type"` // TypePaired
	Peer string `json:"peer"`
}

// ServerMessage is the union a client decodes every /meta frame into: a
// Response when Type is TypeRes, an Event otherwise.
type ServerMessage struct {
	Response
	User   string `json:"user,omitempty"`
	Peer   string `json:"peer,omitempty"`
	Status string `json:"status,omitempty"`
	Ticket string `json:"ticket,omitempty"`
	Media  string `json:"media,omitempty"`
	At     string `json:"at,omitempty"`
}

// Event returns the server message as an Event.
func (m *ServerMessage) Event() Event {
	return Event{Type: m.Type, User: m.User, Peer: m.Peer, Tx: m.Tx, Status: m.Status,
		Reason: m.Reason, Ticket: m.Ticket, Media: m.Media, At: m.At}
}

// HasSession reports whether the request carries a session field (whoami
// by session rather than password).
func (r *Request) HasSession() bool { return r.present&fSession != 0 }
