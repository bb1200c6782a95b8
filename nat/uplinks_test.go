package nat

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"pptpgw/conntrack"
	"pptpgw/internal/pkt"
	"pptpgw/internal/pkt/pkttest"
	"pptpgw/nat/nfq"
	"pptpgw/pptp/wire"
)

const wan1If = 7

var pub1 = [4]byte{198, 51, 100, 10}

// fakePins records what the engine publishes.
type fakePins struct {
	mu  sync.Mutex
	ops []string
}

func (f *fakePins) Pin(in, peer [4]byte, up int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = append(f.ops, fmt.Sprintf("pin %v %v %d", netip.AddrFrom4(in), netip.AddrFrom4(peer), up))
}

func (f *fakePins) Unpin(in, peer [4]byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = append(f.ops, fmt.Sprintf("unpin %v %v", netip.AddrFrom4(in), netip.AddrFrom4(peer)))
}

// upClient is a control connection whose outbound segments are queued in
// postrouting leaving by outDev, as the kernel queues them.
type upClient struct {
	t              testing.TB
	e              *Engine
	ip             [4]byte
	port           uint16
	outDev         uint32
	seqOut, seqIn  uint32
	nextID         uint32
	lastOut, segIn []byte
}

func (c *upClient) send(out bool, payload []byte, o pkttest.TCPOpt) []byte {
	c.t.Helper()
	c.nextID++
	p := nfq.Packet{ID: c.nextID}
	if out {
		o.Seq = c.seqOut
		p.Payload = pkttest.TCP(c.t, c.ip, server, c.port, 1723, payload, o)
		p.InDev, p.OutDev, p.Hook = lanIf, c.outDev, nfq.HookPostrouting
	} else {
		o.Seq = c.seqIn
		p.Payload = pkttest.TCP(c.t, server, c.ip, 1723, c.port, payload, o)
		p.InDev, p.Hook = c.outDev, nfq.HookPrerouting
	}
	adv := uint32(len(payload))
	if o.SYN || o.FIN {
		adv++
	}
	if out {
		c.seqOut += adv
	} else {
		c.seqIn += adv
	}
	if v, r := checkedProcess(c.t, c.e, &p); v != pkt.Accept {
		c.t.Fatalf("segment out=%v: %v %s", out, v, r)
	}
	return p.Payload
}

func (c *upClient) msg(out bool, m wire.Message) []byte {
	b := c.send(out, m.Append(nil), pkttest.TCPOpt{ACK: true, PSH: true})
	return pkt.TCP(pkt.IPv4(b).Payload()).Payload()
}

// call opens the control connection and places one call; it returns the
// outside call ID.
func (c *upClient) call(insideID, peerID uint16) uint16 {
	c.t.Helper()
	c.send(true, nil, pkttest.TCPOpt{SYN: true})
	c.send(false, nil, pkttest.TCPOpt{SYN: true, ACK: true})
	c.send(true, nil, pkttest.TCPOpt{ACK: true})
	c.msg(true, &wire.SCCRQ{ProtocolVersion: 0x100, FramingCaps: 1, BearerCaps: 1, Hostname: "pns"})
	c.msg(false, &wire.SCCRP{ProtocolVersion: 0x100, Result: 1, FramingCaps: 1, BearerCaps: 1, Hostname: "pac"})
	got := c.msg(true, &wire.OCRQ{CallID: insideID, CallSerial: 1, MinBPS: 2400, MaxBPS: 10000000, BearerType: 3, FramingType: 3, RecvWindow: 64})
	outside := u16at(got, 12)
	c.msg(false, &wire.OCRP{CallID: peerID, PeerCallID: outside, Result: 1, ConnectSpeed: 10000000, RecvWindow: 64})
	return outside
}

func greVia(t *testing.T, e *Engine, b []byte, hook nfq.Hook, in, out uint32) (pkt.Verdict, string, []byte) {
	t.Helper()
	p := nfq.Packet{Payload: b, InDev: in, OutDev: out, Hook: hook}
	v, r := checkedProcess(t, e, &p)
	return v, r, p.Payload
}

