package server

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// trustedProxy reports whether a is one of Config.TrustedProxies.
func (s *Server) trustedProxy(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range s.proxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientAddr is the address of the client that made r (no port): the TCP
// peer, or, when the peer is a trusted proxy, the rightmost X-Forwarded-For
// hop that is not a trusted proxy. Entries to the left of that are the
// client's own claims and never believed: a client that is not behind a
// trusted proxy cannot choose its address by sending the header.
func (s *Server) clientAddr(r *http.Request) string {
	host := tcpPeer(r)
	peer, err := netip.ParseAddr(host)
	if err != nil || len(s.proxies) == 0 || !s.trustedProxy(peer) {
		return host
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	client := peer.Unmap()
	for i := len(hops) - 1; i >= 0; i-- {
		a, ok := parseHop(hops[i])
		if !ok {
			break // garbage a client wrote: the hop to its right is all we know
		}
		client = a
		if !s.trustedProxy(a) {
			break
		}
	}
	return client.String()
}

// parseHop parses one X-Forwarded-For entry: an address, possibly with a
// port or in brackets.
func parseHop(h string) (netip.Addr, bool) {
	h = strings.TrimSpace(h)
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(h); err == nil {
		return ap.Addr().Unmap(), true
	}
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")); err == nil {
		return a.Unmap(), true
	}
	return netip.Addr{}, false
}

// tcpPeer is r's TCP peer address without the port.
func tcpPeer(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

type clientAddrKey struct{}

// withClientAddr resolves the client address once per request and keeps it
// in the request's context for remoteHost.
func (s *Server) withClientAddr(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := context.WithValue(r.Context(), clientAddrKey{}, s.clientAddr(r))
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// remoteHost is the client address of r (see clientAddr), what the server
// passes on as the remote address (meta.Open, media, logs).
func remoteHost(r *http.Request) string {
	if a, ok := r.Context().Value(clientAddrKey{}).(string); ok {
		return a
	}
	return tcpPeer(r)
}
