package nat

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"pptpgw/conntrack"
	"pptpgw/helper"
	"pptpgw/internal/pkt"
	"pptpgw/internal/pkt/pkttest"
	"pptpgw/nat/nfq"
	"pptpgw/pptp/wire"
)

// client simulates one PPTP control connection seen by the gateway: an
// inside PNS at ip:port talking to the server at server:1723.
type client struct {
	t       testing.TB
	e       *Engine
	ip      [4]byte
	port    uint16
	seqOut  uint32 // next seq from the inside party
	seqIn   uint32 // next seq from the server
	lastOut []byte // last packet after Process
	nextID  uint32
}

func newClient(t testing.TB, e *Engine, ip [4]byte, port uint16) *client {
	c := &client{t: t, e: e, ip: ip, port: port, seqOut: 1000, seqIn: 90000, nextID: 1}
	c.send(true, nil, pkttest.TCPOpt{SYN: true}, pkt.Accept)
	c.send(false, nil, pkttest.TCPOpt{SYN: true, ACK: true}, pkt.Accept)
	c.send(true, nil, pkttest.TCPOpt{ACK: true}, pkt.Accept)
	return c
}

// send runs one segment through the engine and checks the verdict and the
// checksums of the result. It returns the processed packet.
func (c *client) send(out bool, payload []byte, o pkttest.TCPOpt, want pkt.Verdict) []byte {
	c.t.Helper()
	var b []byte
	c.nextID++
	p := nfq.Packet{ID: c.nextID}
	if out {
		o.Seq = c.seqOut
		b = pkttest.TCP(c.t, c.ip, server, c.port, 1723, payload, o)
		p.InDev = lanIf
	} else {
		o.Seq = c.seqIn
		b = pkttest.TCP(c.t, server, c.ip, 1723, c.port, payload, o)
		p.InDev = wanIf
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
	p.Payload = b
	v, r := checkedProcess(c.t, c.e, &p)
	if v != want {
		c.t.Fatalf("segment (out=%v, %d bytes): verdict %v %q, want %v", out, len(payload), v, r, want)
	}
	pkttest.CheckSums(c.t, p.Payload)
	c.lastOut = p.Payload
	return p.Payload
}

// msg sends one whole control message and returns the payload as it left.
func (c *client) msg(out bool, m wire.Message) []byte {
	c.t.Helper()
	b := c.send(out, m.Append(nil), pkttest.TCPOpt{ACK: true, PSH: true}, pkt.Accept)
	return pkt.TCP(pkt.IPv4(b).Payload()).Payload()
}

func u16at(b []byte, off int) uint16 { return binary.BigEndian.Uint16(b[off:]) }

// diffOnly checks that got differs from want only in the two bytes at off.
func diffOnly(t testing.TB, got, want []byte, off int) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("length %d, want %d", len(got), len(want))
	}
	for i := range got {
		if i != off && i != off+1 && got[i] != want[i] {
			t.Fatalf("byte %d changed: % x -> % x", i, want[i], got[i])
		}
	}
}

func (c *client) startControl() {
	c.t.Helper()
	c.msg(true, &wire.SCCRQ{ProtocolVersion: 0x100, FramingCaps: 1, BearerCaps: 1, Hostname: "pns"})
	c.msg(false, &wire.SCCRP{ProtocolVersion: 0x100, Result: 1, FramingCaps: 1, BearerCaps: 1, Hostname: "pac"})
}

// call places an outgoing call with inside call ID insideID; the server
// answers with its own ID peerID. It returns the outside call ID.
func (c *client) call(insideID, peerID uint16) uint16 {
	c.t.Helper()
	req := &wire.OCRQ{CallID: insideID, CallSerial: 1, MinBPS: 2400, MaxBPS: 10000000, BearerType: 3, FramingType: 3, RecvWindow: 64}
	got := c.msg(true, req)
	outside := u16at(got, 12)
	diffOnly(c.t, got, req.Append(nil), 12)
	rep := &wire.OCRP{CallID: peerID, PeerCallID: outside, Result: 1, ConnectSpeed: 10000000, RecvWindow: 64}
	got = c.msg(false, rep)
	if u16at(got, 14) != insideID {
		c.t.Fatalf("OCRP Peer's Call ID %d, want inside ID %d", u16at(got, 14), insideID)
	}
	diffOnly(c.t, got, rep.Append(nil), 14)
	return outside
}

