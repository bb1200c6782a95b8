package testbed_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"pptpgw/nat"
	. "pptpgw/testbed"
	"pptpgw/testbed/testbedtest"
)

func TestMain(m *testing.M) { testbedtest.Main(m) }

// Six pptp-linux clients behind pptpgw call one pptpd at once: every client
// gets exactly its own frames back and `pptpgw calls --json` shows six live
// calls with distinct outside call IDs. The same run through Linux's helper
// is logged for comparison.
func TestGatewayPPTPLinuxX6(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	const n = 6

	// Reference: Linux's helper, same scenario.
	{
		topo := testbedtest.New(t, Config{Clients: n})
		if err := topo.KernelHelper(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := topo.StartPPTPD(ctx, PPTPDConfig{}); err != nil {
			t.Fatal(err)
		}
		res := RunPPTPClients(ctx, topo, topo.Clients, ServerIP, 50, nil)
		t.Logf("kernel helper, %d pptp-linux clients: ok=%v\n%s", n, res.OK(), res)
		topo.Close()
	}

	topo := testbedtest.New(t, Config{Clients: n})
	d, err := topo.StartPPTPD(ctx, PPTPDConfig{})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := topo.StartGateway(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	var rep nat.CallsReply
	var repErr error
	res := RunPPTPClients(ctx, topo, topo.Clients, ServerIP, 50, func() { rep, repErr = gw.Calls(ctx) })
	t.Logf("pptpgw, %d pptp-linux clients: ok=%v\n%s", n, res.OK(), res)
	if !res.OK() {
		t.Errorf("round trip through pptpgw failed; pptpd: %s\nfakeppp: %s\ngateway log:\n%s", d.Proc.Output(), d.FakePPPLog(), gw.Log())
	}
	if repErr != nil {
		t.Fatalf("pptpgw calls --json: %v", repErr)
	}
	t.Logf("calls: %s", fmtCalls(rep))
	checkCalls(t, rep, n, n)
	waitNoCalls(t, gw)
	if err := gw.Stop(); err != nil {
		t.Errorf("pptpgw did not stop cleanly on SIGTERM: %v\n%s", err, gw.Log())
	}
}

// waitNoCalls waits (up to 3s) for the gateway to drop every call once the
// peers have hung up (pptp-linux killed: FIN; mini PNS: CCRQ/CDN + StopCCRQ).
func waitNoCalls(t *testing.T, gw *Gateway) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	deadline := time.Now().Add(3 * time.Second)
	for {
		rep, err := gw.Calls(ctx)
		if err != nil {
			t.Fatalf("pptpgw calls --json: %v", err)
		}
		if len(rep.Calls) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("calls still listed 3s after the peers hung up: %s", fmtCalls(rep))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkCalls asserts want live calls from wantInside distinct inside
// addresses, with distinct outside call IDs toward the server.
func checkCalls(t *testing.T, rep nat.CallsReply, want, wantInside int) {
	t.Helper()
	if len(rep.Calls) != want {
		t.Fatalf("pptpgw calls: %d calls, want %d", len(rep.Calls), want)
	}
	inside := map[string]bool{}
	for _, c := range rep.Calls {
		inside[c.InsideIP.String()] = true
		if c.PublicIP.String() != GWWANIP.String() || c.PeerIP.String() != ServerIP.String() {
			t.Errorf("call %+v: want public %s peer %s", c, GWWANIP, ServerIP)
		}
	}
	if len(inside) != wantInside {
		t.Errorf("calls from %d inside addresses, want %d", len(inside), wantInside)
	}
	if got := DistinctOutsideIDs(rep.Calls); got != want {
		t.Errorf("%d distinct outside call IDs for %d calls", got, want)
	}
	if checkKernelGRE(t, rep) { // kernel fast path (issue 12): checks its own way
		return
	}
	// Every translated GRE packet came through the queue: the counter that
	// must stay 0 for plain TCP (TestGatewayIperf) counts here.
	greIn, greOut := testbedtest.Counter(t, rep.Counters, "gre_in"), testbedtest.Counter(t, rep.Counters, "gre_out")
	if q := testbedtest.Counter(t, rep.Counters, "nfqueue_packets"); greIn == 0 || greOut == 0 || q < greIn+greOut {
		t.Errorf("nfqueue_packets = %d, gre_in = %d, gre_out = %d: want GRE both ways, all of it queued", q, greIn, greOut)
	}
}

func fmtCalls(rep nat.CallsReply) string {
	var b strings.Builder
	for _, c := range rep.Calls {
		fmt.Fprintf(&b, "\n  %s call %#04x -> %s call %#04x -> %s (peer call %#04x) %s out=%d in=%d",
			c.InsideIP, c.InsideCallID, c.PublicIP, c.OutsideCallID, c.PeerIP, c.PeerCallID, c.State, c.PktsOut, c.PktsIn)
	}
	fmt.Fprintf(&b, "\n  counters: %v", rep.Counters)
	return b.String()
}

// Two mini PNSes, each with three calls on one control connection and the
// same call IDs: through pptpgw every call works; through Linux's helper
// (same run) only the first call of each connection does.
func TestGatewayMultiCall(t *testing.T) {
	cfg := MultiCallConfig{Clients: 2, Calls: 3, Frames: 20}
	helperThenGateway(t, "2 PNS x 3 calls", 6, func(ctx context.Context, topo *Topology, hold func()) MultiCallResult {
		c := cfg
		c.Hold = hold
		return RunMultiCall(ctx, topo, c)
	})
}

// Control messages split inside their call-ID fields (and a segment holding
// the tail of one message and the head of the next): pptpgw must reassemble
// and rewrite; Linux's helper (same run) loses the calls.
func TestGatewaySplitControl(t *testing.T) {
	helperThenGateway(t, "split control", 4, RunSplitControl)
}

// helperThenGateway runs scenario with 2 clients behind Linux's helper
// (logged: it is expected to fail), then behind pptpgw, which must get every
// call through; while the calls are up (hold), `pptpgw calls --json` must
// list wantCalls calls with distinct outside IDs, and none after.
func helperThenGateway(t *testing.T, name string, wantCalls int, scenario func(context.Context, *Topology, func()) MultiCallResult) {
	t.Helper()
	bin := testbedtest.PPTPGW(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()

	kt := testbedtest.New(t, Config{Clients: 2})
	if err := kt.KernelHelper(ctx); err != nil {
		t.Fatal(err)
	}
	kres := scenario(ctx, kt, nil)
	t.Logf("kernel helper, %s: ok=%v\n%s", name, kres.OK(), kres)
	kt.Close()

	topo := testbedtest.New(t, Config{Clients: 2})
	gw, err := topo.StartGateway(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	var rep nat.CallsReply
	var repErr error
	res := scenario(ctx, topo, func() { rep, repErr = gw.Calls(ctx) })
	t.Logf("pptpgw, %s: ok=%v\n%s", name, res.OK(), res)
	if !res.OK() {
		t.Errorf("%s through pptpgw failed; gateway log:\n%s", name, gw.Log())
	}
	if repErr != nil {
		t.Fatalf("pptpgw calls --json: %v", repErr)
	}
	t.Logf("calls: %s", fmtCalls(rep))
	checkCalls(t, rep, wantCalls, 2)
	waitNoCalls(t, gw)
	if kres.OK() {
		t.Logf("note: the kernel helper handled %s this time", name)
	}
}

// Bulk TCP through pptpgw (kernel masquerade path, PPTP rules installed)
// never goes through the queue (the structural fact, asserted exactly), and
// reaches at least bulkFloor of plain kernel masquerade in the same run.
//
// One 3-second iperf3 sample swings by 5-10% on this shared 2-core VM even
// between two identical kernel runs, and by far more when other work shares
// the cores. So the test compares best against best over alternating
// samples, in ABBA order so neither side always runs first, and stops as
// soon as the ratio reaches 0.95 (at most 6 samples each). The floor it
// asserts is far below that, because it must hold on a loaded machine too:
// quiet runs of `pptpgw bench` measure 0.94-0.99; runs of this test while
// three other builds loaded the VM (load average 7-8) measured 0.945 and,
// once, 0.79 (a masquerade sample of 16.2 Gbit/s among samples of 5-13.5).
// What the floor is for is still caught with a wide margin: bulk through
// the queue tops out near 2.5 Gbit/s (about 200k packets/s through
// NFQUEUE), under 0.2 of masquerade; the exact check is the queue counter.
const bulkFloor = 0.6

func TestGatewayIperf(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	topo := testbedtest.New(t, Config{Clients: 1})
	measure := func(name string) float64 {
		r, err := RunIperf(ctx, topo, 3)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Logf("%s: %.2f Gbit/s (per second %.2f; %d retransmits)", name, r.Gbps, r.Intervals, r.Retransmits)
		return r.Gbps
	}
	kernelRun := func() float64 {
		if err := topo.KernelMasquerade(ctx); err != nil {
			t.Fatal(err)
		}
		g := measure("kernel masquerade")
		if err := topo.KernelReset(ctx); err != nil {
			t.Fatal(err)
		}
		return g
	}
	gatewayRun := func() float64 {
		gw, err := topo.StartGateway(ctx, bin)
		if err != nil {
			t.Fatal(err)
		}
		g := measure("pptpgw")
		rep, err := gw.Calls(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n := testbedtest.Counter(t, rep.Counters, "nfqueue_packets"); n != 0 {
			t.Errorf("pptpgw queued %d packets of a plain TCP transfer; only PPTP control and GRE may leave the kernel path", n)
		}
		if err := gw.Stop(); err != nil {
			t.Errorf("pptpgw stop: %v", err)
		}
		return g
	}
	var kernel, gwBest float64
	for round := 0; round < 6; round++ {
		if round%2 == 0 {
			kernel = max(kernel, kernelRun())
			gwBest = max(gwBest, gatewayRun())
		} else {
			gwBest = max(gwBest, gatewayRun())
			kernel = max(kernel, kernelRun())
		}
		if round >= 1 && gwBest >= 0.95*kernel {
			break
		}
	}
	ratio := gwBest / kernel
	t.Logf("pptpgw / kernel masquerade = %.3f (best against best)", ratio)
	if ratio < bulkFloor {
		t.Fatalf("pptpgw %.2f Gbit/s is %.3f of kernel masquerade %.2f Gbit/s, want >= %.2f", gwBest, ratio, kernel, bulkFloor)
	}
}

// The demo runs end to end with the built gateway.
func TestDemo(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	var out bytes.Buffer
	if err := Demo(context.Background(), bin, &out); err != nil {
		t.Fatalf("demo: %v\noutput:\n%s", err, out.String())
	}
	t.Logf("demo output:\n%s", out.String())
	if !strings.Contains(out.String(), "3 live calls, 3 distinct outside call IDs") {
		t.Fatalf("demo did not show 3 calls with distinct outside IDs:\n%s", out.String())
	}
}

// Malformed control messages and GRE for calls nobody set up: pptpgw keeps
// running, forwards no stray GRE either way, counts the drops, and calls
// work next to it and afterwards. The stray GRE from the WAN includes
// packets a forwarding bug would deliver: the key of a call cleared just
// before, and packets addressed straight to the clients' inside addresses;
// a capture on every client's link must see none of them, while it does
// see the working call's GRE. Linux's helper (same run, logged) NATs and
// routes stray GRE like any other IP protocol.
func TestGatewayBadInput(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	kt := testbedtest.New(t, Config{Clients: 2})
	if err := kt.KernelHelper(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel helper: %s", RunBadInput(ctx, kt))
	kt.Close()

	topo := testbedtest.New(t, Config{Clients: 2})
	gw, err := topo.StartGateway(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	res := RunBadInput(ctx, topo)
	t.Logf("pptpgw: %s", res)
	if res.Error != "" {
		t.Fatalf("%s\ngateway log:\n%s", res.Error, gw.Log())
	}
	if gw.Proc.Exited() {
		t.Fatalf("pptpgw exited on bad input:\n%s", gw.Log())
	}
	if !res.Working.OK() {
		t.Fatalf("the call up during the stray GRE failed: %s\n%s", res.Working, gw.Log())
	}
	if good := int64(res.Working.Calls[0].Good); res.ClientsGotCallGRE < good {
		t.Fatalf("the LAN capture saw %d GRE packets, fewer than the %d the working call got back: it could not see stray GRE either",
			res.ClientsGotCallGRE, good)
	}
	if res.PACUnknownGRE != 0 || res.ClientsGotGRE != 0 {
		t.Errorf("stray GRE forwarded: %d reached the server, %d reached the clients' links", res.PACUnknownGRE, res.ClientsGotGRE)
	}
	if !res.After.OK() {
		t.Errorf("a normal call after the bad input failed: %s\n%s", res.After, gw.Log())
	}
	rep, err := gw.Calls(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("counters: %v", rep.Counters)
	stray := res.GRESentOut + res.GRESentIn + res.GRESentStale + res.GRESentInside
	if n := testbedtest.Counter(t, rep.Counters, "gre_no_call"); n < uint64(stray) {
		t.Errorf("gre_no_call = %d, want >= %d stray GRE counted", n, stray)
	}
	for _, k := range []string{"helper_bad_magic", "helper_bad_length", "helper_unknown_type"} {
		if testbedtest.Counter(t, rep.Counters, k) < 1 {
			t.Errorf("counter %s = %d, want the malformed message counted", k, rep.Counters[k])
		}
	}
}
