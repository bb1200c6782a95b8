package nat

import (
	"bytes"
	"net/netip"
	"testing"

	"pptpgw/conntrack"
	"pptpgw/internal/fwmark"
	"pptpgw/internal/pkt"
	"pptpgw/internal/pkt/pkttest"
	"pptpgw/nat/nfq"
	"pptpgw/pptp/wire"
)

// Calls of every uplink take the kernel path (kfeat, issue 12), each with
// its uplink's interface in its elements' key, so that the kernel
// translates its GRE on that uplink only (on another, it misses and the
// engine drops it as gre_wrong_uplink). When an uplink's interface changes,
// its calls' elements move to the new key: the old one is deleted as the
// kernel holds it (the fake refuses any other deletion).
func TestKernelPathUplinks(t *testing.T) {
	e, f, _ := kernelEngine(t)
	e.SetUplinks([]Uplink{{wanIf, netip.AddrFrom4(pubIP)}, {wan1If, netip.AddrFrom4(pub1)}})
	e.SetPinner(&fakePins{})
	a := &upClient{t: t, e: e, ip: lanA, port: 40000, outDev: wanIf, seqOut: 1000, seqIn: 9000}
	b := &upClient{t: t, e: e, ip: lanB, port: 40000, outDev: wan1If, seqOut: 1000, seqIn: 9000}
	a.call(1, 500)
	b.call(1, 501)
	flush(t, e)
	check := func(if1 uint32) {
		t.Helper()
		if len(f.out) != 2 || len(f.in) != 2 {
			t.Fatalf("elements: %d out, %d in; want both calls' (uplinks 0 and 1)", len(f.out), len(f.in))
		}
		for k, el := range f.out {
			want := map[[4]byte]uint32{lanA: wanIf, lanB: if1}[k.k.InsideIP]
			if k.ifx != want || el.PublicIP != map[[4]byte][4]byte{lanA: pubIP, lanB: pub1}[k.k.InsideIP] {
				t.Errorf("out element %+v: interface %d, want %d", k, k.ifx, want)
			}
		}
		for k, el := range f.in {
			want := map[[4]byte]uint32{pubIP: wanIf, pub1: if1}[k.k.PublicIP]
			if k.ifx != want || el.IfIndex != want {
				t.Errorf("in element %+v: interface %d, want %d", k, k.ifx, want)
			}
		}
	}
	check(wan1If)
	const newIf = 77
	e.SetUplink(1, newIf, netip.Addr{})
	flush(t, e)
	check(newIf)
	if _, _, errs := e.kp.stats(); errs != 0 {
		t.Errorf("%d failed transactions", errs)
	}
}

// restartedPool saves e's state and restores it into a new engine with the
// same pools, as the daemon does at start (NewEngine with the pools, then
// RestoreState).
func restartedPool(t *testing.T, e *Engine) *Engine {
	t.Helper()
	b, err := EncodeState(e.SaveState(testOwner))
	if err != nil {
		t.Fatal(err)
	}
	st, err := DecodeState(b)
	if err != nil {
		t.Fatal(err)
	}
	e2 := newPoolEngine(t, BalanceLeastCalls)
	if _, err := e2.RestoreState(st, testOwner); err != nil {
		t.Fatal(err)
	}
	return e2
}

func memberCalls(e *Engine, m [4]byte) (conns, calls int64) {
	for _, p := range e.Pools() {
		for _, mi := range p.Members {
			if mi.Addr == netip.AddrFrom4(m) {
				return mi.Conns, mi.Calls
			}
		}
	}
	return -100, -100
}

// A published call restored after a restart counts on its member again
// (calls), so that its end brings the member back to zero: before, the
// restored engine counted it nowhere and its end made the member's calls
// -1, which least-calls balancing then preferred for every new connection.
func TestRestoredPoolCallsCounted(t *testing.T) {
	e := newPoolEngine(t, BalanceLeastCalls)
	c := openPool(t, e, [4]byte{192, 0, 2, 50}, 50000)
	c.call(5, 6)
	if conns, calls := memberCalls(e, c.member); conns != 1 || calls != 1 {
		t.Fatalf("before the restart: member %v has %d conns, %d calls", netip.AddrFrom4(c.member), conns, calls)
	}
	e2 := restartedPool(t, e)
	if conns, calls := memberCalls(e2, c.member); conns != 1 || calls != 1 {
		t.Errorf("after the restart: member %v has %d conns, %d calls, want 1 and 1", netip.AddrFrom4(c.member), conns, calls)
	}
	for _, tc := range e2.table.Controls() {
		e2.table.RemoveControl(tc, conntrack.ReasonStopped)
	}
	if conns, calls := memberCalls(e2, c.member); conns != 0 || calls != 0 {
		t.Errorf("after its connection ended: member %v has %d conns, %d calls, want 0 and 0", netip.AddrFrom4(c.member), conns, calls)
	}
}

