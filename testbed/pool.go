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
	"pptpgw/rules"
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

// kernelPoolRuleset is the baseline for pools: Linux's own PPTP helper
// (nf_conntrack_pptp + nf_nat_pptp) on TCP 1723, DNAT of the public port to
// the members in turn (numgen), masquerade on the WAN.
func kernelPoolRuleset(wan string, members []netip.Addr) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table ip %s {\n", KernelTable)
	b.WriteString("\tct helper pptp-h {\n\t\ttype \"pptp\" protocol tcp\n\t\tl3proto ip\n\t}\n")
	b.WriteString("\tchain pre {\n\t\ttype filter hook prerouting priority filter; policy accept;\n")
	b.WriteString("\t\ttcp dport 1723 ct helper set \"pptp-h\"\n\t}\n")
	b.WriteString("\tchain natpre {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n")
	var m []string
	for i, a := range members {
		m = append(m, fmt.Sprintf("%d : %s", i, a))
	}
	fmt.Fprintf(&b, "\t\tiifname %q tcp dport 1723 dnat to numgen inc mod %d map { %s }\n\t}\n", wan, len(members), strings.Join(m, ", "))
	fmt.Fprintf(&b, "\tchain natpost {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\toifname %q masquerade\n\t}\n", wan)
	b.WriteString("}\n")
	return b.String()
}

// KernelHelperPool programs the gateway namespace with the kernel baseline
// for a pool (kernelPoolRuleset), replacing an earlier baseline and the
// table a stopped pptpgw left.
func (t *Topology) KernelHelperPool(ctx context.Context, members []netip.Addr) error {
	if err := t.KernelReset(ctx); err != nil {
		return err
	}
	if err := t.deleteTable(ctx, rules.DefaultTable); err != nil {
		return err
	}
	cmd := t.GW.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(kernelPoolRuleset(t.WANIf, members))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft -f in %s: %w: %s", t.GW.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}
