package server

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// hostPolicy decides which Host headers the server answers: DNS rebinding
// protection. A web page on evil.example whose name an attacker re-points
// at 127.0.0.1 (or at a LAN address) makes the visitor's browser talk to
// this server, but the browser still sends "Host: evil.example"; refusing
// every Host that is not one of the server's names stops it on every path,
// and makes the Origin check (Origin against Host) sound.
//
// Always allowed: IP literals (a rebinding page cannot make the browser send
// one: the page's own origin would then be that address, not the
// attacker's), "localhost" and "*.localhost" (they never resolve off the
// machine), and an empty Host (HTTP/1.0; no browser sends that). Ports are
// not compared unless an entry names one: an attacker controls the name,
// not the port.
type hostPolicy struct {
	exact    map[string]string // lower-case name -> required port, "" for any
	suffixes map[string]string // ".example.com" (from "*.example.com") -> port
}

func newHostPolicy(publicURL string, allowed []string) (*hostPolicy, error) {
	p := &hostPolicy{exact: map[string]string{}, suffixes: map[string]string{}}
	if publicURL != "" {
		u, err := url.Parse(publicURL)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("server: public URL %q: want http(s)://host[:port]/", publicURL)
		}
		p.exact[normHost(u.Hostname())] = "" // any port: a proxy may change it
	}
	for _, a := range allowed {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		name, port := splitHost(a)
		if name == "" || strings.ContainsAny(name, "/@ ") {
			return nil, fmt.Errorf("server: allowed host %q: want name or name:port", a)
		}
		if rest, ok := strings.CutPrefix(name, "*."); ok {
			p.suffixes["."+rest] = port
			continue
		}
		p.exact[name] = port
	}
	return p, nil
}

// allow reports whether host (a Host header) names this server.
func (p *hostPolicy) allow(host string) bool {
	if host == "" {
		return true
	}
	name, port := splitHost(host)
	if _, err := netip.ParseAddr(name); err == nil {
		return true
	}
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		return true
	}
	if want, ok := p.exact[name]; ok && (want == "" || want == port) {
		return true
	}
	for suffix, want := range p.suffixes {
		if strings.HasSuffix(name, suffix) && (want == "" || want == port) {
			return true
		}
	}
	return false
}

// splitHost splits "name:port", "[v6]:port", "name" or "v6" into a
// normalised name and the port ("" when absent).
func splitHost(h string) (name, port string) {
	if n, p, err := net.SplitHostPort(h); err == nil {
		return normHost(n), p
	}
	return normHost(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")), ""
}

func normHost(n string) string { return strings.TrimSuffix(strings.ToLower(n), ".") }

// checkHost answers 421 Misdirected Request to a request whose Host is not
// one of the server's names, on every path (/meta and /media included).
func (s *Server) checkHost(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.hosts.allow(r.Host) {
			s.hostRefused.Inc()
			s.log.Debug("request for an unknown host refused", "host", r.Host, "remote", s.clientAddr(r))
			http.Error(w, "misdirected request: unknown host (see umplug serve -public-url and -allowed-hosts)", http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}
