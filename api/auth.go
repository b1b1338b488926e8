package api

import (
	"log/slog"
	"net/http"

	"github.com/gin-gonic/gin"
)

// public routes stay open so that kubelet probes need no credentials.
var publicRoutes = map[string]bool{PathLive: true, PathReady: true}

// authenticate checks credentials with server.Authenticator on every route
// but the public ones.
func (s *Server) authenticate(c *gin.Context) {
	if publicRoutes[c.FullPath()] {
		return
	}
	present, ok := s.auth.Check(c.Request)
	if ok {
		return
	}
	msg := "Authentication required"
	if present {
		msg = "Invalid credentials"
	}
	for _, ch := range s.auth.Challenges() {
		c.Writer.Header().Add("WWW-Authenticate", ch)
	}
	s.log.LogAttrs(c.Request.Context(), slog.LevelDebug, "authentication failed",
		slog.String("route", c.FullPath()), slog.Bool("credentials_present", present))
	c.AbortWithStatusJSON(http.StatusUnauthorized, errorBody{Error: "Unauthorized", Message: msg})
}