// A hairpin call restored after a restart keeps its alias: the inside
// host's GRE to the public address with the member's call ID still reaches
// the member (before, the alias was not restored and that GRE was let go
// untouched to the gateway itself: the call carried GRE one way only).
func TestRestoredHairpinAlias(t *testing.T) {
	e := newPoolEngine(t, BalanceLeastCalls)
	host := [4]byte{10, 0, 0, 77}
	b := pkttest.TCP(t, host, pubIP, 41000, 1723, nil, pkttest.TCPOpt{SYN: true, Seq: 10})
	p := nfq.Packet{Payload: b, InDev: lanIf, Hook: nfq.HookPrerouting}
	if v, r := checkedProcess(t, e, &p); v != pkt.Accept || r != ReasonPoolPick {
		t.Fatalf("hairpin SYN: %v %q", v, r)
	}
	mark := p.Set.Mark
	m := [][4]byte{memberA, memberB}[fwmark.MemberOf(mark)]
	send := hairpinStream(t, e, host, m, mark)
	send(true, nil, pkttest.TCPOpt{SYN: true})
	send(false, nil, pkttest.TCPOpt{SYN: true, ACK: true})
	send(true, (&wire.SCCRQ{ProtocolVersion: 0x100}).Append(nil), pkttest.TCPOpt{ACK: true})
	send(false, (&wire.SCCRP{ProtocolVersion: 0x100, Result: 1}).Append(nil), pkttest.TCPOpt{ACK: true})
	rq := send(true, (&wire.OCRQ{CallID: 77}).Append(nil), pkttest.TCPOpt{ACK: true})
	send(false, (&wire.OCRP{CallID: 1, PeerCallID: u16at(rq, 12), Result: 1}).Append(nil), pkttest.TCPOpt{ACK: true})

	e2 := restartedPool(t, e)
	g := pkttest.GRE(t, host, pubIP, 1, pkttest.GREOpt{})
	q := nfq.Packet{Payload: g, InDev: lanIf, Hook: nfq.HookPrerouting}
	if v, r := checkedProcess(t, e2, &q); v != pkt.Accept || r != ReasonHairpinGREOut || !bytes.Equal(g, pkttest.GRE(t, host, m, 1, pkttest.GREOpt{})) {
		t.Errorf("restored hairpin call: the host's GRE to its member: %v %q", v, r)
	}
}

// One change of an interface index refreshes the kernel path's elements
// once (N1: SetWANIndex with several uplinks did twice); an address-only
// change of an uplink refreshes none, and its calls keep their uplink's
// interface (R4: recomputed, a call on the old address found no uplink and
// got the WAN's).
func TestKernelPathRefreshOnce(t *testing.T) {
	e, f, _ := kernelEngine(t)
	n := func() uint64 { return e.kp.refreshes.Load() }
	r0 := n()
	e.SetWANIndex(wanIf + 40)
	e.SetWANIndex(wanIf + 40) // no change
	if d := n() - r0; d != 1 {
		t.Errorf("single WAN: %d refreshes for one index change, want 1", d)
	}
	e.SetWANIndex(wanIf)
	e.SetUplinks([]Uplink{{wanIf, netip.AddrFrom4(pubIP)}, {wan1If, netip.AddrFrom4(pub1)}})
	e.SetPinner(&fakePins{})
	b := &upClient{t: t, e: e, ip: lanB, port: 40000, outDev: wan1If, seqOut: 1000, seqIn: 9000}
	b.call(1, 501)
	flush(t, e)
	r0 = n()
	e.SetWANIndex(wanIf + 41)
	if d := n() - r0; d != 1 {
		t.Errorf("several uplinks: %d refreshes for one WAN index change, want 1", d)
	}
	r0 = n()
	e.SetUplink(1, 0, netip.MustParseAddr("198.51.100.99"))
	if d := n() - r0; d != 0 {
		t.Errorf("%d refreshes for an address-only change, want 0", d)
	}
	e.SetUplink(1, wan1If, netip.Addr{}) // same index
	if d := n() - r0; d != 0 {
		t.Errorf("%d refreshes for an unchanged index, want 0", d)
	}
	flush(t, e)
	for k := range f.in {
		if k.k.PublicIP == pub1 && k.ifx != wan1If {
			t.Errorf("uplink 1's call moved to interface %d, want %d", k.ifx, wan1If)
		}
	}
	if len(f.in) != 1 {
		t.Fatalf("%d inbound elements, want 1", len(f.in))
	}
	// A later refresh (the WAN's index changes) leaves the call on its
	// uplink although no uplink has its address now.
	e.SetWANIndex(wanIf + 42)
	flush(t, e)
	for k := range f.in {
		if k.ifx != wan1If {
			t.Errorf("after a WAN change, uplink 1's call is on interface %d, want %d", k.ifx, wan1If)
		}
	}
	// A new uplink table: the call's uplink is found again by address.
	e.SetUplinks([]Uplink{{wanIf + 42, netip.AddrFrom4(pubIP)}, {wan1If + 5, netip.AddrFrom4(pub1)}})
	flush(t, e)
	for k := range f.in {
		if k.ifx != wan1If+5 {
			t.Errorf("after a new uplink table, the call is on interface %d, want %d", k.ifx, wan1If+5)
		}
	}
}
