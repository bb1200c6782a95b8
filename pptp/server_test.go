package pptp

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"pptpgw/pptp/gre"
	"pptpgw/pptp/ppp"
	"pptpgw/pptp/wire"
)

func TestMSCHAPv2MPPEEndToEnd(t *testing.T) {
	r := newRig(t, nil)
	c, err := r.dial(t, "alice", "s3cret pass", nil)
	if err != nil {
		t.Fatal(err)
	}
	in := c.Session().Info()
	if in.Auth != ppp.AuthMSCHAPv2 || !in.MPPE || int(in.MPPEStrength) != 128 {
		t.Fatalf("negotiated %+v", in)
	}
	if in.LocalIP != poolStart || in.PeerIP != localIP {
		t.Fatalf("addresses: client %s server %s", in.LocalIP, in.PeerIP)
	}
	ping(t, c, localIP, 84)
	ping(t, c, behind, 1356)
	ss := r.srv.Sessions()
	if len(ss) != 1 || ss[0].User != "alice" || ss[0].Address != poolStart.String() || ss[0].PeerCallID != c.LocalCallID() ||
		ss[0].LocalCallID != c.PeerCallID() || ss[0].BytesIn == 0 || ss[0].BytesOut == 0 || !strings.HasPrefix(ss[0].Encryption, "mppe-128") {
		t.Fatalf("sessions: %+v", ss)
	}
	if r.net.routeCount() != 1 {
		t.Fatal("no route for the session")
	}
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	waitFor(t, func() bool { return len(r.srv.Sessions()) == 0 && r.net.routeCount() == 0 && r.srv.pool.InUse() == 0 })
}

// waitFor polls cond every 10 ms for up to 30 s (it returns as soon as cond
// holds: the bound only matters on a loaded machine).
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	for range 3000 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition not reached")
}

func TestStatefulAndStateless(t *testing.T) {
	r := newRig(t, nil)
	for _, stateless := range []bool{true, false} {
		c, err := r.dial(t, "bob", "hunter2", func(cc *ClientConfig) { cc.StatelessOnly, cc.StatefulOnly = stateless, !stateless })
		if err != nil {
			t.Fatal(err)
		}
		if c.Session().Info().Stateless != stateless {
			t.Fatalf("stateless = %v, want %v", c.Session().Info().Stateless, stateless)
		}
		for range 20 {
			ping(t, c, behind, 200)
		}
		c.Close()
	}
}

func TestWrongPasswordRefused(t *testing.T) {
	r := newRig(t, nil)
	if _, err := r.dial(t, "alice", "wrong", nil); err == nil {
		t.Fatal("wrong password accepted")
	}
	if _, err := r.dial(t, "mallory", "x", nil); err == nil {
		t.Fatal("unknown user accepted")
	}
	waitFor(t, func() bool { return len(r.srv.Sessions()) == 0 && r.srv.pool.InUse() == 0 })
}

func TestPAPOnlyWhenEnabled(t *testing.T) {
	pap := func(cc *ClientConfig) { cc.Auth = []ppp.AuthMethod{ppp.AuthPAP}; cc.AllowUnencrypted = true }
	r := newRig(t, nil)
	if _, err := r.dial(t, "alice", "s3cret pass", pap); err == nil {
		t.Fatal("PAP accepted by default policy")
	}
	r2 := newRig(t, func(c *Config) { c.Auth = []ppp.AuthMethod{ppp.AuthMSCHAPv2, ppp.AuthPAP}; c.AllowUnencrypted = true })
	c, err := r2.dial(t, "alice", "s3cret pass", pap)
	if err != nil {
		t.Fatal(err)
	}
	if in := c.Session().Info(); in.Auth != ppp.AuthPAP || in.MPPE {
		t.Fatalf("negotiated %+v", in)
	}
	ping(t, c, localIP, 100)
	c.Close()
}

