package logging

import (
	"bytes"
	"fmt"
	"log"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// The Writer adapter (http.Server.ErrorLog): a flood of error lines is one
// line, then one line with the count when the interval is over. The rest of
// RateLimiter is tested where it started, pptp's TestRateLog.
func TestRateLimiterWriter(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1e6, 0)
	var left int
	r := NewRateLimiter(slog.New(slog.NewTextHandler(&buf, nil)), 10*time.Second, func() time.Time { return now }, func(n int) { left += n })
	l := log.New(r.Writer("metrics endpoint: HTTP server error"), "", 0)
	for i := range 1000 {
		l.Printf("http: TLS handshake error from 192.0.2.%d:1234", i%250)
	}
	if n := strings.Count(buf.String(), "\n"); n != 1 || !strings.Contains(buf.String(), `err="http: TLS handshake error from 192.0.2.0:1234"`) {
		t.Fatalf("%d lines:\n%s", n, buf.String())
	}
	now = now.Add(10 * time.Second)
	r.Flush(now)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "suppressed=999") || left != 999 {
		t.Fatalf("after the interval (left %d):\n%s", left, buf.String())
	}
	fmt.Fprint(r.Writer("x"), "once\n")
	if !strings.Contains(buf.String(), `msg=x err=once`) {
		t.Errorf("new message not logged in full:\n%s", buf.String())
	}
}
