package nat

import (
	"sync/atomic"

	"pptpgw/conntrack"
)

// kfeat (issue 12): classes, per-call policing and uplinks on the kernel
// fast path. Every call but hairpin calls (pools: their GRE never crosses
// an uplink and is rewritten by hairpinGRE) takes the kernel path. Its
// elements carry (kernelFill):
//
//   - the interface of its uplink (the WAN's or, with several uplinks, that
//     of the uplink whose public address the call has), part of the
//     kernel's key: GRE on another interface misses, is queued, and
//     processGRE drops it as gre_wrong_uplink, as before;
//   - its class and whether it is policed: such calls' elements go to maps
//     whose chains set the class's mark bits and priority and police each
//     direction with the call's own bucket (rules/nft_fastpath_qos.go).
//
// What the kernel's policers dropped is read with the element counters
// (sync) and counted as the userspace policer counts it: the call's
// policed_out/policed_in and drops_total{reason="gre_policed"}.
//
// When an uplink's interface changes (SetWANIndex, SetUplink, SetUplinks),
// refreshKernelGRE gives every call's elements the new interface: the
// flusher deletes the keys the kernel holds and adds the new ones in one
// transaction.

// kernelPathQoS is the fast path's policing state (a field of kernelPath;
// under kernelPath.mu).
type kernelPathQoS struct {
	// dropped are the policed elements' drop counters (packets, bytes) at
	// the last read.
	droppedOut map[conntrack.OutKey][2]uint64
	droppedIn  map[conntrack.InKey][2]uint64
	// policed counts drops the kernel made (drops_total{reason="gre_policed"}).
	policed func(n uint64)
	// chains is what the table has chains for (SetKernelQoSChains): 0
	// unknown, else 1 + 2 x classes + 1 if it has the policed chains.
	chains atomic.Uint64
}

// SetKernelQoSChains tells the engine which classes (1..classes) and
// whether policed calls have chains in the table (rules.Installed.
// FastPathChains), after each install or reload of the table: a call set
// up with a class or policer the table has no chain for yet (a reload
// applies the engine's configuration before the table's) stays on the
// userspace path instead of failing the flusher's transactions.
func (e *Engine) SetKernelQoSChains(classes int, policed bool) {
	if e.kp == nil {
		return
	}
	v := 1 + 2*uint64(max(classes, 0))
	if policed {
		v++
	}
	e.kp.q.chains.Store(v)
}

// setupKernelQoS connects the engine to its fast path (NewEngine).
func (e *Engine) setupKernelQoS() {
	e.kp.fill = e.kernelFill
	e.kp.q.policed = func(n uint64) { e.counters.Add(int(rGREPoliced), n) }
}

// kernelFill completes c's elements: its uplink's interface, its class
// and policing. Table.mu held.
func (e *Engine) kernelFill(c *conntrack.Call, o *conntrack.GREOut, i *conntrack.GREIn) {
	ifx := e.kernelUplinkIf(c)
	class, policed := c.KernelQoS()
	o.IfIndex, o.Class, o.Policed = ifx, class, policed
	i.IfIndex, i.Class, i.Policed = ifx, class, policed
}

// kernelQoSFits reports whether the table's chains for c's class and
// policing exist: the configuration has that class and, for a policed
// call, policing. The table's chains only grow during a run, so this holds
// for every call set up in it; a call restored from a state snapshot with a
// class or policer the configuration dropped stays on the userspace path
// (its elements would jump to a chain that does not exist, and the kernel
// would refuse the whole transaction). So does a call set up with a class
// or policer the table has no chain for yet (SetKernelQoSChains).
func (e *Engine) kernelQoSFits(c *conntrack.Call) bool {
	class, policed := c.KernelQoS()
	q := e.qos.Load()
	if int(class) > len(q.names) || (policed && !q.callLimit.Enabled()) {
		return false
	}
	if e.kp == nil {
		return true
	}
	if v := e.kp.q.chains.Load(); v != 0 {
		classes, pol := (v-1)/2, (v-1)%2 == 1
		return uint64(class) <= classes && (!policed || pol)
	}
	return true
}

// uplinkOf is the uplink whose public address pub is, and its interface
// (0 and the WAN's for uplink 0, a single WAN, or an address of no uplink).
func (e *Engine) uplinkOf(pub [4]byte) (int, uint32) {
	if t := e.ups.up.Load(); t != nil {
		if i, ifx := t.uplinkOfPublic(pub); i > 0 {
			return i, ifx
		}
	}
	return 0, e.wan.Load()
}

