package nat

import (
	"bytes"
	"testing"

	"pptpgw/internal/fwmark"
	"pptpgw/internal/pkt"
	"pptpgw/internal/pkt/pkttest"
	"pptpgw/nat/nfq"
	"pptpgw/pptp/wire"
)

// TestPoolHairpin walks one hairpin call through the engine as the ruleset
// queues its packets (hairpin.go): the LAN host's SYN to the public address
// is given a member and the hairpin bit, its control stream after dstnat
// has the host's call ID translated, and GRE both ways reaches the other
// side with the right key and the public address as the far end.
func TestPoolHairpin(t *testing.T) {
	e := newPoolEngine(t, BalanceLeastCalls)
	c := [4]byte{10, 0, 0, 77}
	// 1. The SYN to the public address, from inside, before dstnat.
	b := pkttest.TCP(t, c, pubIP, 41000, 1723, nil, pkttest.TCPOpt{SYN: true, Seq: 10})
	p := nfq.Packet{Payload: b, InDev: lanIf, Hook: nfq.HookPrerouting}
	if v, r := checkedProcess(t, e, &p); v != pkt.Accept || r != ReasonPoolPick || p.Set.Mark&fwmark.Hairpin == 0 {
		t.Fatalf("hairpin SYN: %v %q mark %#x", v, r, p.Set.Mark)
	}
	mark := p.Set.Mark
	m := [][4]byte{memberA, memberB}[fwmark.MemberOf(mark)]
	// The same host always gets the same member (source hash).
	for range 4 {
		b := pkttest.TCP(t, c, pubIP, 41001, 1723, nil, pkttest.TCPOpt{SYN: true})
		q := nfq.Packet{Payload: b, InDev: lanIf, Hook: nfq.HookPrerouting}
		e.Process(&q)
		if fwmark.MemberOf(q.Set.Mark) != fwmark.MemberOf(mark) {
			t.Fatal("hairpin picks of one host differ")
		}
	}
	// 2. The control stream after dstnat, both ways, queued from inside.
	send := hairpinStream(t, e, c, m, mark)
	send(true, nil, pkttest.TCPOpt{SYN: true})
	send(false, nil, pkttest.TCPOpt{SYN: true, ACK: true})
	send(true, (&wire.SCCRQ{ProtocolVersion: 0x100}).Append(nil), pkttest.TCPOpt{ACK: true})
	send(false, (&wire.SCCRP{ProtocolVersion: 0x100, Result: 1}).Append(nil), pkttest.TCPOpt{ACK: true})
	rq := send(true, (&wire.OCRQ{CallID: 77}).Append(nil), pkttest.TCPOpt{ACK: true})
	out := u16at(rq, 12)
	rp := send(false, (&wire.OCRP{CallID: 1, PeerCallID: out, Result: 1}).Append(nil), pkttest.TCPOpt{ACK: true})
	if u16at(rp, 14) != 77 || u16at(rp, 12) != 1 {
		t.Fatalf("OCRP to the host: call ID %d peer %d, want 1 and 77", u16at(rp, 12), u16at(rp, 14))
	}
	// 3. The member's GRE to the public address (its peer) with the outside ID.
	g := pkttest.GRE(t, m, pubIP, out, pkttest.GREOpt{})
	q := nfq.Packet{Payload: g, InDev: lanIf, Hook: nfq.HookPrerouting}
	if v, r := checkedProcess(t, e, &q); v != pkt.Accept || r != ReasonHairpinGREIn || q.Set.Mark&fwmark.Hairpin == 0 ||
		!bytes.Equal(g, pkttest.GRE(t, m, c, 77, pkttest.GREOpt{})) {
		t.Fatalf("member GRE before routing: %v %q mark %#x", v, r, q.Set.Mark)
	}
	q = nfq.Packet{Payload: g, OutDev: lanIf, Hook: nfq.HookPostrouting, Mark: q.Set.Mark}
	if v, _ := checkedProcess(t, e, &q); v != pkt.Accept || !bytes.Equal(g, pkttest.GRE(t, pubIP, c, 77, pkttest.GREOpt{})) {
		t.Fatalf("member GRE after routing: %v", v)
	}
	pkttest.CheckSums(t, g)
	// 4. The host's GRE to the public address with the member's ID.
	g = pkttest.GRE(t, c, pubIP, 1, pkttest.GREOpt{})
	q = nfq.Packet{Payload: g, InDev: lanIf, Hook: nfq.HookPrerouting}
	if v, r := checkedProcess(t, e, &q); v != pkt.Accept || r != ReasonHairpinGREOut || !bytes.Equal(g, pkttest.GRE(t, c, m, 1, pkttest.GREOpt{})) {
		t.Fatalf("host GRE before routing: %v %q", v, r)
	}
	q = nfq.Packet{Payload: g, OutDev: lanIf, Hook: nfq.HookPostrouting, Mark: q.Set.Mark}
	if v, r := checkedProcess(t, e, &q); v != pkt.Accept || !bytes.Equal(g, pkttest.GRE(t, pubIP, m, 1, pkttest.GREOpt{})) {
		t.Fatalf("host GRE after routing: %v %q", v, r)
	}
	calls := e.Calls()
	if len(calls) != 1 || calls[0].Direction != DirectionHairpin || calls[0].Member.As4() != m || calls[0].PktsIn != 1 || calls[0].PktsOut != 1 {
		t.Fatalf("calls %+v", calls)
	}
	// Not the pool's: GRE to the gateway matching no hairpin call, a SYN
	// to another address of the gateway.
	g = pkttest.GRE(t, c, pubIP, 999, pkttest.GREOpt{})
	orig := bytes.Clone(g)
	q = nfq.Packet{Payload: g, InDev: lanIf, Hook: nfq.HookPrerouting}
	if v, r := checkedProcess(t, e, &q); v != pkt.Accept || r != ReasonHairpinNotOurs || !bytes.Equal(g, orig) || q.Set.SetMark {
		t.Fatalf("local GRE: %v %q", v, r)
	}
	b = pkttest.TCP(t, c, [4]byte{10, 0, 0, 1}, 41002, 1723, nil, pkttest.TCPOpt{SYN: true})
	q = nfq.Packet{Payload: b, InDev: lanIf, Hook: nfq.HookPrerouting}
	if v, r := checkedProcess(t, e, &q); v != pkt.Accept || r != ReasonHairpinNotOurs || q.Set.SetMark {
		t.Fatalf("SYN to the gateway's LAN address: %v %q", v, r)
	}
	cnt := e.Counters()
	if cnt[ReasonHairpinGREIn] != 2 || cnt[ReasonHairpinGREOut] != 1 || cnt[ReasonHairpinNotOurs] != 2 {
		t.Fatalf("hairpin counters: in %d out %d not ours %d, want 2, 1, 2", cnt[ReasonHairpinGREIn], cnt[ReasonHairpinGREOut], cnt[ReasonHairpinNotOurs])
	}
	// The call ends: its alias goes with it.
	send(true, (&wire.CCRQ{CallID: 77}).Append(nil), pkttest.TCPOpt{ACK: true})
	send(false, (&wire.CDN{CallID: 1, Result: 3}).Append(nil), pkttest.TCPOpt{ACK: true})
	e.hpMu.Lock()
	n := len(e.hp)
	e.hpMu.Unlock()
	if n != 0 || len(e.Calls()) != 0 {
		t.Fatalf("after the call ended: %d aliases, %d calls", n, len(e.Calls()))
	}
}

