package testbed_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"pptpgw/nat"
	. "pptpgw/testbed"
	"pptpgw/testbed/testbedtest"
)

// The gateway's other roles, beside LAN clients calling out: PPTP started by
// the router itself, PPTP servers published behind it (forwards), and PPTP
// between inside hosts, which it must leave alone.

// startGatewayConfig writes yaml to a file in the topology's scratch
// directory and starts the gateway with --config FILE [extra...] (the
// --wan/--lan flags StartGateway passes override the file's; a later --lan
// in extra overrides StartGateway's).
func startGatewayConfig(t *testing.T, ctx context.Context, topo *Topology, bin, yaml string, extra ...string) *Gateway {
	t.Helper()
	path := filepath.Join(topo.Dir, "pptpgw.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	gw, err := topo.StartGateway(ctx, bin, append([]string{"--config", path}, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	return gw
}

// checkPNS fails the test for every PNS that did not get all its calls up
// with all its frames back (and only its own), or did not see each call
// cleared: the mini PAC answers every Call-Clear-Request with a Call-
// Disconnect-Notify carrying its own call ID, which must reach the PNS as
// the ID the PNS knows (an inside PAC's: the outside call ID).
func checkPNS(t *testing.T, gw *Gateway, what []string, res []PNSResult) {
	t.Helper()
	for i, r := range res {
		t.Logf("%s: ok=%v\n%s", what[i], r.OK(), r)
		if !r.OK() {
			t.Errorf("%s failed: %s", what[i], r)
		}
		for _, c := range r.Calls {
			if !c.Cleared {
				t.Errorf("%s: call %#04x (PAC's ID as seen: %#04x): no Call-Disconnect-Notify with that ID arrived (CDNs for %#04x)",
					what[i], c.CallID, c.PeerCallID, r.CDNs)
			}
		}
	}
	if t.Failed() && gw != nil {
		t.Logf("gateway log:\n%s", gw.Log())
	}
}

// checkCallCounters asserts that every call in rep carried at least frames
// GRE packets each way (the gateway translated them, not the kernel).
func checkCallCounters(t *testing.T, rep nat.CallsReply, frames int) {
	t.Helper()
	for _, c := range rep.Calls {
		if c.PktsOut < uint64(frames) || c.PktsIn < uint64(frames) {
			t.Errorf("call %s %#04x: pkts out=%d in=%d, want >= %d each way", c.InsideIP, c.InsideCallID, c.PktsOut, c.PktsIn, frames)
		}
		if c.State != "replied" { // GRE seen both ways
			t.Errorf("call %s %#04x: state %q, want replied", c.InsideIP, c.InsideCallID, c.State)
		}
	}
}

// Router-originated PPTP: a mini PNS in the gateway's own namespace and one
// on a LAN client call the same server at the same time with the same call
// IDs. Both work; the router's calls appear with the public address as the
// inside address and all calls have distinct outside call IDs. Its control
// segments and GRE leave through the postrouting queue chain; the "split"
// case also holds and releases segments there (control messages cut inside
// their call-ID fields).
func TestGatewayRouterOriginated(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	for _, split := range []bool{false, true} {
		t.Run(map[bool]string{false: "whole", true: "split"}[split], func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			topo := testbedtest.New(t, Config{Clients: 1})
			gw, err := topo.StartGateway(ctx, bin)
			if err != nil {
				t.Fatal(err)
			}
			pac, err := topo.StartPAC(topo.Server, ServerIP)
			if err != nil {
				t.Fatal(err)
			}
			const calls, frames = 2, 20
			cfg := PNSConfig{Server: ServerIP, Calls: calls, Frames: frames, BaseCallID: 0x0100, Split: split, Timeout: 8 * time.Second}
			var rep nat.CallsReply
			var repErr error
			res := RunPNSTogether(ctx, []PNSRun{{NS: topo.GW, Config: cfg}, {NS: topo.Clients[0], Config: cfg}},
				func() { rep, repErr = gw.Calls(ctx) })
			checkPNS(t, gw, []string{"router PNS", "LAN PNS"}, res)
			t.Logf("PAC: %+v", pac.Stats())
			if repErr != nil {
				t.Fatalf("pptpgw calls --json: %v", repErr)
			}
			t.Logf("calls: %s", fmtCalls(rep))
			checkCalls(t, rep, 2*calls, 2)
			checkCallCounters(t, rep, frames)
			byInside := map[string][]uint16{}
			for _, c := range rep.Calls {
				byInside[c.InsideIP.String()] = append(byInside[c.InsideIP.String()], c.InsideCallID)
			}
			want := []uint16{cfg.BaseCallID, cfg.BaseCallID + 1}
			for _, ip := range []string{GWWANIP.String(), ClientIP(0).String()} {
				got := byInside[ip]
				slices.Sort(got)
				if !slices.Equal(got, want) {
					t.Errorf("calls with inside address %s have inside call IDs %#04x, want %#04x", ip, got, want)
				}
			}
			if split && testbedtest.Counter(t, rep.Counters, "ctl_released") == 0 {
				t.Errorf("split control: no held segment was released (ctl_released = 0)")
			}
			waitNoCalls(t, gw)
		})
	}
}

