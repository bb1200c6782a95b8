package nat

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"pptpgw/internal/fwmark"
	"pptpgw/internal/pkt"
	"pptpgw/internal/pkt/pkttest"
	"pptpgw/nat/nfq"
	"pptpgw/pptp/wire"
)

var (
	memberA = [4]byte{10, 0, 1, 5}
	memberB = [4]byte{10, 0, 1, 6}
)

func newPoolEngine(t *testing.T, balance string) *Engine {
	t.Helper()
	e, _ := newEngine(t, func(c *EngineConfig) {
		c.Pools = []Pool{{Port: 1723, Members: []netip.Addr{netip.AddrFrom4(memberA), netip.AddrFrom4(memberB)},
			Balance: balance, Health: Health{Fall: 2, Rise: 2}}}
	})
	return e
}

// poolConn is one outside client's control connection to a pool, driven
// through the engine as the kernel would: the SYN before dstnat (the pick),
// then every segment after dstnat with the member as destination.
type poolConn struct {
	t            *testing.T
	e            *Engine
	cl           [4]byte
	port         uint16
	member       [4]byte
	seqCl, seqMb uint32
}

// openPool sends the opening SYN before dstnat and returns the connection
// with the member the engine chose, checking the mark it set.
func openPool(t *testing.T, e *Engine, cl [4]byte, port uint16) *poolConn {
	t.Helper()
	const operator = 0x7f00_0000
	b := pkttest.TCP(t, cl, pubIP, port, 1723, nil, pkttest.TCPOpt{SYN: true, Seq: 100})
	p := nfq.Packet{ID: 1, Payload: b, InDev: wanIf, Hook: nfq.HookPrerouting, Mark: operator | 0x12}
	v, r := checkedProcess(t, e, &p)
	if v != pkt.Accept || r != ReasonPoolPick || !p.Set.SetMark || p.Modified {
		t.Fatalf("pool SYN: %v %q set=%+v modified=%v", v, r, p.Set, p.Modified)
	}
	if p.Set.Mark&^fwmark.MemberMask != operator|0x12 {
		t.Fatalf("mark %#x: the bits outside the member field changed", p.Set.Mark)
	}
	i := fwmark.MemberOf(p.Set.Mark)
	members := e.ps().pools[0].members
	if i < 0 || i >= len(members) {
		t.Fatalf("mark %#x names no member", p.Set.Mark)
	}
	c := &poolConn{t: t, e: e, cl: cl, port: port, member: members[i].a4, seqCl: 100, seqMb: 9000}
	// After dstnat: the same SYN, now to the member, with the mark.
	b = pkttest.TCP(t, cl, c.member, port, 1723, nil, pkttest.TCPOpt{SYN: true, Seq: 100})
	p = nfq.Packet{ID: 2, Payload: b, InDev: wanIf, Hook: nfq.HookPrerouting, Mark: p.Set.Mark}
	if v, r := checkedProcess(t, e, &p); v != pkt.Accept || r != ReasonCtlNew {
		t.Fatalf("SYN after dstnat: %v %q", v, r)
	}
	c.seqCl++
	c.seg(true, nil, pkttest.TCPOpt{SYN: true, ACK: true})
	return c
}

// seg sends a segment from the member (fromMember) or the client; it
// returns the payload as it left the engine.
func (c *poolConn) seg(fromMember bool, pl []byte, o pkttest.TCPOpt) []byte {
	c.t.Helper()
	var b []byte
	var inIf uint32 = wanIf
	if fromMember {
		o.Seq = c.seqMb
		b, inIf = pkttest.TCP(c.t, c.member, c.cl, 1723, c.port, pl, o), lanIf
		c.seqMb += uint32(len(pl))
	} else {
		o.Seq = c.seqCl
		b = pkttest.TCP(c.t, c.cl, c.member, c.port, 1723, pl, o)
		c.seqCl += uint32(len(pl))
	}
	if o.SYN {
		if fromMember {
			c.seqMb++
		} else {
			c.seqCl++
		}
	}
	// As the ruleset queues them: the client's segments in prerouting from
	// the WAN, the member's in postrouting on their way to the WAN.
	hook := nfq.HookPrerouting
	if fromMember {
		hook = nfq.HookPostrouting
	}
	p := nfq.Packet{ID: 3, Payload: b, InDev: inIf, Hook: hook}
	if v, r := checkedProcess(c.t, c.e, &p); v != pkt.Accept {
		c.t.Fatalf("segment: %v %q", v, r)
	}
	pkttest.CheckSums(c.t, b)
	return pkt.TCP(pkt.IPv4(b).Payload()).Payload()
}

