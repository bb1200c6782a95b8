package nat

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"pptpgw/conntrack"
	"pptpgw/internal/metrics"
)

// The kernel fast path (issue 12). An established call's GRE is translated
// by two nftables maps in the daemon's table instead of NFQUEUE (package
// rules programs the maps and the rules that apply them; see rules/CONFIG.md
// "gre_path"). The engine keeps the maps in step with its call table:
//
//  1. Table.Establish calls OnCallEstablished (under Table.mu): the call's
//     two elements become wanted (kernelPath.up) and the flusher is woken.
//  2. Every removal of a call (clear, stop, expiry, early drop, eviction,
//     replacement) goes through OnCallRemoved (under Table.mu): its elements
//     stop being wanted (kernelPath.down).
//  3. The flusher (RunKernelPath, one goroutine, never the packet path)
//     sends the difference between what is wanted and what the kernel holds
//     in one netlink transaction (several of at most maxTransaction
//     elements after a burst), deletions before additions; changes that
//     arrive while one is in flight go together in the next.
//  4. The flusher reads the elements' counters every SyncInterval (and
//     Calls reads them before answering) and adds what the kernel carried
//     to the table (Table.AccountGRE): per-call counters, idle times and
//     the replied state stay exact, to within that interval, and the
//     table's timeouts expire idle calls as before.
//
// Until a call's elements are in the kernel (a netlink round trip after
// its set-up), its GRE is queued and translated by processGRE as before;
// after they are gone, GRE with its keys is queued again and dropped and
// counted as gre_no_call. kernelPath.mu is a leaf lock: taken under
// Table.mu by the hooks, never the other way round.
//
// Per call the engine keeps one record, in the call itself
// (conntrack.KernelRec: whether its elements are wanted, what the kernel
// holds, with the held elements' counters last read; 56 bytes), not in
// maps keyed by element (about 200 bytes per call, 263 with the element
// data of classes, policing and uplinks; TestMemoryKernelPathPerCall
// measures it). What a call wants is its elements as they are when the
// flusher reads them (kernelPath.elements: c.GREElements completed by
// fill, under Table.mu), not a second copy of the data per element. The
// flusher finds a call by element key through the table's own indexes
// (Table.View), and a call that leaves the table stays
// in the dirty list, with its record, until its elements are deleted: two
// calls meeting at one element key (a peer reusing its call ID, an outside
// call ID given again) are two records, one deleting and one adding, in
// one transaction (deletions first).

// KernelMaps is the kernel side of the fast path (rules.GREMaps).
type KernelMaps interface {
	// Update changes the maps in one transaction: the deletions first,
	// each as the kernel holds it (its data says which key and maps).
	Update(delOut []conntrack.GREOut, delIn []conntrack.GREIn, addOut []conntrack.GREOut, addIn []conntrack.GREIn) error
	// Read returns every element with its counters.
	Read() ([]conntrack.GREOut, []conntrack.GREIn, error)
}

// SyncInterval is how often the kernel's element counters are read into the
// call table (the bound on how stale an idle time shown or used for expiry
// is); a shorter GRE timeout shortens it.
const SyncInterval = time.Second

// Flags of a call's kernel path record (conntrack.KernelRec.Flags): which
// of its elements the engine wants and which the kernel holds (what the
// kernel holds, its outbound key's peer call ID and the held elements'
// counters at their last read are the record's other fields; what is
// wanted is the call's elements now, c.GREElements, computed by the flusher
// under Table.mu), and whether the call is in kernelPath.dirty.
const (
	kWantOut uint8 = 1 << iota
	kHaveOut
	kWantIn
	kHaveIn
	kDirty
)

// needsFlush reports whether an element of r's call is wanted and not
// held, or held and not wanted. (Whether a held element's data is still
// the call's is for the flusher to see, under Table.mu; every change of a
// call's elements goes through up, which queues it.)
func needsFlush(r *conntrack.KernelRec) bool {
	wo, ho := r.Flags&kWantOut != 0, r.Flags&kHaveOut != 0
	wi, hi := r.Flags&kWantIn != 0, r.Flags&kHaveIn != 0
	return wo != ho || wi != hi
}

