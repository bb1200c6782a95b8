package pptp

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pptpgw/internal/pkt"
	"pptpgw/pptp/gre"
	"pptpgw/pptp/ppp"
)

// memNet is an in-memory kernel: it answers ICMP echo requests to any address in
// answer (like the kernel for the server's tunnel address and a host behind it) and
// counts everything else.
type memNet struct {
	in      chan []byte
	answer  map[netip.Addr]bool
	closed  chan struct{}
	once    sync.Once
	mu      sync.Mutex
	routes  map[netip.Addr]bool
	written atomic.Uint64
	bytes   atomic.Uint64
	last    []byte
}

func newMemNet(answer ...netip.Addr) *memNet {
	m := &memNet{in: make(chan []byte, 256), closed: make(chan struct{}), routes: map[netip.Addr]bool{}, answer: map[netip.Addr]bool{}}
	for _, a := range answer {
		m.answer[a] = true
	}
	return m
}

func (m *memNet) ReadPacket(b []byte) (int, error) {
	select {
	case <-m.closed:
		return 0, errNetClosed
	case p := <-m.in:
		return copy(b, p), nil
	}
}

func (m *memNet) WritePacket(p []byte) error {
	m.written.Add(1)
	m.bytes.Add(uint64(len(p)))
	if r, ok := m.echoReply(p); ok {
		select {
		case m.in <- r:
		default:
		}
		return nil
	}
	m.mu.Lock()
	m.last = append(m.last[:0], p...)
	m.mu.Unlock()
	return nil
}

// echoReply answers an ICMP echo request to one of the answering addresses, as
// the kernel would: addresses swapped, type 0, both checksums patched (RFC 1624).
func (m *memNet) echoReply(p []byte) ([]byte, bool) {
	var pp pkt.Parsed
	pp.Parse(p)
	if pp.Err != "" || pp.Fragment || pp.Proto != pkt.IPv4ProtocolICMP || !m.answer[netip.AddrFrom4(pp.Dst)] ||
		pkt.ICMPv4(pp.Transport(p)).Type() != pkt.ICMPv4Echo {
		return nil, false
	}
	r := append([]byte(nil), p[:pp.TotalLen]...)
	ip, icmp := pkt.IPv4(r), pkt.ICMPv4(pp.Transport(r))
	ip.SetSourceAddressWithChecksumUpdate(pp.Dst)
	ip.SetDestinationAddressWithChecksumUpdate(pp.Src)
	icmp.SetChecksum(pkt.UpdateByte(icmp.Checksum(), pkt.ICMPv4TypeOffset, pkt.ICMPv4Echo, pkt.ICMPv4EchoReply))
	r[pp.IPLen+pkt.ICMPv4TypeOffset] = pkt.ICMPv4EchoReply
	return r, true
}

func (m *memNet) AddRoute(dst, src netip.Addr) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.routes[dst] = true
	return nil
}

func (m *memNet) DelRoute(dst netip.Addr) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.routes[dst] {
		return errors.New("no such route")
	}
	delete(m.routes, dst)
	return nil
}

func (m *memNet) routeCount() int { m.mu.Lock(); defer m.mu.Unlock(); return len(m.routes) }

func (m *memNet) Close() { m.once.Do(func() { close(m.closed) }) }

// icmpEcho builds an IPv4 ICMP echo request of total length size.
func icmpEcho(src, dst netip.Addr, id, seq uint16, size int) []byte {
	p := make([]byte, size)
	p[0], p[8], p[9] = 0x45, 64, 1
	binary.BigEndian.PutUint16(p[2:], uint16(size))
	s4, d4 := src.As4(), dst.As4()
	copy(p[12:], s4[:])
	copy(p[16:], d4[:])
	binary.BigEndian.PutUint16(p[10:], pkt.Checksum(p[:20]))
	p[20] = 8
	binary.BigEndian.PutUint16(p[24:], id)
	binary.BigEndian.PutUint16(p[26:], seq)
	for i := 28; i < size; i++ {
		p[i] = byte(i)
	}
	binary.BigEndian.PutUint16(p[22:], pkt.Checksum(p[20:]))
	return p
}

