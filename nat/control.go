package nat

import (
	"net/netip"
	"time"

	"pptpgw/conntrack"
	"pptpgw/helper"
	"pptpgw/internal/pkt"
	"pptpgw/nat/nfq"
	"pptpgw/pptp/wire"
)

// control is the engine's state of one tracked control connection: the
// table's record and the ALG's translator (kept in conntrack.Control.Data).
type control struct {
	tc *conntrack.Control
	tr *helper.Translator
}

// heldSegment is a control segment the translator is holding: an owned copy
// of the whole IPv4 packet, released (patched) by a later segment or let go
// by Tick.
type heldSegment struct {
	queue    uint16 // several queues (issue 12): its verdict goes back there
	id       uint32
	buf      []byte
	tcpOff   int
	c        *control
	dir      helper.Dir
	deadline time.Time
}

// MaxHeldBytes bounds the copies of held segments, all connections
// together. A hold is rare (a call-ID field split between two segments) and
// short (timeouts.hold), so legitimate traffic stays far below it; beyond
// it a segment to be held is given up at once, as Tick gives up one whose
// hold expired (counted as ctl_hold_full), so that a flood of split fields
// cannot hold up to 2 x 64 KB per tracked connection.
const MaxHeldBytes = 4 << 20

// release is a verdict for a held segment, delivered after ctlMu is
// released.
type release struct {
	queue uint16
	id    uint32
	data  []byte
	v     pkt.Verdict
}

// processTCP handles TCP: segments of PPTP control connections (port 1723
// on the peer's side, or on the inside for forwards and the gateway's own
// server) go through their translator; other TCP is accepted untouched.
func (e *Engine) processTCP(p *nfq.Packet, pp *pkt.Parsed, out, known bool) (pkt.Verdict, string) {
	if pp.Fragment {
		return e.malformed(rTCPFragment)
	}
	if pp.Err != "" {
		return e.malformed(rTCPMalformed)
	}
	if v, r, ok := e.poolSYN(p, pp); ok { // pool (issue 11): a pool's opening SYN, before dstnat
		return v, r
	}
	sp, dp := pp.SrcPort, pp.DstPort
	if sp != wire.ControlPort && dp != wire.ControlPort {
		return e.count(pkt.Accept, rNotPPTP)
	}
	if !known {
		return e.count(pkt.Accept, rUnknownIface)
	}
	out, hv, hr, done := e.hairpinTCP(p, pp, out) // pool (issue 11): from inside, hairpin.go
	if done {
		return hv, hr
	}
	if out {
		e.counters.Inc(int(rCtlSegOut))
	} else {
		e.counters.Inc(int(rCtlSegIn))
	}
	k := conntrack.ControlKey{InsideIP: pp.Src, PeerIP: pp.Dst, InsidePort: sp, PeerPort: dp}
	if !out {
		k = conntrack.ControlKey{InsideIP: pp.Dst, PeerIP: pp.Src, InsidePort: dp, PeerPort: sp}
	}
	fl := pp.TCPFlags
	syn, fin, rst := fl&pkt.TCPFlagSyn != 0, fl&pkt.TCPFlagFin != 0, fl&pkt.TCPFlagRst != 0
	opening := syn && fl&pkt.TCPFlagAck == 0
	payload := pp.Payload(p.Payload)
	dir := helper.Inbound
	if out {
		dir = helper.Outbound
	}

	e.ctlMu.Lock()
	c, v, r := e.controlFor(k, out, opening, len(payload), controlDev(p, out))
	if c == nil {
		e.ctlMu.Unlock()
		return v, r
	}
	var rel []release
	if len(payload) == 0 {
		res := c.tr.Process(dir, pp.TCPSeq, syn, fin, rst, nil)
		rel = e.released(c, dir, res, rel)
		v, r = e.translatorVerdict(res, r)
		e.ctlMu.Unlock()
		e.release(rel)
		return v, r
	}
	// The translator may hold on to the payload, so it gets an owned copy.
	// Control segments are rare (a handful per call): one allocation each.
	buf := append([]byte(nil), p.Payload[:pp.TotalLen]...)
	pl := buf[pp.PayloadOff:]
	res := c.tr.Process(dir, pp.TCPSeq, syn, fin, rst, pl)
	rel = e.released(c, dir, res, rel)
	switch res.Verdict {
	case pkt.Hold:
		// The translator may already have rewritten earlier call IDs of
		// this segment (res.Patches, in buf): the held copy's checksum
		// covers them now, and the rest when it is released.
		patchChecksum(pkt.TCP(buf[pp.IPLen:]), res.Patches)
		if e.heldBytes+len(buf) > e.maxHeld {
			// Over the budget: give up at once, as Tick does at the
			// deadline (lenient: sent as it is, with the rewrites
			// already made; strict: dropped, and TCP resends it).
			c.tr.ExpireHeld()
			if e.conf().set.Strict {
				v, r = e.count(pkt.Drop, rCtlHoldFull)
				break
			}
			copy(p.Payload, buf)
			p.Modified = len(res.Patches) > 0
			v, r = e.count(pkt.Accept, rCtlHoldFull)
			break
		}
		e.heldBytes += len(buf)
		e.holds = append(e.holds, &heldSegment{
			queue: p.Queue, id: p.ID, buf: buf, tcpOff: pp.IPLen, c: c, dir: dir, deadline: e.clk.Now().Add(e.conf().set.Timeouts.Hold)})
		v, r = e.count(pkt.Hold, rCtlHeld)
	case pkt.Accept:
		if len(res.Patches) > 0 {
			// The translator rewrote its copy (pl); the queued packet
			// gets the same bytes and the checksum update.
			for _, pt := range res.Patches {
				if pt.Off >= 0 && pt.Off < len(payload) { // never write outside the payload
					payload[pt.Off] = pt.New
				}
			}
			patchChecksum(pkt.TCP(p.Payload[pp.IPLen:pp.TotalLen]), res.Patches)
			p.Modified = true
		}
		v, r = e.translatorVerdict(res, r)
	default:
		v, r = e.translatorVerdict(res, r)
	}
	e.ctlMu.Unlock()
	e.release(rel)
	return v, r
}

