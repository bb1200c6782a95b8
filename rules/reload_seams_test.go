package rules

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"pptpgw/conntrack"
)

// In the kernel: a reload of a table installed with the GRE fast path keeps
// the fast path's maps, their elements and the rules that use them. The
// reloaded configuration says gre_path as the operator wrote it (auto, the
// default), never resolved: Apply must not read that as "no fast path"
// (before, it deleted gre_out and gre_in with every live call's elements,
// and the flusher's every transaction failed from then on).
func TestApplyKeepsFastPathNetns(t *testing.T) {
	ns, h := testNetns(t)
	plan := Plan{Table: "pgf", WAN: "wan0", Queue: 48, FailOpen: true, MSS: MSSClamp{Mode: MSSAuto},
		NetNS: int(h), GREPath: GREPathAuto}
	in, err := Install(plan)
	if err != nil {
		t.Fatal(err)
	}
	if !in.KernelGRE {
		t.Skip("this kernel cannot run the GRE fast path")
	}
	m, err := NewGREMaps(plan.Table, int(h))
	if err != nil {
		t.Fatal(err)
	}
	out := conntrack.GREOut{Key: conntrack.OutKey{InsideIP: [4]byte{10, 0, 0, 2}, PeerIP: [4]byte{198, 51, 100, 7}, PeerCallID: 0x1234},
		OutData: conntrack.OutData{PublicIP: [4]byte{203, 0, 113, 1}}}
	inb := conntrack.GREIn{Key: conntrack.InKey{PublicIP: [4]byte{203, 0, 113, 1}, PeerIP: [4]byte{198, 51, 100, 7}, OutsideCallID: 0x4321},
		InData: conntrack.InData{InsideIP: [4]byte{10, 0, 0, 2}, InsideCallID: 0x0777}}
	if err := m.Update(nil, nil, []conntrack.GREOut{out}, []conntrack.GREIn{inb}); err != nil {
		t.Fatal(err)
	}
	for _, gp := range []string{GREPathAuto, GREPathKernel, ""} {
		next := plan
		next.GREPath = gp
		next.MSS = MSSClamp{Mode: MSSOff} // something that changes
		if err := in.Apply(next); err != nil {
			t.Fatalf("gre_path %q: %v", gp, err)
		}
		got, err := nsListTable(ns, plan.Table)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"map " + SetGREOut, "map " + SetGREIn, "198.51.100.7", "@" + SetGREOut, "@" + SetGREIn} {
			if !strings.Contains(got, want) {
				t.Errorf("after a reload with gre_path %q the table lacks %q:\n%s", gp, want, got)
			}
		}
		if err := m.Update(nil, nil, nil, nil); err != nil {
			t.Errorf("gre_path %q: the flusher's maps after the reload: %v", gp, err)
		}
		if o, i, err := m.Read(); err != nil || len(o) != 1 || len(i) != 1 {
			t.Errorf("gre_path %q: elements after the reload: %d out, %d in, %v", gp, len(o), len(i), err)
		}
	}
}

// In the kernel: a reload that changes a conntrack timeout leaves one ct
// timeout object per policy in force, never the replaced ones (they are
// named by a hash of their policy, so each change adds a new object), and
// a reload without ct timeouts leaves none.
func TestApplyCtTimeoutObjectsNetns(t *testing.T) {
	ns, h := testNetns(t)
	plan := Plan{Table: "pgt", WAN: "wan0", Queue: 49, FailOpen: true, MSS: MSSClamp{Mode: MSSOff}, NetNS: int(h)}
	plan.CtTimeouts.TCP.Established = 2 * time.Hour
	in, err := Install(plan)
	if err != nil {
		t.Fatal(err)
	}
	objects := func() []string {
		out := nsRun(t, ns, "nft", "list", "table", "ip", plan.Table)
		var names []string
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) >= 3 && f[0] == "ct" && f[1] == "timeout" && strings.HasSuffix(l, "{") {
				names = append(names, f[2])
			}
		}
		return names
	}
	for _, est := range []time.Duration{3 * time.Hour, 4 * time.Hour, 4 * time.Hour} {
		next := plan
		next.CtTimeouts.TCP.Established = est
		if err := in.Apply(next); err != nil {
			t.Fatal(err)
		}
		want := CtTimeoutObjects(next)
		if got := objects(); !slices.Equal(got, want) {
			t.Errorf("after a reload to established %v: ct timeout objects %v, want %v", est, got, want)
		}
	}
	next := plan
	next.CtTimeouts = KernelTimeouts{}
	if err := in.Apply(next); err != nil {
		t.Fatal(err)
	}
	if got := objects(); len(got) != 0 {
		t.Errorf("after a reload without ct timeouts: objects %v left", got)
	}
}

