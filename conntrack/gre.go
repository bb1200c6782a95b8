package conntrack

// The GRE fast path: called for every GRE packet, one lock, no allocation,
// expiry checked during the lookup.

// OutboundQoS accounts an outbound GRE packet of n bytes and returns the public
// address to use as its source.
// With it come the call's class and policing verdict (qos.go).
func (t *Table) OutboundQoS(k OutKey, n int) (publicIP [4]byte, q GREQoS, ok bool) {
	now := t.clk.Now()
	t.mu.Lock()
	c := t.out.getOut(k)
	if c == nil {
		t.mu.Unlock()
		return publicIP, q, false
	}
	if t.callExpired(c, now) {
		t.stats.CallsExpired++
		t.removeCall(c, ReasonExpired)
		t.mu.Unlock()
		return publicIP, q, false
	}
	t.calls.Get(c.inKey())
	c.lastSeen = t.nanos(now)
	c.conn.lastSeen = now // a live call keeps its control connection alive
	c.pktsOut++
	c.bytesOut += uint64(n)
	c.seenOut = true
	if c.seenIn {
		c.state = CallReplied
	}
	publicIP = c.PublicIP
	q = c.admit(t.nanos(now), n, dirOut)
	t.mu.Unlock()
	return publicIP, q, true
}

// InboundQoS accounts an inbound GRE packet of n bytes and returns the inside
// address and call ID to deliver it to. Calls not yet set up do not match.
// With it come the call's class and policing verdict (qos.go).
func (t *Table) InboundQoS(k InKey, n int) (insideIP [4]byte, insideID uint16, q GREQoS, ok bool) {
	now := t.clk.Now()
	t.mu.Lock()
	c, found := t.calls.Get(k)
	if !found || c.state == CallRequested {
		t.mu.Unlock()
		return insideIP, 0, q, false
	}
	if t.callExpired(c, now) {
		t.stats.CallsExpired++
		t.removeCall(c, ReasonExpired)
		t.mu.Unlock()
		return insideIP, 0, q, false
	}
	c.lastSeen = t.nanos(now)
	c.conn.lastSeen = now
	c.pktsIn++
	c.bytesIn += uint64(n)
	c.seenIn = true
	if c.seenOut {
		c.state = CallReplied
	}
	insideIP, insideID = c.InsideIP, c.InsideCallID
	q = c.admit(t.nanos(now), n, dirIn)
	t.mu.Unlock()
	return insideIP, insideID, q, true
}
