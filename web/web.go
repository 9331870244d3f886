// Package web is the umplug web app and browser client library, embedded in
// the server binary so that a deployment is one file and the app works with
// no network access beyond the server itself.
//
// Handler serves:
//
//	/            the web app (index.html)
//	/umplug.js   the browser client library (an ES module, no build step)
//	/app.js      the web app's script
//	/app.css     the web app's styles
//
// Every response carries Cache-Control: no-cache so that a browser always
// revalidates and picks up a new server version at once (the files are small;
// revalidation is cheap thanks to ETag).
package web

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strconv"
	"strings"
)

//go:embed static
var static embed.FS

// contentTypes maps the extensions we ship to their Content-Type, so that the
// answer does not depend on the host's mime tables (an ES module served as
// text/plain is refused by browsers).
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".ico":  "image/x-icon",
	".json": "application/json",
	".md":   "text/markdown; charset=utf-8",
}

// file is one embedded asset, loaded once.
type file struct {
	body  []byte
	ctype string
	etag  string
}

// Handler returns the handler for the web app and the client library. Mount
// it at "/"; paths that name no embedded file get 404, and only GET and HEAD
// are allowed.
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic("web: embedded static dir missing: " + err.Error()) // cannot happen: embedded at build time
	}
	files := map[string]*file{}
	_ = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		ct, ok := contentTypes[path.Ext(p)]
		if !ok {
			ct = "application/octet-stream"
		}
		sum := sha256.Sum256(b)
		files["/"+p] = &file{body: b, ctype: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if p == "/" {
			p = "/index.html"
		}
		f, ok := files[p]
		if !ok || strings.Contains(p, "..") {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Type", f.ctype)
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", f.etag)
		h.Set("X-Content-Type-Options", "nosniff")
		if p == "/index.html" {
			// The app loads only its own scripts and talks only to its own
			// origin (ws: and wss: to the same host); media is blob: URLs.
			h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self'; media-src 'self' blob: mediastream:; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
			h.Set("Referrer-Policy", "no-referrer")
		}
		if match := r.Header.Get("If-None-Match"); match != "" && match == f.etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		h.Set("Content-Length", strconv.Itoa(len(f.body)))
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(f.body)
	})
}