// call: the client asks for a call with its ID clientID, the member
// answers with its own ID memberID; returns the outside ID of memberID.
func (c *poolConn) call(clientID, memberID uint16) uint16 {
	c.t.Helper()
	c.seg(false, (&wire.SCCRQ{ProtocolVersion: 0x100, Hostname: "pns"}).Append(nil), pkttest.TCPOpt{ACK: true})
	c.seg(true, (&wire.SCCRP{ProtocolVersion: 0x100, Result: 1, Hostname: "pac"}).Append(nil), pkttest.TCPOpt{ACK: true})
	c.seg(false, (&wire.OCRQ{CallID: clientID, RecvWindow: 64}).Append(nil), pkttest.TCPOpt{ACK: true})
	rep := c.seg(true, (&wire.OCRP{CallID: memberID, PeerCallID: clientID, Result: 1}).Append(nil), pkttest.TCPOpt{ACK: true})
	return u16at(rep, 12)
}

// greAt is gre with the hook the packet is queued at.
func greAt(t *testing.T, e *Engine, b []byte, inIf uint32, hook nfq.Hook) (pkt.Verdict, []byte) {
	t.Helper()
	p := nfq.Packet{Payload: b, InDev: inIf, Hook: hook}
	v, r := checkedProcess(t, e, &p)
	if v == pkt.Accept && !p.Modified {
		t.Fatalf("translated GRE not marked Modified (%s)", r)
	}
	if v == pkt.Accept {
		pkttest.CheckSums(t, b)
	}
	return v, b
}

// TestPoolSameMemberCallIDs: two members hand out the same call ID to two
// connections of the same client; the connections are spread over both
// members (least-calls), the outside IDs differ, and each member's GRE goes
// to the client and the client's GRE to the right member, with the right
// key, both ways.
func TestPoolSameMemberCallIDs(t *testing.T) {
	e := newPoolEngine(t, BalanceLeastCalls)
	cl := [4]byte{198, 51, 100, 20}
	c1 := openPool(t, e, cl, 50000)
	o1 := c1.call(77, 1)
	c2 := openPool(t, e, cl, 50001)
	o2 := c2.call(78, 1)
	if c1.member == c2.member {
		t.Fatalf("least-calls sent both connections to %v", c1.member)
	}
	if o1 == o2 {
		t.Fatalf("both members' call ID 1 became outside ID %d", o1)
	}
	for _, x := range []struct {
		c        *poolConn
		out, cid uint16
	}{{c1, o1, 77}, {c2, o2, 78}} {
		// Member -> client: key = the client's own call ID; source becomes public.
		if v, p := greAt(t, e, pkttest.GRE(t, x.c.member, cl, x.cid, pkttest.GREOpt{}), lanIf, nfq.HookPostrouting); v != pkt.Accept ||
			!bytes.Equal(p, pkttest.GRE(t, pubIP, cl, x.cid, pkttest.GREOpt{})) {
			t.Fatalf("GRE from member %v: %v", x.c.member, v)
		}
		// Client -> public with the outside ID: to the member, key its own ID 1.
		if v, p := gre(t, e, pkttest.GRE(t, cl, pubIP, x.out, pkttest.GREOpt{}), wanIf); v != pkt.Accept ||
			!bytes.Equal(p, pkttest.GRE(t, cl, x.c.member, 1, pkttest.GREOpt{})) {
			t.Fatalf("GRE to member %v: %v", x.c.member, v)
		}
	}
	calls := e.Calls()
	if len(calls) != 2 {
		t.Fatalf("%d calls", len(calls))
	}
	for _, c := range calls {
		if c.Direction != DirectionPublished || c.Member != c.InsideIP || c.InsideCallID != 1 {
			t.Fatalf("call %+v: want published, member = inside, inside call ID 1", c)
		}
	}
	for _, pi := range e.Pools() {
		for _, m := range pi.Members {
			if m.Picks != 1 || m.Setups != 1 || m.Conns != 1 || m.Calls != 1 || m.State != MemberUp {
				t.Fatalf("member %+v: want 1 pick, setup, conn, call, up", m)
			}
		}
	}
	cnt := e.Counters()
	if cnt["pool_1723_10.0.1.5_setups"] != 1 || cnt["pool_1723_10.0.1.6_calls_now"] != 1 {
		t.Fatalf("pool counters: %v", cnt)
	}
}