// TestUplinks: two uplinks; a control connection leaving by the second gets
// its public address for its calls, its pair is pinned to it, GRE on the
// wrong uplink is dropped either way, and the pin goes with the last
// connection of the pair.
func TestUplinks(t *testing.T) {
	e, clk := newEngine(t, nil)
	pins := &fakePins{}
	e.SetUplinks([]Uplink{{wanIf, netip.AddrFrom4(pubIP)}, {wan1If, netip.AddrFrom4(pub1)}})
	e.SetPinner(pins)

	a := &upClient{t: t, e: e, ip: lanA, port: 40000, outDev: wanIf, seqOut: 1000, seqIn: 9000}
	b := &upClient{t: t, e: e, ip: lanB, port: 40000, outDev: wan1If, seqOut: 1000, seqIn: 9000}
	outA := a.call(1, 500)
	outB := b.call(1, 501)
	A, B, S := netip.AddrFrom4(lanA), netip.AddrFrom4(lanB), netip.AddrFrom4(server)
	if want := []string{fmt.Sprintf("pin %v %v 0", A, S), fmt.Sprintf("pin %v %v 1", B, S)}; !slices.Equal(pins.ops, want) {
		t.Fatalf("pins %q, want %q", pins.ops, want)
	}
	for _, c := range e.Calls() {
		want := netip.AddrFrom4(pubIP)
		if c.InsideIP == netip.AddrFrom4(lanB) {
			want = netip.AddrFrom4(pub1)
		}
		if c.PublicIP != want {
			t.Errorf("call of %v: public %v, want %v", c.InsideIP, c.PublicIP, want)
		}
	}

	for _, tc := range []struct {
		from     [4]byte
		peerID   uint16
		pub      [4]byte
		outside  uint16
		dev, bad uint32
	}{{lanA, 500, pubIP, outA, wanIf, wan1If}, {lanB, 501, pub1, outB, wan1If, wanIf}} {
		// Outbound: translated when it leaves by its uplink, dropped when
		// routing sent it out of the other.
		v, r, _ := greVia(t, e, pkttest.GRE(t, tc.from, server, tc.peerID, pkttest.GREOpt{}), nfq.HookPostrouting, lanIf, tc.bad)
		if v != pkt.Drop || r != ReasonGREUplink {
			t.Errorf("GRE from %v out of the wrong uplink: %v %s", netip.AddrFrom4(tc.from), v, r)
		}
		v, _, p := greVia(t, e, pkttest.GRE(t, tc.from, server, tc.peerID, pkttest.GREOpt{}), nfq.HookPostrouting, lanIf, tc.dev)
		if want := pkttest.GRE(t, tc.pub, server, tc.peerID, pkttest.GREOpt{}); v != pkt.Accept || !bytes.Equal(p, want) {
			t.Errorf("GRE from %v out: %v\n got % x\nwant % x", netip.AddrFrom4(tc.from), v, p, want)
		}
		// Inbound: only on its call's uplink.
		v, r, _ = greVia(t, e, pkttest.GRE(t, server, tc.pub, tc.outside, pkttest.GREOpt{}), nfq.HookPrerouting, tc.bad, 0)
		if v != pkt.Drop || r != ReasonGREUplink {
			t.Errorf("GRE to %v in on the wrong uplink: %v %s", netip.AddrFrom4(tc.pub), v, r)
		}
		v, _, p = greVia(t, e, pkttest.GRE(t, server, tc.pub, tc.outside, pkttest.GREOpt{}), nfq.HookPrerouting, tc.dev, 0)
		if want := pkttest.GRE(t, server, tc.from, 1, pkttest.GREOpt{}); v != pkt.Accept || !bytes.Equal(p, want) {
			t.Errorf("GRE to %v in: %v\n got % x\nwant % x", netip.AddrFrom4(tc.pub), v, p, want)
		}
	}
	if n := e.counters.Load(int(rGREWrongUplink)); n != 4 {
		t.Errorf("gre_wrong_uplink = %d, want 4", n)
	}
	if n := e.Counters()["drop_gre_wrong_uplink"]; n != 4 { // drops_total{reason="gre_wrong_uplink"}
		t.Errorf("drops_total of gre_wrong_uplink = %d, want 4", n)
	}

	// A second connection of b's pair, then both go: one unpin, at the end.
	b2 := &upClient{t: t, e: e, ip: lanB, port: 40001, outDev: wan1If, seqOut: 1000, seqIn: 9000}
	b2.call(2, 502)
	if e.Pins() != 2 || len(pins.ops) != 2 {
		t.Fatalf("second connection of a pinned pair: %d pins, ops %q", e.Pins(), pins.ops)
	}
	for _, k := range []conntrack.ControlKey{
		{InsideIP: lanB, PeerIP: server, InsidePort: 40000, PeerPort: 1723},
		{InsideIP: lanB, PeerIP: server, InsidePort: 40001, PeerPort: 1723},
	} {
		cn, ok := e.table.LookupControl(k)
		if !ok {
			t.Fatalf("no control connection %v", k)
		}
		e.table.RemoveControl(cn, conntrack.ReasonStopped)
		if k.InsidePort == 40000 && len(pins.ops) != 2 {
			t.Fatalf("first of two connections removed: ops %q", pins.ops)
		}
	}
	if want := fmt.Sprintf("unpin %v %v", B, S); len(pins.ops) != 3 || pins.ops[2] != want || e.Pins() != 1 {
		t.Fatalf("ops %q (pins %d), want a third %q", pins.ops, e.Pins(), want)
	}
	// Expiry unpins too.
	clk.Advance(e.Settings().Timeouts.ControlIdle * 2)
	e.Tick()
	e.table.LookupControl(conntrack.ControlKey{InsideIP: lanA, PeerIP: server, InsidePort: 40000, PeerPort: 1723})
	if e.Pins() != 0 || pins.ops[len(pins.ops)-1] != fmt.Sprintf("unpin %v %v", A, S) {
		t.Errorf("after expiry: %d pins, ops %q", e.Pins(), pins.ops)
	}

	// Single WAN: none of this applies.
	s, _ := newEngine(t, nil)
	if s.greWrongUplink(pub1, wan1If) || s.isUplinkIf(wan1If) || s.Uplinks() != nil {
		t.Error("single-WAN engine acts on uplinks")
	}
}

