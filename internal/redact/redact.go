// Package redact masks credentials in connection URLs, key=value connection
// strings and free text (error messages), so that they can be logged,
// printed or served. It is the only place that knows what a credential
// looks like; every other package calls it.
//
// The rule throughout is that only the secret changes: the rest of the input
// keeps its spelling, spacing and parameter order, and the secret becomes
// Mask. Where the input is ambiguous (a URL that net/url rejects), more is
// masked rather than less.
package redact

import (
	"net/url"
	"regexp"
	"strings"
)

// Mask replaces every secret, as net/url's URL.Redacted does.
const Mask = "xxxxx"

// URL masks the password of a connection URL (scheme://user:password@host),
// the value of every secret-looking query parameter (password=,
// sslpassword=, sentinel_password=, auth_token=, ...) and, for an input that
// is not a URL, every password=... pair (a PostgreSQL key=value connection
// string). It works on the text, so it never fails, even on a URL that does
// not parse.
func URL(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return Text(raw)
	}
	if _, err := url.Parse(raw); err != nil {
		return scheme + "://" + brokenURL(rest)
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		if user, _, hasPass := strings.Cut(authority[:at], ":"); hasPass {
			authority = user + ":" + Mask + authority[at:]
		}
	}
	return scheme + "://" + authority + query(tail)
}

// brokenURL masks the part after "scheme://" of a URL that net/url rejects.
// There the userinfo's boundaries are ambiguous (the password may hold '@',
// '/' or a bad %-escape), so it masks from the first ':' to the last '@',
// preferring to hide too much over leaking a password.
func brokenURL(rest string) string {
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return query(rest)
	}
	if colon := strings.Index(rest[:at], ":"); colon >= 0 {
		return rest[:colon+1] + Mask + "@" + query(rest[at+1:])
	}
	return rest[:at+1] + query(rest[at+1:])
}

// query masks the values of secret parameters in the query of s (the part
// after the first '?', up to a '#'), keeping their order and spelling.
func query(s string) string {
	q := strings.Index(s, "?")
	if q < 0 {
		return s
	}
	params, fragment := s[q+1:], ""
	if h := strings.Index(params, "#"); h >= 0 {
		params, fragment = params[:h], params[h:]
	}
	parts := strings.Split(params, "&")
	for i, part := range parts {
		k, _, hasValue := strings.Cut(part, "=")
		name, err := url.QueryUnescape(k)
		if err != nil {
			name = k
		}
		if hasValue && SecretParam(name) {
			parts[i] = k + "=" + Mask
		}
	}
	return s[:q+1] + strings.Join(parts, "&") + fragment
}

// SecretParam reports whether a URL query parameter carries a credential in
// any URL form the sidecar accepts: password, sslpassword,
// sentinel_password, auth_token, client_secret, sslkey, ...
func SecretParam(name string) bool {
	n := strings.ToLower(name)
	for _, word := range []string{"pass", "secret", "token", "key"} {
		if strings.Contains(n, word) {
			return true
		}
	}
	return false
}

var (
	// scheme://user:password@host, up to the last '@' before white space.
	textURL = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)\S*@`)
	// password=..., sslpassword = '...', sentinel_password=..., PASSWORD: ...,
	// X-Auth-Token: ...; a quoted value may contain spaces and \-escapes
	// (libpq's rules).
	textPair = regexp.MustCompile(`(?i)\b((?:[a-z0-9]+[_.-])*(?:ssl)?(?:password|passwd|pwd|pass|secret|token))(\s*[=:]\s*)('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\S+)`)
)

// Text masks anything that looks like a credential in free text such as an
// error message: the password of a URL it quotes and the value of every
// password=..., token: ... pair.
func Text(msg string) string {
	msg = textURL.ReplaceAllString(msg, "${1}"+Mask+"@")
	return textPair.ReplaceAllString(msg, "${1}${2}"+Mask)
}

// Secrets returns every password candidate of a connection URL or key=value
// string: the userinfo password (read up to the first and to the last '@',
// since a broken URL is ambiguous), secret query parameters and
// password=... values. Scrub takes them out of messages that quote them.
func Secrets(conn string) []string {
	var secrets []string
	if _, rest, ok := strings.Cut(conn, "://"); ok {
		for _, at := range []int{strings.Index(rest, "@"), strings.LastIndex(rest, "@")} {
			if at < 0 {
				continue
			}
			if _, pw, ok := strings.Cut(rest[:at], ":"); ok {
				secrets = append(secrets, pw)
			}
		}
		if _, q, ok := strings.Cut(rest, "?"); ok {
			q, _, _ = strings.Cut(q, "#")
			for _, kv := range strings.Split(q, "&") {
				if k, v, ok := strings.Cut(kv, "="); ok && SecretParam(k) {
					secrets = append(secrets, v)
				}
			}
		}
	}
	for _, m := range textPair.FindAllStringSubmatch(conn, -1) {
		if strings.Contains(m[2], "=") {
			secrets = append(secrets, strings.Trim(m[3], `'"`))
		}
	}
	return secrets
}

// Scrub removes every secret, in each of the spellings a driver or net/url
// may quote it in (as given, %-escaped or %-unescaped), from msg, then
// masks whatever else Text recognises. Drivers' errors can quote their
// input, where the structured forms above cannot find the password
// reliably, so this searches for the secret text itself.
func Scrub(msg string, secrets ...string) string {
	for _, s := range secrets {
		variants := []string{s, url.QueryEscape(s), url.PathEscape(s), url.UserPassword("", s).String()}
		if u, err := url.PathUnescape(s); err == nil {
			variants = append(variants, u)
		}
		if u, err := url.QueryUnescape(s); err == nil {
			variants = append(variants, u)
		}
		for _, v := range variants {
			if v != "" && v != ":" {
				msg = strings.ReplaceAll(msg, v, Mask)
			}
		}
	}
	return Text(msg)
}
