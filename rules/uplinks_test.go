package rules

import (
	"context"
	"strings"
	"testing"
	"time"
)

const uplinksYAML = `lan: [lan0]
uplinks:
  - {interface: wan0, via: 203.0.113.254}
  - {interface: wan1, public_address: 198.51.100.10, via: 198.51.100.1, table: 300}
forwards: [{port: 1723, to: 10.0.1.5}]
`

func TestUplinksConfig(t *testing.T) {
	c, err := Parse([]byte(uplinksYAML))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.WAN != "wan0" || c.PublicAddress != "" {
		t.Errorf("wan %q public %q: uplink 0 is the wan", c.WAN, c.PublicAddress)
	}
	p := NewPlan(c)
	if len(p.Uplinks) != 2 || p.Uplinks[1].Public.String() != "198.51.100.10" || p.Uplinks[0].Public.IsValid() {
		t.Errorf("plan uplinks %+v", p.Uplinks)
	}
	rp := NewRoutingPlan(c)
	var got []string
	for _, r := range rp.Routes {
		got = append(got, r.String())
	}
	for _, r := range rp.Rules {
		got = append(got, r.String())
	}
	want := "0.0.0.0/0 table 4700 via 203.0.113.254 dev wan0|0.0.0.0/0 table 300 via 198.51.100.1 dev wan1|" +
		"500: fwmark 0x100/0xff00 lookup 4700|501: fwmark 0x200/0xff00 lookup 300"
	if s := strings.Join(got, "|"); s != want {
		t.Errorf("routing plan\n got %s\nwant %s", s, want)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"wan: wan9\nuplinks: [{interface: wan0}, {interface: wan1}]", "wan: \"wan9\" is not uplinks[0].interface"},
		{"uplinks: [{interface: wan0}, {interface: wan0}]", "uplinks[1].interface: \"wan0\" is already uplinks[0]"},
		{"uplinks: [{interface: wan0}, {interface: lan0}]", "uplinks[1].interface: \"lan0\" is also lan[0]"},
		{"uplinks: [{interface: wan0, public_address: 198.51.100.1}, {interface: wan1, public_address: 198.51.100.1}]", "is already uplinks[0]'s"},
		{"uplinks: [{interface: wan0, via: nope}, {interface: wan1}]", "uplinks[0].via: \"nope\" is not an IPv4 address"},
		{"uplinks: [{interface: wan0, table: 254}, {interface: wan1}]", "uplinks[0].table: 254 is a kernel table"},
		{"uplinks: [{interface: wan0}, {interface: wan1, table: 4700}]", "table 4700 is already uplinks[0]'s"},
		{"uplinks: [{interface: wan0}, {interface: wan1}]\nrouting: {tables: [{name: x, id: 4701, routes: [{to: default, interface: wan1}]}]}", "table 4701 is also routing.tables[0]"},
	} {
		c, err := Parse([]byte("lan: [lan0]\n" + tc.yaml + "\n"))
		if err == nil {
			err = c.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got %v\nwant %q", tc.yaml, err, tc.want)
		}
	}
}

