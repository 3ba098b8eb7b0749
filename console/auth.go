package console

import (
	"crypto/subtle"
	"net/http"
	"net/url"
	"strings"
)

// authorized checks the request's token. The cookie (s.cookie) carries it once the URL with
// it was opened, so that links need not. A valid ?token= is swapped for a cookie and the URL
// without it, so that it stays out of the browser's history and of every later link. A
// request without a valid token is refused with 401.
func (s *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	if q := r.URL.Query(); q.Has("token") {
		if !s.validToken(q.Get("token")) {
			s.refuse(w, "the token in the URL is not this console's")
			return false
		}
		http.SetCookie(w, &http.Cookie{Name: s.cookie, Value: s.opts.Token, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
		q.Del("token")
		path := r.URL.Path
		if !strings.HasPrefix(path, "/") || strings.HasPrefix(path, "//") || strings.Contains(path, `\`) {
			path = "/" // never a redirect off this console ("//host/…")
		}
		u := url.URL{Path: path, RawQuery: q.Encode()}
		http.Redirect(w, r, u.String(), http.StatusSeeOther)
		return false
	}
	if c, err := r.Cookie(s.cookie); err == nil && s.validToken(c.Value) {
		return true
	}
	if v, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && s.validToken(v) {
		return true
	}
	s.refuse(w, "this console needs its access token: open the URL planrun ui printed (…?token=…)")
	return false
}

func (s *Server) validToken(v string) bool {
	return subtle.ConstantTimeCompare([]byte(v), []byte(s.opts.Token)) == 1
}

func (s *Server) refuse(w http.ResponseWriter, why string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("WWW-Authenticate", `Bearer realm="planrun console"`)
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = w.Write([]byte("401 unauthorized: " + why + "\n"))
}
