package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// Authenticator checks a request's credentials. It keeps only digests:
// comparing fixed-size digests in constant time hides the secrets' lengths
// as well as their content.
type Authenticator struct {
	bearer     *[sha256.Size]byte
	user, pass *[sha256.Size]byte
	challenges []string
}

func digest(s string) *[sha256.Size]byte {
	d := sha256.Sum256([]byte(s))
	return &d
}

func equal(a, b *[sha256.Size]byte) bool { return subtle.ConstantTimeCompare(a[:], b[:]) == 1 }

// NewAuthenticator reads the credentials (the *_file variants included) and
// returns nil, nil when none is set: auth is off.
func NewAuthenticator(c AuthConfig) (*Authenticator, error) {
	token, password, err := c.Credentials()
	if err != nil {
		return nil, err
	}
	if token == "" && c.BasicUsername == "" && password == "" {
		return nil, nil
	}
	var au Authenticator
	if token != "" {
		au.bearer = digest(token)
		au.challenges = append(au.challenges, `Bearer realm="tasker-sidecar"`)
	}
	if c.BasicUsername != "" {
		au.user, au.pass = digest(c.BasicUsername), digest(password)
		au.challenges = append(au.challenges, `Basic realm="tasker-sidecar", charset="UTF-8"`)
	}
	return &au, nil
}

// Check reports whether r carries credentials at all and whether they match.
func (a *Authenticator) Check(r *http.Request) (present, ok bool) {
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

// Authorized reports whether r carries valid credentials.
func (a *Authenticator) Authorized(r *http.Request) bool {
	_, ok := a.Check(r)
	return ok
}

// Challenges are the WWW-Authenticate values of a 401 answer.
func (a *Authenticator) Challenges() []string { return a.challenges }
