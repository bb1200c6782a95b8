package conntrack

// Calls of a control connection: added when an inside call ID is mapped,
// established when the reply gives the peer's call ID, removed when cleared.

// AddCall tracks a new call of cn in state CallRequested (in setup until
// Establish): the inside host's call ID insideID is seen by the peer as
// outsideID. The caller (nat) owns outsideID's allocation; OnCallRemoved
// hands it back. It refuses a call beyond Limits.CallsPerConn
// (ErrConnLimit) or its source's Limits.CallsPerSource (ErrSourceLimit); in
// a full table it early-drops the oldest call waiting for its reply, and
// refuses (ErrTableFull) if there is none.
func (t *Table) AddCall(cn *Control, insideID, outsideID uint16) error {
	now := t.clk.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if cn.dead {
		return ErrConnGone
	}
	c := &Call{
		conn:          cn,
		InsideIP:      cn.Key.InsideIP,
		PublicIP:      cn.PublicIP,
		PeerIP:        cn.Key.PeerIP,
		InsideCallID:  insideID,
		OutsideCallID: outsideID,
		created:       t.nanos(now),
		lastSeen:      t.nanos(now),
	}
	if t.calls.Contains(c.inKey()) {
		return ErrCallExists
	}
	for _, x := range cn.calls {
		if x.InsideCallID == insideID {
			return ErrCallExists
		}
	}
	if len(cn.calls) >= t.lim.CallsPerConn {
		t.stats.CallsRefusedConn++
		return ErrConnLimit
	}
	if cn.src.calls >= t.lim.CallsPerSource {
		t.stats.CallsRefusedSource++
		return ErrSourceLimit
	}
	if t.calls.Len() >= t.maxCalls && !t.earlyDropCall() {
		t.stats.CallsRefusedFull++
		return ErrTableFull
	}
	cn.src.calls++
	cn.calls = append(cn.calls, c)
	t.setupCalls.push(c)
	t.calls.Add(c.inKey(), c)
	return nil
}

func (cn *Control) byInside(id uint16) *Call {
	for _, c := range cn.calls {
		if c.InsideCallID == id {
			return c
		}
	}
	return nil
}

func (cn *Control) byOutside(id uint16) *Call {
	for _, c := range cn.calls {
		if c.OutsideCallID == id {
			return c
		}
	}
	return nil
}

// OutsideOf returns the outside call ID of cn's call with inside ID id.
func (t *Table) OutsideOf(cn *Control, id uint16) (uint16, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := cn.byInside(id); c != nil {
		return c.OutsideCallID, true
	}
	return 0, false
}

// InsideOf returns the inside call ID of cn's call with outside ID id.
func (t *Table) InsideOf(cn *Control, id uint16) (uint16, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := cn.byOutside(id); c != nil {
		return c.InsideCallID, true
	}
	return 0, false
}

// Establish records the peer's call ID of cn's call insideID and installs
// the outbound GRE index: the call is set up and GRE may flow, and cn is
// established too (a call was set up on it). A different call holding the
// same outbound key (the peer reused its call ID before we saw the old
// call's clear) is removed.
func (t *Table) Establish(cn *Control, insideID, peerID uint16) error {
	now := t.clk.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	c := cn.byInside(insideID)
	if c == nil {
		return ErrNoCall
	}
	if c.state != CallRequested {
		if c.PeerCallID == peerID {
			return nil
		}
		if k := c.outKey(); t.out.getOut(k) == c {
			t.out.removeOut(k)
		}
	}
	c.PeerCallID = peerID
	k := c.outKey()
	if old := t.out.getOut(k); old != nil && old != c {
		t.removeCall(old, ReasonReplaced)
	}
	c.state = CallUnreplied
	c.seenIn, c.seenOut = false, false
	c.lastSeen = t.nanos(now)
	t.out.put(c)
	t.setupCalls.remove(c)
	t.establishControl(cn)
	t.calls.Get(c.inKey())
	if t.onUp != nil {
		t.onUp(c)
	}
	return nil
}

// RemoveCall removes cn's call with inside ID insideID.
func (t *Table) RemoveCall(cn *Control, insideID uint16, reason string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := cn.byInside(insideID)
	if c == nil {
		return false
	}
	t.removeCall(c, reason)
	return true
}