func gre(t testing.TB, e *Engine, b []byte, inIf uint32) (pkt.Verdict, []byte) {
	t.Helper()
	p := nfq.Packet{Payload: b, InDev: inIf}
	v, _ := checkedProcess(t, e, &p)
	if v == pkt.Accept && !p.Modified {
		t.Fatal("translated GRE not marked Modified")
	}
	if v == pkt.Accept {
		pkttest.CheckSums(t, b)
	}
	return v, b
}

// TestTwoClientsSameCallID: two inside clients use the same call ID (and the
// same source port) towards the same server. They get distinct outside IDs
// and each gets only its own GRE back.
func TestTwoClientsSameCallID(t *testing.T) {
	e, clk := newEngine(t, nil)
	a := newClient(t, e, lanA, 40000)
	b := newClient(t, e, lanB, 40000)
	a.startControl()
	b.startControl()
	outA := a.call(1, 500)
	outB := b.call(1, 501)
	if outA == outB {
		t.Fatalf("both clients got outside call ID %d", outA)
	}

	// GRE out: src becomes the public address, key (server's ID) unchanged.
	for _, tc := range []struct {
		c    *client
		peer uint16
	}{{a, 500}, {b, 501}} {
		v, p := gre(t, e, pkttest.GRE(t, tc.c.ip, server, tc.peer, pkttest.GREOpt{}), lanIf)
		if want := pkttest.GRE(t, pubIP, server, tc.peer, pkttest.GREOpt{}); v != pkt.Accept || !bytes.Equal(p, want) {
			t.Fatalf("GRE out from %v: %v\n got % x\nwant % x", tc.c.ip, v, p, want)
		}
	}
	// GRE in: routed back to the right client with its own call ID.
	for _, tc := range []struct {
		outside uint16
		to      [4]byte
	}{{outA, lanA}, {outB, lanB}} {
		v, p := gre(t, e, pkttest.GRE(t, server, pubIP, tc.outside, pkttest.GREOpt{Seq: u32p(5)}), wanIf)
		if want := pkttest.GRE(t, server, tc.to, 1, pkttest.GREOpt{Seq: u32p(5)}); v != pkt.Accept || !bytes.Equal(p, want) {
			t.Fatalf("GRE in key %d: %v\n got % x\nwant % x", tc.outside, v, p, want)
		}
	}
	calls := e.Calls()
	if len(calls) != 2 {
		t.Fatalf("calls %+v", calls)
	}
	for i, want := range []struct {
		ip      [4]byte
		outside uint16
		peer    uint16
	}{{lanA, outA, 500}, {lanB, outB, 501}} {
		c := calls[i]
		if c.InsideIP != netip.AddrFrom4(want.ip) || c.InsideCallID != 1 || c.OutsideCallID != want.outside ||
			c.PeerCallID != want.peer || c.PublicIP != netip.AddrFrom4(pubIP) || c.PeerIP != netip.AddrFrom4(server) ||
			c.InsidePort != 40000 || c.State != "replied" || c.PktsOut != 1 || c.PktsIn != 1 {
			t.Fatalf("call %d: %+v", i, c)
		}
	}

	// Echo on A's control connection keeps A's call alive; B's call times out.
	for range 4 {
		clk.Advance(60 * time.Second)
		a.msg(false, &wire.EchoRQ{ID: 1})
		a.msg(true, &wire.EchoRP{ID: 1, Result: 1})
		e.Tick()
	}
	if v, _ := gre(t, e, pkttest.GRE(t, server, pubIP, outA, pkttest.GREOpt{}), wanIf); v != pkt.Accept {
		t.Fatal("A's call expired despite Echo")
	}
	// (The pools are per public address, so outB may equal outA by chance.)
	if v, _ := gre(t, e, pkttest.GRE(t, server, pubIP, outB, pkttest.GREOpt{}), wanIf); outB != outA && v != pkt.Drop {
		t.Fatal("B's call outlived the replied timeout")
	}

	// A clears its call: CCRQ carries the inside ID out, CDN the server's ID in.
	got := a.msg(true, &wire.CCRQ{CallID: 1})
	if u16at(got, 12) != outA {
		t.Fatalf("CCRQ call ID %d, want %d", u16at(got, 12), outA)
	}
	a.msg(false, &wire.CDN{CallID: 500, Result: 3})
	if v, _ := gre(t, e, pkttest.GRE(t, server, pubIP, outA, pkttest.GREOpt{}), wanIf); v != pkt.Drop {
		t.Fatal("GRE after Call-Disconnect-Notify still translated")
	}
	if used, q := e.alloc.InUse(PoolKey{pubIP, server}); used != 0 || q != 2 {
		t.Fatalf("allocator: %d used, %d quarantined", used, q)
	}

	// Several calls on one control connection, then FIN stops them all.
	o1, o2 := a.call(2, 600), a.call(3, 601)
	if o1 == o2 || o1 == outA {
		t.Fatalf("outside IDs %d %d (old %d)", o1, o2, outA)
	}
	if _, calls := e.table.Len(); calls != 2 {
		t.Fatalf("%d calls", calls)
	}
	a.send(true, nil, pkttest.TCPOpt{FIN: true, ACK: true}, pkt.Accept)
	if _, calls := e.table.Len(); calls != 0 {
		t.Fatalf("%d calls after FIN", calls)
	}
	a.send(false, nil, pkttest.TCPOpt{FIN: true, ACK: true}, pkt.Accept)
	a.send(true, nil, pkttest.TCPOpt{ACK: true}, pkt.Accept)
	cs := e.Counters()
	if cs["calls_established"] != 4 || cs["calls_mapped"] != 4 || cs[ReasonCtlNew] != 2 {
		t.Fatalf("counters %v", cs)
	}
}