// The uplinks are fixed while running like the WAN: the engine's uplink
// table, its pin writer and the followers of each uplink are set up at
// start, so a reload that adds, removes or readdresses an uplink would
// install the new uplinks' rules and routes with an engine that knows
// nothing of them (calls leaving by a new uplink translated to another
// uplink's address) or fail deep in the nftables transaction (uplink_pin's
// elements jump to the chain of a removed uplink). Their via and table may
// change: routing applies them live.
func TestFixedChangesUplinks(t *testing.T) {
	cur, err := Parse([]byte("wan: [w0, w1]\nlan: [l0]\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		next  string
		fixed bool
	}{
		{"wan: [w0, w1]\nlan: [l0]\n", false},
		{"wan: [w0, w1, w2]\nlan: [l0]\n", true},
		{"wan: w0\nlan: [l0]\n", true},
		{"lan: [l0]\nuplinks:\n  - interface: w0\n  - interface: w1\n    table: 250\n", false},
		{"lan: [l0]\nuplinks:\n  - interface: w0\n  - interface: w1\n    public_address: 203.0.113.7\n", true},
	} {
		next, err := Parse([]byte(tc.next))
		if err != nil {
			t.Fatalf("%q: %v", tc.next, err)
		}
		err = cur.FixedChanges(next)
		if got := err != nil && strings.Contains(err.Error(), "uplinks"); got != tc.fixed {
			t.Errorf("%q: FixedChanges %v, want an uplinks change: %v", tc.next, err, tc.fixed)
		}
	}
}

// In the kernel: with a pool and several uplinks, the pool's rules for
// traffic from inside (the hairpin queue rules, the SYN to a public
// address from inside) exclude every uplink, not only the WAN, and an
// outside client's opening SYN by another uplink is queued as one from the
// WAN is. Before, a client's segments and GRE by uplink 1 were queued by
// pool_hairpin and by queue_prerouting both.
func TestInstallPoolUplinksNetns(t *testing.T) {
	ns, h := testNetns(t)
	p := goldenPoolPlan(QueueAuto)
	p.Table, p.NetNS = "pgu", int(h)
	p.Uplinks = []PlanUplink{{Name: p.WAN}, {Name: "wan1", Public: netip.MustParseAddr("203.0.113.9")}}
	in, err := Install(p)
	if err != nil {
		t.Fatalf("Install: %v", err)
	}
	defer in.Remove()
	out, err := nsListTable(ns, p.Table)
	if err != nil {
		t.Fatalf("nft list: %v: %s", err, out)
	}
	text, _ := comparable(out)
	for _, w := range []string{
		`tcp dport 1723 tcp flags syn / syn,ack iifname "wan1"`,
		`fib daddr type local iifname != "wan0" iifname != "wan1"`,
		`tcp dport 1723 ct status dnat iifname != "wan0" iifname != "wan1"`,
		`tcp sport 1723 ct status snat iifname != "wan0" iifname != "wan1"`,
		`ip protocol gre fib daddr type local iifname != "wan0" iifname != "wan1"`,
	} {
		if !strings.Contains(text, w) {
			t.Errorf("pool ruleset with two uplinks lacks %q:\n%s", w, out)
		}
	}
}