// Forwards: two mini PACs inside (10.77.0.10 on public port 1723, 10.77.0.11
// on 1724, both handing out the same call IDs), published through the
// config file; a PNS on the server calls each through the public address
// with several calls at once. Every frame round-trips, the calls are listed
// with their forwarded port, and the two PACs' equal call IDs leave with
// distinct outside call IDs.
func TestGatewayForwards(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topo := testbedtest.New(t, Config{Clients: 2})
	// wan/lan name interfaces that do not exist: the gateway only starts
	// if StartGateway's --wan/--lan flags override them.
	gw := startGatewayConfig(t, ctx, topo, bin, fmt.Sprintf(`# testbed: PACs behind the gateway
wan: %snone0
lan: [%snone1]
forwards:
  - {port: 1723, to: %s}
  - {port: 1724, to: %s}
`, topo.Prefix, topo.Prefix, ClientIP(0), ClientIP(1)))
	var pacs []*PAC
	for i := range 2 {
		pac, err := topo.StartPAC(topo.Clients[i], ClientIP(i))
		if err != nil {
			t.Fatal(err)
		}
		pacs = append(pacs, pac)
	}
	const calls, frames = 3, 20
	// Both PNSes run in the server namespace and each GRE socket there sees
	// every GRE packet: distinct PNS call IDs keep their frames apart.
	runs := []PNSRun{
		{NS: topo.Server, Config: PNSConfig{Server: GWWANIP, Port: 1723, Calls: calls, Frames: frames, BaseCallID: 0x0100, Timeout: 8 * time.Second}},
		{NS: topo.Server, Config: PNSConfig{Server: GWWANIP, Port: 1724, Calls: calls, Frames: frames, BaseCallID: 0x0200, Timeout: 8 * time.Second}},
	}
	var rep nat.CallsReply
	var table string
	var repErr, tableErr error
	res := RunPNSTogether(ctx, runs, func() {
		rep, repErr = gw.Calls(ctx)
		table, tableErr = gw.CallsTable(ctx)
	})
	checkPNS(t, gw, []string{"PNS -> :1723", "PNS -> :1724"}, res)
	for i, p := range pacs {
		t.Logf("PAC %s: %+v", ClientIP(i), p.Stats())
	}
	if repErr != nil {
		t.Fatalf("pptpgw calls --json: %v", repErr)
	}
	t.Logf("calls: %s", fmtCalls(rep))
	checkCalls(t, rep, 2*calls, 2)
	checkCallCounters(t, rep, frames)
	if tableErr != nil {
		t.Fatalf("pptpgw calls: %v", tableErr)
	}
	t.Logf("pptpgw calls:\n%s", table)
	for _, port := range []string{":1723", ":1724"} {
		if n := strings.Count(table, GWWANIP.String()+port+" "); n != calls {
			t.Errorf("pptpgw calls shows %d calls on %s%s, want %d", n, GWWANIP, port, calls)
		}
	}

	// What the PNS saw as the PAC's call ID is the outside call ID.
	seen := map[uint16]bool{}
	for _, r := range res {
		for _, c := range r.Calls {
			if seen[c.PeerCallID] {
				t.Errorf("outside call ID %#04x given to two calls", c.PeerCallID)
			}
			seen[c.PeerCallID] = true
		}
	}
	wantPort := map[string]uint16{ClientIP(0).String(): 1723, ClientIP(1).String(): 1724}
	inside := map[string][]uint16{}
	for _, c := range rep.Calls {
		if c.PublicPort != wantPort[c.InsideIP.String()] {
			t.Errorf("call %s %#04x: public port %d, want %d", c.InsideIP, c.InsideCallID, c.PublicPort, wantPort[c.InsideIP.String()])
		}
		if !seen[c.OutsideCallID] {
			t.Errorf("call %s %#04x: outside call ID %#04x is not one the PNS was given", c.InsideIP, c.InsideCallID, c.OutsideCallID)
		}
		inside[c.InsideIP.String()] = append(inside[c.InsideIP.String()], c.InsideCallID)
	}
	// The mini PACs number their calls alike (from 0x4000): the point of
	// the test is that equal inside IDs leave as distinct outside IDs.
	a, b := inside[ClientIP(0).String()], inside[ClientIP(1).String()]
	slices.Sort(a)
	slices.Sort(b)
	if !slices.Equal(a, b) {
		t.Errorf("test precondition: the two PACs used different call IDs (%#04x vs %#04x)", a, b)
	}
	waitNoCalls(t, gw)
}

