package nat

import (
	"encoding/binary"
	"net/netip"

	"pptpgw/conntrack"
	"pptpgw/internal/fwmark"
	"pptpgw/internal/pkt"
	"pptpgw/nat/nfq"
	"pptpgw/pptp/wire"
)

// Hairpin (NAT loopback, issue 11): a LAN host C calls the public address P
// on a pool's port and reaches a member M. The way of its packets:
//
//  1. C's opening SYN to P is queued before dstnat (pool_prerouting);
//     poolSYN picks a member by source hash (so that one host's calls all
//     meet one member, whose call IDs are unique: see 4) and sets the
//     member's bits and fwmark.Hairpin in the mark. The kernel DNATs it to
//     M and SNATs it to P (`snat to ct original ip daddr`), so M answers
//     through the gateway whatever subnet C is on.
//  2. The control stream is queued after dstnat from inside
//     (pool_hairpin): C->M and M->C (conntrack has undone the SNAT). The
//     engine tracks it as C's outbound connection to M with the public
//     address P (hairpinTCP sets the direction): C's call IDs become IDs
//     unique on (P, M), M's call IDs reach C unchanged.
//  3. M's GRE goes to P (its peer) with the outside ID as key: queued in
//     prerouting (pool_hairpin), it is translated like GRE from the WAN
//     (Table.Inbound: destination C, key C's ID) and marked Hairpin; after
//     routing (pool_hairpin_post) its source M becomes P.
//  4. C's GRE goes to P with M's call ID as key: the alias hp[(C, M's ID)]
//     gives M, the destination becomes M and the packet is marked Hairpin;
//     after routing it is C's outbound GRE to M (Table.Outbound), whose
//     source becomes P.
//
// GRE from inside to the gateway's own addresses that is no hairpin call's
// (the router's own PPTP server) is accepted untouched.

// hpKey is C's view of a hairpin call: its address and the member's call ID.
type hpKey struct {
	client [4]byte
	id     uint16
}

// Reasons of the hairpin path, each counted in pool_hairpin_total{what}.
const (
	ReasonHairpinNotOurs = "pool_hairpin_not_ours"   // queued from inside, not a hairpin's: untouched
	ReasonHairpinGREIn   = "pool_hairpin_gre_member" // a member's GRE to its host (either pass)
	ReasonHairpinGREOut  = "pool_hairpin_gre_client" // a host's GRE to its member (before routing)
)

// hairpin counter indexes (Engine.hpCount).
const (
	hpNotOurs = iota
	hpGREIn
	hpGREOut
	numHP
)

var hpReasons = [numHP]string{hpNotOurs: ReasonHairpinNotOurs, hpGREIn: ReasonHairpinGREIn, hpGREOut: ReasonHairpinGREOut}

// hpCountOf counts reason r of the hairpin path and returns it.
func (e *Engine) hpCountOf(i int) string {
	e.hpCount[i].Add(1)
	return hpReasons[i]
}

// fromInside reports whether p was queued in prerouting from an inside
// interface: only the pool's hairpin rules queue such packets.
func (e *Engine) fromInside(p *nfq.Packet) bool {
	return len(e.ps().pools) > 0 && p.Hook == nfq.HookPrerouting && p.InDev != e.wan.Load() && !e.isUplinkIf(p.InDev)
}

// hairpinTCP decides about TCP queued from inside (after poolSYN): the
// control stream of a hairpin connection goes on through processTCP with
// its direction (out: from C); anything else is accepted untouched.
func (e *Engine) hairpinTCP(p *nfq.Packet, pp *pkt.Parsed, out bool) (bool, pkt.Verdict, string, bool) {
	if !e.fromInside(p) {
		return out, 0, "", false
	}
	switch {
	case pp.DstPort == wire.ControlPort && e.ps().members[pp.Dst] != nil:
		return true, 0, "", false
	case pp.SrcPort == wire.ControlPort && e.ps().members[pp.Src] != nil:
		return false, 0, "", false
	}
	return out, pkt.Accept, e.hpCountOf(hpNotOurs), true
}

// isHairpin reports whether tc is a hairpin connection: an inside client's
// connection to a pool member.
func (e *Engine) isHairpin(tc *conntrack.Control) bool {
	return !tc.Forward && e.ps().members[tc.Key.PeerIP] != nil
}

