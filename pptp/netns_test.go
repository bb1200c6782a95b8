package pptp

// Network-namespace integration tests (root only). Topology (testbed + one extra
// namespace), every name carrying the topology's random prefix P:
//
//	P-gw (203.0.113.1)  ----  P-srv (203.0.113.2, pptpgw server in-process,   ----  P-h (10.99.0.2)
//	 clients: Go / pptp-linux          TUN Pt0 with 10.8.0.9, ip_forward=1)   veth
//	 + client TUN Pc0                  Ps1 10.99.0.1/24
//
// Clients reach the server's tunnel address 10.8.0.9 and the host 10.99.0.2 behind it
// through the session; the host routes back via the server.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"pptpgw/pptp/gre"
	"pptpgw/pptp/ppp"
	"pptpgw/pptp/tun"
	"pptpgw/testbed"
	"pptpgw/testbed/testbedtest"
)

var (
	nsHost     = netip.MustParseAddr("10.99.0.2")
	nsHostNet  = netip.MustParsePrefix("10.99.0.0/24")
	nsServerIn = netip.MustParseAddr("10.99.0.1")
)

type nsRig struct {
	topo   *testbed.Topology
	host   *testbed.NS
	srv    *Server
	srvTUN *tun.Device
}

func newNSRig(t *testing.T, mod func(*Config), lanClients ...int) *nsRig {
	t.Helper()
	tc := testbed.Config{}
	if len(lanClients) > 0 {
		tc.Clients = lanClients[0]
	}
	topo := testbedtest.New(t, tc)
	p := topo.Prefix
	r := &nsRig{topo: topo}

	// The host behind the server: its own namespace, veth to the server.
	host, err := topo.AddNS("h")
	must(t, err)
	r.host = host
	snl := topo.Server.Netlink()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: p + "s1"}, PeerName: p + "h0"}
	must(t, snl.LinkAdd(veth))
	peer, err := snl.LinkByName(p + "h0")
	must(t, err)
	must(t, snl.LinkSetNsFd(peer, int(host.Handle)))
	s1, err := snl.LinkByName(p + "s1")
	must(t, err)
	must(t, snl.AddrAdd(s1, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(nsServerIn, 24))}))
	must(t, snl.LinkSetUp(s1))
	hnl := host.Netlink()
	h0, err := hnl.LinkByName(p + "h0")
	must(t, err)
	must(t, hnl.AddrAdd(h0, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(nsHost, 24))}))
	must(t, hnl.LinkSetUp(h0))
	must(t, hnl.RouteAdd(&netlink.Route{Gw: nsServerIn.AsSlice()}))
	must(t, topo.Server.WriteSysctl("net/ipv4/ip_forward", "1"))

	// The server, in-process, its sockets and TUN made inside the server namespace.
	cfg := Config{PoolStart: netip.MustParseAddr("10.8.0.10"), PoolEnd: netip.MustParseAddr("10.8.0.250"),
		Secrets: mapSecrets{"alice": "s3cret pass", "bob": "hunter2"}, DNS: []netip.Addr{nsServerIn},
		Listen: netip.AddrPortFrom(testbed.ServerIP, 1723).String()}
	if mod != nil {
		mod(&cfg)
	}
	var greConn gre.PacketConn
	var ln net.Listener
	must(t, topo.Server.Do(func() error {
		var err error
		if r.srvTUN, err = tun.Open(p+"t0", 1396); err != nil {
			return err
		}
		if greConn, err = gre.ListenRaw(netip.Addr{}); err != nil {
			return err
		}
		ln, err = net.Listen("tcp", cfg.Listen)
		return err
	}))
	r.srv, err = NewServer(cfg, greConn, r.srvTUN)
	must(t, err)
	must(t, r.srvTUN.AddAddr(r.srv.Config().LocalIP))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
		r.srvTUN.Close()
	})
	return r
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}

// gwMux opens a raw GRE socket in the client (gateway) namespace, shared by clients.
func (r *nsRig) gwMux(t testing.TB) *gre.Mux { return muxIn(t, r.topo.GW) }

// muxIn opens a raw GRE socket in namespace ns and serves a Mux on it (with
// its ticker) until the test ends; clients in ns share it.
func muxIn(t testing.TB, ns *testbed.NS) *gre.Mux {
	var pc gre.PacketConn
	must(t, ns.Do(func() error {
		var err error
		pc, err = gre.ListenRaw(netip.Addr{})
		return err
	}))
	m := gre.NewMux(pc, gre.Config{})
	stop := make(chan struct{})
	go m.Serve()
	go m.RunTicker(10*time.Millisecond, stop)
	t.Cleanup(func() { close(stop); m.Close() })
	return m
}

