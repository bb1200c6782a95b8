package conntrack

import "time"

// Sweep removes every idle-expired call and control connection and returns
// how many calls and connections it removed.
func (t *Table) Sweep() (calls, conns int) {
	now := t.clk.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.calls.Values() {
		if t.callExpired(c, now) {
			t.stats.CallsExpired++
			t.removeCall(c, ReasonExpired)
			calls++
		}
	}
	for _, cn := range t.conns.Values() {
		if t.connExpired(cn, now) {
			t.stats.ConnsExpired++
			n := len(cn.calls)
			t.removeConn(cn, ReasonExpired)
			calls += n
			conns++
		}
	}
	return calls, conns
}

// Purge removes everything.
func (t *Table) Purge() {
	t.mu.Lock()
	defer t.mu.Unlock()
	saved := t.reason
	t.reason = ReasonPurged
	t.calls.Purge()
	t.conns.Purge()
	t.reason = saved
}

// CallSnapshot is a copy of a call's state.
type CallSnapshot struct {
	InsideIP, PublicIP, PeerIP              [4]byte
	InsidePort, PeerPort                    uint16
	InsideCallID, OutsideCallID, PeerCallID uint16
	Forward                                 bool
	State                                   CallState
	Created                                 time.Time
	Idle                                    time.Duration
	PktsOut, PktsIn, BytesOut, BytesIn      uint64

	// Shaping (issue 9): the call's class (-1: none) and its GRE packets
	// dropped by its policer, out and in.
	Class                 int
	PolicedOut, PolicedIn uint64
}

// Snapshot copies every call, most recently used first.
func (t *Table) Snapshot() []CallSnapshot {
	now := t.clk.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	vals := t.calls.Values() // oldest first
	out := make([]CallSnapshot, 0, len(vals))
	for i := len(vals) - 1; i >= 0; i-- {
		c := vals[i]
		s := CallSnapshot{
			InsideIP: c.InsideIP, PublicIP: c.PublicIP, PeerIP: c.PeerIP,
			InsideCallID: c.InsideCallID, OutsideCallID: c.OutsideCallID, PeerCallID: c.PeerCallID,
			State: c.state, Created: t.at(c.created), Idle: time.Duration(t.nanos(now) - c.lastSeen),
			PktsOut: c.pktsOut, PktsIn: c.pktsIn, BytesOut: c.bytesOut, BytesIn: c.bytesIn,
			Class: int(c.class) - 1, PolicedOut: c.qos.policedCount(dirOut), PolicedIn: c.qos.policedCount(dirIn),
		}
		if c.conn != nil {
			s.InsidePort, s.PeerPort, s.Forward = c.conn.Key.InsidePort, c.conn.Key.PeerPort, c.conn.Forward
		}
		out = append(out, s)
	}
	return out
}

// Len returns the number of tracked control connections and calls.
func (t *Table) Len() (conns, calls int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.conns.Len(), t.calls.Len()
}

// InSetup returns how many of the tracked control connections and calls
// are still in setup (the early-drop candidates).
func (t *Table) InSetup() (conns, calls int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.setupConns.n, t.setupCalls.n
}

// Stats returns the removal counters.
func (t *Table) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stats
}