// The WAN's address and index changes reach uplink 0.
func TestUplinkZeroFollowsWAN(t *testing.T) {
	e, _ := newEngine(t, nil)
	e.SetUplinks([]Uplink{{wanIf, netip.AddrFrom4(pubIP)}, {wan1If, netip.AddrFrom4(pub1)}})
	e.SetWANIndex(9)
	e.SetPublicIP(netip.MustParseAddr("203.0.113.99"))
	e.SetUplink(1, 11, netip.MustParseAddr("198.51.100.11"))
	u := e.Uplinks()
	if u[0] != (Uplink{9, netip.MustParseAddr("203.0.113.99")}) || u[1] != (Uplink{11, netip.MustParseAddr("198.51.100.11")}) {
		t.Errorf("uplinks %v", u)
	}
	if !e.greWrongUplink([4]byte{203, 0, 113, 99}, wanIf) || e.greWrongUplink([4]byte{203, 0, 113, 99}, 9) {
		t.Error("uplink 0 does not follow the WAN index")
	}
}

// With two uplinks the GRE path checks the packet's uplink too: still no
// allocation.
func TestNoAllocsGREUplinks(t *testing.T) {
	e, _ := newEngine(t, nil)
	e.SetUplinks([]Uplink{{wanIf, netip.AddrFrom4(pubIP)}, {wan1If, netip.AddrFrom4(pub1)}})
	out := addCall(t, e, lanA, 40000, 7, 555)
	outT := pkttest.GRE(t, lanA, server, 555, pkttest.GREOpt{Seq: u32p(1), Payload: make([]byte, 1400)})
	inT := pkttest.GRE(t, server, pubIP, out, pkttest.GREOpt{Seq: u32p(1), Payload: make([]byte, 1400)})
	buf := make([]byte, len(outT))
	p := &nfq.Packet{}
	for name, f := range map[string]func(){
		"out": func() {
			copy(buf, outT)
			*p = nfq.Packet{Payload: buf, InDev: lanIf, OutDev: wanIf, Hook: nfq.HookPostrouting}
			if v, _ := e.Process(p); v != pkt.Accept {
				t.Fatal("out not accepted")
			}
		},
		"in": func() {
			copy(buf, inT)
			*p = nfq.Packet{Payload: buf, InDev: wanIf}
			if v, _ := e.Process(p); v != pkt.Accept {
				t.Fatal("in not accepted")
			}
		},
	} {
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s: %v allocs per packet", name, n)
		}
	}
}