type kernelPath struct {
	// eligible says whether a call's GRE may take the kernel path
	// (Engine.kernelEligible); nil: every call.
	eligible func(*conntrack.Call) bool
	// fill completes a call's elements (uplink, class, policing: kfeat,
	// kernelpath_qos.go); nil: as conntrack makes them. Table.mu held.
	// eligible and fill run under mu too (adopt, refresh, flush): they
	// must take no lock (they read the engine's atomics only).
	fill func(*conntrack.Call, *conntrack.GREOut, *conntrack.GREIn)
	// carried receives what the kernel carried since the last read (no
	// lock held): the engine's GRE packet and byte counters count both
	// paths.
	carried func([]conntrack.GREDelta)
	maps    KernelMaps
	table   *conntrack.Table
	alloc   *Allocator
	every   time.Duration
	kick    chan struct{}

	// fmu serialises flush, sync, adopt and reload (the flusher's); under
	// it the flusher may take Table.mu (Table.View: lookups by key, no
	// I/O), then mu.
	fmu sync.Mutex

	mu sync.Mutex // leaf: under Table.mu in the hooks and View, under fmu in the flusher
	// dirty: the calls whose records (conntrack.KernelRec, in the call)
	// may differ from what the kernel holds (flag kDirty). A call that left
	// the table stays referenced here until its elements are deleted.
	dirty []*conntrack.Call
	// Elements the kernel holds that no call's record holds (found when
	// the flusher reads the maps back after a failed transaction): the
	// next flush deletes them.
	orphOut []conntrack.GREOut
	orphIn  []conntrack.GREIn
	// Elements the kernel holds (records with kHaveOut, kHaveIn).
	nOut, nIn int
	// Outside call IDs of calls that left the table before the table saw
	// any of their GRE while their elements were in the kernel: whether
	// the kernel carried GRE for them (quarantine) is read from the
	// elements before they are deleted (flush).
	pending []pendingRelease
	errs    uint64 // failed transactions

	q kernelPathQoS // kfeat (issue 12): kernelpath_qos.go
	// refreshes counts refresh calls (each walks every call: tests check
	// that one change makes one).
	refreshes atomic.Uint64
}

// pendingRelease is an outside call ID waiting for its call's elements'
// counters (kernelPath.pending).
type pendingRelease struct {
	pool PoolKey
	id   uint16
	out  conntrack.OutKey
	in   conntrack.InKey
}

func newKernelPath(maps KernelMaps, t *conntrack.Table, alloc *Allocator, to conntrack.Timeouts) *kernelPath {
	every := SyncInterval
	if q := min(to.GREUnreplied, to.GREReplied) / 4; q > 0 && q < every {
		every = q
	}
	return &kernelPath{maps: maps, table: t, alloc: alloc, every: every, kick: make(chan struct{}, 1)}
}

// dirtyLocked queues c for the next flush. k.mu is held.
func (k *kernelPath) dirtyLocked(c *conntrack.Call) {
	r := c.Kernel()
	if r.Flags&kDirty == 0 {
		r.Flags |= kDirty
		k.dirty = append(k.dirty, c)
	}
}

// wantLocked makes c's elements wanted (again: established with another
// peer call ID, its outbound key changes): the next flush compares them,
// as they are then, with what the kernel holds. Table.mu and k.mu are held.
func (k *kernelPath) wantLocked(c *conntrack.Call) {
	c.Kernel().Flags |= kWantOut | kWantIn
	k.dirtyLocked(c)
}

// elements are the map elements c wants (Table.mu held).
func (k *kernelPath) elements(c *conntrack.Call) (conntrack.GREOut, conntrack.GREIn) {
	o, i := c.GREElements()
	if k.fill != nil {
		k.fill(c, &o, &i)
	}
	return o, i
}

// up: c was set up (Table.mu held).
func (k *kernelPath) up(c *conntrack.Call) {
	k.mu.Lock()
	k.wantLocked(c)
	k.mu.Unlock()
	k.wake()
}

// releaseLater: c leaves the table without the table having seen its GRE
// (Table.mu held). If its elements may have been in the kernel, the release
// of its outside call ID waits for their counters (flush) and it returns
// true; otherwise the caller releases it at once.
func (k *kernelPath) releaseLater(c *conntrack.Call, pool PoolKey) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	r := c.Kernel()
	if r.Flags&kWantIn == 0 {
		return false // never set up: no element was ever wanted
	}
	o, i := c.GREElements()
	k.pending = append(k.pending, pendingRelease{pool, c.OutsideCallID, o.Key, i.Key})
	return true
}