// hairpinEstablished records a hairpin call's alias (step 4) once the
// member's reply gave its call ID (mapper.Event; ctlMu held).
func (e *Engine) hairpinEstablished(tc *conntrack.Control, peerID uint16) {
	if !e.isHairpin(tc) {
		return
	}
	k := hpKey{tc.Key.InsideIP, peerID}
	e.hpMu.Lock()
	prev, clash := e.hp[k]
	e.hp[k] = tc.Key.PeerIP
	e.hpMu.Unlock()
	if clash && prev != tc.Key.PeerIP {
		e.log.Warn("pool hairpin: two members gave one inside host the same call ID; the later call takes its GRE",
			"host", netip.AddrFrom4(k.client), "call_id", peerID, "earlier_member", netip.AddrFrom4(prev),
			"member", netip.AddrFrom4(tc.Key.PeerIP))
	}
}

// hairpinCallRemoved drops the alias of a hairpin call (OnCallRemoved,
// Table.mu held).
func (e *Engine) hairpinCallRemoved(c *conntrack.Call) {
	if c.Forward() || e.ps().members[c.PeerIP] == nil {
		return
	}
	k := hpKey{c.InsideIP, c.PeerCallID}
	e.hpMu.Lock()
	if e.hp[k] == c.PeerIP {
		delete(e.hp, k)
	}
	e.hpMu.Unlock()
}

// hairpinGRE handles GRE of hairpin calls (steps 3 and 4). ok is false for
// GRE that takes the normal path.
func (e *Engine) hairpinGRE(p *nfq.Packet, pp *pkt.Parsed) (pkt.Verdict, string, bool) {
	if len(e.ps().pools) == 0 {
		return 0, "", false
	}
	g := pp.Payload(p.Payload)
	if pp.Fragment || len(g) < wire.GREKeyCallIDOffset+2 {
		return 0, "", false // the normal path drops and counts it
	}
	ip := pp.IPv4(p.Payload)
	key := binary.BigEndian.Uint16(g[wire.GREKeyCallIDOffset:])
	if p.Hook == nfq.HookPostrouting && p.Mark&fwmark.Hairpin != 0 && e.ps().members[pp.Src] != nil {
		// Step 3, after routing: the member's GRE leaves from P.
		ip.SetSourceAddressWithChecksumUpdate(e.pubAddr().As4())
		p.Modified = true
		return pkt.Accept, e.hpCountOf(hpGREIn), true
	}
	if !e.fromInside(p) {
		return 0, "", false
	}
	if _, _, err := wire.ParseGRE(g); err != nil {
		return pkt.Accept, e.hpCountOf(hpNotOurs), true // to the gateway itself: not ours
	}
	if e.ps().members[pp.Src] != nil {
		// Step 3, before routing: to C, with C's own call ID.
		inside, insideID, ok := e.table.Inbound(conntrack.InKey{PublicIP: pp.Dst, PeerIP: pp.Src, OutsideCallID: key}, pp.TotalLen)
		if !ok {
			return pkt.Accept, e.hpCountOf(hpNotOurs), true
		}
		ip.SetDestinationAddressWithChecksumUpdate(inside)
		binary.BigEndian.PutUint16(g[wire.GREKeyCallIDOffset:], insideID)
		e.hairpinMark(p)
		return pkt.Accept, e.hpCountOf(hpGREIn), true
	}
	// Step 4, before routing: C's GRE to the member.
	e.hpMu.Lock()
	m, ok := e.hp[hpKey{pp.Src, key}]
	e.hpMu.Unlock()
	if !ok || pp.Dst != e.pubAddr().As4() {
		return pkt.Accept, e.hpCountOf(hpNotOurs), true
	}
	ip.SetDestinationAddressWithChecksumUpdate(m)
	e.hairpinMark(p)
	return pkt.Accept, e.hpCountOf(hpGREOut), true
}

func (e *Engine) hairpinMark(p *nfq.Packet) {
	p.Modified = true
	p.SetMarkBits(fwmark.Hairpin, fwmark.Hairpin)
}

// pubAddr is the public address for the GRE path, without ctlMu (the
// zero address if none).
func (e *Engine) pubAddr() netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], e.pubHP.Load())
	return netip.AddrFrom4(b)
}

// setPubHP keeps pubAddr's copy of the public address (NewEngine,
// SetPublicIP).
func (e *Engine) setPubHP(a [4]byte) { e.pubHP.Store(binary.BigEndian.Uint32(a[:])) }
