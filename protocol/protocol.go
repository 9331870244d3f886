// Package protocol is the umplug wire contract (v1, plus v2 sessions and
// missed calls): the message types, the
// error codes, the close codes and the limits shared by the server, the Go
// client and any third-party client. docs/protocol.md is its prose twin.
//
// Message flow on /meta (one WebSocket, text frames, one flat JSON object per
// frame):
//
//	client                                 server
//	reg-user {user,password,peers,tx}  ->  res {for:"reg-user",tx,ok}
//	whoami   {user,password,tx}        ->  res {for:"whoami",tx,ok,device}
//	                                   <-  status {user,status}   (to online mutual peers)
//	add-peers / del-peers / peers / peers-online / status -> res
//	call     {user,peer,tx}            ->  res ok ("ringing"); callee devices <- call
//	accept   {user,peer,tx=call's tx}  ->  res; caller <- accept; both <- force-call {peer,ticket,media}
//	reject / cancel / unpair           ->  res; the other side <- reject / cancel / unpair
//
// v2 (sections 8–9 of the contract):
//
//	whoami   {user,session,tx}         ->  res {ok,device,session}   (no password hashing)
//	passwd   {user,password,new,tx}    ->  res {ok,session}; the user's other connections close 1008
//	logout   {user,tx}                 ->  res {ok}   (this connection's session is revoked)
//	missed-calls {user,clear?,tx}      ->  res {ok,calls:[{user,at,reason}]} newest first
//	                                   <-  missed-call {user,peer,at,reason}   (to the callee's devices)
//
// Message flow on /media: the device sends {type:"media",ticket}; when both
// devices of the pair are there, each gets {type:"paired",peer}; then binary
// frames are relayed unchanged to the other side until the call ends (close
// 1000 "unpaired").
//
// Every client message carries a numeric tx and gets exactly one Response.
package protocol

import "time"

// Client message types (client -> server on /meta).
const (
	TypeRegUser     = "reg-user"     // create an account (+ initial peers); does not identify the connection
	TypeWhoami      = "whoami"       // identify (log in) this connection; res carries device
	TypeAddPeers    = "add-peers"    // persist peers (deduplicated, never self)
	TypeDelPeers    = "del-peers"    // discard peers (absent ones ignored)
	TypePeers       = "peers"        // list peers; res carries peers: [PeerInfo]
	TypePeersOnline = "peers-online" // obsolete in the seed, kept: res carries online mutual peer names
	TypeStatus      = "status"       // set own status (client) / a peer's status changed (server)
	TypeCall        = "call"         // ring a mutual peer (client) / you are being called (server)
	TypeAccept      = "accept"       // take a ringing call (client) / your call was taken (server)
	TypeReject      = "reject"       // decline a ringing call (client) / your call was declined (server)
	TypeCancel      = "cancel"       // stop ringing (client) / the ringing stopped (server)
	TypeUnpair      = "unpair"       // hang up an active call (client) / the call ended (server)
	TypePasswd      = "passwd"       // change own password: revokes every session, closes the other devices; res carries a new session
	TypeLogout      = "logout"       // revoke this connection's session (the connection stays identified)
	TypeMissedCalls = "missed-calls" // list own missed calls, newest first (clear: true empties the list)
)

// Server-only message types.
const (
	TypeRes        = "res"         // the response to a client message
	TypeForceCall  = "force-call"  // connect your media now, with this ticket
	TypeMissedCall = "missed-call" // a call to you was just missed (to the callee's online devices)
	// TypeReconnecting tells the other side of a call that a device of the
	// call dropped and has the resume grace window to come back.
	TypeReconnecting = "reconnecting"
	// TypeResumed tells the other side that the dropped device is back.
	TypeResumed = "resumed"
)

// Media message types (/media text frames).
const (
	TypeMedia  = "media"  // client -> server: the ticket, first frame
	TypePaired = "paired" // server -> client: both sides are connected
)

// MediaPath is the path of the media WebSocket, sent in force-call.
const MediaPath = "/media"

// Code is a stable error code carried in a failed Response's error field.
type Code string