// TestPoolHealth: a member that fails Fall probes gets no new connections
// while its live call keeps flowing; with no member up, new connections are
// still spread (and counted); Rise passes bring it back.
func TestPoolHealth(t *testing.T) {
	e := newPoolEngine(t, BalanceLeastCalls)
	a := e.ps().pools[0].members[0]
	cl := [4]byte{198, 51, 100, 30}
	c := openPool(t, e, cl, 40000)
	out := c.call(5, 9)
	down := c.member
	var dm *member = e.ps().members[down]
	now := time.Unix(1000, 0)
	if _, changed := e.probeDone(dm, ProbeResult{At: now, Err: "refused"}); changed {
		t.Fatal("down after one failure with fall 2")
	}
	if st, changed := e.probeDone(dm, ProbeResult{At: now, Err: "refused"}); !changed || st != MemberDown {
		t.Fatalf("not down after two failures: %q %v", st, changed)
	}
	for i := range 6 {
		if n := openPool(t, e, [4]byte{198, 51, 100, byte(40 + i)}, 40000); n.member == down {
			t.Fatalf("new connection %d sent to the member that is down", i)
		}
	}
	// The live call on the down member still flows both ways.
	if v, _ := gre(t, e, pkttest.GRE(t, cl, pubIP, out, pkttest.GREOpt{}), wanIf); v != pkt.Accept {
		t.Fatal("live call on a down member stopped")
	}
	if v, _ := greAt(t, e, pkttest.GRE(t, down, cl, 5, pkttest.GREOpt{}), lanIf, nfq.HookPostrouting); v != pkt.Accept {
		t.Fatal("live call on a down member stopped (from the member)")
	}
	// Both down: still picked (spread), counted.
	other := e.ps().pools[0].members[0]
	if other == dm {
		other = e.ps().pools[0].members[1]
	}
	e.probeDone(other, ProbeResult{At: now, OK: true})
	e.probeDone(other, ProbeResult{At: now, Err: "x"})
	e.probeDone(other, ProbeResult{At: now, Err: "x"})
	openPool(t, e, [4]byte{198, 51, 100, 99}, 40000)
	if n := e.ps().pools[0].noneUp.Load(); n != 1 {
		t.Fatalf("picks with none up = %d, want 1", n)
	}
	e.probeDone(dm, ProbeResult{At: now, OK: true})
	if st, changed := e.probeDone(dm, ProbeResult{At: now, OK: true}); !changed || st != MemberUp {
		t.Fatalf("not up after two passes: %q %v", st, changed)
	}
	info := e.Pools()[0].Members[a.idx]
	if len(info.Probes) == 0 {
		t.Fatal("no probe history")
	}
	if m := e.Pools()[0].Members[dm.idx]; m.Changes != 2 || m.ProbesFailed != 2 || m.ProbesOK != 2 || m.State != MemberUp {
		t.Fatalf("member after down and up: %+v", m)
	}
}

