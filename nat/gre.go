package nat

import (
	"encoding/binary"

	"pptpgw/conntrack"
	"pptpgw/internal/pkt"
	"pptpgw/nat/nfq"
	"pptpgw/pptp/wire"
)

// processGRE translates GRE: outbound, it looks the call up by (src, dst,
// key = the peer's call ID) and rewrites the source to the public address;
// inbound, by (dst = public, src = peer, key = the outside call ID), and
// rewrites the destination to the inside host and the key to its own call
// ID. The IP checksum is patched incrementally (RFC 1624); enhanced GRE
// carries no checksum of its own (wire.ParseGRE rejects C=1).
//
// IPv4 fragments of GRE are dropped (counted as gre_fragment). The gateway's
// GRE rules sit at priority -50, after nf_defrag_ipv4 (-400), which the
// kernel's own conntrack/NAT for the other traffic keeps loaded, so GRE
// reaches us reassembled; only the first fragment would carry the key and
// translating it while dropping the rest would only waste bandwidth.
func (e *Engine) processGRE(p *nfq.Packet, pp *pkt.Parsed, out bool) (pkt.Verdict, string) {
	if v, r, ok := e.hairpinGRE(p, pp); ok { // pool (issue 11): hairpin.go
		return v, r
	}
	if pp.Fragment {
		return e.count(pkt.Drop, rGREFragment)
	}
	g := pp.Payload(p.Payload)
	if _, _, err := wire.ParseGRE(g); err != nil {
		return e.count(pkt.Drop, rGREMalformed)
	}
	ip := pp.IPv4(p.Payload)
	key := binary.BigEndian.Uint16(g[wire.GREKeyCallIDOffset:])
	if out {
		pub, q, ok := e.table.OutboundQoS(conntrack.OutKey{
			InsideIP: pp.Src, PeerIP: pp.Dst, PeerCallID: key}, pp.TotalLen)
		if !ok {
			return e.count(pkt.Drop, rGRENoCall)
		}
		if p.Hook == nfq.HookPostrouting && e.greWrongUplink(pub, p.OutDev) { // issue 10
			return e.count(pkt.Drop, rGREWrongUplink)
		}
		if !e.greQoS(p, q) { // shaping (issue 9): policing.go
			return e.count(pkt.Drop, rGREPoliced)
		}
		ip.SetSourceAddressWithChecksumUpdate(pub)
		p.Modified = true
		e.counters.Add(int(rGREBytesOut), uint64(pp.TotalLen))
		return e.count(pkt.Accept, rGREOut)
	}
	if e.greWrongUplink(pp.Dst, p.InDev) { // issue 10
		return e.count(pkt.Drop, rGREWrongUplink)
	}
	inside, insideID, q, ok := e.table.InboundQoS(conntrack.InKey{
		PublicIP: pp.Dst, PeerIP: pp.Src, OutsideCallID: key}, pp.TotalLen)
	if !ok {
		return e.count(pkt.Drop, rGRENoCall)
	}
	if !e.greQoS(p, q) { // shaping (issue 9): policing.go
		return e.count(pkt.Drop, rGREPoliced)
	}
	ip.SetDestinationAddressWithChecksumUpdate(inside)
	binary.BigEndian.PutUint16(g[wire.GREKeyCallIDOffset:], insideID)
	p.Modified = true
	e.counters.Add(int(rGREBytesIn), uint64(pp.TotalLen))
	return e.count(pkt.Accept, rGREIn)
}