// Error codes (contract section 2).
const (
	ErrBadJSON         Code = "bad-json"         // the frame is not a JSON object
	ErrBadRequest      Code = "bad-request"      // missing/ill-typed field, invalid name, calling yourself, second whoami
	ErrUnknownType     Code = "unknown-type"     // type is not a client message
	ErrUnauthenticated Code = "unauthenticated"  // anything but whoami/reg-user before whoami
	ErrForbidden       Code = "forbidden"        // user differs from the identified user; reg-user while registration is closed
	ErrAuthFailed      Code = "auth-failed"      // unknown user or wrong password (indistinguishable)
	ErrExists          Code = "exists"           // reg-user for a taken name
	ErrNotFound        Code = "not-found"        // a named peer is not registered (missing lists them)
	ErrNotAPeer        Code = "not-a-peer"       // the two users are not mutual peers
	ErrOffline         Code = "offline"          // the callee has no connected device
	ErrBusy            Code = "busy"             // callee or caller already ringing / in a call with someone else
	ErrNoCall          Code = "no-call"          // accept/reject/cancel/unpair matches no pending or active call
	ErrRateLimited     Code = "rate-limited"     // over a rate limit (messages, auth attempts, registrations)
	ErrTooManyDevices  Code = "too-many-devices" // more identified connections for this user than allowed
	ErrUnavailable     Code = "unavailable"      // store failure or shutdown; nothing was changed
)

// Reasons carried by server-sent reject, cancel and unpair messages.
const (
	ReasonRejected          = "rejected"           // reject: the callee declined
	ReasonTimeout           = "timeout"            // reject/cancel: nobody answered in time
	ReasonCancelled         = "cancelled"          // cancel: the caller stopped ringing
	ReasonAnsweredElsewhere = "answered-elsewhere" // cancel: another device of the callee answered
	ReasonDisconnected      = "disconnected"       // cancel/unpair/reject: a device of the call went away
	ReasonOffline           = "offline"            // reject: the callee's last device left while ringing
	ReasonHangup            = "hangup"             // unpair: the other side hung up
	ReasonShutdown          = "shutdown"           // any: the server is shutting down
)

// Missed-call reasons (contract section 9) are the reasons above: a call is
// recorded as missed for its callee with ReasonTimeout (nobody answered),
// ReasonCancelled (the caller stopped ringing), ReasonDisconnected (the
// caller's device went away while ringing), ReasonOffline (the callee was
// offline when called, or its last device left while ringing) or
// ReasonShutdown (the server stopped while it rang). ReasonRejected and
// ReasonAnsweredElsewhere never make a missed call.

// Status values the server itself sets.
const (
	StatusOnline  = "online"  // a user's status when a connection is identified
	StatusOffline = "offline" // sent when a user's last device leaves
)

// WebSocket close codes used by the server (RFC 6455 section 7.4.1).
const (
	CloseNormal         = 1000 // media: the call ended ("unpaired"); meta: normal close
	CloseGoingAway      = 1001 // the server is shutting down; reconnect later
	CloseProtocolError  = 1002 // a WebSocket protocol violation on /meta (terminal)
	CloseUnsupported    = 1003 // a binary frame on /meta: terminal protocol violation
	ClosePolicy         = 1008 // media: bad ticket; meta: sustained rate-limit abuse, or the password changed (terminal)
	CloseTooBig         = 1009 // a frame over MaxFrameBytes (terminal)
	CloseInternal       = 1011 // unexpected server error; reconnect later
	CloseReasonUnpaired = "unpaired"
	// CloseReasonPasswordChanged closes (ClosePolicy) the other connections
	// of a user whose password was changed: their sessions are revoked.
	CloseReasonPasswordChanged = "password changed"
	// CloseReasonResumed closes (ClosePolicy) a connection whose device
	// was resumed by a newer connection (a half-open one, not noticed yet).
	CloseReasonResumed = "resumed elsewhere"
)

// Limits of the contract. Servers may be configured differently; these are the
// defaults and what clients may rely on unless told otherwise.
const (
	MaxFrameBytes    = 64 << 10 // a larger frame is closed with CloseTooBig
	MaxNameLen       = 64       // user names: 1..64 of [A-Za-z0-9._@-]
	MinPasswordLen   = 8        // bytes
	MaxPasswordLen   = 1024     // bytes
	MaxStatusLen     = 64       // characters
	MaxPeers         = 1000     // peers one user may list
	DefaultDevices   = 8        // identified connections per user
	DefaultRateLimit = 20       // messages per second per connection
	DefaultRateBurst = 50       // burst over DefaultRateLimit

	PingInterval   = 25 * time.Second // the server pings this often
	IdleTimeout    = 60 * time.Second // no pong or frame for this long: dead
	RingingTimeout = 30 * time.Second // default ringing timeout
	TicketTTL      = 30 * time.Second // an unused ticket expires after this
	MediaWait      = 30 * time.Second // the peer's media must arrive within this
	ResumeGrace    = 20 * time.Second // a dropped device may resume this long (contract section 8)

	SessionTTL     = 30 * 24 * time.Hour // default: a session expires this long after its last use
	MaxSessionLen  = 1024                // bytes; a longer session field is bad-request
	MaxMissedCalls = 100                 // missed calls kept per user (oldest dropped)
)