type released struct {
	id   uint32
	data []byte
	v    pkt.Verdict
}

func collect(e *Engine) *[]released {
	var rs []released
	e.SetReleaser(func(id uint32, data []byte, v pkt.Verdict) {
		rs = append(rs, released{id, append([]byte(nil), data...), v})
	})
	return &rs
}

// TestHoldWithEarlierRewrite: one segment carries a whole OCRQ (rewritten
// at once) and the first 13 bytes of a second one (held). The released
// segment must carry both rewrites and a valid checksum covering both.
func TestHoldWithEarlierRewrite(t *testing.T) {
	e, _ := newEngine(t, nil)
	rs := collect(e)
	a := newClient(t, e, lanA, 40000)
	a.startControl()
	req1 := (&wire.OCRQ{CallID: 0x0102, CallSerial: 1, RecvWindow: 16}).Append(nil)
	req2 := (&wire.OCRQ{CallID: 0x0304, CallSerial: 2, RecvWindow: 16}).Append(nil)
	seg := append(append([]byte(nil), req1...), req2[:13]...)
	a.send(true, seg, pkttest.TCPOpt{ACK: true}, pkt.Hold)
	second := a.send(true, req2[13:], pkttest.TCPOpt{ACK: true}, pkt.Accept)
	if len(*rs) != 1 || (*rs)[0].v != pkt.Accept {
		t.Fatalf("releases %+v", *rs)
	}
	rel := (*rs)[0].data
	pkttest.CheckSums(t, rel)
	msg := append(append([]byte(nil), pkt.TCP(pkt.IPv4(rel).Payload()).Payload()...), pkt.TCP(pkt.IPv4(second).Payload()).Payload()...)
	calls := e.Calls()
	if len(calls) != 2 {
		t.Fatalf("calls %+v", calls)
	}
	out := map[uint16]uint16{}
	for _, c := range calls {
		out[c.InsideCallID] = c.OutsideCallID
	}
	if got := u16at(msg, 12); got != out[0x0102] {
		t.Errorf("first OCRQ carries call ID %#x, want %#x", got, out[0x0102])
	}
	if got := u16at(msg, len(req1)+12); got != out[0x0304] {
		t.Errorf("second OCRQ carries call ID %#x, want %#x", got, out[0x0304])
	}
}

