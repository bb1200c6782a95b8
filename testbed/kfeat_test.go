package testbed_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"pptpgw/nat"
	. "pptpgw/testbed"
	"pptpgw/testbed/testbedtest"
)

// kfeat (issue 12): classes, per-call policing and uplinks on the kernel
// fast path. Structural checks only: the queue does not see a kernel-path
// call's GRE; the class's HTB leaf counts it; a policed call's drops are
// that call's; GRE on the wrong uplink is dropped as gre_wrong_uplink.

// callIDs returns the (inside, peer) call IDs of the call of inside host ip.
func callIDs(t *testing.T, rep nat.CallsReply, ip netip.Addr) (own, peer uint16) {
	t.Helper()
	for _, c := range rep.Calls {
		if c.InsideIP == ip {
			return c.InsideCallID, c.PeerCallID
		}
	}
	t.Fatalf("no call of %v: %+v", ip, rep.Calls)
	return 0, 0
}

// waitMap waits until map (or set) name of the daemon's table has n
// elements (with counters).
func waitMap(t *testing.T, ctx context.Context, topo *Topology, name string, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var got int
		var err error
		if strings.HasSuffix(name, "pd") { // gre_outpd, gre_inpd: sets
			var out []byte
			out, err = topo.GW.Output(ctx, "nft", "list", "set", "ip", "pptpgw", name)
			got = strings.Count(string(out), "counter packets")
		} else {
			got, err = topo.GREMapLen(ctx, "pptpgw", name)
		}
		if err != nil {
			t.Fatal(err)
		}
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("map %s holds %d elements, want %d", name, got, n)
		}
	}
}

// qosReport is `pptpgw qos --json`: each shaped interface's classes with
// their packets, and the raw output.
type qosReport struct {
	Interfaces []struct {
		Interface string `json:"interface"`
		Classes   []struct {
			Class   string `json:"class"`
			Packets uint64 `json:"packets"`
		} `json:"classes"`
	} `json:"interfaces"`
	raw []byte
}

func readQoS(t *testing.T, ctx context.Context, topo *Topology, gw *Gateway, bin string) qosReport {
	t.Helper()
	out, err := topo.GW.Output(ctx, bin, "qos", "--json", "--admin-socket", gw.Socket)
	if err != nil {
		t.Fatalf("pptpgw qos: %v: %s", err, out)
	}
	q := qosReport{raw: out}
	if err := json.Unmarshal(out, &q); err != nil {
		t.Fatal(err)
	}
	return q
}

// classPackets returns the packets of class name on each shaped interface
// (`pptpgw qos --json`).
func classPackets(t *testing.T, ctx context.Context, topo *Topology, gw *Gateway, bin, name string) map[string]uint64 {
	t.Helper()
	r := map[string]uint64{}
	for _, is := range readQoS(t, ctx, topo, gw, bin).Interfaces {
		for _, c := range is.Classes {
			if c.Class == name {
				r[is.Interface] = c.Packets
			}
		}
	}
	return r
}

const kfeatShaping = `classes:
  - {name: tunnels, match: [{pptp: gre}]}
  - {name: other}
shaping:
  - interface: %[1]s
    rate: 100mbit
    default: other
    classes: [{class: tunnels, rate: 50mbit}, {class: other, rate: 50mbit}]
  - interface: %[2]s
    rate: 100mbit
    default: other
    classes: [{class: tunnels, rate: 50mbit}, {class: other, rate: 50mbit}]
`

