package testbed

import (
	"fmt"
	"net/netip"
)

// Addresses of the two-uplink topology (TwoUplinks).
var (
	Uplink0IP       = netip.MustParseAddr("198.51.100.1")   // the gateway on uplink 0 (its WAN)
	Uplink0RouterIP = netip.MustParseAddr("198.51.100.254") // the router on uplink 0
	Uplink1IP       = netip.MustParseAddr("192.0.2.1")      // the gateway on uplink 1
	Uplink1RouterIP = netip.MustParseAddr("192.0.2.254")    // the router on uplink 1
	RouterServerIP  = netip.MustParseAddr("203.0.113.254")  // the router on the server's segment
)

// TwoUplinks rewires the topology for several uplinks (issue 10): the
// gateway's WAN (WANIf) and a second uplink (the returned name) both lead to
// an upstream router namespace P-rtr, which routes to the server's segment:
//
//	clients -- [gw] WANIf 198.51.100.1 -- 198.51.100.254 [rtr] 203.0.113.254 -- 203.0.113.2 [srv]
//	                 P+"w1" 192.0.2.1  -- 192.0.2.254    /
//
// The router only has its connected networks, so each public address's
// traffic comes back by its own uplink. The gateway's default route is via
// uplink 0; nothing routes by uplink 1 until a rule says so.
func (t *Topology) TwoUplinks() (router *NS, wan1 string, err error) {
	gw, srv := t.GW, t.Server
	l, err := gw.nl.LinkByName(t.WANIf)
	if err != nil {
		return nil, "", err
	}
	if err := gw.nl.LinkDel(l); err != nil { // takes the server's end with it
		return nil, "", fmt.Errorf("delete %s: %w", t.WANIf, err)
	}
	if router, err = t.AddNS("rtr"); err != nil {
		return nil, "", err
	}
	wan1 = t.Prefix + "w1"
	for _, u := range []struct {
		gwIf, rtrIf    string
		gwIP, routerIP netip.Addr
	}{
		{t.WANIf, t.Prefix + "r0", Uplink0IP, Uplink0RouterIP},
		{wan1, t.Prefix + "r1", Uplink1IP, Uplink1RouterIP},
	} {
		gl, rl, err := vethInto(gw, router, u.gwIf, u.rtrIf)
		if err != nil {
			return nil, "", err
		}
		if err := addAddr(gw.nl, gl, u.gwIP, 24); err != nil {
			return nil, "", err
		}
		if err := addAddr(router.nl, rl, u.routerIP, 24); err != nil {
			return nil, "", err
		}
	}
	rl, sl, err := vethInto(router, srv, t.Prefix+"rs", srv.If)
	if err != nil {
		return nil, "", err
	}
	if err := addAddr(router.nl, rl, RouterServerIP, 24); err != nil {
		return nil, "", err
	}
	if err := addAddr(srv.nl, sl, ServerIP, 24); err != nil {
		return nil, "", err
	}
	if err := defaultRoute(srv.nl, RouterServerIP); err != nil {
		return nil, "", fmt.Errorf("server default route: %w", err)
	}
	if err := defaultRoute(gw.nl, Uplink0RouterIP); err != nil {
		return nil, "", fmt.Errorf("gateway default route: %w", err)
	}
	_ = router.WriteSysctl("net/ipv6/conf/all/disable_ipv6", "1")
	if err := router.WriteSysctl("net/ipv4/ip_forward", "1"); err != nil {
		return nil, "", err
	}
	return router, wan1, nil
}
