package testbed_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"pptpgw/nat"
	"pptpgw/qos/police"
	"pptpgw/rules"
	. "pptpgw/testbed"
	"pptpgw/testbed/testbedtest"
)

// Shaping (issue 9): two clients' PPTP calls through pptpgw with
// `policing.pptp_call` at 2mbit, each flooded with GRE at twice that for
// 4 s: each call's GRE gets through at its rate (within 10 %), and what it
// sent beyond is counted as that call's drops (policed_out), not the other
// call's. The calls are classed `tunnels` (pptp: true) and both directions
// are shaped, so the GRE that passed is counted in that class's HTB leaf on
// the WAN (the engine's NFQUEUE verdict set its priority) and on the LAN.
func TestPolicingPerCall(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	topo := testbedtest.New(t, Config{Clients: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const (
		rate    = 2e6 // bit/s
		burst   = 16 << 10
		payload = 1000
		dur     = 4 * time.Second
	)
	gw := startGatewayConfig(t, ctx, topo, bin, fmt.Sprintf(`policing:
  pptp_call: {rate: 2mbit, burst: %d}
classes:
  - {name: tunnels, match: [{pptp: true}]}
  - {name: other}
shaping:
  - interface: %s
    rate: 100mbit
    default: other
    classes: [{class: tunnels, rate: 50mbit}, {class: other, rate: 50mbit}]
  - interface: %s
    rate: 100mbit
    default: other
    classes: [{class: tunnels, rate: 50mbit}, {class: other, rate: 50mbit}]
`, burst, topo.WANIf, topo.LANIf))
	if _, err := topo.StartPAC(topo.Server, ServerIP); err != nil {
		t.Fatal(err)
	}
	cfg := PNSConfig{Server: ServerIP, Calls: 1, Frames: 3, Timeout: 40 * time.Second}
	var floods [2]FloodResult
	var ferr [2]error
	var ids [2][2]uint16 // own, peer
	var after nat.CallsReply
	res := RunPNSTogether(ctx, []PNSRun{{NS: topo.Clients[0], Config: cfg}, {NS: topo.Clients[1], Config: cfg}}, func() {
		r, err := gw.Calls(ctx)
		if err != nil {
			t.Error(err)
			return
		}
		for _, c := range r.Calls {
			for i := range 2 {
				if c.InsideIP == ClientIP(i) {
					ids[i] = [2]uint16{c.InsideCallID, c.PeerCallID}
				}
			}
		}
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				floods[i], ferr[i] = GREFlood(ctx, topo.Clients[i], ClientIP(i), ServerIP, ids[i][1], ids[i][0], payload, 2*rate, dur)
			}()
		}
		wg.Wait()
		// Read the calls while they are up: the PNSs clear them next.
		if after, err = gw.Calls(ctx); err != nil {
			t.Error(err)
		}
		if tbl, err := gw.CallsTable(ctx); err == nil {
			t.Logf("pptpgw calls:\n%s", tbl)
		}
	})
	for i, r := range res {
		if !r.ControlUp || len(r.Calls) != 1 || !r.Calls[0].Replied {
			t.Fatalf("client %d: calls not up: %v", i, r)
		}
	}
	t.Logf("counters: gre_policed=%d gre_kernel_path=%d", after.Counters["gre_policed"], after.Counters["gre_kernel_path"])
	// The bucket's depth: the daemon's is the burst; the kernel fast
	// path's (kfeat) holds at least a second at the rate (nft's byte
	// limit; rules.KernelPoliceDepth).
	depth := float64(burst)
	if after.Counters["gre_kernel_path"] == 1 {
		depth = float64(rules.KernelPoliceDepth(police.Limit{BytesPerSecond: rate / 8, Burst: burst}))
	}
	var total uint64
	for i := range 2 {
		if ferr[i] != nil {
			t.Fatalf("flood %d: %v", i, ferr[i])
		}
		f := floods[i]
		got := float64(f.Echoed*f.IPLen*8) / f.Seconds
		want := rate + depth*8/f.Seconds
		sent := float64(f.Sent*f.IPLen*8) / f.Seconds
		t.Logf("call %d: sent %d frames (%.2f Mbit/s), %d came back: %.3f Mbit/s, policed rate + burst %.3f Mbit/s",
			i, f.Sent, sent/1e6, f.Echoed, got/1e6, want/1e6)
		if got < want*0.9 || got > want*1.1 {
			t.Errorf("call %d got %.3f Mbit/s through, want %.3f +-10%%", i, got/1e6, want/1e6)
		}
		if sent < 1.5*rate {
			t.Errorf("call %d: the flood only reached %.2f Mbit/s: the test proves nothing", i, sent/1e6)
		}
		var policed uint64
		for _, c := range after.Calls {
			if c.InsideIP == ClientIP(i) {
				policed = c.PolicedOut + c.PolicedIn
			}
		}
		// The excess is the call's drops: everything sent that did not
		// come back (a few frames may be lost elsewhere under load).
		excess := f.Sent - f.Echoed
		if float64(policed) < 0.9*float64(excess) || policed > uint64(excess) {
			t.Errorf("call %d: policed %d, but %d frames sent did not come back", i, policed, excess)
		}
		total += policed
	}
	if c := after.Counters["gre_policed"]; c < total {
		t.Errorf("gre_policed %d < the calls' policed %d", c, total)
	}
	for _, c := range after.Calls {
		if c.Class != "tunnels" {
			t.Errorf("call of %s: class %q, want tunnels", c.InsideIP, c.Class)
		}
	}
	// The GRE that passed, classed by the engine, in the tunnels leaf of
	// both shaped interfaces: out on the WAN, its echo in on the LAN.
	q := readQoS(t, ctx, topo, gw, bin)
	passed := uint64(floods[0].Echoed + floods[1].Echoed)
	for _, is := range q.Interfaces {
		if len(is.Classes) != 2 || is.Classes[0].Class != "tunnels" || is.Classes[0].Packets < passed {
			t.Errorf("qos %s: %+v; want at least the %d GRE frames that passed in tunnels", is.Interface, is.Classes, passed)
		}
	}
	t.Logf("pptpgw qos --json: %s", q.raw)
}