// TestPoolSourceHash: the same client always reaches the same member; many
// clients reach both; a member going down moves only its own clients.
func TestPoolSourceHash(t *testing.T) {
	e := newPoolEngine(t, BalanceSourceHash)
	ps := e.ps().pools[0]
	first := map[[4]byte]*member{}
	count := map[*member]int{}
	for i := range 64 {
		src := [4]byte{203, 0, 113, byte(i)}
		m := ps.pick(src, false)
		for range 3 {
			if ps.pick(src, false) != m {
				t.Fatalf("client %v moved between picks", src)
			}
		}
		first[src] = m
		count[m]++
	}
	if len(count) != 2 || count[ps.members[0]] < 8 || count[ps.members[1]] < 8 {
		t.Fatalf("64 clients spread %d/%d", count[ps.members[0]], count[ps.members[1]])
	}
	ps.members[0].down.Store(true)
	for src, m := range first {
		got := ps.pick(src, false)
		if got == ps.members[0] {
			t.Fatalf("client %v sent to the member that is down", src)
		}
		if m == ps.members[1] && got != m {
			t.Fatalf("client %v of the member still up moved", src)
		}
	}
}

// TestPoolConnGone: when a member's control connection leaves the table,
// its conns and calls gauges go back to zero.
func TestPoolConnGone(t *testing.T) {
	e, clk := newEngine(t, func(c *EngineConfig) {
		c.Pools = []Pool{{Port: 1723, Members: []netip.Addr{netip.AddrFrom4(memberA), netip.AddrFrom4(memberB)}}}
	})
	c := openPool(t, e, [4]byte{198, 51, 100, 20}, 50000)
	c.call(1, 2)
	m := e.ps().members[c.member]
	if m.conns.Load() != 1 || m.calls.Load() != 1 {
		t.Fatalf("conns %d calls %d", m.conns.Load(), m.calls.Load())
	}
	c.seg(false, nil, pkttest.TCPOpt{RST: true})
	clk.Advance(time.Hour)
	e.Tick()
	if m.conns.Load() != 0 || m.calls.Load() != 0 {
		t.Fatalf("after the connection ended: conns %d calls %d", m.conns.Load(), m.calls.Load())
	}
}

// TestPoolSYNNotPicked: SYNs that are not a pool's opening SYN before
// dstnat are left to the normal path.
func TestPoolSYNNotPicked(t *testing.T) {
	e := newPoolEngine(t, "")
	cl := [4]byte{198, 51, 100, 20}
	for _, tc := range []struct {
		name string
		b    []byte
		mark uint32
		hook nfq.Hook
	}{
		{"already-marked", pkttest.TCP(t, cl, pubIP, 5000, 1723, nil, pkttest.TCPOpt{SYN: true}), fwmark.Member(1), nfq.HookPrerouting},
		{"syn-ack", pkttest.TCP(t, cl, pubIP, 5000, 1723, nil, pkttest.TCPOpt{SYN: true, ACK: true}), 0, nfq.HookPrerouting},
		{"other-port", pkttest.TCP(t, cl, pubIP, 5000, 1724, nil, pkttest.TCPOpt{SYN: true}), 0, nfq.HookPrerouting},
		{"postrouting", pkttest.TCP(t, cl, pubIP, 5000, 1723, nil, pkttest.TCPOpt{SYN: true}), 0, nfq.HookPostrouting},
	} {
		p := nfq.Packet{Payload: tc.b, InDev: wanIf, Hook: tc.hook, Mark: tc.mark}
		if _, r := e.Process(&p); r == ReasonPoolPick || p.Set.SetMark {
			t.Errorf("%s: picked (%q)", tc.name, r)
		}
	}
}

// TestProbeControl runs the control probe against a fake PAC (over a
// loopback socket: the probe's own port is fixed at 1723, so the
// conversation itself is tested through probeControl).
func TestProbeControl(t *testing.T) {
	for _, tc := range []struct {
		result uint8
		ok     bool
	}{{1, true}, {2, false}} {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			buf := make([]byte, 1024)
			if m, err := wire.ReadMessage(c, buf); err != nil || m.Type() != wire.StartCtrlConnRequest {
				return
			}
			c.Write((&wire.EchoRQ{ID: 3}).Append(nil)) // skipped by the probe
			c.Write((&wire.SCCRP{ProtocolVersion: 0x100, Result: tc.result}).Append(nil))
			io.Copy(io.Discard, c)
		}()
		c, err := net.Dial("tcp4", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		err = probeControl(c)
		c.Close()
		l.Close()
		if tc.ok != (err == nil) || (!tc.ok && !errors.Is(err, ErrProbeRefused)) {
			t.Errorf("result %d: probe error %v", tc.result, err)
		}
	}
	// A server that closes at once fails the probe.
	l, _ := net.Listen("tcp4", "127.0.0.1:0")
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Close()
		}
	}()
	c, _ := net.Dial("tcp4", l.Addr().String())
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := probeControl(c); err == nil {
		t.Error("probe passed against a server that closed")
	}
	c.Close()
	l.Close()
}