func (r *nsRig) dialGW(ctx context.Context, network, addr string) (net.Conn, error) {
	return r.topo.GW.DialContext(ctx, network, addr)
}

func (r *nsRig) goClient(t testing.TB, mux *gre.Mux, user, pass string, mod func(*ClientConfig)) (*Client, error) {
	cc := ClientConfig{Server: testbed.ServerIP.String(), Username: user, Password: pass, Mux: mux, Dial: r.dialGW}
	if mod != nil {
		mod(&cc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return Dial(ctx, cc)
}

// clientTUN gives a client session a TUN in the client namespace, routes the server's
// tunnel address and the host network into it, and pumps packets.
func (r *nsRig) clientTUN(t testing.TB, c IPConn, s *ppp.Session, name string) {
	in := s.Info()
	var dev *tun.Device
	must(t, r.topo.GW.Do(func() error {
		var err error
		dev, err = tun.Open(name, 1396)
		return err
	}))
	t.Cleanup(func() { dev.Close() })
	must(t, dev.AddAddr(in.LocalIP))
	must(t, dev.AddRoute(in.PeerIP, in.LocalIP))
	must(t, dev.AddPrefixRoute(nsHostNet, in.LocalIP))
	go PumpTUN(dev, c, 0)
}

// nsPing sends ICMP echo requests from the namespace (a raw ICMP socket: the kernel's
// routing and source selection, like ping(8)) and wants at least one reply.
func nsPing(t testing.TB, n *testbed.NS, dst netip.Addr) {
	t.Helper()
	var c *net.IPConn
	must(t, n.Do(func() error {
		var err error
		c, err = net.ListenIP("ip4:icmp", nil)
		return err
	}))
	defer c.Close()
	id := uint16(os.Getpid())
	buf := make([]byte, 1500)
	deadline := time.Now().Add(8 * time.Second)
	for seq := uint16(1); time.Now().Before(deadline); seq++ {
		msg := icmpEcho(netip.IPv4Unspecified(), dst, id, seq, 20+56)[20:]
		if _, err := c.WriteToIP(msg, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			t.Fatalf("ping %s: %v", dst, err)
		}
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		for {
			k, from, err := c.ReadFromIP(buf)
			if err != nil {
				break
			}
			if k >= 8 && buf[0] == 0 && from.IP.Equal(dst.AsSlice()) && buf[4] == byte(id>>8) && buf[5] == byte(id) {
				return
			}
		}
	}
	t.Fatalf("ping %s: no echo reply", dst)
}

// tcpEcho starts a TCP echo server on the host behind the server.
func (r *nsRig) tcpEcho(t testing.TB) netip.AddrPort {
	var ln net.Listener
	must(t, r.host.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", netip.AddrPortFrom(nsHost, 0).String())
		return err
	}))
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// tcpRoundTrip carries n bytes over a kernel TCP connection from the client namespace.
func (r *nsRig) tcpRoundTrip(t testing.TB, dst netip.AddrPort, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := r.dialGW(ctx, "tcp", dst.String())
	if err != nil {
		t.Fatalf("tcp dial %s through the tunnel: %v", dst, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i * 7)
	}
	go c.Write(data)
	got := make([]byte, n)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("tcp read: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("tcp data corrupted")
	}
}

func TestNetnsGoClientMSCHAPv2MPPE(t *testing.T) {
	r := newNSRig(t, nil)
	mux := r.gwMux(t)
	echo := r.tcpEcho(t)
	for i, mode := range []string{"stateless", "stateful"} {
		c, err := r.goClient(t, mux, "alice", "s3cret pass", func(cc *ClientConfig) {
			cc.StatelessOnly, cc.StatefulOnly = mode == "stateless", mode == "stateful"
		})
		if err != nil {
			t.Fatal(err)
		}
		in := c.Session().Info()
		if in.Auth != ppp.AuthMSCHAPv2 || !in.MPPE || int(in.MPPEStrength) != 128 || in.Stateless != (mode == "stateless") {
			t.Fatalf("negotiated %+v", in)
		}
		r.clientTUN(t, c, c.Session(), fmt.Sprintf("%sc%d", r.topo.Prefix, i))
		nsPing(t, r.topo.GW, r.srv.Config().LocalIP)
		nsPing(t, r.topo.GW, nsHost)
		r.tcpRoundTrip(t, echo, 256<<10)
		ss := r.srv.Sessions()
		if len(ss) != 1 || ss[0].User != "alice" || !strings.HasPrefix(ss[0].Peer, testbed.GWWANIP.String()+":") {
			t.Fatalf("sessions %+v", ss)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return len(r.srv.Sessions()) == 0 && r.srv.pool.InUse() == 0 })
	}
}

