package exporters

import (
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
)

// authenticator keeps only digests: comparing fixed-size digests in constant
// time hides the secrets' lengths as well as their content.
type authenticator struct {
	bearer     *[sha256.Size]byte
	user, pass *[sha256.Size]byte
	challenges []string
}

func digest(s string) *[sha256.Size]byte {
	d := sha256.Sum256([]byte(s))
	return &d
}

func equal(a, b *[sha256.Size]byte) bool { return subtle.ConstantTimeCompare(a[:], b[:]) == 1 }

func newAuthenticator(a Auth) *authenticator {
	var au authenticator
	if a.BearerToken != "" {
		au.bearer = digest(a.BearerToken)
		au.challenges = append(au.challenges, `Bearer realm="tasker-sidecar"`)
	}
	if a.BasicUser != "" {
		au.user, au.pass = digest(a.BasicUser), digest(a.BasicPassword)
		au.challenges = append(au.challenges, `Basic realm="tasker-sidecar", charset="UTF-8"`)
	}
	return &au
}

// check reports whether r carries credentials at all and whether they match.
func (a *authenticator) check(r *http.Request) (present, ok bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return false, false
	}
	scheme, cred, _ := strings.Cut(h, " ")
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		return true, a.bearer != nil && equal(digest(strings.TrimSpace(cred)), a.bearer)
	case strings.EqualFold(scheme, "Basic"):
		user, pass, parsed := r.BasicAuth()
		if !parsed || a.user == nil {
			return true, false
		}
		// Both halves are always compared so timing does not tell which failed.
		u := equal(digest(user), a.user)
		p := equal(digest(pass), a.pass)
		return true, u && p
	}
	return true, false
}

// authorized reports whether r carries valid credentials.
func (a *authenticator) authorized(r *http.Request) bool {
	_, ok := a.check(r)
	return ok
}

// public routes stay open so that kubelet probes need no credentials.
var publicRoutes = map[string]bool{PathLive: true, PathReady: true}

func (s *Server) authenticate(c *gin.Context) {
	if publicRoutes[c.FullPath()] {
		return
	}
	present, ok := s.auth.check(c.Request)
	if ok {
		return
	}
	msg := "Authentication required"
	if present {
		msg = "Invalid credentials"
	}
	for _, ch := range s.auth.challenges {
		c.Writer.Header().Add("WWW-Authenticate", ch)
	}
	s.log.LogAttrs(c.Request.Context(), slog.LevelDebug, "authentication failed",
		slog.String("route", c.FullPath()), slog.Bool("credentials_present", present))
	c.AbortWithStatusJSON(http.StatusUnauthorized, errorBody{Error: "Unauthorized", Message: msg})
}