// down: c left the table (Table.mu held). Its record stays in the call,
// which stays in k.dirty until the kernel no longer holds its elements.
func (k *kernelPath) down(c *conntrack.Call) {
	k.mu.Lock()
	r := c.Kernel()
	if r.Flags&(kWantOut|kHaveOut|kWantIn|kHaveIn) == 0 {
		k.mu.Unlock()
		return // never on the kernel path
	}
	r.Flags &^= kWantOut | kWantIn
	k.dirtyLocked(c)
	k.mu.Unlock()
	k.wake()
}

func (k *kernelPath) wake() {
	select {
	case k.kick <- struct{}{}:
	default:
	}
}

// run flushes changes as they come and reads the counters periodically
// until ctx ends.
func (k *kernelPath) run(ctx context.Context, onErr func(error)) {
	t := time.NewTicker(k.every)
	defer t.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return
		case <-k.kick:
			err = k.flush()
		case <-t.C:
			if err = k.flush(); err == nil {
				err = k.sync()
			}
		}
		if err != nil && onErr != nil {
			onErr(err)
		}
	}
}

// batch is one transaction: the elements and, in step, the calls whose
// records they come from (nil for an orphan).
type batch struct {
	delOut          []conntrack.GREOut
	delIn           []conntrack.GREIn
	addOut          []conntrack.GREOut
	addIn           []conntrack.GREIn
	delOutC, delInC []*conntrack.Call
	addOutC, addInC []*conntrack.Call
	// replaces: it deletes an element of a call that stays (its key or
	// data changed: a refresh, another peer call ID).
	replaces bool
}

func (b *batch) empty() bool {
	return len(b.delOut)+len(b.delIn)+len(b.addOut)+len(b.addIn) == 0
}

// calls returns every call of the batch.
func (b *batch) calls() []*conntrack.Call {
	var cs []*conntrack.Call
	for _, l := range [][]*conntrack.Call{b.delOutC, b.delInC, b.addOutC, b.addInC} {
		for _, c := range l {
			if c != nil {
				cs = append(cs, c)
			}
		}
	}
	return cs
}

// maxTransaction bounds the elements of one transaction on the maps. The
// library sends a whole transaction in one sendmsg, and the kernel refuses
// one larger than the socket's send buffer ("message too long": about
// 20,000 elements, e.g. 10,000 calls cleared within one flush, failed every
// time, and the flusher retried it for ever); 512 elements take about 40
// KiB.
const maxTransaction = 512