func TestManyCallsOneMux(t *testing.T) {
	r := newRig(t, nil)
	var cs []*Client
	for i := range 5 {
		c, err := r.dial(t, "alice", "s3cret pass", nil)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		cs = append(cs, c)
	}
	for _, c := range cs {
		ping(t, c, behind, 300)
	}
	if n := len(r.srv.Sessions()); n != 5 {
		t.Fatalf("%d sessions", n)
	}
	for _, c := range cs {
		c.Close()
	}
	waitFor(t, func() bool { return len(r.srv.Sessions()) == 0 })
}

// ctl is a raw control connection to the server.
type ctl struct {
	t   testing.TB
	c   net.Conn
	buf []byte
}

func dialCtl(t testing.TB, addr string) *ctl {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &ctl{t: t, c: c, buf: make([]byte, 256)}
}

func (c *ctl) send(m wire.Message) { c.c.Write(m.Append(nil)) }
func (c *ctl) recv() (wire.Message, error) {
	c.c.SetReadDeadline(time.Now().Add(3 * time.Second))
	return wire.ReadMessage(c.c, c.buf)
}
func (c *ctl) start() {
	c.send(&wire.SCCRQ{ProtocolVersion: wire.ProtocolVersion})
	m, err := c.recv()
	if err != nil {
		c.t.Fatal(err)
	}
	if r, ok := m.(*wire.SCCRP); !ok || r.Result != wire.SCCRPResultOK {
		c.t.Fatalf("SCCRP: %+v", m)
	}
}

func TestFirstMessageTimeout(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1e6, 0)}
	r := newRig(t, func(c *Config) { c.Now = clk.Now })
	c := dialCtl(t, r.addr)
	waitFor(t, func() bool { r.srv.mu.Lock(); defer r.srv.mu.Unlock(); return len(r.srv.conns) == 1 })
	clk.Advance(9 * time.Second)
	r.srv.Tick(clk.Now())
	c.c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := c.c.Read(make([]byte, 1)); err == nil || !isTimeout(err) {
		t.Fatalf("closed too early: %v", err)
	}
	clk.Advance(time.Second)
	r.srv.Tick(clk.Now())
	if _, err := c.recv(); err == nil || isTimeout(err) {
		t.Fatalf("not closed after first-message timeout: %v", err)
	}
	if r.srv.Counters()["ctrl_first_message_timeout"] != 1 {
		t.Fatal("not counted")
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeClock) Now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.t }
func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.mu.Unlock()
}

func TestEchoKeepalive(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1e6, 0)}
	// The connection never makes a call: keep the call-request timeout out of the way.
	r := newRig(t, func(c *Config) { c.Now, c.CallRequestTimeout = clk.Now, time.Hour })
	c := dialCtl(t, r.addr)
	c.start()
	clk.Advance(59 * time.Second)
	r.srv.Tick(clk.Now())
	clk.Advance(time.Second)
	r.srv.Tick(clk.Now())
	m, err := c.recv()
	if err != nil {
		t.Fatal(err)
	}
	rq, ok := m.(*wire.EchoRQ)
	if !ok {
		t.Fatalf("want Echo-Request, got %T", m)
	}
	// Answering keeps the connection.
	c.send(&wire.EchoRP{ID: rq.ID, Result: wire.EchoRPResultOK})
	time.Sleep(50 * time.Millisecond) // let the server read it (real I/O, not a timeout)
	clk.Advance(59 * time.Second)
	r.srv.Tick(clk.Now())
	clk.Advance(time.Second)
	r.srv.Tick(clk.Now())
	if m, err := c.recv(); err != nil {
		t.Fatal(err)
	} else if _, ok := m.(*wire.EchoRQ); !ok {
		t.Fatalf("want second Echo-Request, got %T", m)
	}
	// Not answering closes it 60 s later.
	clk.Advance(60 * time.Second)
	r.srv.Tick(clk.Now())
	if _, err := c.recv(); err == nil || isTimeout(err) {
		t.Fatalf("not closed after echo timeout: %v", err)
	}
	if r.srv.Counters()["ctrl_echo_timeout"] != 1 {
		t.Fatal("not counted")
	}
}