// patchChecksum updates seg's TCP checksum for rewritten payload bytes
// (RFC 1624, byte by byte: a patch's offset is from the start of the
// payload, which starts at an even offset of the checksummed data because
// the TCP header is a whole number of 32-bit words).
// Patches outside the payload (a translator bug) are skipped here as they
// are when the bytes are written.
func patchChecksum(seg pkt.TCP, patches []helper.Patch) {
	if len(patches) == 0 {
		return
	}
	n := len(seg.Payload())
	cs := seg.Checksum()
	for _, pt := range patches {
		if pt.Off >= 0 && pt.Off < n {
			cs = pkt.UpdateByte(cs, pt.Off, pt.Old, pt.New)
		}
	}
	seg.SetChecksum(cs)
}

// controlFor finds or creates the control connection of key k. With a nil
// control it returns the final verdict for a segment that is not tracked.
// ctlMu is held.
func (e *Engine) controlFor(k conntrack.ControlKey, out, opening bool, dataLen int, dev uint32) (*control, pkt.Verdict, string) {
	clientInside := k.PeerPort == wire.ControlPort // the inside party is the PPTP client
	forwarded := e.forwardPort(k.InsideIP) != 0    // a forward's server or a pool member (pool.go)
	serverInside := !clientInside && (forwarded || e.isPublic(k.InsideIP))
	// The direction in which this connection is opened by a SYN.
	creator := (clientInside && out) || (serverInside && !out)
	tc, ok := e.table.LookupControl(k)
	if ok && !(opening && creator) {
		if c, _ := tc.Data.(*control); c != nil {
			return c, 0, ""
		}
	}
	if !clientInside && !serverInside {
		v, r := e.count(pkt.Accept, rCtlUntracked)
		return nil, v, r
	}
	var r reason
	switch {
	case opening && creator:
		r = rCtlNew // a new connection (replaces a stale one with the same tuple)
	case dataLen == 0:
		// Pure ACK/FIN/RST of an untracked connection: nothing to rewrite.
		v, r := e.count(pkt.Accept, rCtlEmpty)
		return nil, v, r
	case !e.conf().set.Strict:
		r = rCtlPickup
	default:
		v, r := e.count(pkt.Drop, rCtlNoConn)
		return nil, v, r
	}
	tc, err := e.table.AddControl(k, e.publicFor(dev), serverInside)
	if err != nil {
		// A full table (of established state) or a source at its limit:
		// the segment is dropped, as the kernel drops a packet whose
		// conntrack entry it cannot create; TCP resends it. The table
		// counts the refusal by reason.
		e.eventRefused("control", k, e.pub, 0, err)
		v, r := e.count(pkt.Drop, rCtlRefused)
		return nil, v, r
	}
	e.counters.Inc(int(r))
	e.poolTracked(tc) // pool (issue 11)
	e.pinControl(tc)  // issue 10
	c := &control{tc: tc}
	c.tr = helper.NewTranslator(&mapper{e: e, c: c}, helper.Config{Strict: e.conf().set.Strict})
	tc.Data = c
	e.eventControlNew(k, e.pub, r)
	e.log.Debug("pptp control connection tracked", "inside", addrPort(k.InsideIP, k.InsidePort),
		"peer", addrPort(k.PeerIP, k.PeerPort), "how", r.String())
	return c, 0, r.String()
}

