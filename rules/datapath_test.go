package rules

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/florianl/go-nfqueue/v2"
	"github.com/google/nftables"
	vnl "github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"pptpgw/internal/nstest"
)

// inNetns runs f inside h (nstest.Do); sockets f creates stay in that
// namespace.
func inNetns(t *testing.T, h netns.NsHandle, f func()) {
	t.Helper()
	nstest.Do(t, int(h), f)
}

// greSockets returns a raw GRE socket to send with and one that receives
// every GRE packet delivered locally.
func greSockets(t *testing.T, h netns.NsHandle) (tx, rx int) {
	inNetns(t, h, func() {
		var err error
		if tx, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_GRE); err != nil {
			t.Fatal(err)
		}
		if rx, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_GRE); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { unix.Close(tx); unix.Close(rx) })
	return tx, rx
}

// sendGRE sends one enhanced-GRE-looking packet to 127.0.0.1 and reports
// whether rx received it within wait, and the send error. (A generous wait
// for packets that must arrive, since the machine may be busy; a short one
// where the packet must not.)
func sendGRE(tx, rx int, key uint16, wait time.Duration) (delivered bool, sendErr error) {
	tv := unix.NsecToTimeval(wait.Nanoseconds())
	if err := unix.SetsockoptTimeval(rx, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return false, err
	}
	pkt := []byte{0x30, 0x01, 0x88, 0x0b, 0x00, 0x00, byte(key >> 8), byte(key)}
	sendErr = unix.Sendto(tx, pkt, 0, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	buf := make([]byte, 1500)
	for {
		n, _, err := unix.Recvfrom(rx, buf, 0)
		if err != nil {
			return false, sendErr
		}
		// buf holds the IP header + GRE; match our key.
		if n >= 28 && buf[9] == unix.IPPROTO_GRE && buf[26] == byte(key>>8) && buf[27] == byte(key) {
			return true, sendErr
		}
	}
}

// dial1723 reports whether a TCP connection to 127.0.0.1:1723 inside h gets
// through within wait (a listener is there).
func dial1723(t *testing.T, h netns.NsHandle, wait time.Duration) bool {
	t.Helper()
	ok := false
	inNetns(t, h, func() {
		l, err := net.Listen("tcp4", "127.0.0.1:1723")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		c, err := net.DialTimeout("tcp4", "127.0.0.1:1723", wait)
		if err == nil {
			c.Close()
			ok = true
		}
	})
	return ok
}

// TestQueueDataPathNetns checks the installed rules on real packets: GRE and
// TCP 1723 reach the NFQUEUE (output and prerouting hooks); with no listener
// the bypass flag (fail_open) lets TCP 1723 pass but never GRE, and
// fail-closed drops both; the fail-safe table a clean stop leaves lets the
// host's own GRE pass and is recognized by the next Install.
func TestQueueDataPathNetns(t *testing.T) {
	ns, h := testNetns(t)
	nsRun(t, ns, "ip", "link", "set", "lo", "up")
	const q = 47
	plan := Plan{Table: "pgdp", WAN: "lo", PublicAddr: netip.MustParseAddr("127.0.0.1"), Queue: q, FailOpen: true, MSS: MSSClamp{Mode: MSSOff}, NetNS: int(h)}
	in, err := Install(plan)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Remove() })
	tx, rx := greSockets(t, h)

	// 1. Fail-open, nobody on the queue: TCP 1723 passes, GRE is dropped.
	if ok, _ := sendGRE(tx, rx, 1, 300*time.Millisecond); ok {
		t.Error("fail-open without listener: GRE was delivered; it must never bypass the queue")
	}
	if !dial1723(t, h, 3*time.Second) {
		t.Error("fail-open without listener: TCP 1723 did not get through")
	}

	// 2. A listener on the queue sees GRE twice (queue_postrouting out of
	// lo, the "WAN" here, then queue_prerouting into lo) and TCP 1723 both ways.
	nf, err := nfqueue.Open(&nfqueue.Config{NfQueue: q, MaxPacketLen: 128, MaxQueueLen: 64,
		Copymode: nfqueue.NfQnlCopyPacket, NetNS: int(h), WriteTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer nf.Close()
	var mu sync.Mutex
	seen := map[string]int{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err = nf.RegisterWithErrorFunc(ctx, func(a nfqueue.Attribute) int {
		if a.Payload != nil && len(*a.Payload) >= 24 {
			p := *a.Payload
			mu.Lock()
			switch {
			case p[9] == unix.IPPROTO_GRE:
				seen["gre"]++
			case p[9] == unix.IPPROTO_TCP && p[20] == 0x06 && p[21] == 0xbb:
				seen["tcp sport 1723"]++
			case p[9] == unix.IPPROTO_TCP && p[22] == 0x06 && p[23] == 0xbb:
				seen["tcp dport 1723"]++
			default:
				seen["other"]++
			}
			mu.Unlock()
		}
		nf.SetVerdict(*a.PacketID, nfqueue.NfAccept)
		return 0
	}, func(e error) int { return 0 })
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := sendGRE(tx, rx, 2, 3*time.Second); !ok {
		t.Fatalf("with listener (accepting): GRE not delivered (send: %v)", err)
	}
	inNetns(t, h, func() {
		l, err := net.Listen("tcp4", "127.0.0.1:1723")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			if c, err := l.Accept(); err == nil {
				c.Write([]byte("x"))
				c.Close()
			}
		}()
		c, err := net.DialTimeout("tcp4", "127.0.0.1:1723", 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		b := make([]byte, 1)
		if _, err := c.Read(b); err != nil {
			t.Errorf("TCP 1723 through the queue: %v", err)
		}
		c.Close()
	})
	mu.Lock()
	got := map[string]int{}
	for k, v := range seen {
		got[k] = v
	}
	mu.Unlock()
	if got["gre"] != 2 || got["tcp dport 1723"] < 2 || got["tcp sport 1723"] < 2 || got["other"] != 0 {
		t.Errorf("queued packets = %v, want gre:2 (postrouting+prerouting), tcp both ways >=2 each, no other", got)
	}
	cancel()
	nf.Close()

	// GRE was notracked, TCP 1723 was tracked (so the lookup itself works).
	nh, err := vnl.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	flows, err := nh.ConntrackTableList(vnl.ConntrackTable, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	protos := map[uint8]int{}
	for _, f := range flows {
		protos[f.Forward.Protocol]++
	}
	t.Logf("conntrack: %v", protos)
	if protos[unix.IPPROTO_GRE] != 0 || protos[unix.IPPROTO_TCP] == 0 {
		t.Errorf("conntrack entries by protocol = %v, want no GRE (notrack) and the TCP 1723 connection", protos)
	}

	// 3. Fail-closed, nobody on the queue: dropped.
	plan.FailOpen = false
	in2, err := Install(plan)
	if err != nil {
		t.Fatal(err)
	}
	if !in2.ReplacedStale {
		t.Error("second Install did not report replacing the existing table")
	}
	if ok, _ := sendGRE(tx, rx, 3, 300*time.Millisecond); ok {
		t.Error("fail-closed without listener: GRE was delivered")
	}
	if dial1723(t, h, 300*time.Millisecond) {
		t.Error("fail-closed without listener: TCP 1723 got through")
	}

	// 4. The fail-safe table of a clean stop: one chain, and GRE of the
	// host's own (a local source, as here) passes it.
	if err := in2.ReduceToFailsafe(); err != nil {
		t.Fatal(err)
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(h)))
	if err != nil {
		t.Fatal(err)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ch := range chains {
		if ch.Table.Name == plan.Table {
			names = append(names, ch.Name)
		}
	}
	if len(names) != 1 || names[0] != ChainFailsafe {
		t.Errorf("chains after ReduceToFailsafe: %v, want only %s", names, ChainFailsafe)
	}
	if ok, err := sendGRE(tx, rx, 4, 3*time.Second); !ok {
		t.Errorf("fail-safe table: the host's own GRE was not delivered (send: %v)", err)
	}
	in3, err := Install(plan)
	if err != nil {
		t.Fatal(err)
	}
	if !in3.ReplacedFailsafe || in3.ReplacedStale {
		t.Errorf("Install over the fail-safe table: ReplacedFailsafe %v ReplacedStale %v, want true false", in3.ReplacedFailsafe, in3.ReplacedStale)
	}
}

// TestMSSClampDataPathNetns checks MSS clamping on real connections through
// a gateway namespace (client -- lan0 [gateway] wan0 -- server): forwarded
// SYNs and SYN-ACKs are clamped both ways, and the gateway's own
// connections, whose packets cross postrouting too, are not.
func TestMSSClampDataPathNetns(t *testing.T) {
	cns, ch := testNetns(t)
	gns, gh := testNetns(t)
	sns, sh := testNetns(t)
	nsRun(t, gns, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", cns)
	nsRun(t, gns, "ip", "link", "add", "wan0", "type", "veth", "peer", "name", "eth0", "netns", sns)
	for _, c := range []struct{ ns, dev, addr, via string }{
		{cns, "eth0", "10.61.0.2/24", "10.61.0.1"},
		{gns, "lan0", "10.61.0.1/24", ""},
		{gns, "wan0", "198.51.100.1/24", ""},
		{sns, "eth0", "198.51.100.2/24", "198.51.100.1"},
	} {
		nsRun(t, c.ns, "ip", "addr", "add", c.addr, "dev", c.dev)
		nsRun(t, c.ns, "ip", "link", "set", c.dev, "up")
		if c.via != "" {
			nsRun(t, c.ns, "ip", "route", "add", "default", "via", c.via)
		}
	}
	nsRun(t, gns, "sysctl", "-qw", "net.ipv4.ip_forward=1")

	// mss returns the MSS each end of a connection from dialer to
	// listener's address settled on (TCP_MAXSEG: the peer's MSS option,
	// less the timestamp option, or less if the own route says so).
	mss := func(dialer, listener netns.NsHandle, addr string) (dialed, accepted int) {
		t.Helper()
		var l net.Listener
		var err error
		inNetns(t, listener, func() { l, err = net.Listen("tcp4", addr) })
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		acc := make(chan net.Conn, 1)
		go func() {
			c, _ := l.Accept()
			acc <- c
		}()
		var c net.Conn
		inNetns(t, dialer, func() { c, err = net.DialTimeout("tcp4", addr, 3*time.Second) })
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var a net.Conn
		select {
		case a = <-acc:
		case <-time.After(3 * time.Second):
			t.Fatal("accept timed out")
		}
		if a == nil {
			t.Fatal("accept failed")
		}
		defer a.Close()
		return tcpMaxSeg(t, c), tcpMaxSeg(t, a)
	}

	const clamp = 1000
	for _, tc := range []struct {
		mode MSSClamp
		want func(int) bool
		what string
	}{
		{MSSClamp{Mode: MSSFixed, Value: clamp}, func(m int) bool { return m <= clamp }, "<= 1000 (clamped)"},
		{MSSClamp{Mode: MSSOff}, func(m int) bool { return m > clamp }, "> 1000 (not clamped)"},
	} {
		in, err := Install(Plan{Table: "pgmss", WAN: "wan0", Queue: 47, FailOpen: true, MSS: tc.mode, NetNS: int(gh)})
		if err != nil {
			t.Fatal(err)
		}
		// Forwarded: client to server, both directions of the handshake;
		// also to port 1723, whose SYN is queued in postrouting (no reader
		// is bound: the fail-open bypass resumes at the next hook, so a
		// clamp placed after the queue rules would be skipped).
		for _, addr := range []string{"198.51.100.2:5001", "198.51.100.2:1723"} {
			if d, a := mss(ch, sh, addr); !tc.want(d) || !tc.want(a) {
				t.Errorf("mss_clamp %+v, forwarded connection to %s: MSS client %d, server %d, want %s", tc.mode, addr, d, a, tc.what)
			}
		}
		// The gateway's own connections, out of and into it: never clamped.
		for _, c := range []struct {
			name             string
			dialer, listener netns.NsHandle
			addr             string
		}{{"gateway to server", gh, sh, "198.51.100.2:5002"}, {"client to gateway", ch, gh, "10.61.0.1:5003"}} {
			if d, a := mss(c.dialer, c.listener, c.addr); d <= clamp || a <= clamp {
				t.Errorf("mss_clamp %+v, %s: MSS %d and %d, want > %d (the gateway's own connections are not clamped)", tc.mode, c.name, d, a, clamp)
			}
		}
		if err := in.Remove(); err != nil {
			t.Fatal(err)
		}
	}
}

func tcpMaxSeg(t *testing.T, c net.Conn) int {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mss int
	var serr error
	if err := rc.Control(func(fd uintptr) { mss, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return mss
}