// PPTP between inside hosts is not the gateway's business: a PNS on client
// 1 (same LAN bridge), one on a second, routed LAN and one in the gateway
// namespace itself call a PAC on client 0 (which is even published as a
// forward); all work and the gateway neither lists a call nor counts a
// PPTP packet.
func TestGatewayInsidePPTPUntouched(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topo := testbedtest.New(t, Config{Clients: 2})
	lan2, lan2If, err := topo.AddRoutedLAN(0)
	if err != nil {
		t.Fatal(err)
	}
	gw := startGatewayConfig(t, ctx, topo, bin, fmt.Sprintf("forwards: [{port: 1723, to: %s}]\n", ClientIP(0)),
		"--lan", topo.LANIf+","+lan2If)
	if want := "lan=" + topo.LANIf + "," + lan2If; !strings.Contains(gw.Log(), want) {
		t.Fatalf("gateway not started with both inside networks (%s):\n%s", want, gw.Log())
	}
	pac, err := topo.StartPAC(topo.Clients[0], ClientIP(0))
	if err != nil {
		t.Fatal(err)
	}
	const calls, frames = 3, 20
	cfg := PNSConfig{Server: ClientIP(0), Calls: calls, Frames: frames, Timeout: 8 * time.Second}
	var rep nat.CallsReply
	var repErr error
	res := RunPNSTogether(ctx, []PNSRun{{NS: topo.Clients[1], Config: cfg}, {NS: lan2, Config: cfg}, {NS: topo.GW, Config: cfg}},
		func() { rep, repErr = gw.Calls(ctx) })
	checkPNS(t, gw, []string{"PNS on client 1", "PNS on the routed LAN " + lan2.IP.String(), "PNS on the gateway (LAN side)"}, res)
	t.Logf("PAC: %+v", pac.Stats())
	if repErr != nil {
		t.Fatalf("pptpgw calls --json: %v", repErr)
	}
	t.Logf("calls: %s", fmtCalls(rep))
	if len(rep.Calls) != 0 {
		t.Errorf("pptpgw lists %d calls for PPTP that never crossed the WAN", len(rep.Calls))
	}
	after, err := gw.Calls(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"ctl_new", "ctl_pickup", "ctl_ok", "ctl_untracked", "ctl_untracked_empty",
		"gre_in", "gre_out", "gre_no_call", "not_pptp", "unknown_iface", "calls_mapped"} {
		if n := testbedtest.Counter(t, after.Counters, k); n != 0 {
			t.Errorf("counter %s = %d: the gateway saw inside-only PPTP", k, n)
		}
	}
}

