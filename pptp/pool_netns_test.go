package pptp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"pptpgw/nat"
	"pptpgw/pptp/gre"
	"pptpgw/pptp/tun"
	"pptpgw/testbed"
	"pptpgw/testbed/testbedtest"
)

// Server pools (issue 11) with both products: two `pptpgw serve` members
// (in-process Servers in the LAN namespaces ClientIP(0) and ClientIP(1))
// published as one pool of `pptpgw run`, Go clients outside.

// poolMember is one in-process server of the pool.
type poolMember struct {
	srv    *Server
	stop   context.CancelFunc
	done   chan struct{}
	listen net.Listener
}

func startPoolMember(t *testing.T, ns *testbed.NS, i int) *poolMember {
	t.Helper()
	cfg := Config{PoolStart: netip.MustParseAddr("10.8.0.10"), PoolEnd: netip.MustParseAddr("10.8.0.250"),
		Secrets: mapSecrets{"alice": "s3cret pass"}, Listen: netip.AddrPortFrom(ns.IP, 1723).String()}
	var dev *tun.Device
	var greConn gre.PacketConn
	m := &poolMember{done: make(chan struct{})}
	must(t, ns.Do(func() error {
		var err error
		if dev, err = tun.Open(fmt.Sprintf("pm%dt%d", os.Getpid()%10000, i), 1396); err != nil {
			return err
		}
		if greConn, err = gre.ListenRaw(netip.Addr{}); err != nil {
			return err
		}
		m.listen, err = net.Listen("tcp", cfg.Listen)
		return err
	}))
	var err error
	m.srv, err = NewServer(cfg, greConn, dev)
	must(t, err)
	must(t, dev.AddAddr(m.srv.Config().LocalIP))
	ctx, cancel := context.WithCancel(context.Background())
	m.stop = cancel
	go func() { defer close(m.done); _ = m.srv.Serve(ctx, m.listen) }()
	t.Cleanup(func() {
		m.halt()
		dev.Close()
	})
	return m
}

// halt stops the member's server: its listener and sessions go.
func (m *poolMember) halt() {
	m.stop()
	m.listen.Close()
	<-m.done
}

// poolClient dials the public address from outside namespace ns.
func poolClient(t *testing.T, ctx context.Context, ns *testbed.NS) (*Client, error) {
	return Dial(ctx, ClientConfig{Server: testbed.GWWANIP.String(), Username: "alice", Password: "s3cret pass",
		Mux: muxIn(t, ns), Dial: ns.DialContext})
}

