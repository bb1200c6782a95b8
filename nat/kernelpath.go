package nat

import (
	"context"
	"fmt"
	"sync"
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
//     in one netlink transaction, deletions before additions; changes that
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

// KernelMaps is the kernel side of the fast path (rules.GREMaps).
type KernelMaps interface {
	// Update changes the maps in one transaction: the deletions first.
	Update(delOut []conntrack.OutKey, delIn []conntrack.InKey, addOut []conntrack.GREOut, addIn []conntrack.GREIn) error
	// Read returns every element with its counters.
	Read() ([]conntrack.GREOut, []conntrack.GREIn, error)
}

// SyncInterval is how often the kernel's element counters are read into the
// call table (the bound on how stale an idle time shown or used for expiry
// is); a shorter GRE timeout shortens it.
const SyncInterval = time.Second

type outWant struct {
	e     conntrack.GREOut
	owner conntrack.InKey // the call whose element it is
}

type outHave struct {
	public         [4]byte
	packets, bytes uint64 // counters at the last read
}

type inHave struct {
	inside         [4]byte
	insideID       uint16
	packets, bytes uint64
}

type kernelPath struct {
	maps  KernelMaps
	table *conntrack.Table
	alloc *Allocator
	every time.Duration
	kick  chan struct{}

	mu       sync.Mutex // leaf: under Table.mu in the hooks
	wantOut  map[conntrack.OutKey]outWant
	wantIn   map[conntrack.InKey]conntrack.GREIn
	dirtyOut map[conntrack.OutKey]struct{}
	dirtyIn  map[conntrack.InKey]struct{}
	outOf    map[conntrack.InKey]conntrack.OutKey // a call's outbound key, by its inbound key
	// Outside call IDs of calls that left the table before the table saw
	// any of their GRE while their elements were in the kernel: whether
	// the kernel carried GRE for them (quarantine) is read from the
	// elements before they are deleted (flush).
	pending []pendingRelease

	fmu     sync.Mutex // the flusher's: what the kernel holds
	haveOut map[conntrack.OutKey]outHave
	haveIn  map[conntrack.InKey]inHave
	errs    uint64 // failed transactions (fmu)
	lastErr error
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
	return &kernelPath{
		maps: maps, table: t, alloc: alloc, every: every, kick: make(chan struct{}, 1),
		wantOut: make(map[conntrack.OutKey]outWant), wantIn: make(map[conntrack.InKey]conntrack.GREIn),
		dirtyOut: make(map[conntrack.OutKey]struct{}), dirtyIn: make(map[conntrack.InKey]struct{}),
		outOf:   make(map[conntrack.InKey]conntrack.OutKey),
		haveOut: make(map[conntrack.OutKey]outHave), haveIn: make(map[conntrack.InKey]inHave),
	}
}

// up: c was set up (Table.mu held).
func (k *kernelPath) up(c *conntrack.Call) {
	o, i := c.GREElements()
	k.mu.Lock()
	if old, ok := k.outOf[i.Key]; ok && old != o.Key && k.wantOut[old].owner == i.Key {
		delete(k.wantOut, old) // established again with another peer call ID
		k.dirtyOut[old] = struct{}{}
	}
	k.outOf[i.Key] = o.Key
	k.wantOut[o.Key] = outWant{o, i.Key}
	k.wantIn[i.Key] = i
	k.dirtyOut[o.Key] = struct{}{}
	k.dirtyIn[i.Key] = struct{}{}
	k.mu.Unlock()
	k.wake()
}

// releaseLater: c leaves the table without the table having seen its GRE
// (Table.mu held). If its elements may have been in the kernel, the release
// of its outside call ID waits for their counters (flush) and it returns
// true; otherwise the caller releases it at once.
func (k *kernelPath) releaseLater(c *conntrack.Call, pool PoolKey) bool {
	o, i := c.GREElements()
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.outOf[i.Key]; !ok {
		return false // never set up: no element was ever wanted
	}
	k.pending = append(k.pending, pendingRelease{pool, c.OutsideCallID, o.Key, i.Key})
	return true
}

// down: c left the table (Table.mu held).
func (k *kernelPath) down(c *conntrack.Call) {
	_, i := c.GREElements()
	k.mu.Lock()
	o, ok := k.outOf[i.Key]
	if !ok {
		k.mu.Unlock()
		return // never set up
	}
	delete(k.outOf, i.Key)
	if k.wantOut[o].owner == i.Key {
		delete(k.wantOut, o)
		k.dirtyOut[o] = struct{}{}
	}
	delete(k.wantIn, i.Key)
	k.dirtyIn[i.Key] = struct{}{}
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

// flush sends what changed since the last flush in one transaction.
func (k *kernelPath) flush() error {
	k.fmu.Lock()
	defer k.fmu.Unlock()
	k.mu.Lock()
	pending := k.pending
	k.pending = nil
	if len(k.dirtyOut) == 0 && len(k.dirtyIn) == 0 && len(pending) == 0 {
		k.mu.Unlock()
		return nil
	}
	var delOut []conntrack.OutKey
	var delIn []conntrack.InKey
	var addOut []conntrack.GREOut
	var addIn []conntrack.GREIn
	for key := range k.dirtyOut {
		w, wok := k.wantOut[key]
		h, hok := k.haveOut[key]
		if hok && (!wok || h.public != w.e.PublicIP) {
			delOut = append(delOut, key)
		}
		if wok && (!hok || h.public != w.e.PublicIP) {
			addOut = append(addOut, w.e)
		}
	}
	for key := range k.dirtyIn {
		w, wok := k.wantIn[key]
		h, hok := k.haveIn[key]
		same := hok && wok && h.inside == w.InsideIP && h.insideID == w.InsideCallID
		if hok && !same {
			delIn = append(delIn, key)
		}
		if wok && !same {
			addIn = append(addIn, w)
		}
	}
	clear(k.dirtyOut)
	clear(k.dirtyIn)
	k.mu.Unlock()
	if len(pending) > 0 {
		k.releasePending(pending) // before the elements and their counters go
	}
	if len(delOut)+len(delIn)+len(addOut)+len(addIn) == 0 {
		return nil
	}
	if err := k.maps.Update(delOut, delIn, addOut, addIn); err != nil {
		k.errs++
		k.lastErr = err
		// Start again from what the kernel holds: every key of this
		// transaction is dirty again.
		k.mu.Lock()
		for _, x := range delOut {
			k.dirtyOut[x] = struct{}{}
		}
		for _, x := range addOut {
			k.dirtyOut[x.Key] = struct{}{}
		}
		for _, x := range delIn {
			k.dirtyIn[x] = struct{}{}
		}
		for _, x := range addIn {
			k.dirtyIn[x.Key] = struct{}{}
		}
		k.mu.Unlock()
		if rerr := k.reloadHave(); rerr != nil {
			return fmt.Errorf("kernel GRE maps: %w (and reading them back: %v)", err, rerr)
		}
		return fmt.Errorf("kernel GRE maps: %w", err)
	}
	for _, x := range delOut {
		delete(k.haveOut, x)
	}
	for _, x := range delIn {
		delete(k.haveIn, x)
	}
	for _, x := range addOut {
		k.haveOut[x.Key] = outHave{public: x.PublicIP}
	}
	for _, x := range addIn {
		k.haveIn[x.Key] = inHave{inside: x.InsideIP, insideID: x.InsideCallID}
	}
	return nil
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
		byOut := map[conntrack.OutKey]uint64{}
		for _, o := range outs {
			byOut[o.Key] = o.Packets
		}
		byIn := map[conntrack.InKey]uint64{}
		for _, i := range ins {
			byIn[i.Key] = i.Packets
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
// holds (after a failed transaction). Counters read now are the new
// baseline: what was carried since the last read is given up for those
// elements. fmu is held.
func (k *kernelPath) reloadHave() error {
	outs, ins, err := k.maps.Read()
	if err != nil {
		return err
	}
	clear(k.haveOut)
	clear(k.haveIn)
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, o := range outs {
		k.haveOut[o.Key] = outHave{o.PublicIP, o.Packets, o.Bytes}
		k.dirtyOut[o.Key] = struct{}{}
	}
	for _, i := range ins {
		k.haveIn[i.Key] = inHave{i.InsideIP, i.InsideCallID, i.Packets, i.Bytes}
		k.dirtyIn[i.Key] = struct{}{}
	}
	return nil
}

// sync reads the elements' counters and accounts what grew to the calls.
func (k *kernelPath) sync() error {
	k.fmu.Lock()
	outs, ins, err := k.maps.Read()
	if err != nil {
		k.fmu.Unlock()
		return fmt.Errorf("kernel GRE maps: read counters: %w", err)
	}
	var ds []conntrack.GREDelta
	for _, o := range outs {
		h, ok := k.haveOut[o.Key]
		if !ok {
			continue // not ours (yet): the next flush settles it
		}
		if p, b := grew(h.packets, h.bytes, o.Packets, o.Bytes); p > 0 {
			ds = append(ds, conntrack.GREDelta{Out: true, OutKey: o.Key, Packets: p, Bytes: b})
		}
		h.packets, h.bytes = o.Packets, o.Bytes
		k.haveOut[o.Key] = h
	}
	for _, i := range ins {
		h, ok := k.haveIn[i.Key]
		if !ok {
			continue
		}
		if p, b := grew(h.packets, h.bytes, i.Packets, i.Bytes); p > 0 {
			ds = append(ds, conntrack.GREDelta{InKey: i.Key, Packets: p, Bytes: b})
		}
		h.packets, h.bytes = i.Packets, i.Bytes
		k.haveIn[i.Key] = h
	}
	k.fmu.Unlock()
	if len(ds) > 0 {
		k.table.AccountGRE(ds) // Table.mu after fmu is released: no order between them
	}
	return nil
}

// grew returns how much a counter pair grew; a counter that went back (the
// element was replaced behind our back) counts from zero.
func grew(p0, b0, p1, b1 uint64) (uint64, uint64) {
	if p1 < p0 || b1 < b0 {
		return p1, b1
	}
	return p1 - p0, b1 - b0
}

// adopt decides which elements found in the kernel at start stay: those of
// calls the table holds (restored from a state snapshot), with the same
// translation. They become what the kernel holds (put back by Install with
// zero counters: what they counted since the snapshot is not carried over);
// every other set-up call's elements are wanted and flushed.
func (k *kernelPath) adopt(foundOut []conntrack.GREOut, foundIn []conntrack.GREIn) ([]conntrack.GREOut, []conntrack.GREIn) {
	outs, ins := k.table.EstablishedGRE()
	k.fmu.Lock()
	defer k.fmu.Unlock()
	k.mu.Lock()
	defer k.mu.Unlock()
	for i := range outs {
		o, in := outs[i], ins[i]
		k.outOf[in.Key] = o.Key
		k.wantOut[o.Key] = outWant{o, in.Key}
		k.wantIn[in.Key] = in
		k.dirtyOut[o.Key] = struct{}{}
		k.dirtyIn[in.Key] = struct{}{}
	}
	var keptOut []conntrack.GREOut
	var keptIn []conntrack.GREIn
	for _, o := range foundOut {
		if w, ok := k.wantOut[o.Key]; ok && w.e.PublicIP == o.PublicIP {
			keptOut = append(keptOut, o)
			k.haveOut[o.Key] = outHave{public: o.PublicIP} // put back with zero counters
		}
	}
	for _, i := range foundIn {
		if w, ok := k.wantIn[i.Key]; ok && w.InsideIP == i.InsideIP && w.InsideCallID == i.InsideCallID {
			keptIn = append(keptIn, i)
			k.haveIn[i.Key] = inHave{inside: i.InsideIP, insideID: i.InsideCallID}
		}
	}
	k.wake()
	return keptOut, keptIn
}

// stats returns the number of elements the kernel holds and the failed
// transactions so far.
func (k *kernelPath) stats() (out, in int, failed uint64) {
	k.fmu.Lock()
	defer k.fmu.Unlock()
	return len(k.haveOut), len(k.haveIn), k.errs
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