// flush sends what changed since the last flush: in one transaction, or,
// beyond maxTransaction elements, in several, the deletions first. Between
// two of them GRE of a call whose element is being replaced misses the maps
// and is queued: the engine translates it from its table as for any call
// whose elements are not in the kernel yet.
func (k *kernelPath) flush() error {
	k.fmu.Lock()
	defer k.fmu.Unlock()
	var b batch
	var pending []pendingRelease
	// What the dirty calls want is read from them under Table.mu (one
	// holding: a few hundred nanoseconds per call, no I/O).
	k.table.View(func(conntrack.CallIndex) {
		k.mu.Lock()
		defer k.mu.Unlock()
		pending = k.pending
		k.pending = nil
		for _, key := range k.orphOut {
			b.delOut, b.delOutC = append(b.delOut, key), append(b.delOutC, nil)
		}
		for _, key := range k.orphIn {
			b.delIn, b.delInC = append(b.delIn, key), append(b.delInC, nil)
		}
		k.orphOut, k.orphIn = nil, nil
		for _, c := range k.dirty {
			r := c.Kernel()
			r.Flags &^= kDirty
			wo, ho := r.Flags&kWantOut != 0, r.Flags&kHaveOut != 0
			wi, hi := r.Flags&kWantIn != 0, r.Flags&kHaveIn != 0
			var o conntrack.GREOut
			var i conntrack.GREIn
			if wo || wi { // a call in the table (down clears both under Table.mu)
				o, i = k.elements(c)
			}
			if ho && (!wo || r.HPeer != o.Key.PeerCallID || r.HOut != o.OutData) {
				held := conntrack.GREOut{Key: c.OutKeyFor(r.HPeer), OutData: r.HOut}
				b.delOut, b.delOutC = append(b.delOut, held), append(b.delOutC, c)
				b.replaces = b.replaces || wo
			}
			if wo && (!ho || r.HPeer != o.Key.PeerCallID || r.HOut != o.OutData) {
				b.addOut, b.addOutC = append(b.addOut, o), append(b.addOutC, c)
			}
			if hi && (!wi || r.HIn != i.InData) {
				held := conntrack.GREIn{Key: c.InKey(), InData: r.HIn}
				b.delIn, b.delInC = append(b.delIn, held), append(b.delInC, c)
				b.replaces = b.replaces || wi
			}
			if wi && (!hi || r.HIn != i.InData) {
				b.addIn, b.addInC = append(b.addIn, i), append(b.addInC, c)
			}
		}
		k.dirty = emptiedCalls(k.dirty)
	})
	if len(pending) > 0 {
		k.releasePending(pending) // before the elements and their counters go
	}
	if b.replaces {
		// What the elements about to be replaced carried since the last
		// read goes to their calls first (their new elements count from
		// zero); on a read error it is given up, as before.
		if ds, pol, err := k.readLocked(); err == nil {
			k.account(ds, pol)
		}
	}
	parts := b.split(maxTransaction)
	for j, p := range parts {
		if err := k.maps.Update(p.delOut, p.delIn, p.addOut, p.addIn); err != nil {
			k.mu.Lock()
			k.errs++
			k.mu.Unlock()
			// Start again from what the kernel holds: reloadHave marks
			// every record dirty; those of this transaction and of the
			// ones not sent too.
			var cs []*conntrack.Call
			var orphOut []conntrack.GREOut
			var orphIn []conntrack.GREIn
			for _, q := range parts[j:] {
				cs = append(cs, q.calls()...)
				for i, c := range q.delOutC {
					if c == nil {
						orphOut = append(orphOut, q.delOut[i])
					}
				}
				for i, c := range q.delInC {
					if c == nil {
						orphIn = append(orphIn, q.delIn[i])
					}
				}
			}
			if rerr := k.reloadHave(cs); rerr != nil {
				// Not read back: the orphans not deleted are tried again
				// (reloadHave found them afresh otherwise).
				k.mu.Lock()
				k.orphOut = append(k.orphOut, orphOut...)
				k.orphIn = append(k.orphIn, orphIn...)
				k.mu.Unlock()
				return fmt.Errorf("kernel GRE maps: %w (and reading them back: %v)", err, rerr)
			}
			return fmt.Errorf("kernel GRE maps: %w", err)
		}
		k.mu.Lock()
		k.appliedLocked(&p)
		k.mu.Unlock()
	}
	// Records that changed while the transactions ran (or whose element
	// was replaced by another call's) go back into dirty.
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, p := range parts {
		for _, l := range [][]*conntrack.Call{p.delOutC, p.delInC, p.addOutC, p.addInC} {
			for _, c := range l {
				if c != nil && needsFlush(c.Kernel()) {
					k.dirtyLocked(c)
				}
			}
		}
	}
	return nil
}

// split cuts b into batches of at most n elements, in b's order:
// deletions (outbound, inbound) before additions.
func (b *batch) split(n int) []batch {
	if b.empty() {
		return nil
	}
	if len(b.delOut)+len(b.delIn)+len(b.addOut)+len(b.addIn) <= n {
		return []batch{*b}
	}
	var parts []batch
	cur, room := batch{}, n
	next := func() {
		parts = append(parts, cur)
		cur, room = batch{}, n
	}
	cut(b.delOut, b.delOutC, &room, next, func(e []conntrack.GREOut, c []*conntrack.Call) { cur.delOut, cur.delOutC = e, c })
	cut(b.delIn, b.delInC, &room, next, func(e []conntrack.GREIn, c []*conntrack.Call) { cur.delIn, cur.delInC = e, c })
	cut(b.addOut, b.addOutC, &room, next, func(e []conntrack.GREOut, c []*conntrack.Call) { cur.addOut, cur.addOutC = e, c })
	cut(b.addIn, b.addInC, &room, next, func(e []conntrack.GREIn, c []*conntrack.Call) { cur.addIn, cur.addInC = e, c })
	if room < n {
		parts = append(parts, cur)
	}
	return parts
}

