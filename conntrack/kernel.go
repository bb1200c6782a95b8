package conntrack

// The kernel fast path (issue 12): an established call's GRE can be
// translated by nftables maps instead of NFQUEUE (package rules programs
// them, package nat keeps them in step with this table). The table stays
// the one record of every call: its counters and idle time come from the
// maps' element counters through AccountGRE.

// GREOut is one element of the outbound map: GRE from InsideIP to PeerIP
// with key PeerCallID leaves with source PublicIP.
type GREOut struct {
	Key OutKey
	OutData
	// Packets and Bytes are the element's counters when read from the
	// kernel (zero in what is written).
	Packets, Bytes uint64
	// Dropped: packets the kernel dropped over the call's policing rate
	// (kfeat, issue 12), when read; DroppedBytes their bytes.
	Dropped, DroppedBytes uint64
}

// GREIn is one element of the inbound map: GRE to PublicIP from PeerIP
// with key OutsideCallID goes to InsideIP with key InsideCallID.
type GREIn struct {
	Key InKey
	InData
	// Packets, Bytes, Dropped and DroppedBytes as in GREOut.
	Packets, Bytes        uint64
	Dropped, DroppedBytes uint64
}

// OutData is what an outbound element does to a packet (the map's data):
// comparable, so that what the engine wants and what the kernel holds are
// compared with ==.
type OutData struct {
	PublicIP [4]byte
	// kfeat (issue 12): the uplink's interface (part of the kernel's key:
	// GRE on another interface misses), the call's class (1 + index; 0:
	// none) and whether its GRE is policed (kernel_qos.go).
	IfIndex uint32
	Class   uint8
	Policed bool
}

// InData is what an inbound element does to a packet (the map's data).
type InData struct {
	InsideIP     [4]byte
	InsideCallID uint16
	// kfeat (issue 12): as in OutData (in this order: 12 bytes).
	Class   uint8
	Policed bool
	IfIndex uint32
}

// GREElements returns the map elements that carry c's GRE. Only for the
// Config hooks (OnCallEstablished, OnCallRemoved), under the table lock.
func (c *Call) GREElements() (GREOut, GREIn) {
	return GREOut{Key: c.outKey(), OutData: OutData{PublicIP: c.PublicIP}},
		GREIn{Key: c.inKey(), InData: InData{InsideIP: c.InsideIP, InsideCallID: c.InsideCallID}}
}

// GREDelta is GRE the kernel carried for one call since the last read:
// found by its outbound key (Out) or its inbound key (!Out).
type GREDelta struct {
	Out            bool
	OutKey         OutKey
	InKey          InKey
	Packets, Bytes uint64
}

// AccountGRE adds GRE the kernel carried to the calls it belongs to, as
// Outbound and Inbound do for GRE through userspace: counters, the calls'
// and their connections' last activity (now: the caller reads the kernel's
// counters periodically, so idle times are as exact as that period) and
// the replied state. Deltas of calls no longer tracked, or no longer set
// up, are ignored. It returns how many deltas found their call.
func (t *Table) AccountGRE(ds []GREDelta) int { return t.accountKernel(ds, false) }

// accountKernel adds deltas read from the kernel's counters to their calls
// (AccountGRE; AccountPoliced with policed: what the kernel's policers
// dropped, which also counts in the call's policed counters).
func (t *Table) accountKernel(ds []GREDelta, policed bool) int {
	nowT := t.clk.Now()
	now := t.nanos(nowT)
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, d := range ds {
		if d.Packets == 0 {
			continue
		}
		c := t.deltaCall(d)
		if c == nil {
			continue
		}
		n++
		t.calls.Get(c.inKey())
		c.lastSeen = now
		c.conn.lastSeen = nowT
		dir := dirIn
		if d.Out {
			dir = dirOut
			c.pktsOut += d.Packets
			c.bytesOut += d.Bytes
			c.seenOut = true
		} else {
			c.pktsIn += d.Packets
			c.bytesIn += d.Bytes
			c.seenIn = true
		}
		if c.seenIn && c.seenOut {
			c.state = CallReplied
		}
		if policed {
			if c.qos.pol == nil { // a policer the configuration no longer has
				c.qos.pol = &callPolicer{}
			}
			c.qos.pol.policed[dir] += d.Packets
		}
	}
	return n
}

// deltaCall is the set-up call a delta read from the kernel belongs to, or
// nil. t.mu is held.
func (t *Table) deltaCall(d GREDelta) *Call {
	if d.Out {
		return t.out.getOut(d.OutKey)
	}
	if c, ok := t.calls.Peek(d.InKey); ok && c.state != CallRequested {
		return c
	}
	return nil
}
