package testbed_test

import (
	"context"
	"testing"
	"time"

	. "pptpgw/testbed"
	"pptpgw/testbed/testbedtest"
)

// HoldCalls (issue 12's bench): calls set up several per control
// connection behind pptpgw, one per connection behind Linux's helper,
// held until Release; every call's GRE gets through both ways while held.

func TestHoldCalls(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	for _, tc := range []struct {
		name    string
		gw      bool
		perConn int
	}{{"pptpgw", true, 5}, {"linux-helper", false, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			topo := testbedtest.New(t, Config{Clients: 2})
			var gw *Gateway
			if tc.gw {
				var err error
				if gw, err = topo.StartGateway(ctx, bin); err != nil {
					t.Fatal(err)
				}
			} else if err := topo.KernelHelper(ctx); err != nil {
				t.Fatal(err)
			}
			pac, err := topo.StartPAC(topo.Server, ServerIP)
			if err != nil {
				t.Fatal(err)
			}
			const calls = 30
			h, err := HoldCalls(ctx, topo, HoldPlan{Server: ServerIP, Calls: calls, PerConn: tc.perConn, Timeout: 40 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer h.Release(10 * time.Second)
			if h.Up != calls || h.Failed != 0 || h.Conns != calls/tc.perConn {
				t.Fatalf("up %d of %d, %d of %d connections failed (%s)", h.Up, calls, h.Failed, h.Conns, h.FirstEr)
			}
			if got := len(h.Keys[0]) + len(h.Keys[1]); got != calls {
				t.Fatalf("%d keys, want %d", got, calls)
			}
			if gw != nil {
				r, err := gw.Calls(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if len(r.Calls) != calls {
					t.Fatalf("pptpgw tracks %d calls, want %d", len(r.Calls), calls)
				}
			}
			// Each call's first frame reached the PAC and was echoed.
			deadline := time.Now().Add(5 * time.Second)
			for pac.Stats().Echoed < calls && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if st := pac.Stats(); st.Echoed < calls || st.UnknownGRE != 0 {
				t.Fatalf("PAC: %+v, want >= %d echoed, no unknown GRE", st, calls)
			}
			// A paced sender on every call of client 0: bounded by its rate
			// (the first burst aside), echoed by the PAC (all of it but what
			// a starved PAC's socket buffer may drop on a loaded machine).
			before := pac.Stats().Echoed
			c := topo.Clients[0]
			sent, took, err := SendGREPaced(ctx, c, c.IP, ServerIP, h.Keys[0], 64, 2000, 500*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if sent == 0 || sent > 1100 || took < 500*time.Millisecond || took > 5*time.Second {
				t.Fatalf("sent %d in %v at 2000/s for 0.5s", sent, took)
			}
			deadline = time.Now().Add(5 * time.Second)
			for pac.Stats().Echoed-before < sent && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if got := pac.Stats().Echoed - before; got > sent || got < sent*9/10 {
				t.Fatalf("PAC echoed %d of %d paced frames", got, sent)
			}
		})
	}
}