// cut hands es (and their calls cs) to put in pieces that fit the current
// batch's room, starting a new batch (next) whenever the room runs out.
func cut[E any](es []E, cs []*conntrack.Call, room *int, next func(), put func([]E, []*conntrack.Call)) {
	for i := 0; i < len(es); {
		m := min(*room, len(es)-i)
		put(es[i:i+m], cs[i:i+m])
		i, *room = i+m, *room-m
		if *room == 0 {
			next()
		}
	}
}

// appliedLocked records what the kernel holds after transaction p. k.mu
// is held.
func (k *kernelPath) appliedLocked(p *batch) {
	for j, c := range p.delOutC {
		if r := k.rec(c); r != nil && r.Flags&kHaveOut != 0 && r.HPeer == p.delOut[j].Key.PeerCallID {
			k.setHaveOut(r, false)
			r.HPeer, r.HOut, r.OutPackets, r.OutBytes = 0, conntrack.OutData{}, 0, 0
		}
	}
	for _, c := range p.delInC {
		if r := k.rec(c); r != nil && r.Flags&kHaveIn != 0 {
			k.setHaveIn(r, false)
			r.HIn, r.InPackets, r.InBytes = conntrack.InData{}, 0, 0
		}
	}
	for j, c := range p.addOutC {
		r, e := c.Kernel(), p.addOut[j]
		k.setHaveOut(r, true)
		r.HPeer, r.HOut, r.OutPackets, r.OutBytes = e.Key.PeerCallID, e.OutData, 0, 0
	}
	for j, c := range p.addInC {
		r, e := c.Kernel(), p.addIn[j]
		k.setHaveIn(r, true)
		r.HIn, r.InPackets, r.InBytes = e.InData, 0, 0
	}
}

// rec is c's record, nil for an orphan element's (c nil).
func (k *kernelPath) rec(c *conntrack.Call) *conntrack.KernelRec {
	if c == nil {
		return nil
	}
	return c.Kernel()
}

// setHaveOut and setHaveIn set whether the kernel holds r's element,
// keeping the count of elements held. k.mu is held.
func (k *kernelPath) setHaveOut(r *conntrack.KernelRec, have bool) {
	switch had := r.Flags&kHaveOut != 0; {
	case have && !had:
		r.Flags |= kHaveOut
		k.nOut++
	case !have && had:
		r.Flags &^= kHaveOut
		k.nOut--
	}
}

func (k *kernelPath) setHaveIn(r *conntrack.KernelRec, have bool) {
	switch had := r.Flags&kHaveIn != 0; {
	case have && !had:
		r.Flags |= kHaveIn
		k.nIn++
	case !have && had:
		r.Flags &^= kHaveIn
		k.nIn--
	}
}

// releasePending gives the outside call IDs of removed calls back to the
// allocator: into quarantine if the kernel carried GRE for the call (its
// elements counted packets), else at once, as the engine does for calls
// whose GRE it saw. If the counters cannot be read, into quarantine. fmu is
// held.
func (k *kernelPath) releasePending(ps []pendingRelease) {
	outs, ins, err := k.maps.Read()
	carried := map[conntrack.InKey]bool{}
	if err == nil {
		// A packet the kernel's policer dropped was GRE of the call too
		// (the userspace path counts a packet before policing it).
		byOut := map[conntrack.OutKey]uint64{}
		for _, o := range outs {
			byOut[o.Key] = o.Packets + o.Dropped
		}
		byIn := map[conntrack.InKey]uint64{}
		for _, i := range ins {
			byIn[i.Key] = i.Packets + i.Dropped
		}
		for _, p := range ps {
			carried[p.in] = byOut[p.out] > 0 || byIn[p.in] > 0
		}
	}
	for _, p := range ps {
		if err != nil || carried[p.in] {
			k.alloc.Release(p.pool, p.id)
		} else {
			k.alloc.ReleaseUnused(p.pool, p.id)
		}
	}
}

