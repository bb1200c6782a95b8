package conntrack

// Memory (issue 12): the kernel fast path's record of a call lives in the
// call (Call.kernel) instead of two maps keyed by element in package nat
// (about 200 bytes per call with their keys and load factor).

// KernelRec is the kernel fast path's record of one call: what the kernel
// holds in the two maps for the call, with the held elements' counters at
// their last read, and flags (whether the call's elements are wanted:
// what they are is the call's GREElements, read under the table's lock
// when they are flushed). Package nat (kernelPath) owns it and guards it
// with its own lock; the table never reads or writes it.
//
// The inbound element's key is the call's inbound key, which never
// changes. The outbound element's key is the call's inside and peer
// addresses, which never change, and a peer call ID, which Establish may
// change: so the record keeps the peer call ID of the key the kernel holds
// (HPeer).
type KernelRec struct {
	// The held elements' counters at their last read (packets: the low 32
	// bits, enough to tell what one read interval added).
	OutBytes, InBytes     uint64
	OutPackets, InPackets uint32
	// Held element data.
	HOut OutData
	HIn  InData
	// Peer call ID of the outbound key held.
	HPeer uint16
	// Flags belong to the kernel path (wanted and held per map, dirty, ...).
	Flags uint8
}

// Kernel returns c's kernel path record. Only for package nat's kernel
// path, under its lock.
func (c *Call) Kernel() *KernelRec { return &c.kernel }

// OutKeyFor is c's outbound GRE key with peer call ID peer (the key of an
// outbound element the kernel path wants or holds for c). c's addresses
// never change, so it needs no lock.
func (c *Call) OutKeyFor(peer uint16) OutKey {
	return OutKey{InsideIP: c.InsideIP, PeerIP: c.PeerIP, PeerCallID: peer}
}

// InKey is c's inbound GRE key (the key of its inbound element), which
// never changes: it needs no lock.
func (c *Call) InKey() InKey { return c.inKey() }

// CallIndex looks up calls by their GRE keys with the table locked: only
// inside the callback of Table.View.
type CallIndex struct{ t *Table }

// ByOut returns the set-up call with outbound key k, nil if none.
func (x CallIndex) ByOut(k OutKey) *Call { return x.t.out.getOut(k) }

// ByIn returns the set-up call with inbound key k, nil if none.
func (x CallIndex) ByIn(k InKey) *Call {
	if c, ok := x.t.calls.Peek(k); ok && c.state != CallRequested {
		return c
	}
	return nil
}

// SetUp calls f for every set-up call (those with an outbound index).
func (x CallIndex) SetUp(f func(*Call)) {
	x.t.out.each(f)
}

// View runs f with the table locked, for lookups by GRE key (the kernel
// fast path's: which call an element belongs to). f must not call into the
// Table; it may take locks that come after Table.mu (nat's lock order).
func (t *Table) View(f func(CallIndex)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f(CallIndex{t})
}