// TestHoldSplitCallID: an OCRQ split right after the first byte of its Call
// ID. The first segment is held and released, patched, with the second.
func TestHoldSplitCallID(t *testing.T) {
	e, _ := newEngine(t, nil)
	rs := collect(e)
	a := newClient(t, e, lanA, 40000)
	a.startControl()
	req := (&wire.OCRQ{CallID: 0x0102, CallSerial: 9, RecvWindow: 16}).Append(nil)
	first := a.send(true, req[:13], pkttest.TCPOpt{ACK: true}, pkt.Hold)
	heldID := a.nextID
	if len(*rs) != 0 {
		t.Fatal("released too early")
	}
	second := a.send(true, req[13:], pkttest.TCPOpt{ACK: true}, pkt.Accept)
	if len(*rs) != 1 || (*rs)[0].id != heldID || (*rs)[0].v != pkt.Accept {
		t.Fatalf("releases %+v", *rs)
	}
	rel := (*rs)[0].data
	pkttest.CheckSums(t, rel)
	_ = first
	msg := append(append([]byte(nil), pkt.TCP(pkt.IPv4(rel).Payload()).Payload()...), pkt.TCP(pkt.IPv4(second).Payload()).Payload()...)
	calls := e.Calls()
	if len(calls) != 1 || u16at(msg, 12) != calls[0].OutsideCallID {
		t.Fatalf("reassembled call ID %d, calls %+v", u16at(msg, 12), calls)
	}
	diffOnly(t, msg, req, 12)
	if e.Counters()[ReasonCtlReleased] != 1 {
		t.Fatalf("counters %v", e.Counters())
	}
}

func TestHoldExpires(t *testing.T) {
	for _, strict := range []bool{false, true} {
		e, clk := newEngine(t, func(c *EngineConfig) { c.Strict = strict })
		rs := collect(e)
		a := newClient(t, e, lanA, 40000)
		a.startControl()
		req := (&wire.OCRQ{CallID: 0x0102}).Append(nil)
		a.send(true, req[:13], pkttest.TCPOpt{ACK: true}, pkt.Hold)
		orig := pkttest.TCP(t, lanA, server, 40000, 1723, req[:13], pkttest.TCPOpt{ACK: true, Seq: a.seqOut - 13})
		clk.Advance(conntrack.DefaultHold - time.Millisecond)
		e.Tick()
		if len(*rs) != 0 {
			t.Fatal("hold expired early")
		}
		clk.Advance(2 * time.Millisecond)
		e.Tick()
		want := pkt.Accept
		if strict {
			want = pkt.Drop
		}
		if len(*rs) != 1 || (*rs)[0].v != want {
			t.Fatalf("strict=%v: releases %+v", strict, *rs)
		}
		if !strict && !bytes.Equal((*rs)[0].data, orig) {
			t.Fatalf("lenient expiry must send the segment unmodified")
		}
		if e.Counters()[ReasonCtlHoldExpire] != 1 || e.Counters()["ctl_holding"] != 0 {
			t.Fatalf("counters %v", e.Counters())
		}
	}
}