// reloadHave replaces what the flusher believes the kernel holds by what it
// holds (after a failed transaction, whose calls are cs) and marks every
// record concerned dirty. An element goes to the set-up call its key
// belongs to (which it may not match: the next flush replaces it), or, if
// none, is an orphan the next flush deletes. Counters read now are the new
// baseline: what was carried since the last read is given up for those
// elements. fmu is held.
func (k *kernelPath) reloadHave(cs []*conntrack.Call) error {
	outs, ins, err := k.maps.Read()
	if err != nil {
		k.mu.Lock()
		for _, c := range cs {
			k.dirtyLocked(c) // tried again from what was believed
		}
		k.mu.Unlock()
		return err
	}
	k.table.View(func(x conntrack.CallIndex) {
		k.mu.Lock()
		defer k.mu.Unlock()
		forget := func(c *conntrack.Call) {
			r := c.Kernel()
			r.Flags &^= kHaveOut | kHaveIn
			r.HPeer, r.HOut, r.HIn = 0, conntrack.OutData{}, conntrack.InData{}
			r.OutPackets, r.OutBytes, r.InPackets, r.InBytes = 0, 0, 0, 0
			k.dirtyLocked(c)
		}
		for _, c := range slices.Clone(k.dirty) { // calls that left the table are only here or in cs
			forget(c)
		}
		for _, c := range cs {
			forget(c)
		}
		x.SetUp(func(c *conntrack.Call) {
			if c.Kernel().Flags&(kWantOut|kHaveOut|kWantIn|kHaveIn) != 0 {
				forget(c)
			}
		})
		k.nOut, k.nIn = 0, 0
		k.orphOut, k.orphIn = nil, nil
		for _, o := range outs {
			c := x.ByOut(o.Key)
			if c == nil {
				k.orphOut = append(k.orphOut, o)
				continue
			}
			r := c.Kernel()
			k.setHaveOut(r, true)
			r.HPeer, r.HOut, r.OutPackets, r.OutBytes = o.Key.PeerCallID, o.OutData, uint32(o.Packets), o.Bytes
			k.dirtyLocked(c)
		}
		for _, i := range ins {
			c := x.ByIn(i.Key)
			if c == nil {
				k.orphIn = append(k.orphIn, i)
				continue
			}
			r := c.Kernel()
			k.setHaveIn(r, true)
			r.HIn, r.InPackets, r.InBytes = i.InData, uint32(i.Packets), i.Bytes
			k.dirtyLocked(c)
		}
	})
	return nil
}

// syncChunk is how many elements sync looks up per holding of Table.mu.
const syncChunk = 1024

// sync reads the elements' counters and accounts what grew to the calls.
func (k *kernelPath) sync() error {
	k.fmu.Lock()
	ds, pol, err := k.readLocked()
	k.fmu.Unlock()
	if err != nil {
		return err
	}
	k.account(ds, pol)
	return nil
}

// account adds what the kernel carried (ds) and what its policers dropped
// (pol) to the calls and the engine's counters. No kernelPath lock, or
// fmu only (Table.mu comes after it).
func (k *kernelPath) account(ds, pol []conntrack.GREDelta) {
	k.accountPoliced(pol)
	if len(ds) > 0 {
		k.table.AccountGRE(ds)
		if k.carried != nil {
			k.carried(ds)
		}
	}
}

// readLocked reads the elements' counters and returns what grew since the
// last read, carried and policed, moving the records' baselines. fmu is
// held.
func (k *kernelPath) readLocked() (ds, pol []conntrack.GREDelta, err error) {
	outs, ins, err := k.maps.Read()
	if err != nil {
		return nil, nil, fmt.Errorf("kernel GRE maps: read counters: %w", err)
	}
	k.mu.Lock()
	pol = k.policedLocked(outs, ins) // kfeat: kernelpath_qos.go
	k.mu.Unlock()
	for len(outs) > 0 || len(ins) > 0 {
		no, ni := min(len(outs), syncChunk), min(len(ins), max(0, syncChunk-len(outs)))
		co, ci := outs[:no], ins[:ni]
		outs, ins = outs[no:], ins[ni:]
		k.table.View(func(x conntrack.CallIndex) {
			k.mu.Lock()
			defer k.mu.Unlock()
			for _, o := range co {
				c := x.ByOut(o.Key)
				if c == nil {
					continue // a call that left, or not set up: the next flush settles it
				}
				r := c.Kernel()
				if r.Flags&kHaveOut == 0 || r.HPeer != o.Key.PeerCallID {
					continue // not its element (yet)
				}
				if p, b := grewRec(r.OutPackets, r.OutBytes, o.Packets, o.Bytes); p > 0 {
					ds = append(ds, conntrack.GREDelta{Out: true, OutKey: o.Key, Packets: p, Bytes: b})
				}
				r.OutPackets, r.OutBytes = uint32(o.Packets), o.Bytes
			}
			for _, i := range ci {
				c := x.ByIn(i.Key)
				if c == nil {
					continue
				}
				r := c.Kernel()
				if r.Flags&kHaveIn == 0 {
					continue
				}
				if p, b := grewRec(r.InPackets, r.InBytes, i.Packets, i.Bytes); p > 0 {
					ds = append(ds, conntrack.GREDelta{InKey: i.Key, Packets: p, Bytes: b})
				}
				r.InPackets, r.InBytes = uint32(i.Packets), i.Bytes
			}
		})
	}
	return ds, pol, nil
}

