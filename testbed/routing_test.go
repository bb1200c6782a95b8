package testbed_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"pptpgw/nat"
	. "pptpgw/testbed"
	"pptpgw/testbed/testbedtest"
)

// TestGatewayTwoUplinks (issue 10): two pptp-linux clients behind a gateway
// with two uplinks to an upstream router that reaches one pptpd. A source
// rule sends client 1's traffic out of uplink 1; client 0 uses the main
// table (uplink 0). A class rule sends client 0's bulk TCP, and its GRE
// too, out of uplink 1, but its GRE stays pinned to the uplink its control
// connection left by. Checked: every frame comes back; the server sees each
// client's control connection and GRE from the same public address (its
// uplink's); the bulk TCP arrives from uplink 1's address. Then the gateway
// is killed with -9, its routes and rules stay, the next start replaces them
// (no duplicates) and its clean stop removes them and restores the GRE
// sysctl it set.
func TestGatewayTwoUplinks(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	testbedtest.NeedTools(t, "pptp", "pptpd", "ss", "ip", "nft")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topo := testbedtest.New(t, Config{Clients: 2})
	_, wan1, err := topo.TwoUplinks()
	if err != nil {
		t.Fatal(err)
	}
	d, err := topo.StartPPTPD(ctx, PPTPDConfig{})
	if err != nil {
		t.Fatal(err)
	}
	c0, c1 := topo.Clients[0], topo.Clients[1]
	sh := func(n *NS, args ...string) string {
		t.Helper()
		out, err := n.Output(ctx, args[0], args[1:]...)
		if err != nil {
			t.Fatalf("%s %v: %v: %s", n.Name, args, err, out)
		}
		return string(out)
	}
	greSysctl := func() string {
		v, err := topo.GW.ReadSysctl("net/netfilter/nf_conntrack_gre_timeout_stream")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(v)
	}
	// conntrack's sysctls exist once something uses conntrack here.
	sh(topo.GW, "nft", "add table ip pgclass; add chain ip pgclass c { type filter hook prerouting priority -160; }")
	origSysctl := greSysctl()

	cfgPath := filepath.Join(topo.Dir, "gw.yaml")
	cfg := fmt.Sprintf(`lan: [%s]
uplinks:
  - {interface: %s, via: %s}
  - {interface: %s, via: %s}
routing:
  tables:
    - {name: up1, id: 200, routes: [{to: default, via: %s, interface: %s}]}
  rules:
    - {from: %s, table: up1, priority: 1000}
conntrack_timeouts:
  gre: {replied: 444s}
`, topo.LANIf, topo.WANIf, Uplink0RouterIP, wan1, Uplink1RouterIP, Uplink1RouterIP, wan1, c1.IP)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	// The class rule `{class: bulk, table: up1}` installs, with bulk class
	// index 1, `fwmark 0x2/0xff lookup 200` (TestRouterNetns checks that);
	// the classes and the marking rules are the shaping feature's, so this
	// test marks and routes the class itself: client 0's TCP to port 5001
	// and its GRE.
	sh(topo.GW, "nft", fmt.Sprintf("add rule ip pgclass c ip saddr %s tcp dport 5001 meta mark set meta mark | 0x2; "+
		"add rule ip pgclass c ip saddr %s ip protocol gre meta mark set meta mark | 0x2", c0.IP, c0.IP))
	sh(topo.GW, "ip", "rule", "add", "priority", "1001", "fwmark", "0x2/0xff", "lookup", "200")

	gw, err := topo.StartGateway(ctx, bin, "--config", cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if got := greSysctl(); got != "444" {
		t.Errorf("nf_conntrack_gre_timeout_stream = %s while running, want 444", got)
	}

	// Bulk TCP sink on the server: remember where connections come from.
	var bulkMu sync.Mutex
	var bulkFrom []netip.Addr
	var ln net.Listener
	if err := topo.Server.Do(func() (err error) { ln, err = net.Listen("tcp4", ServerIP.String()+":5001"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			bulkMu.Lock()
			bulkFrom = append(bulkFrom, c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap())
			bulkMu.Unlock()
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()

	capt, err := topo.Server.CaptureGRE(c0.Name)
	if err != nil {
		t.Fatal(err)
	}
	var rep nat.CallsReply
	var repErr error
	var ctlPeers, pinMap string
	res := RunPPTPClients(ctx, topo, []*NS{c0, c1}, ServerIP, 50, func() {
		rep, repErr = gw.Calls(ctx)
		ctlPeers = sh(topo.Server, "ss", "-Htn", "state", "established", "( sport = :1723 )")
		pinMap = sh(topo.GW, "nft", "list", "map", "ip", "pptpgw", "uplink_pin")
		conn, err := c0.DialContext(ctx, "tcp4", ServerIP.String()+":5001")
		if err != nil {
			t.Errorf("bulk TCP from client 0: %v", err)
			return
		}
		if _, err := conn.Write(make([]byte, 1<<20)); err != nil {
			t.Errorf("bulk TCP from client 0: write: %v", err)
		}
		conn.Close()
	})
	capt.Close()
	t.Logf("two uplinks: ok=%v\n%s", res.OK(), res)
	if !res.OK() {
		t.Errorf("round trip failed; pptpd: %s\nfakeppp: %s\ngateway log:\n%s", d.Proc.Output(), d.FakePPPLog(), gw.Log())
	}
	if repErr != nil {
		t.Fatalf("pptpgw calls: %v", repErr)
	}
	want := map[netip.Addr]netip.Addr{c0.IP: Uplink0IP, c1.IP: Uplink1IP}
	for _, c := range rep.Calls {
		if w, ok := want[c.InsideIP]; !ok || c.PublicIP != w {
			t.Errorf("call of %v: public %v, want %v", c.InsideIP, c.PublicIP, w)
		}
		delete(want, c.InsideIP)
	}
	if len(want) != 0 {
		t.Errorf("no call for %v: %+v", want, rep.Calls)
	}
	if n := testbedtest.Counter(t, rep.Counters, nat.ReasonGREUplink); n != 0 {
		t.Errorf("gre_wrong_uplink = %d: GRE was routed out of the wrong uplink", n)
	}
	t.Logf("server's control connections:\n%s", ctlPeers)
	var peers []netip.Addr
	for _, line := range strings.Split(strings.TrimSpace(ctlPeers), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		ap, err := netip.ParseAddrPort(f[len(f)-1])
		if err != nil {
			t.Fatalf("ss line %q: %v", line, err)
		}
		peers = append(peers, ap.Addr())
	}
	slices.SortFunc(peers, netip.Addr.Compare)
	if want := []netip.Addr{Uplink1IP, Uplink0IP}; !slices.Equal(peers, want) { // 192.0.2.1 < 198.51.100.1
		t.Errorf("the server's control connections come from %v, want %v", peers, want)
	}
	src := capt.Sources()
	t.Logf("GRE at the server by source: %v (client 0's frames: %d)", src, capt.Tagged.Load())
	if len(src) != 2 || src[Uplink0IP] == 0 || src[Uplink1IP] == 0 {
		t.Errorf("GRE at the server by source %v, want only %v and %v", src, Uplink0IP, Uplink1IP)
	}
	if capt.Tagged.Load() == 0 {
		t.Error("none of client 0's frames reached the server")
	}
	for _, w := range []string{
		fmt.Sprintf("%v . %v : jump uplink_0", c0.IP, ServerIP),
		fmt.Sprintf("%v . %v : jump uplink_1", c1.IP, ServerIP),
	} {
		if !strings.Contains(pinMap, w) {
			t.Errorf("map uplink_pin lacks %q:\n%s", w, pinMap)
		}
	}
	// The sink's Accept may run after the client's write: 1 MiB fits the
	// socket buffers of both ends. Wait for it (bounded).
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		bulkMu.Lock()
		n := len(bulkFrom)
		bulkMu.Unlock()
		if n > 0 {
			break
		}
	}
	bulkMu.Lock()
	if len(bulkFrom) != 1 || bulkFrom[0] != Uplink1IP {
		t.Errorf("client 0's bulk TCP reached the server from %v, want %v (the class rule's uplink)", bulkFrom, Uplink1IP)
	}
	bulkMu.Unlock()

	// The kernel deletes the routes of an interface that goes down; the
	// gateway puts its own back when the uplink returns.
	routesUp := sh(topo.GW, "ip", "route", "show", "table", "all", "proto", "147")
	sh(topo.GW, "ip", "link", "set", wan1, "down")
	if got := sh(topo.GW, "ip", "route", "show", "table", "all", "proto", "147"); strings.Contains(got, "dev "+wan1) {
		t.Errorf("routes of %s kept while it is down (the premise):\n%s", wan1, got)
	}
	sh(topo.GW, "ip", "link", "set", wan1, "up")
	var routesBack string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if routesBack = sh(topo.GW, "ip", "route", "show", "table", "all", "proto", "147"); routesBack == routesUp {
			break
		}
	}
	if routesBack != routesUp {
		t.Errorf("after %s went down and up, routes:\n%s\nwant\n%s\ngateway log:\n%s", wan1, routesBack, routesUp, gw.Log())
	}

	// Crash safety.
	ours := regexp.MustCompile(`(?m)^\d+:.* proto 147$`)
	rulesBefore := ours.FindAllString(sh(topo.GW, "ip", "rule", "show"), -1)
	routesBefore := sh(topo.GW, "ip", "route", "show", "table", "all", "proto", "147")
	if len(rulesBefore) != 3 || strings.Count(routesBefore, "default via") != 3 {
		t.Fatalf("before the kill: rules %q, routes:\n%s", rulesBefore, routesBefore)
	}
	gw.Proc.Signal(syscall.SIGKILL)
	if err := gw.Proc.Wait(5 * time.Second); err == nil {
		t.Log("killed gateway exited with status 0?")
	}
	if got := ours.FindAllString(sh(topo.GW, "ip", "rule", "show"), -1); len(got) != 3 {
		t.Errorf("after kill -9: rules %q, want the 3 left behind", got)
	}
	gw2, err := topo.StartGateway(ctx, bin, "--config", cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(gw2.Log(), "found routes and rules of an earlier run") {
		t.Errorf("the next start did not report the leftovers:\n%s", gw2.Log())
	}
	if got := ours.FindAllString(sh(topo.GW, "ip", "rule", "show"), -1); strings.Join(got, "\n") != strings.Join(rulesBefore, "\n") {
		t.Errorf("after the restart: rules\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(rulesBefore, "\n"))
	}
	if got := sh(topo.GW, "ip", "route", "show", "table", "all", "proto", "147"); got != routesBefore {
		t.Errorf("after the restart: routes\n%s\nwant\n%s", got, routesBefore)
	}
	if err := gw2.Stop(); err != nil {
		t.Errorf("clean stop: %v\n%s", err, gw2.Log())
	}
	if got := ours.FindAllString(sh(topo.GW, "ip", "rule", "show"), -1); len(got) != 0 {
		t.Errorf("after a clean stop: rules %q left", got)
	}
	if got := sh(topo.GW, "ip", "route", "show", "table", "all", "proto", "147"); strings.TrimSpace(got) != "" {
		t.Errorf("after a clean stop: routes left:\n%s", got)
	}
	if got := greSysctl(); got != origSysctl {
		t.Errorf("after a clean stop: nf_conntrack_gre_timeout_stream = %s, want the original %s", got, origSysctl)
	}
}