func TestControlUntracked(t *testing.T) {
	seg := func(src, dst [4]byte, sp, dp uint16, pl []byte, o pkttest.TCPOpt) []byte {
		return pkttest.TCP(t, src, dst, sp, dp, pl, o)
	}
	echo := (&wire.EchoRQ{ID: 1}).Append(nil)
	for _, tc := range []struct {
		name   string
		strict bool
		b      []byte
		inIf   uint32
		v      pkt.Verdict
		reason string
	}{
		{"midstream-data-strict", true, seg(lanA, server, 4000, 1723, echo, pkttest.TCPOpt{ACK: true}), lanIf, pkt.Drop, ReasonCtlNoConn},
		{"midstream-data-lenient", false, seg(lanA, server, 4000, 1723, echo, pkttest.TCPOpt{ACK: true}), lanIf, pkt.Accept, ReasonCtlPickup},
		{"midstream-ack-strict", true, seg(lanA, server, 4000, 1723, nil, pkttest.TCPOpt{ACK: true}), lanIf, pkt.Accept, ReasonCtlEmpty},
		{"inbound-syn-not-forwarded", true, seg(server, lanA, 4000, 1723, nil, pkttest.TCPOpt{SYN: true}), wanIf, pkt.Accept, ReasonCtlUntracked},
		{"syn-from-wan-to-client-port", true, seg(server, lanA, 1723, 4000, nil, pkttest.TCPOpt{SYN: true}), wanIf, pkt.Accept, ReasonCtlEmpty},
	} {
		e, _ := newEngine(t, func(c *EngineConfig) { c.Strict = tc.strict })
		orig := append([]byte(nil), tc.b...)
		v, r := process(t, e, tc.b, tc.inIf, nfq.HookPrerouting)
		if v != tc.v || r != tc.reason {
			t.Errorf("%s: %v %q, want %v %q", tc.name, v, r, tc.v, tc.reason)
		}
		if !bytes.Equal(orig, tc.b) {
			t.Errorf("%s: modified", tc.name)
		}
	}
}

// TestForward: a PPTP server inside, published by a port forward (the kernel
// DNATs; the engine sees the inside server address). Roles are reversed: the
// outside client calls in, the inside server's call IDs are translated.
func TestForward(t *testing.T) {
	pac := [4]byte{10, 0, 0, 9}
	cl := [4]byte{198, 51, 100, 20}
	e, _ := newEngine(t, func(c *EngineConfig) {
		c.Forwards = []Forward{{Port: 1723, InsideIP: netip.AddrFrom4(pac)}}
	})
	seq := map[bool]uint32{true: 500, false: 7000} // out (server) / in (client)
	send := func(out bool, pl []byte, o pkttest.TCPOpt) []byte {
		t.Helper()
		o.Seq = seq[out]
		var b []byte
		var inIf uint32 = wanIf
		if out {
			b, inIf = pkttest.TCP(t, pac, cl, 1723, 50000, pl, o), lanIf
		} else {
			b = pkttest.TCP(t, cl, pac, 50000, 1723, pl, o)
		}
		seq[out] += uint32(len(pl))
		if o.SYN {
			seq[out]++
		}
		v, r := process(t, e, b, inIf, nfq.HookPrerouting)
		if v != pkt.Accept {
			t.Fatalf("verdict %v %q", v, r)
		}
		pkttest.CheckSums(t, b)
		return pkt.TCP(pkt.IPv4(b).Payload()).Payload()
	}
	send(false, nil, pkttest.TCPOpt{SYN: true})
	send(true, nil, pkttest.TCPOpt{SYN: true, ACK: true})
	send(false, (&wire.OCRQ{CallID: 77}).Append(nil), pkttest.TCPOpt{ACK: true})
	rep := send(true, (&wire.OCRP{CallID: 5, PeerCallID: 77, Result: 1}).Append(nil), pkttest.TCPOpt{ACK: true})
	outside := u16at(rep, 12)
	calls := e.Calls()
	if len(calls) != 1 || calls[0].OutsideCallID != outside || calls[0].InsideCallID != 5 || calls[0].PeerCallID != 77 ||
		calls[0].InsideIP != netip.AddrFrom4(pac) || calls[0].PublicPort != 1723 || calls[0].InsidePort != 1723 {
		t.Fatalf("calls %+v (outside %d)", calls, outside)
	}
	// GRE from the inside server (key = client's ID 77) goes out from the public address.
	if v, p := gre(t, e, pkttest.GRE(t, pac, cl, 77, pkttest.GREOpt{}), lanIf); v != pkt.Accept || !bytes.Equal(p, pkttest.GRE(t, pubIP, cl, 77, pkttest.GREOpt{})) {
		t.Fatalf("forward GRE out: %v", v)
	}
	if v, p := gre(t, e, pkttest.GRE(t, cl, pubIP, outside, pkttest.GREOpt{}), wanIf); v != pkt.Accept || !bytes.Equal(p, pkttest.GRE(t, cl, pac, 5, pkttest.GREOpt{})) {
		t.Fatalf("forward GRE in: %v", v)
	}
	// The outside PNS clears the call (its CCRQ carries its own ID); the
	// inside PAC's Call-Disconnect-Notify carries the PAC's own ID, which
	// must leave as the outside ID even though the CCRQ already removed
	// the call from the table.
	send(false, (&wire.CCRQ{CallID: 77}).Append(nil), pkttest.TCPOpt{ACK: true})
	cdn := send(true, (&wire.CDN{CallID: 5, Result: 3}).Append(nil), pkttest.TCPOpt{ACK: true})
	if got := u16at(cdn, 12); got != outside {
		t.Fatalf("CDN from the inside PAC left with Call ID %d, want the outside ID %d", got, outside)
	}
	if n := len(e.Calls()); n != 0 {
		t.Fatalf("%d calls left after CCRQ/CDN", n)
	}
}

