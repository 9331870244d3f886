package protocol

import (
	"encoding/json"
	"strconv"
)

// The server encodes several frames per call setup; these appenders produce
// exactly what encoding/json would (a test holds them to that) without its
// reflection, which was a visible share of the server's CPU per setup.

// AppendJSON appends e encoded as JSON to b.
func (e *Event) AppendJSON(b []byte) []byte {
	b = append(b, `{"type":`...)
	b = appendString(b, e.Type)
	b = appendField(b, "user", e.User)
	b = appendField(b, "peer", e.Peer)
	if e.Tx != "" {
		b = append(b, `,"tx":`...)
		b = append(b, e.Tx...)
	}
	b = appendField(b, "status", e.Status)
	b = appendField(b, "reason", e.Reason)
	b = appendField(b, "ticket", e.Ticket)
	b = appendField(b, "media", e.Media)
	b = appendField(b, "at", e.At)
	return append(b, '}')
}

// AppendJSON appends r encoded as JSON to b.
func (r *Response) AppendJSON(b []byte) []byte {
	b = append(b, `{"type":`...)
	b = appendString(b, r.Type)
	b = append(b, `,"for":`...)
	b = appendString(b, r.For)
	b = append(b, `,"tx":`...)
	if r.Tx == "" {
		b = append(b, "null"...)
	} else {
		b = append(b, r.Tx...)
	}
	b = append(b, `,"ok":`...)
	b = strconv.AppendBool(b, r.OK)
	b = appendField(b, "error", string(r.Error))
	b = appendField(b, "reason", r.Reason)
	b = appendField(b, "device", r.Device)
	if len(r.Missing) > 0 {
		b = append(b, `,"missing":[`...)
		for i, m := range r.Missing {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, m)
		}
		b = append(b, ']')
	}
	if len(r.Peers) > 0 {
		b = append(b, `,"peers":`...)
		b = append(b, r.Peers...)
	}
	b = appendField(b, "session", r.Session)
	if len(r.Calls) > 0 {
		b = append(b, `,"calls":`...)
		b = append(b, r.Calls...)
	}
	return append(b, '}')
}

// appendField appends ,"name":"v" unless v is empty (omitempty).
func appendField(b []byte, name, v string) []byte {
	if v == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendString(b, v)
}

// appendString appends s as a JSON string, as encoding/json writes it.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // rare: escapes and non-ASCII
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