// TestUplinksNetns installs a two-uplink table, pins pairs through
// UplinkPins and reads the map back with nft; the fail-safe table covers
// both uplinks.
func TestUplinksNetns(t *testing.T) {
	ns, h := testNetns(t)
	c, err := Parse([]byte(uplinksYAML))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	plan := NewPlan(c)
	plan.Table, plan.NetNS = "pgup", int(h)
	in, err := Install(plan)
	if err != nil {
		t.Fatal(err)
	}
	out, err := nsListTable(ns, "pgup")
	if err != nil {
		t.Fatal(err)
	}
	norm, _ := comparable(out)
	for _, w := range []string{
		"map uplink_pin {", "type ipv4_addr . ipv4_addr : verdict",
		"chain uplink_0 {", "meta mark set meta mark & 0xffff01ff | 0x00000100",
		"chain uplink_1 {", "meta mark set meta mark & 0xffff02ff | 0x00000200",
		"type filter hook prerouting priority mangle", "ip protocol gre ip saddr . ip daddr vmap @uplink_pin",
		`oifname "wan1" snat to 198.51.100.10`, `oifname "wan0" masquerade`,
		`iifname "wan1" tcp dport 1723 dnat to 10.0.1.5`,
	} {
		if !strings.Contains(norm, w) {
			t.Errorf("ruleset lacks %q:\n%s", w, out)
		}
	}
	if n := strings.Count(norm, `oifname "wan1"`); n < 4 { // 3 queue rules + snat
		t.Errorf("%d rules for wan1's way out, want 4:\n%s", n, out)
	}

	pins, err := NewUplinkPins("pgup", int(h), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go pins.Run(ctx)
	a, b, peer := [4]byte{10, 0, 1, 2}, [4]byte{10, 0, 1, 3}, [4]byte{203, 0, 113, 2}
	pins.Pin(a, peer, 0)
	pins.Pin(b, peer, 1)
	pins.Pin(b, peer, 0) // moved
	pins.Pin(b, peer, 1) // and back
	pins.Pin([4]byte{10, 0, 1, 4}, peer, 1)
	pins.Unpin([4]byte{10, 0, 1, 4}, peer)
	wantMap := func(want ...string) {
		t.Helper()
		var got string
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			got = nsRun(t, ns, "nft", "list", "map", "ip", "pgup", "uplink_pin")
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(got, w)
			}
			if ok && strings.Count(got, "jump") == len(want) {
				return
			}
		}
		t.Errorf("map uplink_pin, want %q:\n%s", want, got)
	}
	wantMap("10.0.1.2 . 203.0.113.2 : jump uplink_0", "10.0.1.3 . 203.0.113.2 : jump uplink_1")
	pins.Unpin(a, peer)
	wantMap("10.0.1.3 . 203.0.113.2 : jump uplink_1")
	if pins.Failed.Load() != 0 || pins.Dropped.Load() != 0 {
		t.Errorf("failed %d, dropped %d", pins.Failed.Load(), pins.Dropped.Load())
	}

	// A reload installs the table again, with an empty map: the writer
	// puts the pins back, in order with what was queued before.
	if in, err = Install(plan); err != nil {
		t.Fatal(err)
	}
	if got := nsRun(t, ns, "nft", "list", "map", "ip", "pgup", "uplink_pin"); strings.Contains(got, "jump") {
		t.Fatalf("map not empty after the reinstall:\n%s", got)
	}
	pins.Pin(a, peer, 1)
	pins.Reinstalled()
	pins.Unpin(b, peer)
	wantMap("10.0.1.2 . 203.0.113.2 : jump uplink_1")
	// A pin that meets the emptied map before Reinstalled does: the
	// writer's state is stale (it would delete what is not there); it reads
	// the map back and applies the pin.
	if in, err = Install(plan); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let Run idle: the next op is a batch of its own
	pins.Pin(a, peer, 0)
	wantMap("10.0.1.2 . 203.0.113.2 : jump uplink_0")
	if pins.Failed.Load() != 0 {
		t.Errorf("a pin failed after the reinstall (%d)", pins.Failed.Load())
	}
	// Pins in force survive a pin the emptied map refuses before the
	// reinstall is announced: a move of a (its old element is gone) must
	// not make the writer forget b.
	pins.Pin(b, peer, 1)
	wantMap("10.0.1.2 . 203.0.113.2 : jump uplink_0", "10.0.1.3 . 203.0.113.2 : jump uplink_1")
	if in, err = Install(plan); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	pins.Pin(a, peer, 1)
	time.Sleep(50 * time.Millisecond)
	pins.Reinstalled()
	wantMap("10.0.1.2 . 203.0.113.2 : jump uplink_1", "10.0.1.3 . 203.0.113.2 : jump uplink_1")

	if err := in.ReduceToFailsafe(); err != nil {
		t.Fatal(err)
	}
	out, _ = nsListTable(ns, "pgup")
	for _, w := range []string{`ip protocol gre oifname "wan0" fib saddr type != local drop`, `ip protocol gre oifname "wan1" fib saddr type != local drop`} {
		if !strings.Contains(out, w) {
			t.Errorf("fail-safe table lacks %q:\n%s", w, out)
		}
	}
}

// `wan:` may be a list: the same as uplinks with those interfaces; a
// single name keeps working.
func TestWANList(t *testing.T) {
	c, err := Parse([]byte("wan: [wan0, wan1]   # two uplinks\nlan: [lan0]\nqueue: 5\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.WAN != "wan0" || len(c.Uplinks) != 2 || c.Uplinks[1].Interface != "wan1" || c.Queue != 5 {
		t.Errorf("wan %q uplinks %+v queue %d", c.WAN, c.Uplinks, c.Queue)
	}
	if p := NewPlan(c); len(p.Uplinks) != 2 {
		t.Errorf("plan uplinks %+v", p.Uplinks)
	}
	c, err = Parse([]byte("wan: wan0\nlan: [lan0]\n"))
	if err != nil || c.WAN != "wan0" || len(c.Uplinks) != 0 {
		t.Errorf("single wan: %q %+v %v", c.WAN, c.Uplinks, err)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"wan: [a, b]\nuplinks: [{interface: a}]\n", "line 1: wan is a list and uplinks is set"},
		{"wan: []\n", "line 1: wan: an empty list"},
		{"wan: [a, [b]]\n", "wan: a list of interface names"},
		{"lan: [x]\nwan: [a, b]\nqueue: 5\ntabel: x\n", "unknown field \"tabel\""},
		// Decoding errors carry the lines of the text as written (the
		// rewritten text has no blank lines or comments).
		{"lan: [x]\n\n# c\nwan: [a, b]\n\n\n# comment\n\ntabel: x\n", "line 9: unknown field \"tabel\""},
		{"lan: [x]\nwan:\n  - a\n\n  - b\n\nqueue: x\n", "line 7: cannot unmarshal !!str `x` into uint16"},
	} {
		if _, err := Parse([]byte(tc.yaml)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.yaml, err, tc.want)
		}
	}
	// Validate's errors about the uplinks of a list name the item's line.
	c, err = Parse([]byte("lan: [lan0]\n\nwan:\n  - wan0\n  - \"bad name!\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "5: uplinks[1].interface") {
		t.Errorf("bad name in the wan list: %v, want line 5", err)
	}
}
