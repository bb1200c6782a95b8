package pptp

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"pptpgw/pptp/gre"
	"pptpgw/pptp/ppp"
	"pptpgw/testbed"
	"pptpgw/testbed/testbedtest"
)

// TestMain lets testbedtest.PPTPGW build the gateway once for the package
// and remove it after.
func TestMain(m *testing.M) { testbedtest.Main(m) }

// Both products together: 100 Go-client sessions from 4 LAN hosts behind
// the pptpgw gateway (one public address) to `pptpgw serve` on the WAN.
// Every session authenticates (MS-CHAPv2 + MPPE-128) and pings a host
// behind the server; the gateway lists 100 calls with distinct outside call
// IDs toward the server, and none once the clients hang up.
func TestNetnsSessionsBehindPPTPGW(t *testing.T) {
	r := newNSRig(t, nil, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bin := testbedtest.PPTPGW(t)
	gw, err := r.topo.StartGateway(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}

	const n = 100
	type host struct {
		ns  *testbed.NS
		mux *gre.Mux
	}
	var hosts []host
	for _, ns := range r.topo.Clients {
		hosts = append(hosts, host{ns, muxIn(t, ns)})
	}
	clients := make([]*Client, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		h := hosts[i%len(hosts)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := Dial(ctx, ClientConfig{Server: testbed.ServerIP.String(), Username: "alice",
				Password: "s3cret pass", Mux: h.mux, Dial: h.ns.DialContext})
			if err != nil {
				errs <- fmt.Errorf("client %d (%s): %w", i, h.ns.Name, err)
				return
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("%v", err)
	}
	if t.Failed() {
		t.Fatalf("server counters %v\ngateway log:\n%s", r.srv.Counters(), gw.Log())
	}
	for i, c := range clients {
		ping(t, c, nsHost, 64+i)
	}
	if ss := r.srv.Sessions(); len(ss) != n {
		t.Fatalf("server has %d sessions, want %d", len(ss), n)
	} else {
		for _, s := range ss {
			if !strings.HasPrefix(s.Peer, testbed.GWWANIP.String()+":") {
				t.Fatalf("session peer %s: not behind the gateway's public address", s.Peer)
			}
		}
	}
	rep, err := gw.Calls(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Calls) != n || testbed.DistinctOutsideIDs(rep.Calls) != n {
		t.Fatalf("gateway lists %d calls with %d distinct outside IDs, want %d", len(rep.Calls), testbed.DistinctOutsideIDs(rep.Calls), n)
	}
	inside := map[string]int{}
	for _, c := range rep.Calls {
		inside[c.InsideIP.String()]++
		if c.PktsIn == 0 || c.PktsOut == 0 {
			t.Errorf("call %+v carried no GRE one way", c)
		}
	}
	if len(inside) != len(hosts) {
		t.Errorf("calls from %d inside hosts, want %d: %v", len(inside), len(hosts), inside)
	}
	t.Logf("gateway: %d calls from %d inside hosts, %d distinct outside IDs; gre_in=%d gre_out=%d",
		len(rep.Calls), len(inside), testbed.DistinctOutsideIDs(rep.Calls), rep.Counters["gre_in"], rep.Counters["gre_out"])
	if got := testbedtest.Counter(t, rep.Counters, "gre_no_call"); got != 0 {
		t.Errorf("gateway dropped %d GRE packets matching no call", got)
	}
	for _, c := range clients {
		must(t, c.Close())
	}
	waitFor(t, func() bool { return len(r.srv.Sessions()) == 0 })
	deadline := time.Now().Add(5 * time.Second)
	for {
		rep, err := gw.Calls(ctx)
		if err == nil && len(rep.Calls) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway still lists %d calls after every client hung up", len(rep.Calls))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := gw.Stop(); err != nil {
		t.Errorf("gateway stop: %v\n%s", err, gw.Log())
	}
}

// Third-party client, both our products: Debian's pptp-linux in 3 LAN
// namespaces (the Go PPP client on its pty) behind the pptpgw gateway calls
// `pptpgw serve` on the WAN; each session authenticates with MS-CHAPv2 +
// MPPE-128 and pings the host behind the server through the tunnel.
func TestNetnsPPTPLinuxBehindPPTPGW(t *testing.T) {
	if _, err := exec.LookPath("pptp"); err != nil {
		t.Skip("pptp-linux not installed (apt-get install pptp-linux)")
	}
	r := newNSRig(t, nil, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	bin := testbedtest.PPTPGW(t)
	gw, err := r.topo.StartGateway(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	var clients []*PTYClient
	for _, ns := range r.topo.Clients {
		pc, err := r.topo.StartPPTPClient(ctx, ns, testbed.ServerIP)
		must(t, err)
		c, err := DialPTY(ctx, pc.Pty, ClientConfig{Username: "alice", Password: "s3cret pass"})
		if err != nil {
			t.Fatalf("%s: %v\npptp output:\n%s\ngateway log:\n%s", ns.Name, err, pc.Proc.Output(), gw.Log())
		}
		t.Cleanup(func() { c.Close(); pc.Close() })
		if in := c.Session().Info(); in.Auth != ppp.AuthMSCHAPv2 || !in.MPPE || int(in.MPPEStrength) != 128 {
			t.Fatalf("%s negotiated %+v", ns.Name, in)
		}
		clients = append(clients, c)
	}
	for i, c := range clients {
		ping(t, c, nsHost, 100+i)
	}
	rep, err := gw.Calls(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Calls) != len(clients) || testbed.DistinctOutsideIDs(rep.Calls) != len(clients) {
		t.Fatalf("gateway lists %d calls with %d distinct outside IDs, want %d", len(rep.Calls), testbed.DistinctOutsideIDs(rep.Calls), len(clients))
	}
	if ss := r.srv.Sessions(); len(ss) != len(clients) {
		t.Fatalf("server has %d sessions, want %d", len(ss), len(clients))
	}
	for _, c := range clients {
		c.Close()
	}
	// A session whose peer sent LCP Terminate-Request stays for one restart
	// interval (3 s, RFC 1661 Stopping), so allow more than waitFor's 3 s.
	for deadline := time.Now().Add(10 * time.Second); len(r.srv.Sessions()) != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("server still has %d sessions 10 s after the clients hung up", len(r.srv.Sessions()))
		}
	}
}
