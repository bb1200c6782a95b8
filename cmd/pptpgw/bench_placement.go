package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"pptpgw/conntrack"
	"pptpgw/rules"
	"pptpgw/testbed"
)

// The second placement of the GRE fast path, measured by
// `pptpgw bench --only tunnel --gre-path kernel --placement netdev`: once
// the tunnel's call is up (its elements in the daemon's ip table), a netdev
// table is added with the same translations at the ingress hook of the LAN
// bridge and of the WAN device, where the rewritten packet is sent straight
// out of the other device with `fwd` (no routing, no TTL decrement, no
// netfilter IP hooks). It is an experiment for the measurement only: the
// daemon does not program it (see README, "Kernel fast path"). nft(8) text;
// the inbound rule uses two lookups (address, then key) because nft cannot
// write two fields from one.

// benchPlacement is --placement: "ip" (the daemon's own rules) or "netdev".
var benchPlacement = "ip"

// benchBeforeIperf, when set, runs in the tunnel case once the session is
// up, before iperf3 (pptpgw side only).
func benchNetdevPlacement(ctx context.Context, topo *testbed.Topology) error {
	var outs []conntrack.GREOut
	var ins []conntrack.GREIn
	if err := topo.GW.Do(func() error {
		var err error
		outs, ins, err = rules.ReadGREElements(rules.DefaultTable, 0)
		return err
	}); err != nil {
		return err
	}
	if len(outs) == 0 || len(ins) == 0 {
		return fmt.Errorf("netdev placement: the daemon's maps hold %d and %d elements", len(outs), len(ins))
	}
	a := func(b [4]byte) string { return netip.AddrFrom4(b).String() }
	var eo, ea, ei []string
	for _, o := range outs {
		eo = append(eo, fmt.Sprintf("%s . %s . %d : %s", a(o.Key.InsideIP), a(o.Key.PeerIP), o.Key.PeerCallID, a(o.PublicIP)))
	}
	for _, i := range ins {
		ea = append(ea, fmt.Sprintf("%s . %s . %d : %s", a(i.Key.PublicIP), a(i.Key.PeerIP), i.Key.OutsideCallID, a(i.InsideIP)))
		ei = append(ei, fmt.Sprintf("%s . %s . %d : %d", a(i.InsideIP), a(i.Key.PeerIP), i.Key.OutsideCallID, i.InsideCallID))
	}
	ruleset := fmt.Sprintf(`table netdev pptpgw_netdev {
	map out { typeof ip saddr . ip daddr . @th,48,16 : ip saddr; counter; elements = { %s } }
	map in_addr { typeof ip daddr . ip saddr . @th,48,16 : ip daddr; counter; elements = { %s } }
	map in_id { typeof ip daddr . ip saddr . @th,48,16 : @th,48,16; elements = { %s } }
	chain lan { type filter hook ingress device %q priority -500;
		meta protocol ip ip protocol gre @th,0,32 & 0xef7fffff == 0x2001880b ip saddr set ip saddr . ip daddr . @th,48,16 map @out fwd ip to ip daddr device %q
	}
	chain wan { type filter hook ingress device %q priority -500;
		meta protocol ip ip protocol gre @th,0,32 & 0xef7fffff == 0x2001880b ip daddr set ip daddr . ip saddr . @th,48,16 map @in_addr @th,48,16 set ip daddr . ip saddr . @th,48,16 map @in_id fwd ip to ip daddr device %q
	}
}
`, strings.Join(eo, ", "), strings.Join(ea, ", "), strings.Join(ei, ", "), topo.LANIf, topo.WANIf, topo.WANIf, topo.LANIf)
	f := filepath.Join(topo.Dir, "netdev.nft")
	if err := os.WriteFile(f, []byte(ruleset), 0o644); err != nil {
		return err
	}
	if out, err := topo.GW.Output(ctx, "nft", "-f", f); err != nil {
		return fmt.Errorf("netdev placement: %v: %s", err, out)
	}
	return nil
}

// benchReportPlacement prints on stderr which path carried the tunnel's
// GRE: the packets counted by the elements of the ip table's maps and, with
// the netdev placement, of the netdev table's.
func benchReportPlacement(ctx context.Context, topo *testbed.Topology) {
	count := func(args ...string) string {
		out, err := topo.GW.Output(ctx, "nft", args...)
		if err != nil {
			return "-"
		}
		var n []string
		for _, f := range strings.Split(string(out), "counter packets ")[1:] {
			n = append(n, strings.Fields(f)[0])
		}
		return strings.Join(n, "+")
	}
	fmt.Fprintf(os.Stderr, "pptpgw bench: tunnel GRE packets by element: ip table out %s in %s",
		count("list", "map", "ip", rules.DefaultTable, rules.SetGREOut), count("list", "map", "ip", rules.DefaultTable, rules.SetGREIn))
	if benchPlacement == "netdev" {
		fmt.Fprintf(os.Stderr, "; netdev table out %s in %s",
			count("list", "map", "netdev", "pptpgw_netdev", "out"), count("list", "map", "netdev", "pptpgw_netdev", "in_addr"))
	}
	fmt.Fprintln(os.Stderr)
}