func addrPort(a [4]byte, p uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4(a), p)
}

// translatorVerdict maps a translator result to the engine's verdict and
// reason, counting the translator's reason. created is the reason of a
// connection created by this segment, if any.
func (e *Engine) translatorVerdict(res helper.Result, created string) (pkt.Verdict, string) {
	v := pkt.Accept
	if res.Verdict == pkt.Drop {
		v = pkt.Drop
	}
	if res.Reason != helper.ReasonNone {
		e.counters.Inc(helperReason(res.Reason))
		if v == pkt.Drop {
			e.drops.Inc(helperReason(res.Reason))
		}
		if v == pkt.Drop || created == "" {
			return v, res.Reason.String()
		}
	}
	if created != "" {
		return v, created
	}
	return e.count(v, rCtl)
}

// released handles res.Released: the held segment of c in direction dir is
// complete and patched; fix its TCP checksum and queue its release.
func (e *Engine) released(c *control, dir helper.Dir, res helper.Result, rel []release) []release {
	if !res.Released {
		return rel
	}
	idx := -1
	for i, h := range e.holds {
		if h.c == c && h.dir == dir {
			idx = i
			break
		}
	}
	if idx < 0 {
		return rel
	}
	h := e.holds[idx]
	e.holds = append(e.holds[:idx], e.holds[idx+1:]...)
	e.heldBytes -= len(h.buf)
	patchChecksum(pkt.TCP(h.buf[h.tcpOff:]), res.ReleasedPatches)
	e.counters.Inc(int(rCtlReleased))
	return append(rel, release{h.queue, h.id, h.buf, pkt.Accept})
}

// release delivers verdicts of held segments (ctlMu not held).
func (e *Engine) release(rel []release) {
	if len(rel) == 0 {
		return
	}
	f := e.releaser.Load()
	for _, r := range rel {
		if f != nil {
			(*f)(r.queue, r.id, r.data, r.v)
		}
	}
}

// mapper implements helper.Mapper for one control connection on top of the
// allocator and the table. It runs with the engine's ctlMu held.
type mapper struct {
	e *Engine
	c *control
}

func (m *mapper) AllocOutside(insideID uint16) (uint16, error) {
	t, tc := m.e.table, m.c.tc
	if o, ok := t.OutsideOf(tc, insideID); ok {
		return o, nil // a retransmitted request
	}
	pk := PoolKey{tc.PublicIP, tc.Key.PeerIP}
	id, err := m.e.alloc.Alloc(pk)
	if err != nil {
		m.e.eventRefused("call", tc.Key, tc.PublicIP, insideID, err)
		m.e.counters.Inc(int(rCallIDsOut))
		return 0, err
	}
	if err := t.AddCall(tc, insideID, id); err != nil {
		// Refused (a limit, a full table) or a duplicate: the ID never
		// reached anyone, so it is free again at once.
		m.e.alloc.ReleaseUnused(pk, id)
		m.e.eventRefused("call", tc.Key, tc.PublicIP, insideID, err)
		return 0, err
	}
	m.e.setupCall(tc, insideID) // shaping (issue 9): policing.go
	m.e.counters.Inc(int(rCallsMapped))
	m.e.poolCallAdded(tc) // pool (issue 11)
	return id, nil
}

func (m *mapper) OutsideOf(insideID uint16) (uint16, bool) {
	return m.e.table.OutsideOf(m.c.tc, insideID)
}

func (m *mapper) InsideOf(outsideID uint16) (uint16, bool) {
	return m.e.table.InsideOf(m.c.tc, outsideID)
}

func (m *mapper) Event(ev helper.Event) {
	t, tc := m.e.table, m.c.tc
	switch ev.Kind {
	case helper.CallEstablished:
		if err := t.Establish(tc, ev.InsideID, ev.PeerID); err != nil {
			m.e.counters.Inc(int(rEstablishNoCall))
			return
		}
		m.e.counters.Inc(int(rCallsEstablished))
		m.e.eventCallSetup(tc, ev.InsideID, ev.OutsideID, ev.PeerID)
		m.e.hairpinEstablished(tc, ev.PeerID) // pool (issue 11)
		m.e.log.Debug("pptp call established", "inside", netip.AddrFrom4(tc.Key.InsideIP),
			"inside_call_id", ev.InsideID, "outside_call_id", ev.OutsideID, "peer_call_id", ev.PeerID)
	case helper.CallFailed, helper.CallCleared:
		t.RemoveCall(tc, ev.InsideID, conntrack.ReasonCleared)
	case helper.ControlEstablished:
		t.EstablishControl(tc)
	case helper.ControlStopped:
		t.StopControl(tc)
	case helper.EchoSeen:
		t.RefreshCalls(tc)
	}
}