// hairpinStream returns a sender of the control stream between inside host
// h (port 41000) and pool member m (1723) after dstnat, both ways, queued
// from inside with the pick's mark; each segment must be accepted with
// valid checksums. It returns the segment's TCP payload as the engine left
// it. The first segment sent must be the host's SYN.
func hairpinStream(t *testing.T, e *Engine, h, m [4]byte, mark uint32) func(fromHost bool, pl []byte, o pkttest.TCPOpt) []byte {
	seq := map[bool]uint32{true: 10, false: 5000}
	return func(fromHost bool, pl []byte, o pkttest.TCPOpt) []byte {
		t.Helper()
		o.Seq = seq[fromHost]
		var b []byte
		if fromHost {
			b = pkttest.TCP(t, h, m, 41000, 1723, pl, o)
		} else {
			b = pkttest.TCP(t, m, h, 1723, 41000, pl, o)
		}
		seq[fromHost] += uint32(len(pl))
		if o.SYN {
			seq[fromHost]++
		}
		q := nfq.Packet{Payload: b, InDev: lanIf, Hook: nfq.HookPrerouting, Mark: mark}
		if v, r := checkedProcess(t, e, &q); v != pkt.Accept {
			t.Fatalf("hairpin segment: %v %q", v, r)
		}
		pkttest.CheckSums(t, b)
		return pkt.TCP(pkt.IPv4(b).Payload()).Payload()
	}
}
