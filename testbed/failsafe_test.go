package testbed_test

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	. "pptpgw/testbed"
	"pptpgw/testbed/testbedtest"
)

// The gateway fails safe: in no state of the daemon (killed, stopped,
// sent SIGHUP, overrun) does GRE from the LAN leave the WAN with its inside
// source address, and what the kernel drops is counted.

// insidePrefix holds every inside address of the testbed (10.x).
var insidePrefix = netip.MustParsePrefix("10.0.0.0/8")

// failsafeTag tags the GRE these tests send from the LAN.
const failsafeTag = "failsafe"

// pacCallID is the mini PAC's first call ID: the key of the GRE a PNS
// sends on its first call.
const pacCallID = 0x4000

// insideSources sums the packets of a capture whose source is an inside
// address.
func insideSources(src map[netip.Addr]int64) int64 {
	var n int64
	for a, c := range src {
		if insidePrefix.Contains(a) {
			n += c
		}
	}
	return n
}

// sendLANGRE sends n GRE packets with the PAC's call ID as key from the
// client to the server, in groups of ten 10 ms apart (GRE flowing, not one
// burst), and fails the test if none could be sent.
func sendLANGRE(t *testing.T, c *NS, n int) int {
	t.Helper()
	sent := 0
	keys := make([]uint16, 10)
	for i := range keys {
		keys[i] = pacCallID
	}
	for sent < n {
		k, err := SendGRE(c, c.IP, ServerIP, keys, failsafeTag)
		sent += k
		if err != nil {
			t.Fatalf("GRE from %s after %d packets: %v", c.IP, sent, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return sent
}

// requireLeakVisible deletes the gateway's table and checks that the
// capture then sees LAN GRE arrive with an inside source: without a rule
// the kernel forwards it so, which proves the capture would have shown a
// leak where the test saw none.
func requireLeakVisible(t *testing.T, ctx context.Context, topo *Topology, wan *GRECapture) {
	t.Helper()
	if _, err := topo.GW.Output(ctx, "nft", "delete", "table", "ip", "pptpgw"); err != nil {
		t.Fatal(err)
	}
	before := insideSources(wan.Sources())
	deadline := time.Now().Add(3 * time.Second)
	for insideSources(wan.Sources()) == before {
		if time.Now().After(deadline) {
			t.Fatalf("with the table deleted, LAN GRE never reached the WAN capture: it could not have seen a leak either")
		}
		sendLANGRE(t, topo.Clients[0], 10)
	}
}

// leakAfter makes a call from the client through the gateway with 10
// frames; while it is up, it does what (to the gateway), then the client
// goes on sending GRE on the call. It returns the capture's sources just
// before what and once the GRE sent after it had time to arrive, and fails
// the test if the call did not carry its frames before.
func leakAfter(t *testing.T, ctx context.Context, topo *Topology, gw *Gateway, wan *GRECapture, name string, what func()) (before, after map[netip.Addr]int64) {
	t.Helper()
	var sent int
	res := RunPNS(ctx, topo.Clients[0], PNSConfig{Server: ServerIP, Frames: 10, Timeout: 10 * time.Second, Hold: func() {
		// The frames came back, so they crossed the captured link: wait
		// for the capture to have counted them.
		for deadline := time.Now().Add(3 * time.Second); wan.Sources()[GWWANIP] < 10 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		before = wan.Sources()
		what()
		sent = sendLANGRE(t, topo.Clients[0], 100)
		time.Sleep(500 * time.Millisecond) // let whatever is forwarded arrive and be counted
		after = wan.Sources()
	}})
	t.Logf("call: %s", res)
	t.Logf("GRE on the WAN by source: before %s %v, after %v (%d sent from %s after it)",
		name, before, after, sent, topo.Clients[0].IP)
	if len(res.Calls) != 1 || res.Calls[0].Good != 10 {
		t.Fatalf("the call did not carry its frames before %s: %s\n%s", name, res, gw.Log())
	}
	return before, after
}

// gatewayAndPAC builds a topology of one client behind the gateway, with a
// mini PAC on the server.
func gatewayAndPAC(t *testing.T, ctx context.Context, bin string) (*Topology, *Gateway) {
	t.Helper()
	topo := testbedtest.New(t, Config{Clients: 1})
	gw, err := topo.StartGateway(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := topo.StartPAC(topo.Server, ServerIP); err != nil {
		t.Fatal(err)
	}
	return topo, gw
}

// captureWAN captures the GRE arriving at the server, i.e. what left the
// gateway's WAN, until the test ends.
func captureWAN(t *testing.T, topo *Topology) *GRECapture {
	t.Helper()
	wan, err := topo.Server.CaptureGRE(failsafeTag)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wan.Close() })
	return wan
}

// gatewayTable lists the gateway's nftables table; "" if there is none.
func gatewayTable(t *testing.T, ctx context.Context, topo *Topology) string {
	t.Helper()
	out, err := topo.GW.Output(ctx, "nft", "list", "table", "ip", "pptpgw")
	if err != nil {
		if strings.Contains(string(out), "No such file") {
			return ""
		}
		t.Fatal(err)
	}
	return string(out)
}

// kill -9 of the daemon while a call's GRE flows: the client goes on
// sending GRE on its call, and none of it reaches the WAN with its inside
// source (captured on the server's link), nor while a new daemon starts
// over the table the killed one left. The call's GRE before the kill
// arrived translated, from the public address.
func TestGatewayKill9NoLeak(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topo, gw := gatewayAndPAC(t, ctx, bin)
	wan := captureWAN(t, topo)

	before, after := leakAfter(t, ctx, topo, gw, wan, "the kill", func() {
		gw.Proc.Signal(syscall.SIGKILL)
		<-gw.Proc.Done()
	})
	if before[GWWANIP] < 10 || insideSources(before) != 0 {
		t.Fatalf("before the kill: GRE by source %v, want the call's, translated to %s", before, GWWANIP)
	}
	if n := insideSources(after); n != 0 {
		t.Errorf("%d GRE packets left the WAN with an inside source after kill -9", n)
	}
	if table := gatewayTable(t, ctx, topo); !strings.Contains(table, "queue_postrouting") {
		t.Errorf("the table did not outlive the daemon:\n%s", table)
	}

	// A new daemon takes over the killed one's table while the client
	// keeps sending: no leak during its start-up either.
	c0 := topo.Clients[0]
	sending := make(chan error, 1)
	go func() {
		keys := make([]uint16, 10)
		for i := 0; i < 20; i++ {
			if _, err := SendGRE(c0, c0.IP, ServerIP, keys, failsafeTag); err != nil {
				sending <- err
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		sending <- nil
	}()
	gw2 := restart(t, ctx, topo, bin, "replaced a stale nftables table")
	if err := <-sending; err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if n := insideSources(wan.Sources()); n != 0 {
		t.Errorf("%d GRE packets left the WAN with an inside source while a new daemon started", n)
	}
	stopClean(t, gw2)
	requireLeakVisible(t, ctx, topo, wan)
}

// restart starts a new daemon in topo and checks that its log says want
// about the table its predecessor left.
func restart(t *testing.T, ctx context.Context, topo *Topology, bin, want string) *Gateway {
	t.Helper()
	gw, err := topo.StartGateway(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(gw.Log(), want) {
		t.Errorf("restart: the log does not say %q:\n%s", want, gw.Log())
	}
	return gw
}

// stopClean stops the daemon with SIGTERM and fails the test unless it
// exits with status 0.
func stopClean(t *testing.T, gw *Gateway) {
	t.Helper()
	if err := gw.Stop(); err != nil {
		t.Fatalf("pptpgw did not exit cleanly on SIGTERM: %v\n%s", err, gw.Log())
	}
}

// SIGTERM: the daemon exits with status 0 and leaves the one-rule
// fail-safe table, and the GRE the client goes on sending on its call does
// not leave the WAN with its inside source. The next start replaces the
// fail-safe table and calls work again.
func TestGatewaySIGTERMNoLeak(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topo, gw := gatewayAndPAC(t, ctx, bin)
	wan := captureWAN(t, topo)

	var stopErr error
	_, after := leakAfter(t, ctx, topo, gw, wan, "the stop", func() { stopErr = gw.Stop() })
	if stopErr != nil {
		t.Fatalf("pptpgw did not exit cleanly on SIGTERM: %v\n%s", stopErr, gw.Log())
	}
	if n := insideSources(after); n != 0 {
		t.Errorf("%d GRE packets left the WAN with an inside source after SIGTERM", n)
	}
	table := gatewayTable(t, ctx, topo)
	if !strings.Contains(table, "chain failsafe") || strings.Count(table, "chain ") != 1 ||
		!strings.Contains(table, "ip protocol gre oifname \""+topo.WANIf+"\" fib saddr type != local drop") {
		t.Errorf("after SIGTERM the table is not the fail-safe rule alone:\n%s", table)
	}
	if !strings.Contains(gw.Log(), "left the fail-safe nftables table") {
		t.Errorf("the log does not say the fail-safe table was left:\n%s", gw.Log())
	}

	// The next start takes over from the fail-safe table.
	gw2 := restart(t, ctx, topo, bin, "replaced the fail-safe table")
	if res := RunPNS(ctx, topo.Clients[0], PNSConfig{Server: ServerIP, Frames: 10}); !res.OK() {
		t.Errorf("a call after the restart failed: %s\n%s", res, gw2.Log())
	}
	stopClean(t, gw2)
	requireLeakVisible(t, ctx, topo, wan)
}

// SIGHUP leaves the daemon running and translating: it reloads its
// configuration (logged), and a call made afterwards carries its GRE.
func TestGatewaySIGHUP(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topo, gw := gatewayAndPAC(t, ctx, bin)
	for i := 1; i <= 2; i++ {
		if err := gw.Proc.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(3 * time.Second)
		for strings.Count(gw.Log(), "msg=\"configuration reloaded\" trigger=SIGHUP") < i && !gw.Proc.Exited() && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if gw.Proc.Exited() {
			t.Fatalf("pptpgw exited on SIGHUP %d: %v\n%s", i, gw.Proc.Wait(0), gw.Log())
		}
		if n := strings.Count(gw.Log(), "msg=\"configuration reloaded\" trigger=SIGHUP"); n != i {
			t.Fatalf("after SIGHUP %d the log says %d times that it reloaded:\n%s", i, n, gw.Log())
		}
	}
	res := RunPNS(ctx, topo.Clients[0], PNSConfig{Server: ServerIP, Frames: 20})
	if !res.OK() {
		t.Fatalf("a call after SIGHUP failed: %s\n%s", res, gw.Log())
	}
	rep, err := gw.Calls(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := testbedtest.Counter(t, rep.Counters, "gre_out"); n < 20 && rep.Counters["gre_kernel_path"] != 1 { // the kernel path carries it (issue 12)
		t.Errorf("gre_out = %d after a call of 20 frames: its GRE did not go through the daemon", n)
	}
	stopClean(t, gw)
}

// A burst of GRE overruns the kernel queue (queue_len 16) while the daemon
// cannot read it (stopped with SIGSTOP, as a starved daemon would be): the
// kernel drops what does not fit and the daemon's counter
// nfqueue_queue_dropped shows exactly what the kernel's own table in the
// gateway's namespace shows, and at least what it could not have queued.
func TestGatewayQueueOverflowCounted(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topo := testbedtest.New(t, Config{Clients: 1})
	const queueLen, burst = 16, 300
	gw := startGatewayConfig(t, ctx, topo, bin, fmt.Sprintf("queue_len: %d\n", queueLen))
	c0 := topo.Clients[0]
	calls := func() map[string]uint64 {
		t.Helper()
		rep, err := gw.Calls(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return rep.Counters
	}
	// One packet first, so that the client has resolved the gateway's
	// address and the burst is not held back (or cut) by ARP.
	deadline := time.Now().Add(3 * time.Second)
	for testbedtest.Counter(t, calls(), "nfqueue_packets") == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no GRE reached the daemon:\n%s", gw.Log())
		}
		if _, err := SendGRE(c0, c0.IP, ServerIP, []uint16{1}, failsafeTag); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := testbedtest.Counter(t, calls(), "nfqueue_queue_dropped"); n != 0 {
		t.Fatalf("nfqueue_queue_dropped = %d before the burst", n)
	}

	gw.Proc.Signal(syscall.SIGSTOP)
	waitStopped(t, gw)
	keys := make([]uint16, burst)
	sent, err := SendGRE(c0, c0.IP, ServerIP, keys, failsafeTag)
	gw.Proc.Signal(syscall.SIGCONT)
	if err != nil {
		t.Fatal(err)
	}
	c := calls()
	dropped := testbedtest.Counter(t, c, "nfqueue_queue_dropped")
	kernel := kernelQueueDropped(t, ctx, topo)
	t.Logf("%d GRE sent at a stopped daemon: nfqueue_queue_dropped %d (kernel's table: %d), nfqueue_user_dropped %d, nfqueue_packets %d",
		sent, dropped, kernel, testbedtest.Counter(t, c, "nfqueue_user_dropped"), testbedtest.Counter(t, c, "nfqueue_packets"))
	if dropped < uint64(sent-queueLen) || dropped > uint64(sent) {
		t.Errorf("nfqueue_queue_dropped = %d, want between %d (sent %d, queue_len %d) and %d", dropped, sent-queueLen, sent, queueLen, sent)
	}
	if dropped != kernel {
		t.Errorf("nfqueue_queue_dropped = %d, the kernel's table says %d", dropped, kernel)
	}
	if gw.Proc.Exited() {
		t.Fatalf("pptpgw exited:\n%s", gw.Log())
	}
}

// waitStopped waits (up to 3s) until every thread of the daemon is
// stopped: SIGSTOP takes effect asynchronously, and a thread still running
// could read part of the burst.
func waitStopped(t *testing.T, gw *Gateway) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		threads := gw.Proc.Threads()
		if strings.Contains(threads, "state T") && !strings.Contains(threads, "state R") &&
			!strings.Contains(threads, "state S") && !strings.Contains(threads, "state D") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pptpgw not stopped 3s after SIGSTOP:\n%s", threads)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kernelQueueDropped reads queue 47's queue_dropped column from the
// gateway namespace's /proc/net/netfilter/nfnetlink_queue.
func kernelQueueDropped(t *testing.T, ctx context.Context, topo *Topology) uint64 {
	t.Helper()
	out, err := topo.GW.Output(ctx, "cat", "/proc/net/netfilter/nfnetlink_queue")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("/proc/net/netfilter/nfnetlink_queue in the gateway namespace:\n%s", out)
	var sum uint64
	bound := false
	for _, l := range strings.Split(string(out), "\n") {
		// Every queue bound in the namespace is the daemon's (queues: N).
		if f := strings.Fields(l); len(f) >= 7 {
			n, err := strconv.ParseUint(f[5], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			sum, bound = sum+n, bound || f[0] == "47"
		}
	}
	if bound {
		return sum
	}
	t.Fatalf("queue 47 not bound in the gateway namespace:\n%s", out)
	return 0
}
