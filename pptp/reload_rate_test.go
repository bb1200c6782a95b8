package pptp

import (
	"testing"

	"pptpgw/qos"
)

// A reload that changes limits.session_rate (or a user's rate) applies to
// sessions set up after it (before, sessions kept taking their rate from
// the configuration the server started with, while the reload said
// "configuration reloaded").
func TestServerReloadSessionRate(t *testing.T) {
	r := newRig(t, nil)
	rate, err := qos.ParseRate("512kbit")
	if err != nil {
		t.Fatal(err)
	}
	next := r.srv.Config()
	next.RateLimits = RateLimits{Session: rate}
	if err := r.srv.Reload(next); err != nil {
		t.Fatal(err)
	}
	alice, err := r.dial(t, "alice", "s3cret pass", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	ss := r.srv.Sessions()
	if len(ss) != 1 || ss[0].Rate != rate.String() {
		t.Fatalf("sessions after a reload to session_rate %v: %+v", rate, ss)
	}
}
