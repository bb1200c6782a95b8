package conntrack

// kfeat (issue 12): classes, policing and uplinks on the kernel fast path.
// A call's elements carry its class, whether it is policed and its
// uplink's interface (OutData, InData); the kernel's policing drops are
// read back from the maps and accounted here as OutboundQoS/InboundQoS
// account the drops of the userspace policer.

// KernelUplink returns 1 + the index of the uplink the kernel path put c
// on, 0 if it has not yet; SetKernelUplink records it (u: 1 + index).
// The uplink's interface is part of the elements' key, and an uplink's
// address may change under a call (its calls keep their uplink). Table.mu
// held (the Config hooks, Table.View).
func (c *Call) KernelUplink() uint8 { return c.uplink }

// SetKernelUplink: see KernelUplink.
func (c *Call) SetKernelUplink(u uint8) { c.uplink = u }

// KernelQoS returns c's class (1 + index in `classes:`; 0: none) and
// whether its GRE is policed. Table.mu held (the Config hooks).
func (c *Call) KernelQoS() (class uint8, policed bool) {
	return uint8(c.class), c.qos.policing()
}

// EstablishedGREFill is EstablishedGRE with fill completing each call's
// elements (the uplink's interface, class, policing) under t.mu.
func (t *Table) EstablishedGREFill(keep func(*Call) bool, fill func(*Call, *GREOut, *GREIn)) ([]GREOut, []GREIn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var outs []GREOut
	var ins []GREIn
	for _, c := range t.out.all() {
		if keep != nil && !keep(c) {
			continue
		}
		o, i := c.GREElements()
		if fill != nil {
			fill(c, &o, &i)
		}
		outs = append(outs, o)
		ins = append(ins, i)
	}
	return outs, ins
}

// AccountPoliced adds GRE the kernel dropped over the calls' policing rate
// to the calls as OutboundQoS/InboundQoS count a packet their policer
// drops: in the call's packets and bytes, its and its connection's last
// activity and its direction seen (D3: the kernel path left them out), and
// in its policed counters. Deltas of calls no longer tracked are ignored.
// It returns how many found their call.
func (t *Table) AccountPoliced(ds []GREDelta) int { return t.accountKernel(ds, true) }