// TestRunHealth: RunHealth drives probeDone from the prober's answers
// until its context ends.
func TestRunHealth(t *testing.T) {
	e, _ := newEngine(t, func(c *EngineConfig) {
		c.Pools = []Pool{{Port: 1723, Members: []netip.Addr{netip.AddrFrom4(memberA), netip.AddrFrom4(memberB)},
			Health: Health{Interval: 10 * time.Millisecond, Timeout: 5 * time.Millisecond, Fall: 1, Rise: 1}}}
	})
	var bad atomic.Bool
	bad.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		e.RunHealth(ctx, func(_ context.Context, a netip.Addr, probe string) error {
			if probe != ProbeControl {
				t.Errorf("probe %q, want the default control", probe)
			}
			if a == netip.AddrFrom4(memberB) && bad.Load() {
				return errors.New("refused")
			}
			return nil
		})
		close(done)
	}()
	defer func() { cancel(); <-done }()
	wait := func(want MemberState) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if e.Pools()[0].Members[1].State == want {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("member B never %s: %+v", want, e.Pools()[0].Members[1])
	}
	wait(MemberDown)
	if e.Pools()[0].Members[0].State != MemberUp {
		t.Fatal("member A went down")
	}
	bad.Store(false)
	wait(MemberUp)
}

// FuzzPoolProcess feeds arbitrary packets, at any hook, from the WAN or
// inside, with any mark, to an engine with a pool and a tracked hairpin
// alias: no panic, a verdict's mark keeps every bit outside the daemon's,
// and accepted packets keep valid checksums.
func FuzzPoolProcess(f *testing.F) {
	cl := [4]byte{10, 0, 0, 77}
	f.Add(pkttest.TCP(f, cl, pubIP, 41000, 1723, nil, pkttest.TCPOpt{SYN: true}), uint8(0), uint32(0))
	f.Add(pkttest.TCP(f, [4]byte{198, 51, 100, 9}, pubIP, 41000, 1723, nil, pkttest.TCPOpt{SYN: true}), uint8(1), uint32(0xff000000))
	f.Add(pkttest.GRE(f, memberA, pubIP, 5, pkttest.GREOpt{}), uint8(0), fwmark.Hairpin)
	f.Add(pkttest.GRE(f, memberA, cl, 5, pkttest.GREOpt{}), uint8(4), fwmark.Hairpin)
	f.Add(pkttest.GRE(f, cl, pubIP, 1, pkttest.GREOpt{}), uint8(0), uint32(0))
	f.Add(pkttest.TCP(f, memberB, cl, 1723, 41000, (&wire.OCRP{CallID: 1, PeerCallID: 2, Result: 1}).Append(nil), pkttest.TCPOpt{ACK: true}), uint8(0), fwmark.Member(1))
	f.Fuzz(func(t *testing.T, b []byte, mode uint8, mark uint32) {
		e := newPoolEngine(t, []string{BalanceLeastCalls, BalanceSourceHash}[mode>>7])
		e.hp[hpKey{cl, 1}] = memberA
		fixup(b)
		hook := []nfq.Hook{nfq.HookPrerouting, nfq.HookPostrouting, nfq.HookPrerouting, nfq.HookOutput, nfq.HookPostrouting}[int(mode&0x7f)%5]
		in := []uint32{lanIf, wanIf}[mode&1]
		p := nfq.Packet{Payload: b, InDev: in, Hook: hook, Mark: mark}
		v, _ := e.Process(&p)
		if p.Set.SetMark && p.Set.Mark&^fwmark.Mask != mark&^fwmark.Mask {
			t.Fatalf("verdict mark %#x changed the operator's bits of %#x", p.Set.Mark, mark)
		}
		if v == pkt.Accept {
			checkValid(t, p.Payload, "accepted")
		}
	})
}