func TestNetnsGoClientPAP(t *testing.T) {
	r := newNSRig(t, func(c *Config) {
		c.Auth = []ppp.AuthMethod{ppp.AuthMSCHAPv2, ppp.AuthPAP}
		c.AllowUnencrypted = true
	})
	mux := r.gwMux(t)
	c, err := r.goClient(t, mux, "bob", "hunter2", func(cc *ClientConfig) {
		cc.Auth = []ppp.AuthMethod{ppp.AuthPAP}
		cc.AllowUnencrypted = true
	})
	if err != nil {
		t.Fatal(err)
	}
	if in := c.Session().Info(); in.Auth != ppp.AuthPAP || in.MPPE {
		t.Fatalf("negotiated %+v", in)
	}
	t0 := time.Now()
	r.clientTUN(t, c, c.Session(), r.topo.Prefix+"c0")
	nsPing(t, r.topo.GW, nsHost)
	t.Logf("ping %v", time.Since(t0))
	r.tcpRoundTrip(t, r.tcpEcho(t), 64<<10)
	t.Logf("tcp %v", time.Since(t0))
	must(t, c.Close())
	t.Logf("close %v", time.Since(t0))
}

// TestNetnsPPTPLinux: Debian's pptp-linux does control + GRE; the Go PPP client speaks
// async HDLC on its pty; the kernel's ping and TCP use the session through a TUN.
func TestNetnsPPTPLinux(t *testing.T) {
	if _, err := exec.LookPath("pptp"); err != nil {
		t.Skip("pptp-linux not installed (apt-get install pptp-linux)")
	}
	r := newNSRig(t, nil)
	echo := r.tcpEcho(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pc, err := r.topo.StartPPTPClient(ctx, r.topo.GW, testbed.ServerIP)
	must(t, err)
	c, err := DialPTY(ctx, pc.Pty, ClientConfig{Username: "alice", Password: "s3cret pass"})
	if err != nil {
		t.Fatalf("%v\npptp output:\n%s", err, pc.Proc.Output())
	}
	in := c.Session().Info()
	if in.Auth != ppp.AuthMSCHAPv2 || !in.MPPE || int(in.MPPEStrength) != 128 {
		t.Fatalf("negotiated %+v", in)
	}
	r.clientTUN(t, c, c.Session(), r.topo.Prefix+"c0")
	nsPing(t, r.topo.GW, r.srv.Config().LocalIP)
	nsPing(t, r.topo.GW, nsHost)
	r.tcpRoundTrip(t, echo, 256<<10)
	ss := r.srv.Sessions()
	if len(ss) != 1 || ss[0].User != "alice" || ss[0].BytesIn < 256<<10 {
		t.Fatalf("sessions %+v", ss)
	}
	c.Close()
	waitFor(t, func() bool { return len(r.srv.Sessions()) == 0 && r.srv.pool.InUse() == 0 })
	pc.Close()
}

// TestNetns100SessionsOneAddress: 100 Go clients share one source address (and one
// raw GRE socket); the server tells them apart by (peer IP, call ID).
func TestNetns100SessionsOneAddress(t *testing.T) {
	r := newNSRig(t, nil)
	mux := r.gwMux(t)
	const n = 100
	clients := make([]*Client, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 20)
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			c, err := r.goClient(t, mux, "alice", "s3cret pass", nil)
			if err != nil {
				errs <- fmt.Errorf("client %d: %w", i, err)
				return
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	t.Logf("%d sessions up in %v", n, time.Since(start).Round(time.Millisecond))
	ss := r.srv.Sessions()
	if len(ss) != n {
		t.Fatalf("%d sessions, want %d", len(ss), n)
	}
	addrs, ids := map[string]bool{}, map[uint16]bool{}
	for _, s := range ss {
		if !strings.HasPrefix(s.Peer, testbed.GWWANIP.String()+":") {
			t.Fatalf("peer %s", s.Peer)
		}
		addrs[s.Address], ids[s.PeerCallID] = true, true
	}
	if len(addrs) != n || len(ids) != n {
		t.Fatalf("addresses %d call IDs %d, want %d distinct", len(addrs), len(ids), n)
	}
	// Every session carries its own echo through the server to the host behind it.
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ping(t, c, nsHost, 64+i)
		}()
	}
	wg.Wait()
	for _, c := range clients {
		wg.Add(1)
		go func() { defer wg.Done(); c.Close() }()
	}
	wg.Wait()
	waitFor(t, func() bool { return len(r.srv.Sessions()) == 0 && r.srv.pool.InUse() == 0 })
}