// kernelUplinkIf is the interface of the uplink c's elements are on: the
// one whose address c had when its elements were first made (recorded on
// the call), so that an address-only change of the uplink (R4) leaves its
// calls where they are. Table.mu held.
func (e *Engine) kernelUplinkIf(c *conntrack.Call) uint32 {
	u := c.KernelUplink()
	if u == 0 {
		i, ifx := e.uplinkOf(c.PublicIP)
		if i < 255 {
			c.SetKernelUplink(uint8(i + 1))
		}
		return ifx
	}
	if u > 1 {
		if t := e.ups.up.Load(); t != nil && int(u-1) < len(t.ifs) {
			return t.ifs[u-1]
		}
	}
	return e.wan.Load()
}

// refreshKernelGRE recomputes every call's elements (an uplink's
// interface changed): the flusher sends only those that changed. No engine
// lock may be held.
//
// It queues, under Table.mu (Table.View, then kernelPath.mu: the lock
// order), every call in the table whose elements are wanted, and sets no
// record wanted: a call removed meanwhile is out of the table and its
// record unwanted (down, also under Table.mu), so its elements cannot be
// wanted again, and two refreshes at once queue the same calls. The
// flusher reads the queued calls' elements as they are then (with fill:
// the current interfaces). Calls whose class or policer the configuration
// has dropped since (kernelEligible would not take them now) are refreshed
// too: their maps' chains stay in the table.
func (e *Engine) refreshKernelGRE() { e.refreshKernel(false) }

// refreshKernel is refreshKernelGRE; with newTable (a new uplink table:
// SetUplinks) the calls' recorded uplinks are forgotten too, and found
// again from their addresses (the indexes may mean other uplinks now).
func (e *Engine) refreshKernel(newTable bool) {
	if e.kp == nil {
		return
	}
	e.kp.refresh(newTable)
	e.kp.wake()
}

// refresh queues every call in the table whose elements are wanted.
func (k *kernelPath) refresh(forgetUplinks bool) {
	k.refreshes.Add(1)
	k.table.View(func(x conntrack.CallIndex) {
		k.mu.Lock()
		defer k.mu.Unlock()
		x.SetUp(func(c *conntrack.Call) {
			if forgetUplinks {
				c.SetKernelUplink(0)
			}
			if c.Kernel().Flags&(kWantOut|kWantIn) != 0 {
				k.dirtyLocked(c)
			}
		})
	})
}

// policedLocked returns what the kernel's policers dropped since the last
// read, per call and direction, from the elements just read (k.mu held).
// It keeps its own baseline per policed element (only policed calls cost
// it anything); a drop counter that went back (the element was deleted and
// added again) counts from zero, and deltas of calls no longer in the
// table are ignored by AccountPoliced.
func (k *kernelPath) policedLocked(outs []conntrack.GREOut, ins []conntrack.GREIn) []conntrack.GREDelta {
	var ds []conntrack.GREDelta
	seenOut := map[conntrack.OutKey]bool{}
	for _, o := range outs {
		if !o.Policed {
			continue
		}
		seenOut[o.Key] = true
		if k.q.droppedOut == nil {
			k.q.droppedOut = map[conntrack.OutKey][2]uint64{}
		}
		d0 := k.q.droppedOut[o.Key]
		if p, b := grew(d0[0], d0[1], o.Dropped, o.DroppedBytes); p > 0 {
			ds = append(ds, conntrack.GREDelta{Out: true, OutKey: o.Key, Packets: p, Bytes: b})
		}
		k.q.droppedOut[o.Key] = [2]uint64{o.Dropped, o.DroppedBytes}
	}
	for key := range k.q.droppedOut {
		if !seenOut[key] {
			delete(k.q.droppedOut, key)
		}
	}
	seenIn := map[conntrack.InKey]bool{}
	for _, i := range ins {
		if !i.Policed {
			continue
		}
		seenIn[i.Key] = true
		if k.q.droppedIn == nil {
			k.q.droppedIn = map[conntrack.InKey][2]uint64{}
		}
		d0 := k.q.droppedIn[i.Key]
		if p, b := grew(d0[0], d0[1], i.Dropped, i.DroppedBytes); p > 0 {
			ds = append(ds, conntrack.GREDelta{InKey: i.Key, Packets: p, Bytes: b})
		}
		k.q.droppedIn[i.Key] = [2]uint64{i.Dropped, i.DroppedBytes}
	}
	for key := range k.q.droppedIn {
		if !seenIn[key] {
			delete(k.q.droppedIn, key)
		}
	}
	return ds
}

// accountPoliced counts the kernel's policing drops (no lock held).
func (k *kernelPath) accountPoliced(ds []conntrack.GREDelta) {
	if len(ds) == 0 {
		return
	}
	k.table.AccountPoliced(ds)
	if k.q.policed != nil {
		var n uint64
		for _, d := range ds {
			n += d.Packets
		}
		k.q.policed(n)
	}
}
