package pptp

import (
	"net/netip"
	"strings"
	"testing"
)

// Reload: new secrets let a new user in (and lock an old one out) without
// touching a live session; a grown pool hands out its new addresses; fixed
// settings and a shrinking pool are refused with nothing changed.
func TestServerReload(t *testing.T) {
	last := netip.MustParseAddr("10.8.0.10")
	r := newRig(t, func(c *Config) { c.PoolEnd = last }) // one address
	alice, err := r.dial(t, "alice", "s3cret pass", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	if _, err := r.dial(t, "carol", "pw", nil); err == nil {
		t.Fatal("carol got in before she was in the secrets")
	}
	cur := r.srv.Config()

	// Refused: fixed settings, a pool that shrinks or moves.
	for name, mod := range map[string]func(*Config){
		"mru":    func(c *Config) { c.MRU = 1300 },
		"listen": func(c *Config) { c.Listen = ":1724" },
		"pool": func(c *Config) {
			c.PoolStart = netip.MustParseAddr("10.8.0.11")
			c.PoolEnd = netip.MustParseAddr("10.8.0.30")
		},
	} {
		next := cur
		mod(&next)
		err := r.srv.Reload(next)
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("reload changing %s: %v, want refused naming it", name, err)
		}
	}
	if got := r.srv.Config(); got.MRU != cur.MRU || got.PoolEnd != cur.PoolEnd || got.Listen != cur.Listen {
		t.Fatalf("a refused reload changed the configuration: %+v", got)
	}

	next := cur
	next.Secrets = mapSecrets{"alice": "s3cret pass", "carol": "pw"}
	next.PoolEnd = netip.MustParseAddr("10.8.0.11")
	next.MaxSessions = 0 // the new pool's size
	next.MaxConns = 50
	if err := r.srv.Reload(next); err != nil {
		t.Fatal(err)
	}
	if got := r.srv.Config(); got.MaxSessions != 2 || got.MaxConns != 50 {
		t.Fatalf("after the reload: max_sessions %d max_conns %d, want 2 and 50", got.MaxSessions, got.MaxConns)
	}
	carol, err := r.dial(t, "carol", "pw", nil)
	if err != nil {
		t.Fatalf("carol after the reload: %v", err)
	}
	defer carol.Close()
	if a := carol.Session().Info().LocalIP; a != next.PoolEnd {
		t.Fatalf("carol got %s, want the grown pool's new address %s", a, next.PoolEnd)
	}
	if _, err := r.dial(t, "bob", "hunter2", nil); err == nil {
		t.Fatal("bob got in after he left the secrets")
	}
	// Alice's session, set up before the reload, still carries traffic.
	ping(t, alice, localIP, 100)
}