// TestNetnsIperf3 measures one session's TCP throughput with iperf3 through the real
// data path (kernel TCP -> client TUN -> Go client PPP/MPPE -> raw GRE -> veth ->
// server raw GRE -> server PPP/MPPE -> server TUN -> kernel forward -> host). Opt-in:
//
//	PPTPGW_IPERF=1 go test ./pptp -run TestNetnsIperf3 -v
//
// PPTPGW_IPERF_MODE=stateful selects stateful MPPE (default stateless);
// PPTPGW_IPERF_REVERSE=1 measures the other direction (host -> client, iperf3 -R).
func TestNetnsIperf3(t *testing.T) {
	if os.Getenv("PPTPGW_IPERF") == "" {
		t.Skip("set PPTPGW_IPERF=1 to run the iperf3 throughput measurement")
	}
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("iperf3 not installed")
	}
	r := newNSRig(t, nil)
	mux := r.gwMux(t)
	stateful := os.Getenv("PPTPGW_IPERF_MODE") == "stateful"
	c, err := r.goClient(t, mux, "alice", "s3cret pass", func(cc *ClientConfig) {
		cc.StatelessOnly, cc.StatefulOnly = !stateful, stateful
	})
	must(t, err)
	defer c.Close()
	r.clientTUN(t, c, c.Session(), r.topo.Prefix+"c0")
	nsPing(t, r.topo.GW, nsHost)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := exec.CommandContext(ctx, "ip", "netns", "exec", r.topo.Prefix+"-h", "iperf3", "-s", "-1", "-B", nsHost.String())
	must(t, srv.Start())
	defer srv.Wait()
	time.Sleep(300 * time.Millisecond)
	secs := os.Getenv("PPTPGW_IPERF_SECONDS")
	if secs == "" {
		secs = "5"
	}
	args := []string{"-c", nsHost.String(), "-t", secs, "-f", "m"}
	if os.Getenv("PPTPGW_IPERF_REVERSE") != "" {
		args = append(args, "-R") // server -> client (download)
	}
	out, err := r.topo.GW.Output(ctx, "iperf3", args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("MPPE-128 %s, %s:\n%s", map[bool]string{true: "stateful", false: "stateless"}[stateful], c.Session().Info().State, out)
	t.Logf("client call %+v", c.call.Stats())
	t.Logf("server counters %v", r.srv.Counters())
}

// TestNetnsSessionsBehindMasquerade: 100 Go-client sessions from a LAN host
// (10.77.0.10) behind the gateway's kernel masquerade with Linux's PPTP conntrack
// helper (`ct helper "pptp"`, which maps GRE keys): the server sees them all from
// 203.0.113.1 and tells them apart by call ID.
func TestNetnsSessionsBehindMasquerade(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs nft(8)")
	}
	r := newNSRig(t, nil, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	table := r.topo.Prefix + "nat"
	for _, args := range [][]string{
		{"add", "table", "ip", table},
		{"add", "chain", "ip", table, "post", "{ type nat hook postrouting priority srcnat; }"},
		{"add", "rule", "ip", table, "post", "oifname", r.topo.WANIf, "masquerade"},
		{"add", "ct", "helper", "ip", table, "pptph", "{ type \"pptp\" protocol tcp; }"},
		{"add", "chain", "ip", table, "pre", "{ type filter hook prerouting priority filter; }"},
		{"add", "rule", "ip", table, "pre", "tcp", "dport", "1723", "ct", "helper", "set", "pptph"},
	} {
		if out, err := r.topo.GW.Output(ctx, "nft", args...); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	lan := r.topo.Clients[0]
	mux := muxIn(t, lan)
	const n = 100
	var clients []*Client
	for i := range n {
		c, err := Dial(ctx, ClientConfig{Server: testbed.ServerIP.String(), Username: "alice", Password: "s3cret pass", Mux: mux, Dial: lan.DialContext})
		if err != nil {
			out, _ := r.topo.GW.Output(ctx, "conntrack", "-L")
			t.Fatalf("client %d: %v\nserver counters %v\nclient mux %v\n%s", i, err, r.srv.Counters(), mux.Counters(), out)
		}
		clients = append(clients, c)
	}
	for i, c := range clients {
		ping(t, c, nsHost, 64+i)
	}
	ss := r.srv.Sessions()
	if len(ss) != n {
		t.Fatalf("%d sessions", len(ss))
	}
	for _, s := range ss {
		if !strings.HasPrefix(s.Peer, testbed.GWWANIP.String()+":") {
			t.Fatalf("peer %s: not masqueraded", s.Peer)
		}
	}
	for _, c := range clients {
		must(t, c.Close())
	}
	waitFor(t, func() bool { return len(r.srv.Sessions()) == 0 })
}