func BenchmarkControlEcho(b *testing.B) {
	e := NewEngine(EngineConfig{PublicIP: netip.AddrFrom4(pubIP), WANIf: wanIf, LANIfs: []uint32{lanIf}}, conntrack.SystemClock{})
	c := newClient(b, e, lanA, 40000)
	c.startControl()
	echo := (&wire.EchoRQ{ID: 1}).Append(nil)
	tmpl := pkttest.TCP(b, lanA, server, 40000, 1723, echo, pkttest.TCPOpt{ACK: true, Seq: c.seqOut})
	buf := make([]byte, len(tmpl))
	seq := c.seqOut
	b.ReportAllocs()
	for b.Loop() {
		copy(buf, tmpl)
		seg := pkt.TCP(pkt.IPv4(buf).Payload())
		var o, n [4]byte
		copy(o[:], seg[pkt.TCPSeqNumOffset:])
		binary.BigEndian.PutUint32(n[:], seq)
		seg.SetChecksum(pkt.UpdateAddr(seg.Checksum(), o, n))
		copy(seg[pkt.TCPSeqNumOffset:], n[:])
		seq += uint32(len(echo))
		p := nfq.Packet{Payload: buf, InDev: lanIf}
		if v, r := e.Process(&p); v != pkt.Accept {
			b.Fatalf("%v %s", v, r)
		}
	}
}

var _ = helper.Outbound