// TestApplyPools: a reload's pools replace the running ones; a member that
// stays keeps its state and counts (under a new index), a new one is
// picked and probed, one that goes keeps its live call; applying the same
// pools again changes nothing.
func TestApplyPools(t *testing.T) {
	e := newPoolEngine(t, BalanceLeastCalls)
	cl := [4]byte{198, 51, 100, 20}
	c := openPool(t, e, cl, 50000)
	out := c.call(7, 1)
	old := e.ps().members[c.member]
	e.probeDone(old, ProbeResult{OK: false, Err: "x"})
	memberC := [4]byte{10, 0, 1, 7}
	other := memberA
	if c.member == memberA {
		other = memberB
	}
	cfg := []Pool{{Port: 1723, Members: []netip.Addr{netip.AddrFrom4(memberC), netip.AddrFrom4(c.member), netip.AddrFrom4(other)}}}
	if err := e.ApplyPools(cfg); err != nil {
		t.Fatal(err)
	}
	set := e.ps()
	m := set.members[c.member]
	if m.idx != 1 || m.conns.Load() != 1 || m.calls.Load() != 1 || m.probesFailed.Load() != 1 {
		t.Fatalf("member kept through the reload: idx %d conns %d calls %d failed %d", m.idx, m.conns.Load(), m.calls.Load(), m.probesFailed.Load())
	}
	if err := e.ApplyPools(cfg); err != nil || e.ps() != set {
		t.Fatalf("the same pools again replaced the set (%v)", err)
	}
	if got := e.Settings().Pools; len(got) != 1 || len(got[0].Members) != 3 || got[0].Health.Interval != 5*time.Second {
		t.Fatalf("settings after reload: %+v", got)
	}
	// The new member gets the next connection (least-calls: it has none).
	if n := openPool(t, e, [4]byte{198, 51, 100, 21}, 50000); n.member != memberC && n.member != other {
		t.Fatalf("new connection went to %v, the busy member", n.member)
	}
	// The first member leaves the pool: its call still flows, and its end is harmless.
	if err := e.ApplyPools([]Pool{{Port: 1723, Members: []netip.Addr{netip.AddrFrom4(memberC), netip.AddrFrom4(other)}}}); err != nil {
		t.Fatal(err)
	}
	if v, _ := gre(t, e, pkttest.GRE(t, cl, pubIP, out, pkttest.GREOpt{}), wanIf); v != pkt.Accept {
		t.Fatal("the call of a member that left the pool stopped")
	}
	c.seg(false, nil, pkttest.TCPOpt{RST: true})
	if err := e.ApplyPools([]Pool{{Port: 1723, Members: []netip.Addr{netip.AddrFrom4(memberA), netip.AddrFrom4(memberA)}}}); err == nil {
		t.Fatal("a member twice was applied")
	}
}

// TestRunHealthFollowsApply: after ApplyPools the new set is probed.
func TestRunHealthFollowsApply(t *testing.T) {
	e, _ := newEngine(t, func(c *EngineConfig) {
		c.Pools = []Pool{{Port: 1723, Members: []netip.Addr{netip.AddrFrom4(memberA), netip.AddrFrom4(memberB)},
			Health: Health{Interval: 10 * time.Millisecond, Timeout: 5 * time.Millisecond}}}
	})
	memberC := netip.AddrFrom4([4]byte{10, 0, 1, 7})
	var probedC atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		e.RunHealth(ctx, func(_ context.Context, a netip.Addr, _ string) error {
			if a == memberC {
				probedC.Store(true)
			}
			return nil
		})
		close(done)
	}()
	defer func() { cancel(); <-done }()
	if err := e.ApplyPools([]Pool{{Port: 1723, Members: []netip.Addr{netip.AddrFrom4(memberA), memberC},
		Health: Health{Interval: 10 * time.Millisecond, Timeout: 5 * time.Millisecond}}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !probedC.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the member added by ApplyPools was never probed")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
