package conntrack

// Reconfigure applies new timeouts, limits and bound to a live table (a
// reload, issue 8). Nothing tracked is removed for it: timeouts apply at
// the next lookup or Sweep, a limit or bound lowered below what is held
// refuses new state until enough has left (as a full table does), and a
// bound raised lets more in at once.
func (t *Table) Reconfigure(to Timeouts, lim Limits, maxCalls int) {
	if maxCalls <= 0 {
		maxCalls = DefaultMaxCalls
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.to = to.WithDefaults()
	t.lim = lim.WithDefaults()
	// The LRUs must never evict on their own (AddControl and AddCall
	// check the bounds first): sized to at least what they hold, a resize
	// evicts nothing, and the checks keep them below their size after it.
	t.calls.Resize(max(maxCalls, t.calls.Len()))
	t.conns.Resize(max(maxCalls, t.conns.Len()))
	t.maxCalls, t.maxConns = maxCalls, maxCalls
}