func benchGREUplinks(b *testing.B, inbound bool) {
	e := NewEngine(EngineConfig{PublicIP: netip.AddrFrom4(pubIP), WANIf: wanIf, LANIfs: []uint32{lanIf}}, conntrack.SystemClock{})
	e.SetUplinks([]Uplink{{wanIf, netip.AddrFrom4(pubIP)}, {wan1If, netip.AddrFrom4(pub1)}})
	out := addCall(b, e, lanA, 40000, 7, 555)
	tmpl := pkttest.GRE(b, lanA, server, 555, pkttest.GREOpt{Seq: u32p(1), Ack: u32p(1), Payload: make([]byte, 1400)})
	mk := func(buf []byte) nfq.Packet {
		return nfq.Packet{Payload: buf, InDev: lanIf, OutDev: wanIf, Hook: nfq.HookPostrouting}
	}
	if inbound {
		tmpl = pkttest.GRE(b, server, pubIP, out, pkttest.GREOpt{Seq: u32p(1), Ack: u32p(1), Payload: make([]byte, 1400)})
		mk = func(buf []byte) nfq.Packet { return nfq.Packet{Payload: buf, InDev: wanIf} }
	}
	buf := make([]byte, len(tmpl))
	b.SetBytes(int64(len(tmpl)))
	b.ReportAllocs()
	for b.Loop() {
		copy(buf[:40], tmpl)
		p := mk(buf)
		if v, _ := e.Process(&p); v != pkt.Accept {
			b.Fatal("not accepted")
		}
	}
}

func BenchmarkGREOutUplinks(b *testing.B) { benchGREUplinks(b, false) }
func BenchmarkGREInUplinks(b *testing.B)  { benchGREUplinks(b, true) }

// Two control connections of one pair on two uplinks: the newer one's
// uplink is pinned while it lives; when it goes, the pin moves back to the
// uplink of the connection left (whose calls' GRE would otherwise leave by
// the wrong uplink and be dropped), and the last one unpins.
func TestUplinkPinFollowsConnections(t *testing.T) {
	e, _ := newEngine(t, nil)
	pins := &fakePins{}
	e.SetUplinks([]Uplink{{wanIf, netip.AddrFrom4(pubIP)}, {wan1If, netip.AddrFrom4(pub1)}})
	e.SetPinner(pins)
	old := &upClient{t: t, e: e, ip: lanB, port: 40000, outDev: wan1If, seqOut: 1000, seqIn: 9000}
	old.call(1, 501)
	newer := &upClient{t: t, e: e, ip: lanB, port: 40001, outDev: wanIf, seqOut: 1000, seqIn: 9000}
	newer.call(2, 502)
	B, S := netip.AddrFrom4(lanB), netip.AddrFrom4(server)
	remove := func(port uint16) {
		t.Helper()
		cn, ok := e.table.LookupControl(conntrack.ControlKey{InsideIP: lanB, PeerIP: server, InsidePort: port, PeerPort: 1723})
		if !ok {
			t.Fatalf("no control connection from port %d", port)
		}
		e.table.RemoveControl(cn, conntrack.ReasonStopped)
	}
	remove(40001)
	remove(40000)
	want := []string{
		fmt.Sprintf("pin %v %v 1", B, S),
		fmt.Sprintf("pin %v %v 0", B, S),
		fmt.Sprintf("pin %v %v 1", B, S),
		fmt.Sprintf("unpin %v %v", B, S),
	}
	if !slices.Equal(pins.ops, want) || e.Pins() != 0 {
		t.Errorf("ops %q (pins %d), want %q", pins.ops, e.Pins(), want)
	}
}