func TestEchoRequestAnswered(t *testing.T) {
	r := newRig(t, nil)
	c := dialCtl(t, r.addr)
	c.start()
	c.send(&wire.EchoRQ{ID: 0xabcdef})
	m, err := c.recv()
	if err != nil {
		t.Fatal(err)
	}
	if rp, ok := m.(*wire.EchoRP); !ok || rp.ID != 0xabcdef || rp.Result != wire.EchoRPResultOK {
		t.Fatalf("reply %+v", m)
	}
}

func TestConnectionLimits(t *testing.T) {
	r := newRig(t, func(c *Config) { c.MaxConnsPerSource = 2 })
	a, b := dialCtl(t, r.addr), dialCtl(t, r.addr)
	a.start()
	b.start()
	c := dialCtl(t, r.addr)
	c.send(&wire.SCCRQ{ProtocolVersion: wire.ProtocolVersion})
	if _, err := c.recv(); err == nil || isTimeout(err) {
		t.Fatalf("third connection from one source not refused: %v", err)
	}
	if r.srv.Counters()["conn_limit_source"] != 1 {
		t.Fatal("not counted")
	}
	// The global limit refuses a connection when every slot holds an authenticated
	// session (an unauthenticated one would be evicted: TestPreauthSCCRQFlood).
	r2 := newRig(t, func(c *Config) { c.MaxConns = 1 })
	if _, err := r2.dial(t, "alice", "s3cret pass", nil); err != nil {
		t.Fatal(err)
	}
	d := dialCtl(t, r2.addr)
	d.send(&wire.SCCRQ{ProtocolVersion: wire.ProtocolVersion})
	if _, err := d.recv(); err == nil || isTimeout(err) {
		t.Fatalf("over global limit not refused: %v", err)
	}
	if r2.srv.Counters()["conn_limit_global"] != 1 || r2.srv.Counters()["conn_evicted_unauthenticated"] != 0 {
		t.Fatalf("counters: %v", r2.srv.Counters())
	}
}

func TestControlProtocol(t *testing.T) {
	r := newRig(t, nil)
	c := dialCtl(t, r.addr)
	c.start()
	// Two calls on one control connection get distinct call IDs.
	ids := map[uint16]bool{}
	for _, pid := range []uint16{100, 101} {
		c.send(&wire.OCRQ{CallID: pid, RecvWindow: 16})
		m, err := c.recv()
		if err != nil {
			t.Fatal(err)
		}
		rp, ok := m.(*wire.OCRP)
		if !ok || rp.Result != wire.OCRPResultConnected || rp.PeerCallID != pid || rp.CallID == 0 {
			t.Fatalf("OCRP %+v", m)
		}
		ids[rp.CallID] = true
	}
	if len(ids) != 2 || len(r.srv.Sessions()) != 2 {
		t.Fatal("calls not distinct")
	}
	// Duplicate peer call ID refused.
	c.send(&wire.OCRQ{CallID: 100})
	if m, _ := c.recv(); m.(*wire.OCRP).Result != wire.OCRPResultGeneralError {
		t.Fatal("duplicate call ID accepted")
	}
	c.send(&wire.SLI{PeerCallID: 1, SendACCM: 0, RecvACCM: 0})
	// Clear one call: CDN for it.
	c.send(&wire.CCRQ{CallID: 100})
	var gotCDN bool
	for !gotCDN {
		m, err := c.recv()
		if err != nil {
			t.Fatal(err)
		}
		if cdn, ok := m.(*wire.CDN); ok {
			gotCDN = ids[cdn.CallID] && cdn.Result == wire.CDNResultRequest
			if !gotCDN {
				t.Fatalf("CDN %+v", cdn)
			}
		}
	}
	waitFor(t, func() bool { return len(r.srv.Sessions()) == 1 })
	// Stop: reply, everything gone.
	c.send(&wire.StopCCRQ{Reason: wire.StopReasonNone})
	for {
		m, err := c.recv()
		if err != nil {
			t.Fatal(err)
		}
		if rp, ok := m.(*wire.StopCCRP); ok {
			if rp.Result != wire.StopCCRPResultOK {
				t.Fatal(rp)
			}
			break
		}
	}
	waitFor(t, func() bool { return len(r.srv.Sessions()) == 0 && r.srv.pool.InUse() == 0 })
}

