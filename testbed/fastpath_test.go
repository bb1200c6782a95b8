package testbed_test

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"pptpgw/nat"
	. "pptpgw/testbed"
	"pptpgw/testbed/testbedtest"
)

// The kernel fast path (issue 12, gre_path: kernel): once a call is set up,
// its GRE is translated by the table's maps and never reaches the queue;
// its counters in `pptpgw calls` still grow; once it is cleared its
// elements are gone and GRE with its key is queued again, dropped and
// counted.

func counter(t *testing.T, ctx context.Context, gw *Gateway, key string) uint64 {
	t.Helper()
	r, err := gw.Calls(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return r.Counters[key]
}

func waitMapLen(t *testing.T, ctx context.Context, topo *Topology, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		o, err := topo.GREMapLen(ctx, "pptpgw", "gre_out")
		if err != nil {
			t.Fatal(err)
		}
		i, err := topo.GREMapLen(ctx, "pptpgw", "gre_in")
		if err != nil {
			t.Fatal(err)
		}
		if o == want && i == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("fast-path maps hold %d and %d elements, want %d each", o, i, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestGatewayKernelGRE(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topo := testbedtest.New(t, Config{Clients: 1})
	gw, err := topo.StartGateway(ctx, bin, "--gre-path", "kernel")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := topo.StartPAC(topo.Server, ServerIP); err != nil {
		t.Fatal(err)
	}
	wan := captureWAN(t, topo)
	c0 := topo.Clients[0]
	const extra = 200
	var queuedBefore, queuedAfter, userGREBefore, userGREAfter uint64
	var callBefore, callAfter nat.CallInfo
	var serverBefore, serverAfter int64
	res := RunPNS(ctx, c0, PNSConfig{Server: ServerIP, Frames: 10, FramesAfterHold: 50, Timeout: 30 * time.Second, Hold: func() {
		waitMapLen(t, ctx, topo, 1)
		r, err := gw.Calls(ctx)
		if err != nil || len(r.Calls) != 1 {
			t.Errorf("calls: %v %+v", err, r.Calls)
			return
		}
		callBefore = r.Calls[0]
		serverBefore = wan.Sources()[GWWANIP]
		queuedBefore = r.Counters["nfqueue_packets"]
		userGREBefore = r.Counters[nat.ReasonGREOut] + r.Counters[nat.ReasonGREIn]
		keys := make([]uint16, 10)
		for i := range keys {
			keys[i] = pacCallID
		}
		for sent := 0; sent < extra; sent += len(keys) {
			if _, err := SendGRE(c0, c0.IP, ServerIP, keys, failsafeTag); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond)
		r, err = gw.Calls(ctx)
		if err != nil || len(r.Calls) != 1 {
			t.Errorf("calls: %v %+v", err, r.Calls)
			return
		}
		callAfter = r.Calls[0]
		serverAfter = wan.Sources()[GWWANIP]
		queuedAfter = r.Counters["nfqueue_packets"]
		userGREAfter = r.Counters[nat.ReasonGREOut] + r.Counters[nat.ReasonGREIn]
	}})
	t.Logf("call: %s", res)
	if !res.OK() || len(res.Calls) != 1 || res.Calls[0].GoodAfter != 50 {
		t.Fatalf("the call did not carry its frames: %s\n%s", res, gw.Log())
	}
	if queuedAfter != queuedBefore {
		t.Errorf("while %d GRE packets went out on the call, the queue took %d packets", extra, queuedAfter-queuedBefore)
	}
	// The engine's GRE counters (packets_total{path="gre"}) count what the
	// kernel carried too, read from the maps' counters: exactly the
	// call's growth, both ways.
	callGrew := callAfter.PktsOut - callBefore.PktsOut + callAfter.PktsIn - callBefore.PktsIn
	if d := userGREAfter - userGREBefore; d != callGrew {
		t.Errorf("the engine's GRE counters grew by %d, the call's by %d", d, callGrew)
	}
	if d := callAfter.PktsOut - callBefore.PktsOut; d != extra {
		t.Errorf("the call's pkts_out grew by %d, want %d (the packets sent): before %+v after %+v", d, extra, callBefore, callAfter)
	}
	if callAfter.BytesOut <= callBefore.BytesOut || callAfter.State != "replied" || callAfter.IdleSeconds > 2 {
		t.Errorf("call after the kernel carried its GRE: %+v", callAfter)
	}
	if d := serverAfter - serverBefore; d < extra {
		t.Errorf("the server saw %d of the %d GRE packets from the public address", d, extra)
	}
	if n := insideSources(wan.Sources()); n != 0 {
		t.Errorf("%d GRE packets reached the server with an inside source", n)
	}

	// The call was cleared: its elements leave the maps, and GRE with its
	// key is queued, dropped and counted, and never reaches the server.
	waitMapLen(t, ctx, topo, 0)
	noCall := counter(t, ctx, gw, nat.ReasonGRENoCall)
	atServer := wan.Sources()[GWWANIP]
	sent := sendLANGRE(t, c0, 50)
	time.Sleep(300 * time.Millisecond)
	if d := counter(t, ctx, gw, nat.ReasonGRENoCall) - noCall; d != uint64(sent) {
		t.Errorf("after the clear, %d of %d stray GRE packets were dropped as gre_no_call", d, sent)
	}
	if got := wan.Sources()[GWWANIP]; got != atServer {
		t.Errorf("after the clear, %d stray GRE packets reached the server", got-atServer)
	}
}

// checkKernelGRE checks, for a gateway on the kernel fast path, what
// checkCalls checks of the queue on the userspace path: the calls carried
// GRE both ways, counted per call (from the maps' counters). It reports
// whether the gateway runs the kernel path.
func checkKernelGRE(t *testing.T, rep nat.CallsReply) bool {
	t.Helper()
	if rep.Counters["gre_kernel_path"] != 1 {
		return false
	}
	var in, out uint64
	for _, c := range rep.Calls {
		in += c.PktsIn
		out += c.PktsOut
	}
	if in == 0 || out == 0 {
		t.Errorf("kernel GRE path: the calls counted %d packets in and %d out, want GRE both ways", in, out)
	}
	return true
}

// While the daemon is down (kill -9), a call set up before goes on in the
// kernel, translated; a new daemon without a state snapshot to restore the
// call from removes its elements at start (in the batch that replaces the
// table), and its GRE is dropped from then on.
func TestGatewayKernelGREOutlivesDaemon(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topo := testbedtest.New(t, Config{Clients: 1})
	gw, err := topo.StartGateway(ctx, bin, "--gre-path", "kernel")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := topo.StartPAC(topo.Server, ServerIP); err != nil {
		t.Fatal(err)
	}
	wan := captureWAN(t, topo)
	c0 := topo.Clients[0]
	var whileDown, afterRestart int64
	var log2 string
	res := RunPNS(ctx, c0, PNSConfig{Server: ServerIP, Frames: 10, Timeout: 30 * time.Second, Hold: func() {
		waitMapLen(t, ctx, topo, 1)
		gw.Proc.Signal(syscall.SIGKILL)
		<-gw.Proc.Done()
		before := wan.Sources()[GWWANIP]
		sent := sendLANGRE(t, c0, 50)
		time.Sleep(300 * time.Millisecond)
		whileDown = wan.Sources()[GWWANIP] - before
		t.Logf("daemon killed: %d of %d GRE packets reached the server from %s", whileDown, sent, GWWANIP)

		gw2, err := topo.StartGateway(ctx, bin, "--gre-path", "kernel")
		if err != nil {
			t.Error(err)
			return
		}
		log2 = gw2.Log()
		waitMapLen(t, ctx, topo, 0)
		before = wan.Sources()[GWWANIP]
		sendLANGRE(t, c0, 50)
		time.Sleep(300 * time.Millisecond)
		afterRestart = wan.Sources()[GWWANIP] - before
	}})
	t.Logf("call: %s", res)
	if whileDown != 50 {
		t.Errorf("with the daemon killed, %d of 50 GRE packets of the established call reached the server translated", whileDown)
	}
	if n := insideSources(wan.Sources()); n != 0 {
		t.Errorf("%d GRE packets reached the server with an inside source", n)
	}
	if !strings.Contains(log2, "found=2 kept=0") {
		t.Errorf("the new daemon did not report the elements it found and dropped:\n%s", log2)
	}
	if afterRestart != 0 {
		t.Errorf("after a restart without the call's state, %d GRE packets of it still reached the server", afterRestart)
	}
}

// queues: N (issue 12): the daemon binds N queues and reads them all;
// control connections split inside call-ID fields (held segments, whose
// verdict must go back to the queue they came from) and several calls per
// connection from 4 hosts all get through, with GRE through the queues too
// (gre_path: userspace) and with the kernel path.
func TestGatewayQueues(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	for _, path := range []string{"userspace", "kernel"} {
		t.Run(path, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			topo := testbedtest.New(t, Config{Clients: 4})
			gw, err := topo.StartGateway(ctx, bin, "--queues", "3", "--gre-path", path)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(gw.Log(), "queues=3") {
				t.Errorf("the ready line does not say queues=3:\n%s", gw.Log())
			}
			out, err := topo.GW.Output(ctx, "cat", "/proc/net/netfilter/nfnetlink_queue")
			if err != nil {
				t.Fatal(err)
			}
			bound := map[string]bool{}
			for _, l := range strings.Split(string(out), "\n") {
				if f := strings.Fields(l); len(f) > 0 {
					bound[f[0]] = true
				}
			}
			if !bound["47"] || !bound["48"] || !bound["49"] || len(bound) != 3 {
				t.Fatalf("queues bound in the gateway namespace:\n%s", out)
			}
			split := RunMultiCall(ctx, topo, MultiCallConfig{Clients: 4, Calls: 2, Frames: 20, Split: true})
			if !split.OK() {
				t.Errorf("split control messages over 3 queues: %s\n%s", split, gw.Log())
			}
			multi := RunMultiCall(ctx, topo, MultiCallConfig{Clients: 4, Calls: 3, Frames: 20})
			if !multi.OK() {
				t.Errorf("3 calls per connection from 4 hosts over 3 queues: %s\n%s", multi, gw.Log())
			}
			rep, err := gw.Calls(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Counters["ctl_released"] == 0 {
				t.Errorf("no held segment was released: the split case did not exercise held verdicts: %v", rep.Counters)
			}
			t.Logf("queues after the run:\n%s", func() string {
				o, _ := topo.GW.Output(ctx, "cat", "/proc/net/netfilter/nfnetlink_queue")
				return string(o)
			}())
		})
	}
}