// Two calls of class tunnels on the kernel path. Client 0's call is set up
// without policing; a reload then turns `policing.pptp_call` on (2mbit),
// and client 1's call is set up policed. They are flooded at twice and
// three times the rate for 3 s: the queue takes (almost) none of their
// GRE; the tunnels leaf of both shaped interfaces counts every frame that
// passed; client 1's call loses frames, all counted as its
// policed_out/policed_in (and gre_policed); client 0's call, set up before
// the reload, is not policed and loses nothing to a policer.
func TestKernelGREClassesAndPolicing(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	topo := testbedtest.New(t, Config{Clients: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const (
		rate    = 2e6 // bit/s
		payload = 1000
		dur     = 3 * time.Second
	)
	base := fmt.Sprintf(kfeatShaping, topo.WANIf, topo.LANIf)
	gw := startGatewayConfig(t, ctx, topo, bin, base, "--gre-path", "kernel")
	path := filepath.Join(topo.Dir, "pptpgw.yaml")
	if _, err := topo.StartPAC(topo.Server, ServerIP); err != nil {
		t.Fatal(err)
	}
	cfg := PNSConfig{Server: ServerIP, Calls: 1, Frames: 3, Timeout: 60 * time.Second}
	var floods [2]FloodResult
	var ferr [2]error
	var before, after nat.CallsReply
	var classBefore, classAfter map[string]uint64
	var res1 PNSResult
	var table string
	res0 := RunPNS(ctx, topo.Clients[0], PNSConfig{Server: ServerIP, Calls: 1, Frames: 3, Timeout: 60 * time.Second, Hold: func() {
		waitMap(t, ctx, topo, "gre_outq", 1) // classed: not in gre_out
		if err := os.WriteFile(path, []byte(base+"policing:\n  pptp_call: {rate: 2mbit, burst: 16kb}\n"), 0o600); err != nil {
			t.Error(err)
			return
		}
		if out, ok := reloadCmd(ctx, gw); !ok {
			t.Errorf("reload: %s\n%s", out, gw.Log())
			return
		}
		c1 := cfg
		c1.Hold = func() {
			waitMap(t, ctx, topo, "gre_outq", 2)
			waitMap(t, ctx, topo, "gre_outpd", 1) // only client 1's call is policed
			out, _ := topo.GW.Output(ctx, "nft", "list", "table", "ip", "pptpgw")
			table = string(out)
			var err error
			if before, err = gw.Calls(ctx); err != nil {
				t.Error(err)
				return
			}
			classBefore = classPackets(t, ctx, topo, gw, bin, "tunnels")
			var wg sync.WaitGroup
			for i := range 2 {
				own, peer := callIDs(t, before, ClientIP(i))
				wg.Add(1)
				go func() {
					defer wg.Done()
					floods[i], ferr[i] = GREFlood(ctx, topo.Clients[i], ClientIP(i), ServerIP, peer, own, payload, float64(2+i)*rate, dur)
				}()
			}
			wg.Wait()
			if after, err = gw.Calls(ctx); err != nil {
				t.Error(err)
			}
			classAfter = classPackets(t, ctx, topo, gw, bin, "tunnels")
			if tbl, err := gw.CallsTable(ctx); err == nil {
				t.Logf("pptpgw calls:\n%s", tbl)
			}
		}
		res1 = RunPNS(ctx, topo.Clients[1], c1)
	}})
	if !res0.ControlUp || !res1.ControlUp || len(res0.Calls) != 1 || len(res1.Calls) != 1 {
		t.Fatalf("calls not up: %v / %v\n%s", res0, res1, gw.Log())
	}
	if t.Failed() {
		return
	}
	if after.Counters["gre_kernel_path"] != 1 {
		t.Fatal("the gateway does not run the kernel path")
	}
	for i := range 2 {
		if ferr[i] != nil {
			t.Fatalf("flood %d: %v", i, ferr[i])
		}
	}
	sent := floods[0].Sent + floods[1].Sent
	q := after.Counters["nfqueue_packets"] - before.Counters["nfqueue_packets"]
	t.Logf("floods: client 0 sent %d, %d came back; client 1 sent %d, %d came back; the queue took %d packets",
		floods[0].Sent, floods[0].Echoed, floods[1].Sent, floods[1].Echoed, q)
	if q > uint64(sent)/100 {
		t.Errorf("the queue took %d packets while the calls sent %d GRE frames: their GRE did not stay in the kernel", q, sent)
	}
	policed := func(rep nat.CallsReply, i int) (uint64, uint64, string) {
		for _, c := range rep.Calls {
			if c.InsideIP == ClientIP(i) {
				return c.PolicedOut, c.PolicedIn, c.Class
			}
		}
		return 0, 0, ""
	}
	// Client 0: set up unpoliced; nothing policed, (almost) every frame
	// back (4 Mbit/s through 50mbit classes).
	if o, in, cl := policed(after, 0); o != 0 || in != 0 || cl != "tunnels" {
		t.Errorf("client 0's call (unpoliced): policed %d/%d, class %q", o, in, cl)
	}
	if f := floods[0]; f.Echoed < f.Sent*95/100 {
		t.Errorf("client 0's call (unpoliced): %d of %d frames came back", f.Echoed, f.Sent)
	}
	// Client 1: policed at 2mbit; the kernel's bucket holds a second at the
	// rate, so at most the rate for the flood's time plus a second's worth
	// passes (plus 10 %), and what did not come back is the call's policed
	// drops.
	o1, in1, cl1 := policed(after, 1)
	ob, ib, _ := policed(before, 1)
	drops := o1 - ob + in1 - ib
	f := floods[1]
	allowed := (rate/8*f.Seconds + rate/8) / float64(f.IPLen) // frames
	t.Logf("client 1's call: policed out %d in %d; at most %.0f frames may pass", o1-ob, in1-ib, allowed)
	if float64(f.Sent) < 1.3*allowed {
		t.Fatalf("client 1's flood sent %d frames, not well above the %.0f the policer lets through: the test proves nothing", f.Sent, allowed)
	}
	if cl1 != "tunnels" || float64(f.Echoed) > 1.1*allowed || drops == 0 {
		t.Errorf("client 1's call (policed): class %q, %d of %d frames came back (at most %.0f may), %d policed", cl1, f.Echoed, f.Sent, allowed, drops)
	}
	if excess := uint64(f.Sent - f.Echoed); drops > excess || float64(drops) < 0.9*float64(excess) {
		t.Errorf("client 1's call: %d policed, but %d frames did not come back", drops, excess)
	}
	if d := after.Counters[nat.ReasonGREPoliced] - before.Counters[nat.ReasonGREPoliced]; d != drops {
		t.Errorf("gre_policed grew by %d, the calls' policed counters by %d", d, drops)
	}
	// Every frame that passed crossed the tunnels leaf on both interfaces
	// (out on the WAN, its echo in on the LAN).
	passed := uint64(floods[0].Echoed + floods[1].Echoed)
	for _, ifn := range []string{topo.WANIf, topo.LANIf} {
		if d := classAfter[ifn] - classBefore[ifn]; d < passed {
			t.Errorf("tunnels on %s counted %d packets during the floods, want at least the %d frames that passed", ifn, d, passed)
		}
	}
	if !strings.Contains(table, "chain gre_out_c1p") || !strings.Contains(table, "set gre_lim_out_250000_16384") {
		t.Errorf("the reloaded table lacks the policed chains or the policer's set:\n%s", table)
	}
}

// A call on the second uplink is carried by the kernel, with that uplink's
// interface in its elements. While the router sends the server's GRE to
// the call's public address (uplink 1's) in by uplink 0, every echo is
// dropped by the gateway and counted as gre_wrong_uplink (the elements'
// key has uplink 1's interface, so the kernel misses and queues it); once
// the route is back, the kernel carries the call's GRE again.
func TestKernelGREUplinks(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	testbedtest.NeedTools(t, "ip", "nft")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topo := testbedtest.New(t, Config{Clients: 1})
	router, wan1, err := topo.TwoUplinks()
	if err != nil {
		t.Fatal(err)
	}
	c0 := topo.Clients[0]
	gw := startGatewayConfig(t, ctx, topo, bin, fmt.Sprintf(`lan: [%s]
uplinks:
  - {interface: %s, via: %s}
  - {interface: %s, via: %s}
routing:
  tables:
    - {name: up1, id: 200, routes: [{to: default, via: %s, interface: %s}]}
  rules:
    - {from: %s, table: up1, priority: 1000}
`, topo.LANIf, topo.WANIf, Uplink0RouterIP, wan1, Uplink1RouterIP, Uplink1RouterIP, wan1, c0.IP), "--gre-path", "kernel")
	if _, err := topo.StartPAC(topo.Server, ServerIP); err != nil {
		t.Fatal(err)
	}
	sh := func(n *NS, args ...string) string {
		t.Helper()
		out, err := n.Output(ctx, args[0], args[1:]...)
		if err != nil {
			t.Errorf("%s %v: %v: %s", n.Name, args, err, out)
		}
		return string(out)
	}
	type phase struct {
		f               FloodResult
		err             error
		queued, wrong   uint64
		pktsOut, pktsIn uint64
	}
	var phases [3]phase
	var elems string
	var pub netip.Addr
	res := RunPNS(ctx, c0, PNSConfig{Server: ServerIP, Calls: 1, Frames: 3, Timeout: 40 * time.Second, Hold: func() {
		waitMap(t, ctx, topo, "gre_out", 1)
		waitMap(t, ctx, topo, "gre_in", 1)
		elems = sh(topo.GW, "nft", "list", "map", "ip", "pptpgw", "gre_in")
		rep, err := gw.Calls(ctx)
		if err != nil {
			t.Error(err)
			return
		}
		own, peer := callIDs(t, rep, c0.IP)
		for _, c := range rep.Calls {
			pub = c.PublicIP
		}
		for i := range phases {
			if i == 1 { // the server's GRE to uplink 1's address comes in by uplink 0
				sh(router, "ip", "route", "replace", Uplink1IP.String()+"/32", "via", Uplink0IP.String(), "dev", topo.Prefix+"r0")
			}
			r0, err := gw.Calls(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			p := &phases[i]
			p.f, p.err = GREFlood(ctx, c0, c0.IP, ServerIP, peer, own, 200, 1e6, time.Second)
			r1, err := gw.Calls(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			p.queued = r1.Counters["nfqueue_packets"] - r0.Counters["nfqueue_packets"]
			p.wrong = r1.Counters[nat.ReasonGREUplink] - r0.Counters[nat.ReasonGREUplink]
			if len(r0.Calls) == 1 && len(r1.Calls) == 1 {
				p.pktsOut, p.pktsIn = r1.Calls[0].PktsOut-r0.Calls[0].PktsOut, r1.Calls[0].PktsIn-r0.Calls[0].PktsIn
			}
			if i == 1 {
				sh(router, "ip", "route", "del", Uplink1IP.String()+"/32")
			}
		}
	}})
	if !res.ControlUp || len(res.Calls) != 1 {
		t.Fatalf("the call did not come up: %s\n%s", res, gw.Log())
	}
	if t.Failed() {
		return
	}
	if pub != Uplink1IP {
		t.Fatalf("the call's public address is %v, want uplink 1's %v", pub, Uplink1IP)
	}
	if !strings.Contains(elems, fmt.Sprintf("%q", wan1)) {
		t.Errorf("gre_in's element does not name uplink 1's interface %s:\n%s", wan1, elems)
	}
	for i, p := range phases {
		t.Logf("phase %d: sent %d, %d came back; queue %d, gre_wrong_uplink %d, call pkts out/in +%d/+%d",
			i, p.f.Sent, p.f.Echoed, p.queued, p.wrong, p.pktsOut, p.pktsIn)
		if p.err != nil {
			t.Fatalf("flood %d: %v", i, p.err)
		}
	}
	for _, i := range []int{0, 2} { // the right uplink: the kernel carries everything
		p := phases[i]
		if p.f.Echoed < p.f.Sent*95/100 || p.queued > uint64(p.f.Sent)/100 || p.wrong != 0 {
			t.Errorf("phase %d (right uplink): %d of %d back, queue took %d, %d wrong-uplink drops", i, p.f.Echoed, p.f.Sent, p.queued, p.wrong)
		}
		if p.pktsOut < uint64(p.f.Sent) {
			t.Errorf("phase %d: the call counted %d packets out, %d were sent", i, p.pktsOut, p.f.Sent)
		}
	}
	p := phases[1] // the wrong uplink: the echoes are the server's GRE, all dropped and counted
	if p.f.Echoed != 0 || p.wrong < uint64(p.f.Sent)*95/100 || p.wrong > uint64(p.f.Sent) || p.queued < p.wrong {
		t.Errorf("phase 1 (GRE in by the wrong uplink): %d of %d came back, %d gre_wrong_uplink, queue took %d",
			p.f.Echoed, p.f.Sent, p.wrong, p.queued)
	}
	if p.pktsOut < uint64(p.f.Sent) || p.pktsIn != 0 {
		t.Errorf("phase 1: the call counted +%d out, +%d in; want its outbound GRE only", p.pktsOut, p.pktsIn)
	}
}

// While the daemon is down (kill -9), a classed and policed call goes on in
// the kernel: its GRE is translated both ways (never with an inside
// source) and still held to its rate by the kernel's policer; the next
// daemon, without a state snapshot, drops its elements at start.
func TestKernelGREPolicedOutlivesDaemon(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topo := testbedtest.New(t, Config{Clients: 1})
	const rate = 2e6
	// No shaping: a daemon killed leaves its HTB trees, and the next one
	// refuses to start on them ("htb root: invalid argument", issue 9's).
	yaml := "classes:\n  - {name: tunnels, match: [{pptp: gre}]}\npolicing:\n  pptp_call: {rate: 2mbit, burst: 16kb}\n"
	gw := startGatewayConfig(t, ctx, topo, bin, yaml, "--gre-path", "kernel")
	if _, err := topo.StartPAC(topo.Server, ServerIP); err != nil {
		t.Fatal(err)
	}
	wan := captureWAN(t, topo)
	c0 := topo.Clients[0]
	var f FloodResult
	var ferr error
	var log2 string
	res := RunPNS(ctx, c0, PNSConfig{Server: ServerIP, Frames: 3, Timeout: 40 * time.Second, Hold: func() {
		waitMap(t, ctx, topo, "gre_outq", 1)
		waitMap(t, ctx, topo, "gre_inpd", 1)
		rep, err := gw.Calls(ctx)
		if err != nil {
			t.Error(err)
			return
		}
		own, peer := callIDs(t, rep, c0.IP)
		gw.Proc.Signal(syscall.SIGKILL)
		<-gw.Proc.Done()
		f, ferr = GREFlood(ctx, c0, c0.IP, ServerIP, peer, own, 1000, 3*rate, 2*time.Second)
		gw2 := startGatewayConfig(t, ctx, topo, bin, yaml, "--gre-path", "kernel")
		log2 = gw2.Log()
		waitMap(t, ctx, topo, "gre_outq", 0)
	}})
	if !res.ControlUp || len(res.Calls) != 1 {
		t.Fatalf("the call did not come up: %s", res)
	}
	if ferr != nil {
		t.Fatal(ferr)
	}
	allowed := (rate/8*f.Seconds + rate/8) / float64(f.IPLen)
	t.Logf("daemon killed: sent %d frames, %d came back (the policer lets at most %.0f through)", f.Sent, f.Echoed, allowed)
	if f.Echoed == 0 || float64(f.Echoed) > 1.1*allowed || float64(f.Sent) < 1.3*allowed {
		t.Errorf("with the daemon killed, %d of %d frames came back; want some, at most %.0f", f.Echoed, f.Sent, allowed)
	}
	if n := insideSources(wan.Sources()); n != 0 {
		t.Errorf("%d GRE packets reached the server with an inside source", n)
	}
	if !strings.Contains(log2, "found=2 kept=0") {
		t.Errorf("the new daemon did not report the elements it found and dropped:\n%s", log2)
	}
}
