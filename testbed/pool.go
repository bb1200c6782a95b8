package testbed

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"

	"pptpgw/nat"
)

// Server pools (issue 11): several clients outside, several servers inside.
//
// AddOutside extends the topology with outside client namespaces behind
// the server namespace, which routes for them:
//
//	P-o0 (198.51.100.10) --veth--+
//	P-o1 (198.51.100.11) --veth--+-- Pob (198.51.100.1)  P-srv  Ps0 (203.0.113.2) -- P-gw Pw0 (203.0.113.1)
//	...                          +                       ip_forward=1
//
// The gateway routes 198.51.100.0/24 via 203.0.113.2, so the outside
// clients reach the gateway's public address (and the forwarded servers
// behind it) from distinct addresses.

// OutsidePrefix is the outside clients' network; OutsideGW the server
// namespace's address on it.
var (
	OutsidePrefix = netip.MustParsePrefix("198.51.100.0/24")
	OutsideGW     = netip.MustParseAddr("198.51.100.1")
)

// OutsideIP returns the address of outside client i (198.51.100.10+i).
func OutsideIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)}) }

// AddOutside adds n outside client namespaces (see above) and returns
// them. Everything goes with the topology.
func (t *Topology) AddOutside(n int) ([]*NS, error) {
	if n < 1 || n > 200 {
		return nil, fmt.Errorf("testbed: %d outside clients out of range 1..200", n)
	}
	srv, gw := t.Server, t.GW
	brName := t.Prefix + "ob"
	if err := srv.nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: brName}}); err != nil {
		return nil, fmt.Errorf("bridge %s: %w", brName, err)
	}
	br, err := srv.nl.LinkByName(brName)
	if err != nil {
		return nil, err
	}
	if err := addAddr(srv.nl, br, OutsideGW, 24); err != nil {
		return nil, err
	}
	if err := srv.nl.LinkSetUp(br); err != nil {
		return nil, err
	}
	if err := srv.WriteSysctl("net/ipv4/ip_forward", "1"); err != nil {
		return nil, err
	}
	dst := &net.IPNet{IP: OutsidePrefix.Addr().AsSlice(), Mask: net.CIDRMask(OutsidePrefix.Bits(), 32)}
	if err := gw.nl.RouteAdd(&netlink.Route{Dst: dst, Gw: ServerIP.AsSlice()}); err != nil {
		return nil, fmt.Errorf("gateway route to %s: %w", OutsidePrefix, err)
	}
	var out []*NS
	for i := range n {
		o, err := t.newNS(fmt.Sprintf("%s-o%d", t.Prefix, i))
		if err != nil {
			return nil, err
		}
		bl, ol, err := vethInto(srv, o, fmt.Sprintf("%sb%d", t.Prefix, i), fmt.Sprintf("%sx%d", t.Prefix, i))
		if err != nil {
			return nil, err
		}
		if err := srv.nl.LinkSetMaster(bl, br); err != nil {
			return nil, err
		}
		if err := addAddr(o.nl, ol, OutsideIP(i), 24); err != nil {
			return nil, err
		}
		if err := defaultRoute(o.nl, OutsideGW); err != nil {
			return nil, fmt.Errorf("%s default route: %w", o.Name, err)
		}
		o.IP, o.If = OutsideIP(i), ol.Attrs().Name
		_ = o.WriteSysctl("net/ipv6/conf/all/disable_ipv6", "1")
		_ = o.WriteSysctl("net/ipv6/conf/default/disable_ipv6", "1")
		out = append(out, o)
	}
	return out, nil
}

// Pools runs `BIN pool --json --admin-socket SOCK` and parses it.
func (g *Gateway) Pools(ctx context.Context) (nat.PoolsReply, error) {
	var r nat.PoolsReply
	cmd := g.NS.Command(ctx, g.Bin, "pool", "--json", "--admin-socket", g.Socket)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return r, fmt.Errorf("pptpgw pool: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("pptpgw pool --json: %w: %q", err, out)
	}
	return r, nil
}

// PoolTable runs `BIN pool` (the human table) and returns its output.
func (g *Gateway) PoolTable(ctx context.Context) (string, error) {
	out, err := g.NS.Output(ctx, g.Bin, "pool", "--admin-socket", g.Socket)
	return string(out), err
}