// Every role at once, all toward the one server address: a PNS on the
// server calls the PAC forwarded to client 0, while client 0 itself, client
// 1 and the router call a PAC on the server. The outside call IDs of all
// twelve calls share one pool (public address, server) and stay distinct.
func TestGatewayAllRolesAtOnce(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topo := testbedtest.New(t, Config{Clients: 2})
	gw := startGatewayConfig(t, ctx, topo, bin, fmt.Sprintf("forwards: [{port: 1723, to: %s}]\n", ClientIP(0)))
	for _, n := range []*NS{topo.Clients[0], topo.Server} {
		if _, err := topo.StartPAC(n, n.IP); err != nil {
			t.Fatal(err)
		}
	}
	const calls, frames = 3, 30
	// Distinct PNS call IDs: PNSes that share a namespace with a PAC or
	// another PNS see each other's GRE on their raw sockets.
	pns := func(n *NS, server netip.Addr, base uint16) PNSRun {
		return PNSRun{NS: n, Config: PNSConfig{Server: server, Calls: calls, Frames: frames, BaseCallID: base, Timeout: 8 * time.Second}}
	}
	runs := []PNSRun{
		pns(topo.Server, GWWANIP, 0x0100),
		pns(topo.Clients[0], ServerIP, 0x0200),
		pns(topo.Clients[1], ServerIP, 0x0300),
		pns(topo.GW, ServerIP, 0x0400),
	}
	var rep nat.CallsReply
	var repErr error
	res := RunPNSTogether(ctx, runs, func() { rep, repErr = gw.Calls(ctx) })
	checkPNS(t, gw, []string{"server -> forwarded PAC on client 0", "client 0 -> server", "client 1 -> server", "router -> server"}, res)
	if repErr != nil {
		t.Fatalf("pptpgw calls --json: %v", repErr)
	}
	t.Logf("calls: %s", fmtCalls(rep))
	checkCalls(t, rep, 4*calls, 3) // inside: client 0 (both roles), client 1, the router
	checkCallCounters(t, rep, frames)
	waitNoCalls(t, gw)
}

// The WAN address changes while the gateway runs (a DHCP or PPPoE uplink):
// masquerade moves to the new address by itself, and pptpgw must follow it,
// or the GRE of every new call leaves from the old address and its replies
// go nowhere.
func TestGatewayWANAddressChange(t *testing.T) {
	newAddr := netip.MustParseAddr("203.0.113.5")
	callAcrossWANChange(t, newAddr, func(ctx context.Context, topo *Topology) error {
		for _, args := range [][]string{
			{"ip", "addr", "flush", "dev", topo.WANIf},
			{"ip", "addr", "add", newAddr.String() + "/24", "dev", topo.WANIf},
		} {
			if out, err := topo.GW.Output(ctx, args[0], args[1:]...); err != nil {
				return fmt.Errorf("%v: %w: %s", args, err, out)
			}
		}
		return nil
	}, "WAN address changed")
}

// The WAN interface is deleted and created again under its name, with a
// new address (a PPPoE uplink reconnecting): pptpgw follows the new index
// and address, and a call placed afterwards works.
func TestGatewayWANRecreated(t *testing.T) {
	newAddr := netip.MustParseAddr("203.0.113.6")
	callAcrossWANChange(t, newAddr, func(_ context.Context, topo *Topology) error {
		return topo.RecreateWAN(newAddr)
	}, "WAN interface created again", "new="+newAddr.String())
}

// callAcrossWANChange places a call from a LAN client through the gateway,
// applies change to the WAN, waits for the gateway to log every line of
// logs, and places a second call, which must work and be listed on newAddr.
func callAcrossWANChange(t *testing.T, newAddr netip.Addr, change func(context.Context, *Topology) error, logs ...string) {
	t.Helper()
	bin := testbedtest.PPTPGW(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topo, gw := gatewayAndPAC(t, ctx, bin)
	cfg := PNSConfig{Server: ServerIP, Calls: 1, Frames: 20}
	checkPNS(t, gw, []string{"PNS before the change"}, []PNSResult{RunPNS(ctx, topo.Clients[0], cfg)})

	if err := change(ctx, topo); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for _, want := range logs {
		for !strings.Contains(gw.Log(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("pptpgw did not log %q within 3s; log:\n%s", want, gw.Log())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	var rep nat.CallsReply
	var repErr error
	cfg.Hold = func() { rep, repErr = gw.Calls(ctx) }
	checkPNS(t, gw, []string{"PNS after the change"}, []PNSResult{RunPNS(ctx, topo.Clients[0], cfg)})
	if repErr != nil {
		t.Fatalf("pptpgw calls --json: %v", repErr)
	}
	t.Logf("calls: %s", fmtCalls(rep))
	if len(rep.Calls) != 1 || rep.Calls[0].PublicIP != newAddr {
		t.Errorf("calls during the second PNS's hold: %+v, want one on %s", rep.Calls, newAddr)
	}
	waitNoCalls(t, gw)
}