// grew returns how much a counter pair grew; a counter that went back (the
// element was replaced behind our back) counts from zero.
func grew(p0, b0, p1, b1 uint64) (uint64, uint64) {
	if p1 < p0 || b1 < b0 {
		return p1, b1
	}
	return p1 - p0, b1 - b0
}

// grewRec is grew for a record's baseline, which keeps the low 32 bits of
// the packet counter (memory, issue 12): the packets added are counted
// modulo 2^32 (one read interval never adds as many). Counters that went
// back count from zero: bytes lower than the baseline, or more packets
// added than bytes (each packet counts at least one byte).
func grewRec(p0 uint32, b0, p1, b1 uint64) (uint64, uint64) {
	if b1 < b0 {
		return p1, b1
	}
	p := uint64(uint32(p1) - p0)
	if p > b1-b0 {
		return p1, b1
	}
	return p, b1 - b0
}

// adopt decides which elements found in the kernel at start stay: those of
// calls the table holds (restored from a state snapshot), with the same
// translation. They become what the kernel holds (put back by Install with
// zero counters: what they counted since the snapshot is not carried over);
// every other set-up call's elements are wanted and flushed.
func (k *kernelPath) adopt(foundOut []conntrack.GREOut, foundIn []conntrack.GREIn) ([]conntrack.GREOut, []conntrack.GREIn) {
	k.fmu.Lock()
	defer k.fmu.Unlock()
	var keptOut []conntrack.GREOut
	var keptIn []conntrack.GREIn
	k.table.View(func(x conntrack.CallIndex) {
		k.mu.Lock()
		defer k.mu.Unlock()
		x.SetUp(func(c *conntrack.Call) {
			if k.eligible == nil || k.eligible(c) {
				k.wantLocked(c)
			}
		})
		for _, o := range foundOut {
			c := x.ByOut(o.Key)
			if c == nil {
				continue
			}
			want, _ := k.elements(c)
			if r := c.Kernel(); r.Flags&kWantOut != 0 && r.Flags&kHaveOut == 0 && want.Key == o.Key && want.OutData == o.OutData {
				keptOut = append(keptOut, o)
				k.setHaveOut(r, true)
				r.HPeer, r.HOut, r.OutPackets, r.OutBytes = o.Key.PeerCallID, o.OutData, 0, 0
			}
		}
		for _, i := range foundIn {
			c := x.ByIn(i.Key)
			if c == nil {
				continue
			}
			_, want := k.elements(c)
			if r := c.Kernel(); r.Flags&kWantIn != 0 && r.Flags&kHaveIn == 0 && want.InData == i.InData {
				keptIn = append(keptIn, i)
				k.setHaveIn(r, true)
				r.HIn, r.InPackets, r.InBytes = i.InData, 0, 0
			}
		}
	})
	k.wake()
	return keptOut, keptIn
}

// stats returns the number of elements the kernel holds and the failed
// transactions so far.
func (k *kernelPath) stats() (out, in int, failed uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.nOut, k.nIn, k.errs
}

// RunKernelPath keeps the kernel's GRE maps in step with the call table and
// reads their counters until ctx ends (the engine must have been made with
// EngineConfig.KernelMaps; otherwise it returns at once). Start it after
// the maps exist (rules.Install). Errors (a failed transaction is retried
// from what the kernel holds) go to onErr.
func (e *Engine) RunKernelPath(ctx context.Context, onErr func(error)) {
	if e.kp == nil {
		return
	}
	e.kp.run(ctx, onErr)
}