// TestPublicIPChange: the WAN address changes (DHCP, PPPoE). A call set up
// before keeps its address both ways; a connection opened after uses the
// new one, and GRE to the old address for the new call is not translated.
func TestPublicIPChange(t *testing.T) {
	e, _ := newEngine(t, nil)
	a := newClient(t, e, lanA, 40000)
	a.startControl()
	outA := a.call(1, 500)

	newPub := [4]byte{203, 0, 113, 77}
	if err := e.SetPublicIP(netip.AddrFrom4(newPub)); err != nil {
		t.Fatal(err)
	}
	if got := e.PublicIP(); got != netip.AddrFrom4(newPub) {
		t.Fatalf("PublicIP() = %v", got)
	}
	if err := e.SetPublicIP(netip.MustParseAddr("2001:db8::1")); err == nil {
		t.Fatal("SetPublicIP accepted an IPv6 address")
	}
	b := newClient(t, e, lanB, 40000)
	b.startControl()
	outB := b.call(1, 501)

	for _, tc := range []struct {
		from    [4]byte
		peerID  uint16
		pub     [4]byte
		outside uint16
	}{{lanA, 500, pubIP, outA}, {lanB, 501, newPub, outB}} {
		v, p := gre(t, e, pkttest.GRE(t, tc.from, server, tc.peerID, pkttest.GREOpt{}), lanIf)
		if want := pkttest.GRE(t, tc.pub, server, tc.peerID, pkttest.GREOpt{}); v != pkt.Accept || !bytes.Equal(p, want) {
			t.Fatalf("GRE out from %v: %v\n got % x\nwant % x", tc.from, v, p, want)
		}
		v, p = gre(t, e, pkttest.GRE(t, server, tc.pub, tc.outside, pkttest.GREOpt{}), wanIf)
		if want := pkttest.GRE(t, server, tc.from, 1, pkttest.GREOpt{}); v != pkt.Accept || !bytes.Equal(p, want) {
			t.Fatalf("GRE in to %v key %d: %v\n got % x\nwant % x", tc.pub, tc.outside, v, p, want)
		}
	}
	// (The pools are per public address, so outB may equal outA by chance.)
	if v, _ := gre(t, e, pkttest.GRE(t, server, pubIP, outB, pkttest.GREOpt{}), wanIf); outB != outA && v != pkt.Drop {
		t.Fatal("GRE to the old address translated for a call set up on the new one")
	}
	for _, c := range e.Calls() {
		want := netip.AddrFrom4(pubIP)
		if c.InsideIP == netip.AddrFrom4(lanB) {
			want = netip.AddrFrom4(newPub)
		}
		if c.PublicIP != want {
			t.Fatalf("call %+v: public %v, want %v", c, c.PublicIP, want)
		}
	}
}

// Held copies have a budget (MaxHeldBytes): beyond it a segment to be held
// is given up at once, as an expired hold is (lenient: sent unmodified;
// strict: dropped), and what the holds leave gives the budget back.
func TestHoldBudget(t *testing.T) {
	for _, strict := range []bool{false, true} {
		e, clk := newEngine(t, func(c *EngineConfig) { c.Strict = strict })
		rs := collect(e)
		a := newClient(t, e, lanA, 40000)
		b := newClient(t, e, lanB, 40001)
		a.startControl()
		b.startControl()
		req := (&wire.OCRQ{CallID: 0x0102}).Append(nil)
		a.send(true, req[:13], pkttest.TCPOpt{ACK: true}, pkt.Hold)
		e.maxHeld = e.heldBytes + 1 // room for nothing more
		want := pkt.Accept
		if strict {
			want = pkt.Drop
		}
		orig := pkttest.TCP(t, lanB, server, 40001, 1723, req[:13], pkttest.TCPOpt{ACK: true, Seq: b.seqOut})
		got := b.send(true, req[:13], pkttest.TCPOpt{ACK: true}, want)
		if !strict && !bytes.Equal(got, orig) {
			t.Fatalf("lenient: a segment over the budget must leave unmodified")
		}
		if c := e.Counters(); c[ReasonCtlHoldFull] != 1 || c["ctl_holding"] != 1 {
			t.Fatalf("strict=%v: counters %v", strict, c)
		}
		clk.Advance(conntrack.DefaultHold + time.Millisecond)
		e.Tick()
		if len(*rs) != 1 || e.heldBytes != 0 {
			t.Fatalf("strict=%v: releases %d, %d bytes still counted as held", strict, len(*rs), e.heldBytes)
		}
	}
}