// TestNetnsPoolServe: 8 Go clients outside (MS-CHAPv2 + MPPE-128) reach
// two `pptpgw serve` members through one public address; each session
// pings the server's end of its tunnel; the calls spread over both members
// with distinct outside IDs although both members number their calls
// alike. Then member 0 stops: it is marked down, the sessions on member 1
// keep working, and new clients all reach member 1.
func TestNetnsPoolServe(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	topo := testbedtest.New(t, testbed.Config{Clients: 2})
	outs, err := topo.AddOutside(12)
	must(t, err)
	members := []*poolMember{startPoolMember(t, topo.Clients[0], 0), startPoolMember(t, topo.Clients[1], 1)}
	m0, m1 := testbed.ClientIP(0), testbed.ClientIP(1)
	yaml := fmt.Sprintf(`forwards:
  - port: 1723
    to: [%s, %s]
    health: {interval: 300ms, timeout: 250ms}
`, m0, m1)
	path := filepath.Join(topo.Dir, "pptpgw.yaml")
	must(t, os.WriteFile(path, []byte(yaml), 0o600))
	gw, err := topo.StartGateway(ctx, bin, "--config", path)
	must(t, err)

	dialAll := func(nss []*testbed.NS) []*Client {
		t.Helper()
		cs := make([]*Client, len(nss))
		var wg sync.WaitGroup
		errs := make([]error, len(nss))
		for i, ns := range nss {
			wg.Add(1)
			go func() {
				defer wg.Done()
				dctx, dcancel := context.WithTimeout(ctx, 20*time.Second)
				defer dcancel()
				cs[i], errs[i] = poolClient(t, dctx, ns)
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("client %s: %v\ngateway log:\n%s", nss[i].Name, err, gw.Log())
			}
		}
		return cs
	}
	clients := dialAll(outs[:8])
	for i, c := range clients {
		ping(t, c, c.Session().Info().PeerIP, 64+i)
	}
	rep, err := gw.Calls(ctx)
	must(t, err)
	if len(rep.Calls) != 8 || testbed.DistinctOutsideIDs(rep.Calls) != 8 {
		t.Fatalf("gateway lists %d calls with %d distinct outside IDs, want 8", len(rep.Calls), testbed.DistinctOutsideIDs(rep.Calls))
	}
	member := map[netip.Addr]netip.Addr{} // client -> member
	ids := map[netip.Addr]map[uint16]bool{}
	for _, c := range rep.Calls {
		if c.Direction != nat.DirectionPublished || c.Member != c.InsideIP || c.PktsIn == 0 || c.PktsOut == 0 {
			t.Errorf("call %+v: want published, on its member, GRE both ways", c)
		}
		member[c.PeerIP] = c.Member
		if ids[c.Member] == nil {
			ids[c.Member] = map[uint16]bool{}
		}
		ids[c.Member][c.InsideCallID] = true
		t.Logf("client %s -> member %s: member's call ID %#04x, outside %#04x", c.PeerIP, c.Member, c.InsideCallID, c.OutsideCallID)
	}
	var shared []uint16
	for id := range ids[m0] {
		if ids[m1][id] {
			shared = append(shared, id)
		}
	}
	t.Logf("call IDs both members handed out: %#04x", shared)
	if len(ids[m0]) == 0 || len(ids[m1]) == 0 {
		t.Fatalf("calls not spread over both members: %v", member)
	}
	if len(shared) == 0 {
		t.Errorf("test precondition: the two members handed out no call ID in common")
	}
	if n0, n1 := len(members[0].srv.Sessions()), len(members[1].srv.Sessions()); n0+n1 != 8 || n0 < 2 || n1 < 2 {
		t.Errorf("sessions per member %d/%d, want 8 with at least 2 each", n0, n1)
	}

	// Member 0 stops.
	stopped := time.Now()
	members[0].halt()
	deadline := time.Now().Add(15 * time.Second)
	for {
		r, err := gw.Pools(ctx)
		must(t, err)
		if len(r.Pools) == 1 && r.Pools[0].Members[0].State == nat.MemberDown {
			t.Logf("member %s down %s after it stopped", m0, time.Since(stopped).Round(10*time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("member 0 not marked down: %+v", r)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i, c := range clients {
		if member[outs[i].IP] == m1 {
			ping(t, c, c.Session().Info().PeerIP, 100+i)
		}
	}
	fresh := dialAll(outs[8:12])
	for i, c := range fresh {
		ping(t, c, c.Session().Info().PeerIP, 64+i)
	}
	rep, err = gw.Calls(ctx)
	must(t, err)
	n := 0
	for _, c := range rep.Calls {
		for _, o := range outs[8:12] {
			if c.PeerIP == o.IP {
				n++
				if c.Member != m1 {
					t.Errorf("new client %s went to %s, which is down", o.IP, c.Member)
				}
			}
		}
	}
	if n != 4 {
		t.Errorf("%d calls of the new clients listed, want 4", n)
	}
	if tbl, err := gw.PoolTable(ctx); err == nil {
		t.Logf("pptpgw pool:\n%s", tbl)
	}
	for _, c := range append(clients, fresh...) {
		c.Close()
	}
}

// TestNetnsPoolScaleOut is the scale-out recipe measured (README
// "Scale-out"): three `pptpgw serve` members (in-process Servers, the code
// `pptpgw serve` runs) behind one `pptpgw run`, N sessions (MS-CHAPv2 +
// MPPE-128) from 6 outside hosts set up 16 at a time, each pinging its
// server's end of the tunnel. It asserts every session up and pinging and
// the least-calls spread (each member at least a sixth of N), and logs
// setups per second through the pool and sessions per member.
// PPTPGW_POOL_SESSIONS sets N (default 90, at most 600).
func TestNetnsPoolScaleOut(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	n := 90
	if s := os.Getenv("PPTPGW_POOL_SESSIONS"); s != "" {
		if _, err := fmt.Sscan(s, &n); err != nil || n < 3 || n > 600 {
			t.Fatalf("PPTPGW_POOL_SESSIONS=%q: want 3..600", s)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	topo := testbedtest.New(t, testbed.Config{Clients: 3})
	outs, err := topo.AddOutside(6)
	must(t, err)
	var members []*poolMember
	var addrs []string
	for i := range 3 {
		members = append(members, startPoolMember(t, topo.Clients[i], i))
		addrs = append(addrs, testbed.ClientIP(i).String())
	}
	yaml := fmt.Sprintf("forwards:\n  - port: 1723\n    to: [%s]\n", strings.Join(addrs, ", "))
	path := filepath.Join(topo.Dir, "pptpgw.yaml")
	must(t, os.WriteFile(path, []byte(yaml), 0o600))
	gw, err := topo.StartGateway(ctx, bin, "--config", path)
	must(t, err)
	muxes := make([]*gre.Mux, len(outs))
	for i, o := range outs {
		muxes[i] = muxIn(t, o)
	}

	clients := make([]*Client, n)
	errs := make([]error, n)
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			o := outs[i%len(outs)]
			dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
			defer dcancel()
			clients[i], errs[i] = Dial(dctx, ClientConfig{Server: testbed.GWWANIP.String(), Username: "alice",
				Password: "s3cret pass", Mux: muxes[i%len(outs)], Dial: o.DialContext})
		}()
	}
	wg.Wait()
	setup := time.Since(start)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("session %d: %v\ngateway log:\n%s", i, err, gw.Log())
		}
	}
	for i, c := range clients {
		ping(t, c, c.Session().Info().PeerIP, 64+i%512)
	}
	per := make([]int, len(members))
	for i, m := range members {
		per[i] = len(m.srv.Sessions())
		if per[i] < n/6 {
			t.Errorf("member %d has %d of %d sessions, want at least %d (least-calls)", i, per[i], n, n/6)
		}
	}
	rep, err := gw.Calls(ctx)
	must(t, err)
	if len(rep.Calls) != n || testbed.DistinctOutsideIDs(rep.Calls) != n {
		t.Errorf("gateway lists %d calls, %d distinct outside IDs, want %d", len(rep.Calls), testbed.DistinctOutsideIDs(rep.Calls), n)
	}
	t.Logf("scale-out: %d sessions (MS-CHAPv2 + MPPE-128) through one pptpgw run to 3 members in %s: %.1f setups/s, "+
		"16 in flight; sessions per member %v; every session pinged its server", n, setup.Round(time.Millisecond),
		float64(n)/setup.Seconds(), per)
	if tbl, err := gw.PoolTable(ctx); err == nil {
		t.Logf("pptpgw pool:\n%s", tbl)
	}
	for _, c := range clients {
		c.Close()
	}
}

// TestNetnsPoolSharedAddress: 4 Go clients behind ONE outside address (one
// namespace, one GRE socket: a carrier NAT or an office) reach two `pptpgw
// serve` members, which both number their calls from 1. Through pptpgw
// every session comes up and pings (the members' equal call IDs leave as
// distinct outside IDs for that address). The same run first tries Linux's
// helper with DNAT to the members in turn (testbed.KernelHelperPool); its
// outcome is logged for the README, not asserted.
func TestNetnsPoolSharedAddress(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	topo := testbedtest.New(t, testbed.Config{Clients: 2})
	outs, err := topo.AddOutside(1)
	must(t, err)
	members := []*poolMember{startPoolMember(t, topo.Clients[0], 0), startPoolMember(t, topo.Clients[1], 1)}
	const n = 4
	// run dials n sessions from the one outside host and pings through each;
	// it returns how many worked, and closes them.
	run := func(name string) int {
		mux := muxIn(t, outs[0])
		ok := 0
		var cs []*Client
		for i := range n {
			dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
			c, err := Dial(dctx, ClientConfig{Server: testbed.GWWANIP.String(), Username: "alice", Password: "s3cret pass",
				Mux: mux, Dial: outs[0].DialContext})
			dcancel()
			if err != nil {
				t.Logf("%s: session %d: %v", name, i, err)
				continue
			}
			cs = append(cs, c)
		}
		for i, c := range cs {
			if pingOK(c, c.Session().Info().PeerIP, 64+i) {
				ok++
			} else {
				t.Logf("%s: session with call IDs %#04x/%#04x: no echo reply", name, c.LocalCallID(), c.PeerCallID())
			}
		}
		for _, c := range cs {
			c.Close()
		}
		waitFor(t, func() bool { return len(members[0].srv.Sessions())+len(members[1].srv.Sessions()) == 0 })
		return ok
	}

	must(t, topo.KernelHelperPool(ctx, []netip.Addr{testbed.ClientIP(0), testbed.ClientIP(1)}))
	kernelOK := run("kernel helper")
	t.Logf("kernel helper + DNAT to 2 members: %d of %d sessions from one address pinged", kernelOK, n)
	must(t, topo.KernelReset(ctx))

	yaml := fmt.Sprintf("forwards:\n  - port: 1723\n    to: [%s, %s]\n", testbed.ClientIP(0), testbed.ClientIP(1))
	path := filepath.Join(topo.Dir, "pptpgw.yaml")
	must(t, os.WriteFile(path, []byte(yaml), 0o600))
	gw, err := topo.StartGateway(ctx, bin, "--config", path)
	must(t, err)
	var rep nat.CallsReply
	mux := muxIn(t, outs[0])
	var cs []*Client
	for i := range n {
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := Dial(dctx, ClientConfig{Server: testbed.GWWANIP.String(), Username: "alice", Password: "s3cret pass",
			Mux: mux, Dial: outs[0].DialContext})
		dcancel()
		if err != nil {
			t.Fatalf("pptpgw: session %d: %v\n%s", i, err, gw.Log())
		}
		cs = append(cs, c)
	}
	for i, c := range cs {
		ping(t, c, c.Session().Info().PeerIP, 64+i)
	}
	rep, err = gw.Calls(ctx)
	must(t, err)
	ids := map[netip.Addr][]uint16{}
	for _, c := range rep.Calls {
		ids[c.Member] = append(ids[c.Member], c.InsideCallID)
	}
	t.Logf("pptpgw: %d of %d sessions from one address pinged; members' call IDs %v; %d distinct outside IDs",
		len(cs), n, ids, testbed.DistinctOutsideIDs(rep.Calls))
	if len(rep.Calls) != n || testbed.DistinctOutsideIDs(rep.Calls) != n || len(ids) != 2 {
		t.Errorf("calls %d, distinct outside IDs %d, members %d; want %d, %d, 2", len(rep.Calls), testbed.DistinctOutsideIDs(rep.Calls), len(ids), n, n)
	}
	if !slicesOverlap(ids[testbed.ClientIP(0)], ids[testbed.ClientIP(1)]) {
		t.Errorf("test precondition: the members used no call ID in common: %v", ids)
	}
	for _, c := range cs {
		c.Close()
	}
}

func slicesOverlap(a, b []uint16) bool {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return true
			}
		}
	}
	return false
}

