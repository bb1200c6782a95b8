package conntrack

import "pptpgw/qos/police"

// Shaping (issue 9): a call's class and its GRE policers, kept on the call
// under the table's lock and applied by OutboundQoS/InboundQoS, which
// account the packet as Outbound/Inbound do.

// GREQoS is what shaping and policing say about one GRE packet of a call.
type GREQoS struct {
	// Class is the call's class (index in `classes:`), -1 if none.
	Class int
	// Policed: the packet is over the call's rate in its direction; the
	// engine drops it (it is accounted and counted as policed).
	Policed bool
}

// callQoS is the policing state of a call (its class is Call.class).
// Memory (issue 12): the policer (40 bytes) is allocated for the calls that
// get one; most calls have none.
type callQoS struct {
	pol *callPolicer // nil: never policed
}

// callPolicer is a call's GRE policer and what it dropped.
type callPolicer struct {
	limit   police.Limit
	bucket  [2]police.Bucket // 0 out, 1 in
	policed [2]uint64
}

// policedCount is what c's policer dropped in direction dir.
func (q *callQoS) policedCount(dir int) uint64 {
	if q.pol == nil {
		return 0
	}
	return q.pol.policed[dir]
}

// policing reports whether the call has a policer that polices.
func (q *callQoS) policing() bool { return q.pol != nil && q.pol.limit.Enabled() }

const (
	dirOut = 0
	dirIn  = 1
)

// admit classes and polices one packet of n bytes of c (t.mu held).
func (c *Call) admit(now int64, n, dir int) GREQoS {
	q := GREQoS{Class: int(c.class) - 1}
	if p := c.qos.pol; p != nil && p.limit.Enabled() && !p.bucket[dir].Allow(p.limit, now-c.created, n) {
		p.policed[dir]++
		q.Policed = true
	}
	return q
}

// SetCallQoS gives cn's call insideID its class (index in `classes:`, -1
// for none) and its policer (the zero Limit: none). It reports whether the
// call was found.
func (t *Table) SetCallQoS(cn *Control, insideID uint16, class int, l police.Limit) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := cn.byInside(insideID)
	if c == nil {
		return false
	}
	c.class = int16(max(class, -1) + 1)
	if c.qos.pol == nil && l.Enabled() {
		c.qos.pol = &callPolicer{}
	}
	if c.qos.pol != nil {
		c.qos.pol.limit = l // a policer turned off keeps what it counted
	}
	return true
}

// Outbound accounts an outbound GRE packet of n bytes and returns the public
// address to translate it to; ok is false if no established call matches.
// It ignores the call's class and policer (OutboundQoS).
func (t *Table) Outbound(k OutKey, n int) (publicIP [4]byte, ok bool) {
	publicIP, _, ok = t.OutboundQoS(k, n)
	return publicIP, ok
}

// Inbound accounts an inbound GRE packet of n bytes and returns the inside
// address and call ID to deliver it to. Calls not yet set up do not match.
// It ignores the call's class and policer (InboundQoS).
func (t *Table) Inbound(k InKey, n int) (insideIP [4]byte, insideID uint16, ok bool) {
	insideIP, insideID, _, ok = t.InboundQoS(k, n)
	return insideIP, insideID, ok
}
