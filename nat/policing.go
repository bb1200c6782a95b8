package nat

import (
	"net/netip"

	"pptpgw/conntrack"
	"pptpgw/internal/fwmark"
	"pptpgw/internal/pkt"
	"pptpgw/nat/nfq"
	"pptpgw/qos"
	"pptpgw/qos/police"
)

// Shaping (issue 9): the classes of PPTP traffic and per-call policing.
//
// A call's class is decided once, when the call is mapped (AllocOutside),
// from the alternatives of `classes:` that name `pptp: gre|true` or an
// `inside` host, and kept on the call in the table with the call's
// policers. Every GRE packet of the call then gets, in the same table
// lookup that translates it (conntrack.Table.OutboundQoS/InboundQoS), its
// class and its policing verdict: over the rate it is dropped
// (gre_policed, and the call's policed_out/policed_in), otherwise the
// verdict carries the class in the mark's class bits (fwmark) and
// skb->priority (the HTB class id), without allocating. Control segments
// are classed per segment from `pptp: control|true` and `inside`: they are
// few.

// QoSConfig is the engine's part of the shaping configuration.
type QoSConfig struct {
	Classes []qos.Class
	// CallLimit polices each call's GRE, each direction (zero: none).
	CallLimit police.Limit
}

// engineQoS is QoSConfig compiled for the engine.
type engineQoS struct {
	names     []string
	gre, ctl  []classAlt // alternatives that class calls' GRE, control connections
	callLimit police.Limit
}

// classAlt is one alternative naming PPTP traffic: any host (inside
// invalid) or one inside host.
type classAlt struct {
	class  int
	inside netip.Addr
}

func newEngineQoS(c QoSConfig) engineQoS {
	q := engineQoS{callLimit: c.CallLimit}
	for i, cl := range c.Classes {
		q.names = append(q.names, cl.Name)
		for _, m := range cl.Match {
			if m.Kernel() {
				continue
			}
			a := classAlt{class: i, inside: m.InsideAddr()}
			switch m.PPTP {
			case qos.PPTPGRE:
				q.gre = append(q.gre, a)
			case qos.PPTPControl:
				q.ctl = append(q.ctl, a)
			default: // true, or only `inside`: both
				q.gre = append(q.gre, a)
				q.ctl = append(q.ctl, a)
			}
		}
	}
	return q
}

// classOf returns the first class among alts for inside host h, or -1.
func classOf(alts []classAlt, h [4]byte) int {
	for _, a := range alts {
		if !a.inside.IsValid() || a.inside.As4() == h {
			return a.class
		}
	}
	return -1
}

// className is the name of class i ("" for none).
func (q *engineQoS) className(i int) string {
	if i < 0 || i >= len(q.names) {
		return ""
	}
	return q.names[i]
}

// setupCall gives a newly mapped call its class and policer.
func (e *Engine) setupCall(tc *conntrack.Control, insideID uint16) {
	q := e.qos.Load()
	if len(q.gre) == 0 && !q.callLimit.Enabled() {
		return
	}
	e.table.SetCallQoS(tc, insideID, classOf(q.gre, tc.Key.InsideIP), q.callLimit)
}

// setClass puts class i (if any) in p's verdict: the class bits of the
// mark (the rest of the mark kept) and skb->priority.
func setClass(p *nfq.Packet, i int) {
	if i < 0 {
		return
	}
	p.SetMarkBits(fwmark.ClassMask, fwmark.Class(i))
	p.Set.Priority = qos.ClassID(i)
	p.Set.SetPriority = true
}

// classControl classes an accepted control segment of inside host h.
func (e *Engine) classControl(p *nfq.Packet, v pkt.Verdict, h [4]byte) {
	if q := e.qos.Load(); v == pkt.Accept && len(q.ctl) > 0 {
		setClass(p, classOf(q.ctl, h))
	}
}

// greQoS applies a GRE packet's policing verdict and class: it returns
// false if the packet must be dropped.
func (e *Engine) greQoS(p *nfq.Packet, q conntrack.GREQoS) bool {
	if q.Policed {
		return false
	}
	setClass(p, q.Class)
	return true
}

// insideOf is the inside party's address of a control segment.
func insideOf(pp *pkt.Parsed, out bool) [4]byte {
	if out {
		return pp.Src
	}
	return pp.Dst
}

// setQoS installs the classes and the per-call policer of c: at NewEngine
// and at every Reconfigure. Calls set up before keep their class; a new
// rate or burst of the per-call policer applies to the calls policed at the
// old one too (Table.RerateCalls: the kernel fast path re-rates its policed
// calls with the reload's table), while calls keep their policer if
// policing is turned off. New calls and control segments follow c.
func (e *Engine) setQoS(c QoSConfig) {
	q := newEngineQoS(c)
	old := e.qos.Swap(&q)
	if old != nil && q.callLimit.Enabled() {
		e.table.RerateCalls(old.callLimit, q.callLimit)
	}
}