func TestControlGarbageClosesConnection(t *testing.T) {
	r := newRig(t, nil)
	for _, junk := range [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		(&wire.OCRQ{CallID: 1}).Append(nil),                // before SCCRQ
		(&wire.SCCRQ{ProtocolVersion: 0x0200}).Append(nil), // bad version
		{0, 16, 0, 1, 0x1a, 0x2b, 0x3c, 0x4d, 0, 99, 0, 0, 0, 0, 0, 0},
	} {
		c := dialCtl(t, r.addr)
		c.c.Write(junk)
		for {
			_, err := c.recv()
			if err != nil {
				if isTimeout(err) {
					t.Fatalf("%q: connection kept open", junk)
				}
				break
			}
		}
	}
	n := r.srv.Counters()
	if n["ctrl_bad_message"] < 2 || n["ctrl_not_started"] != 1 || n["ctrl_bad_version"] != 1 {
		t.Fatalf("counters %v", n)
	}
	// Server still works.
	c, err := r.dial(t, "alice", "s3cret pass", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestLocalIPDefaultAndPool(t *testing.T) {
	cfg := Config{PoolStart: poolStart, PoolEnd: poolEnd}
	if err := cfg.defaults(); err != nil || cfg.LocalIP != localIP {
		t.Fatalf("local ip %s err %v", cfg.LocalIP, err)
	}
	s, e, err := ParseRange("10.1.2.3-40")
	if err != nil || s.String() != "10.1.2.3" || e.String() != "10.1.2.40" {
		t.Fatal(s, e, err)
	}
	for _, bad := range []string{"10.1.2.3", "10.1.2.9-10.1.2.3", "x-y", "::1-::2"} {
		if _, _, err := ParseRange(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	p, _ := NewPool(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"))
	a1, _ := p.Alloc()
	a2, _ := p.Alloc()
	if _, err := p.Alloc(); err != ErrPoolExhausted || a1 == a2 {
		t.Fatal("pool")
	}
	p.Release(a1)
	if a, _ := p.Alloc(); a != a1 {
		t.Fatal("release")
	}
	_ = context.Background
}

// TestLossRecovery: with every 7th client GRE packet lost after setup, both MPPE modes
// keep carrying traffic (stateful through CCP Reset-Request/Ack and the flushed bit).
func TestLossRecovery(t *testing.T) {
	for _, stateless := range []bool{true, false} {
		lc := &lossyConn{n: 7}
		lc.skip.Store(1 << 30)
		r := newRig(t, nil, func(p gre.PacketConn) gre.PacketConn { lc.PacketConn = p; return lc })
		c, err := r.dial(t, "alice", "s3cret pass", func(cc *ClientConfig) { cc.StatelessOnly, cc.StatefulOnly = stateless, !stateless })
		if err != nil {
			t.Fatal(err)
		}
		ping(t, c, behind, 100)
		lc.skip.Store(lc.count.Load())
		for i := range 40 {
			ping(t, c, behind, 100+i)
		}
		if lc.dropped.Load() == 0 {
			t.Fatal("nothing lost")
		}
		t.Logf("stateless=%v: %d lost, all pings answered; server %v", stateless, lc.dropped.Load(), r.srv.Counters())
		c.Close()
	}
}
