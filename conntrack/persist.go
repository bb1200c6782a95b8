package conntrack

import (
	"errors"
	"time"
)

// Saving and restoring the table across a restart of the daemon (issue 8,
// "calls survive a restart"). Package nat writes what Export returns into
// its state file together with the ALG's state and the allocator's, and
// feeds it back through Restore in a new process. Times travel as ages
// (Idle) relative to the moment of the export, so they are restored
// relative to the clock of the new table, whatever it is.

// SavedCall is one call as Export saves it.
type SavedCall struct {
	InsideCallID  uint16        `json:"inside_call_id"`
	OutsideCallID uint16        `json:"outside_call_id"`
	PeerCallID    uint16        `json:"peer_call_id"`
	State         CallState     `json:"state"`
	Created       time.Time     `json:"created"`
	Idle          time.Duration `json:"idle"`
	SeenOut       bool          `json:"seen_out,omitempty"`
	SeenIn        bool          `json:"seen_in,omitempty"`
	PktsOut       uint64        `json:"pkts_out,omitempty"`
	PktsIn        uint64        `json:"pkts_in,omitempty"`
	BytesOut      uint64        `json:"bytes_out,omitempty"`
	BytesIn       uint64        `json:"bytes_in,omitempty"`
}

// SavedControl is one control connection and its calls as Export saves it.
type SavedControl struct {
	Key         ControlKey    `json:"key"`
	PublicIP    [4]byte       `json:"public_ip"`
	Forward     bool          `json:"forward,omitempty"`
	Created     time.Time     `json:"created"`
	Idle        time.Duration `json:"idle"`
	Established bool          `json:"established,omitempty"`
	Closing     bool          `json:"closing,omitempty"`
	Calls       []SavedCall   `json:"calls,omitempty"`
}

// ErrRestoreInvalid: a saved entry that cannot be a table's (a call state
// out of range, a call ID 0, a negative age).
var ErrRestoreInvalid = errors.New("conntrack: invalid saved entry")

// Export returns every live control connection with its calls, least
// recently used first (the order Restore should get them back in), and
// calls f, if not nil, with each connection while the table is locked (nat
// saves the connection's ALG state there, consistent with the table's).
func (t *Table) Export(f func(*Control, *SavedControl)) []SavedControl {
	now := t.clk.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	conns := t.conns.Values()
	out := make([]SavedControl, 0, len(conns))
	for _, cn := range conns {
		if cn.dead || t.connExpired(cn, now) {
			continue
		}
		s := SavedControl{Key: cn.Key, PublicIP: cn.PublicIP, Forward: cn.Forward, Created: cn.Created,
			Idle: now.Sub(cn.lastSeen), Established: cn.established, Closing: cn.closing}
		for _, c := range cn.calls {
			if t.callExpired(c, now) {
				continue
			}
			s.Calls = append(s.Calls, SavedCall{
				InsideCallID: c.InsideCallID, OutsideCallID: c.OutsideCallID, PeerCallID: c.PeerCallID,
				State: c.state, Created: t.at(c.created), Idle: time.Duration(t.nanos(now) - c.lastSeen), SeenOut: c.seenOut, SeenIn: c.seenIn,
				PktsOut: c.pktsOut, PktsIn: c.pktsIn, BytesOut: c.bytesOut, BytesIn: c.bytesIn,
			})
		}
		if f != nil {
			f(cn, &s)
		}
		out = append(out, s)
	}
	return out
}

// Controls returns the tracked control connections (for a reload that
// updates the ALG state kept in their Data). The caller synchronises access
// to Data, as for LookupControl.
func (t *Table) Controls() []*Control {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.conns.Values()
}

// Restore adds a saved control connection and its calls to the table, with
// their timers running from the table's clock (an age of Idle now). It
// keeps the table's bounds: it refuses a connection when the connection
// table is full (ErrTableFull) or its source is at its limit, and skips a
// call that would exceed a limit, that duplicates a tracked call's keys, or
// that claim (called under the table's lock, like OnCallRemoved: it must
// not call into the Table) refuses. It returns the connection and how many
// of its calls were restored.
func (t *Table) Restore(s SavedControl, claim func(SavedCall) bool) (*Control, int, error) {
	now := t.clk.Now()
	if s.Idle < 0 || s.Idle > maxSavedAge {
		return nil, 0, ErrRestoreInvalid
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conns.Contains(s.Key) {
		return nil, 0, ErrCallExists
	}
	ip := sourceOf(s.Key, s.Forward)
	if src := t.sources[ip]; src != nil && src.conns >= t.lim.ConnsPerSource {
		t.stats.ConnsRefusedSource++
		return nil, 0, ErrSourceLimit
	}
	if t.conns.Len() >= t.maxConns {
		t.stats.ConnsRefusedFull++
		return nil, 0, ErrTableFull
	}
	src := t.sources[ip]
	if src == nil {
		src = &source{}
		t.sources[ip] = src
	}
	src.conns++
	cn := &Control{Key: s.Key, PublicIP: s.PublicIP, Forward: s.Forward, Created: s.Created,
		lastSeen: now.Add(-s.Idle), src: src, established: s.Established, closing: s.Closing}
	if !cn.established {
		t.setupConns.push(cn)
	}
	t.conns.Add(s.Key, cn)
	n := 0
	for _, sc := range s.Calls {
		if sc.State > CallReplied || sc.OutsideCallID == 0 || sc.Idle < 0 || sc.Idle > maxSavedAge || s.Closing {
			continue
		}
		c := &Call{conn: cn, InsideIP: cn.Key.InsideIP, PublicIP: cn.PublicIP, PeerIP: cn.Key.PeerIP,
			InsideCallID: sc.InsideCallID, OutsideCallID: sc.OutsideCallID, PeerCallID: sc.PeerCallID,
			created: t.savedCreated(sc.Created, now), state: sc.State, lastSeen: t.nanos(now) - int64(sc.Idle), seenOut: sc.SeenOut, seenIn: sc.SeenIn,
			pktsOut: sc.PktsOut, pktsIn: sc.PktsIn, bytesOut: sc.BytesOut, bytesIn: sc.BytesIn}
		if t.calls.Contains(c.inKey()) || cn.byInside(sc.InsideCallID) != nil ||
			(c.state != CallRequested && t.out.getOut(c.outKey()) != nil) {
			continue
		}
		if len(cn.calls) >= t.lim.CallsPerConn || src.calls >= t.lim.CallsPerSource || t.calls.Len() >= t.maxCalls {
			continue
		}
		if claim != nil && !claim(sc) {
			continue
		}
		src.calls++
		cn.calls = append(cn.calls, c)
		if c.state == CallRequested {
			t.setupCalls.push(c)
		} else {
			t.out.put(c)
		}
		t.calls.Add(c.inKey(), c)
		n++
	}
	return cn, n, nil
}

// maxSavedAge bounds the ages a snapshot may give (a call's or a
// connection's idle time, a call's age): far beyond any timeout, and far
// from the int64 nanoseconds' limits, so that what the table computes from
// them (expiry, the policer's time line) cannot overflow. A file that gives
// more was not written by the daemon.
const maxSavedAge = 10 * 365 * 24 * time.Hour

// savedCreated is a restored call's creation time on the table's clock: a
// time from the snapshot, or now if it is missing, in the future, or older
// than maxSavedAge.
func (t *Table) savedCreated(created, now time.Time) int64 {
	if age := now.Sub(created); created.IsZero() || age < 0 || age > maxSavedAge {
		return t.nanos(now)
	}
	return t.nanos(created)
}