// KernelPath reports whether established calls' GRE goes through the
// kernel's maps.
func (e *Engine) KernelPath() bool { return e.kp != nil }

// AdoptKernelGRE takes the map elements a previous run left in the kernel
// (rules.ReadGREElements, before rules.Install replaces the table) and
// returns those to keep: the elements of calls the engine's table holds
// (restored from a state snapshot), unchanged. rules.Install puts them back
// in the same transaction that replaces the table (Plan.AdoptOut/AdoptIn),
// so those calls' GRE never stops; the others are gone with the old table,
// and their GRE is queued and dropped as calls unknown. Call it once,
// before RunKernelPath.
func (e *Engine) AdoptKernelGRE(out []conntrack.GREOut, in []conntrack.GREIn) ([]conntrack.GREOut, []conntrack.GREIn) {
	if e.kp == nil {
		return nil, nil
	}
	return e.kp.adopt(out, in)
}

// SyncKernelGRE reads the kernel maps' counters into the call table now.
func (e *Engine) SyncKernelGRE() error {
	if e.kp == nil {
		return nil
	}
	return e.kp.sync()
}

// Metrics of the fast path.
var (
	descKernelPath = &metrics.Desc{Name: "gre_kernel_path", Kind: metrics.Gauge,
		Help: "1 if established calls' GRE is translated by the kernel's nftables maps (gre_path: kernel), 0 if all GRE goes through the queue."}
	descKernelElems = &metrics.Desc{Name: "gre_kernel_elements", Kind: metrics.Gauge, Labels: []string{"map"},
		Help: "Elements in the kernel fast path's maps (gre_out, gre_in), as last written."}
	descKernelErrors = &metrics.Desc{Name: "gre_kernel_update_errors_total",
		Help: "Transactions on the kernel fast path's maps the kernel refused (each is retried from what the kernel holds)."}
)

func (e *Engine) collectKernelPath(emit func(metrics.Sample)) {
	if e.kp == nil {
		emit(metrics.Sample{Desc: descKernelPath, Key: "gre_kernel_path", Value: 0})
		return
	}
	out, in, errs := e.kp.stats()
	emit(metrics.Sample{Desc: descKernelPath, Key: "gre_kernel_path", Value: 1})
	emit(metrics.Sample{Desc: descKernelElems, LabelValues: []string{"gre_out"}, Key: "gre_kernel_elements_out", Value: uint64(out)})
	emit(metrics.Sample{Desc: descKernelElems, LabelValues: []string{"gre_in"}, Key: "gre_kernel_elements_in", Value: uint64(in)})
	emit(metrics.Sample{Desc: descKernelErrors, Key: "gre_kernel_update_errors", Value: errs})
}

// kernelEligible says whether c's GRE may take the kernel path: every
// call but a hairpin call, whose GRE never crosses an uplink (a class, a
// policer and the uplink go into its elements: kernelpath_qos.go), and a
// call whose class or policer the configuration no longer has
// (kernelQoSFits). Table.mu held.
func (e *Engine) kernelEligible(c *conntrack.Call) bool {
	return e.memberOf(c.PeerIP) == nil && e.kernelQoSFits(c)
}

// countKernelGRE adds GRE the kernel path carried to the engine's GRE
// counters (packets_total{path="gre"}, bytes_total), so they count every
// translated GRE packet whichever path translated it.
func (e *Engine) countKernelGRE(ds []conntrack.GREDelta) {
	for _, d := range ds {
		if d.Out {
			e.counters.Add(int(rGREOut), d.Packets)
			e.counters.Add(int(rGREBytesOut), d.Bytes)
		} else {
			e.counters.Add(int(rGREIn), d.Packets)
			e.counters.Add(int(rGREBytesIn), d.Bytes)
		}
	}
}

// emptiedCalls returns the dirty list emptied. Like a Go map, a slice
// keeps the size of its largest contents, so a list that a burst of
// set-ups (thousands of calls in one flush interval) grew is dropped rather
// than kept (TestMemoryKernelPathPerCall).
func emptiedCalls(l []*conntrack.Call) []*conntrack.Call {
	if cap(l) > 256 {
		return nil
	}
	clear(l)
	return l[:0]
}
