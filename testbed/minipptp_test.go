package testbed

import (
	"context"
	"testing"
	"time"
)

// The mini PNS and PAC work with each other with no NAT in between: the
// PNS runs in the gateway namespace, on the WAN segment.
func TestMiniPNSPACDirect(t *testing.T) {
	topo := NewT(t, Config{Clients: 0})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	pac, err := topo.StartPAC(topo.Server, ServerIP)
	if err != nil {
		t.Fatal(err)
	}
	for _, split := range []bool{false, true} {
		r := RunPNS(ctx, topo.GW, PNSConfig{Server: ServerIP, Calls: 4, Frames: 20, Split: split})
		t.Logf("split=%v: %s", split, r)
		if !r.OK() || !r.Stopped {
			t.Fatalf("split=%v: mini PNS <-> PAC failed: %s", split, r)
		}
		if split && r.Writes < 2*4+2 {
			t.Fatalf("split mode made only %d writes", r.Writes)
		}
	}
	if pac.CallsOpen.Load() != 8 || pac.UnknownGRE.Load() != 0 {
		t.Fatalf("PAC calls=%d unknownGRE=%d", pac.CallsOpen.Load(), pac.UnknownGRE.Load())
	}
}

// Linux's own helper with several calls on one control connection and with
// split control messages. The kernel helper tracks one call per control
// connection and parses only whole messages within a segment, so these are
// expected to fail: the test records what happened (for the comparison with
// pptpgw) and fails only if the scenario itself could not run.
func TestKernelHelperMultiCallAndSplit(t *testing.T) {
	topo := NewT(t, Config{Clients: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := topo.KernelHelper(ctx); err != nil {
		t.Fatal(err)
	}
	mc := RunMultiCall(ctx, topo, MultiCallConfig{Clients: 2, Calls: 3, Frames: 20})
	t.Logf("kernel helper, 2 PNS x 3 calls on one control connection each: ok=%v\n%s", mc.OK(), mc)
	sp := RunSplitControl(ctx, topo, nil)
	t.Logf("kernel helper, split control messages: ok=%v\n%s", sp.OK(), sp)
	for _, r := range []MultiCallResult{mc, sp} {
		for _, p := range r.PNS {
			if !p.ControlUp {
				t.Errorf("%s: control connection did not come up through masquerade: %s", p.NS, p.Error)
			}
		}
	}
}