// mapSecrets is a Credentials for tests: user -> password (and optional static IP).
type mapSecrets map[string]string

func (m mapSecrets) Lookup(client, server string) (string, []string, bool) {
	p, ok := m[client]
	return p, []string{"*"}, ok
}

var (
	loopback  = netip.MustParseAddr("127.0.0.1")
	poolStart = netip.MustParseAddr("10.8.0.10")
	poolEnd   = netip.MustParseAddr("10.8.0.20")
	localIP   = netip.MustParseAddr("10.8.0.9")
	behind    = netip.MustParseAddr("10.9.0.5")
)

// rig is a server on 127.0.0.1 (TCP) with an in-memory GRE pipe to the clients' mux.
type rig struct {
	srv       *Server
	net       *memNet
	clientMux *gre.Mux
	addr      string
	cancel    context.CancelFunc
	done      chan struct{}
}

func newRig(t testing.TB, mod func(*Config), wrapClient ...func(gre.PacketConn) gre.PacketConn) *rig {
	t.Helper()
	a, b := gre.Pipe(loopback, loopback, 1024)
	for _, w := range wrapClient {
		b = w(b)
	}
	n := newMemNet(localIP, behind)
	cfg := Config{PoolStart: poolStart, PoolEnd: poolEnd, Secrets: mapSecrets{"alice": "s3cret pass", "bob": "hunter2"},
		DNS: []netip.Addr{netip.MustParseAddr("10.8.0.1")}}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := NewServer(cfg, a, n)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &rig{srv: srv, net: n, addr: ln.Addr().String(), cancel: cancel, done: make(chan struct{})}
	go func() { defer close(r.done); _ = srv.Serve(ctx, ln) }()
	r.clientMux = gre.NewMux(b, gre.Config{})
	stop := make(chan struct{})
	go r.clientMux.Serve()
	go r.clientMux.RunTicker(10*time.Millisecond, stop)
	t.Cleanup(func() {
		cancel()
		<-r.done
		close(stop)
		n.Close()
	})
	return r
}

func (r *rig) dial(t testing.TB, user, pass string, mod func(*ClientConfig)) (*Client, error) {
	cc := ClientConfig{Server: r.addr, Username: user, Password: pass, Mux: r.clientMux}
	if mod != nil {
		mod(&cc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return Dial(ctx, cc)
}

// ping sends one echo request through c to dst and waits for the reply.
func ping(t testing.TB, c interface {
	SendIP([]byte) error
	OnIP(func([]byte))
	Session() *ppp.Session
}, dst netip.Addr, size int) {
	t.Helper()
	src := c.Session().Info().LocalIP
	got := make(chan []byte, 4)
	c.OnIP(func(p []byte) { got <- append([]byte(nil), p...) })
	// Like ping(8): one request per 200 ms (the server's side of IPCP may open a few
	// milliseconds after ours, and it drops IP until then).
	deadline := time.After(5 * time.Second)
	for seq := uint16(1); ; seq++ {
		if err := c.SendIP(icmpEcho(src, dst, 7, seq, size)); err != nil {
			t.Fatalf("SendIP: %v", err)
		}
		select {
		case p := <-got:
			if len(p) != size || p[20] != 0 || netip.AddrFrom4([4]byte(p[12:16])) != dst || netip.AddrFrom4([4]byte(p[16:20])) != src {
				t.Fatalf("bad echo reply: len %d type %d", len(p), p[20])
			}
			return
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no echo reply from %s", dst)
		}
	}
}

// lossyConn drops every nth packet the client sends after the first skip packets.
type lossyConn struct {
	gre.PacketConn
	n       int
	skip    atomic.Int64
	count   atomic.Int64
	dropped atomic.Int64
}

func (l *lossyConn) WritePacket(b []byte, dst netip.Addr) error {
	if c := l.count.Add(1); c > l.skip.Load() && c%int64(l.n) == 0 {
		l.dropped.Add(1)
		return nil
	}
	return l.PacketConn.WritePacket(b, dst)
}