// pingOK is ping without failing the test: whether an echo reply came
// within 3 s.
func pingOK(c *Client, dst netip.Addr, size int) bool {
	src := c.Session().Info().LocalIP
	got := make(chan []byte, 4)
	c.OnIP(func(p []byte) {
		select {
		case got <- append([]byte(nil), p...):
		default:
		}
	})
	deadline := time.After(3 * time.Second)
	for seq := uint16(1); ; seq++ {
		if err := c.SendIP(icmpEcho(src, dst, 7, seq, size)); err != nil {
			return false
		}
		select {
		case p := <-got:
			if len(p) == size && p[20] == 0 {
				return true
			}
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			return false
		}
	}
}

// TestNetnsPoolServeHairpin: Go clients on the LAN (the members' own
// bridge) call the public address: MS-CHAPv2 + MPPE-128 sessions come up
// on the members and ping through their tunnels (NAT loopback).
func TestNetnsPoolServeHairpin(t *testing.T) {
	bin := testbedtest.PPTPGW(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topo := testbedtest.New(t, testbed.Config{Clients: 4})
	members := []*poolMember{startPoolMember(t, topo.Clients[0], 0), startPoolMember(t, topo.Clients[1], 1)}
	yaml := fmt.Sprintf("forwards:\n  - port: 1723\n    to: [%s, %s]\n", testbed.ClientIP(0), testbed.ClientIP(1))
	path := filepath.Join(topo.Dir, "pptpgw.yaml")
	must(t, os.WriteFile(path, []byte(yaml), 0o600))
	gw, err := topo.StartGateway(ctx, bin, "--config", path)
	must(t, err)
	var cs []*Client
	for _, ns := range topo.Clients[2:] {
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := poolClient(t, dctx, ns)
		dcancel()
		if err != nil {
			t.Fatalf("hairpin client %s: %v\n%s", ns.Name, err, gw.Log())
		}
		cs = append(cs, c)
	}
	for i, c := range cs {
		ping(t, c, c.Session().Info().PeerIP, 64+i)
	}
	rep, err := gw.Calls(ctx)
	must(t, err)
	for _, c := range rep.Calls {
		if c.Direction != nat.DirectionHairpin || c.Member != c.PeerIP || c.PktsIn == 0 || c.PktsOut == 0 {
			t.Errorf("call %+v: want a hairpin call to a member with GRE both ways", c)
		}
	}
	if len(rep.Calls) != len(cs) {
		t.Errorf("%d calls listed, want %d", len(rep.Calls), len(cs))
	}
	// The members saw the sessions coming from the public address.
	for i, m := range members {
		for _, s := range m.srv.Sessions() {
			if !strings.HasPrefix(s.Peer, testbed.GWWANIP.String()+":") {
				t.Errorf("member %d: session peer %s, want the public address", i, s.Peer)
			}
		}
	}
	for _, c := range cs {
		c.Close()
	}
}
