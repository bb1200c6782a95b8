package conntrack

// What a control connection goes through in the table: tracked from its
// SYN, established by its Start-Control-Connection-Reply, stopped, removed.

// AddControl starts tracking a control connection, in setup until
// EstablishControl, replacing (and removing the calls of) any connection
// with the same key. It refuses (ErrSourceLimit) a connection beyond its
// source's Limits.ConnsPerSource; in a full table it early-drops the oldest
// connection in setup, and refuses (ErrTableFull) if there is none.
func (t *Table) AddControl(k ControlKey, publicIP [4]byte, forward bool) (*Control, error) {
	now := t.clk.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.conns.Peek(k); ok {
		t.removeConn(old, ReasonReplaced)
	}
	ip := sourceOf(k, forward)
	if s := t.sources[ip]; s != nil && s.conns >= t.lim.ConnsPerSource {
		t.stats.ConnsRefusedSource++
		return nil, ErrSourceLimit
	}
	if t.conns.Len() >= t.maxConns && !t.earlyDropConn() {
		t.stats.ConnsRefusedFull++
		return nil, ErrTableFull
	}
	s := t.sources[ip] // after the early drop, which may have removed it
	if s == nil {
		s = &source{}
		t.sources[ip] = s
	}
	s.conns++
	cn := &Control{Key: k, PublicIP: publicIP, Forward: forward, Created: now, lastSeen: now, src: s}
	t.setupConns.push(cn)
	t.conns.Add(k, cn)
	return cn, nil
}

// EstablishControl marks cn set up (its Start-Control-Connection-Reply was
// seen): from now on it has the ControlIdle timeout and is no candidate for
// early drop.
func (t *Table) EstablishControl(cn *Control) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.establishControl(cn)
}

func (t *Table) establishControl(cn *Control) {
	if cn.dead || cn.established {
		return
	}
	cn.established = true
	t.setupConns.remove(cn)
}

// LookupControl finds a control connection and marks it active. An idle-expired
// connection is removed (with its calls) and not returned.
func (t *Table) LookupControl(k ControlKey) (*Control, bool) {
	now := t.clk.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	cn, ok := t.conns.Get(k)
	if !ok {
		return nil, false
	}
	if t.connExpired(cn, now) {
		t.stats.ConnsExpired++
		t.removeConn(cn, ReasonExpired)
		return nil, false
	}
	cn.lastSeen = now
	return cn, true
}

// RemoveControl stops tracking cn and its calls.
func (t *Table) RemoveControl(cn *Control, reason string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cn.dead {
		return
	}
	t.removeConn(cn, reason)
}

// StopControl removes all calls of cn and lets cn itself expire after
// ClosingTimeout (Stop-Control-Connection, FIN, RST).
func (t *Table) StopControl(cn *Control) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(cn.calls) > 0 {
		t.removeCall(cn.calls[len(cn.calls)-1], ReasonStopped)
	}
	cn.closing = true
}

// RefreshCalls marks cn and all its calls active now: a control-channel Echo
// keeps the calls of that control connection alive.
func (t *Table) RefreshCalls(cn *Control) {
	now := t.clk.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if cn.dead {
		return
	}
	cn.lastSeen = now
	t.conns.Get(cn.Key)
	for _, c := range cn.calls {
		c.lastSeen = t.nanos(now)
		t.calls.Get(c.inKey())
	}
}
