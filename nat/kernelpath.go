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
// Table.mu by the hooks, never the other way round. Per call the engine
// keeps one record per map (what it wants there and what the kernel holds,
// with the counters last read): TestMemoryKernelPathPerCall measures it.

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

// outRec is one outbound element: what the engine wants (want, data,
// owner: the call whose element it is, by its inbound key) and what the
// kernel holds (have, hdata, and the counters at the last read).
type outRec struct {
	want, have     bool
	data, hdata    conntrack.OutData
	owner          conntrack.InKey
	packets, bytes uint64
}

// inRec is one inbound element, keyed by the call's inbound key (which
// identifies the call), with the call's current outbound key.
type inRec struct {
	want, have     bool
	data, hdata    conntrack.InData
	outKey         conntrack.OutKey
	packets, bytes uint64
}

func (r *outRec) differs() bool { return r.hdata != r.data }
func (r *inRec) differs() bool  { return r.hdata != r.data }

type kernelPath struct {
	// eligible says whether a call's GRE may take the kernel path
	// (Engine.kernelEligible); nil: every call.
	eligible func(*conntrack.Call) bool
	// fill completes a call's elements (uplink, class, policing: kfeat,
	// kernelpath_qos.go); nil: as conntrack makes them. Table.mu held.
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

	fmu sync.Mutex // serialises flush, sync and reload (the flusher's)

	mu       sync.Mutex // leaf: under Table.mu in the hooks, under fmu in the flusher
	out      map[conntrack.OutKey]outRec
	in       map[conntrack.InKey]inRec
	dirtyOut map[conntrack.OutKey]struct{}
	dirtyIn  map[conntrack.InKey]struct{}
	// Outside call IDs of calls that left the table before the table saw
	// any of their GRE while their elements were in the kernel: whether
	// the kernel carried GRE for them (quarantine) is read from the
	// elements before they are deleted (flush).
	pending []pendingRelease
	errs    uint64 // failed transactions

	q kernelPathQoS // kfeat (issue 12): kernelpath_qos.go
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
		out: make(map[conntrack.OutKey]outRec), in: make(map[conntrack.InKey]inRec),
		dirtyOut: make(map[conntrack.OutKey]struct{}), dirtyIn: make(map[conntrack.InKey]struct{}),
	}
}

// wantLocked makes c's elements wanted. k.mu is held.
func (k *kernelPath) wantLocked(o conntrack.GREOut, i conntrack.GREIn) {
	r := k.in[i.Key]
	if r.want && r.outKey != o.Key {
		k.unwantOutLocked(r.outKey, i.Key) // established again with another peer call ID
	}
	r.want, r.data, r.outKey = true, i.InData, o.Key
	k.in[i.Key] = r
	x := k.out[o.Key]
	x.want, x.data, x.owner = true, o.OutData, i.Key
	k.out[o.Key] = x
	k.dirtyOut[o.Key] = struct{}{}
	k.dirtyIn[i.Key] = struct{}{}
}

// unwantOutLocked: the outbound element key is no longer wanted by call
// owner (another call may have taken it since). k.mu is held.
func (k *kernelPath) unwantOutLocked(key conntrack.OutKey, owner conntrack.InKey) {
	if x, ok := k.out[key]; ok && x.want && x.owner == owner {
		x.want = false
		k.out[key] = x
		k.dirtyOut[key] = struct{}{}
	}
}

// up: c was set up (Table.mu held).
func (k *kernelPath) up(c *conntrack.Call) {
	o, i := c.GREElements()
	if k.fill != nil {
		k.fill(c, &o, &i)
	}
	k.mu.Lock()
	k.wantLocked(o, i)
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
	if !k.in[i.Key].want {
		return false // never set up: no element was ever wanted
	}
	k.pending = append(k.pending, pendingRelease{pool, c.OutsideCallID, o.Key, i.Key})
	return true
}

// down: c left the table (Table.mu held).
func (k *kernelPath) down(c *conntrack.Call) {
	_, i := c.GREElements()
	k.mu.Lock()
	r, ok := k.in[i.Key]
	if !ok || !r.want {
		k.mu.Unlock()
		return // never set up
	}
	r.want = false
	k.in[i.Key] = r
	k.dirtyIn[i.Key] = struct{}{}
	k.unwantOutLocked(r.outKey, i.Key)
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
	var delOut []conntrack.GREOut
	var delIn []conntrack.GREIn
	var addOut []conntrack.GREOut
	var addIn []conntrack.GREIn
	for key := range k.dirtyOut {
		x := k.out[key]
		if x.have && (!x.want || x.differs()) {
			delOut = append(delOut, conntrack.GREOut{Key: key, OutData: x.hdata})
		}
		if x.want && (!x.have || x.differs()) {
			addOut = append(addOut, conntrack.GREOut{Key: key, OutData: x.data})
		}
		if !x.want && !x.have {
			delete(k.out, key)
		}
	}
	for key := range k.dirtyIn {
		r := k.in[key]
		if r.have && (!r.want || r.differs()) {
			delIn = append(delIn, conntrack.GREIn{Key: key, InData: r.hdata})
		}
		if r.want && (!r.have || r.differs()) {
			addIn = append(addIn, conntrack.GREIn{Key: key, InData: r.data})
		}
		if !r.want && !r.have {
			delete(k.in, key)
		}
	}
	k.dirtyOut, k.dirtyIn = emptied(k.dirtyOut), emptied(k.dirtyIn)
	k.mu.Unlock()
	if len(pending) > 0 {
		k.releasePending(pending) // before the elements and their counters go
	}
	if len(delOut)+len(delIn)+len(addOut)+len(addIn) == 0 {
		return nil
	}
	if err := k.maps.Update(delOut, delIn, addOut, addIn); err != nil {
		k.mu.Lock()
		k.errs++
		k.mu.Unlock()
		// Start again from what the kernel holds: reloadHave marks every
		// element dirty; those of this transaction too.
		if rerr := k.reloadHave(delOut, delIn, addOut, addIn); rerr != nil {
			return fmt.Errorf("kernel GRE maps: %w (and reading them back: %v)", err, rerr)
		}
		return fmt.Errorf("kernel GRE maps: %w", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, e := range delOut {
		x := k.out[e.Key]
		x.have, x.packets, x.bytes = false, 0, 0
		k.setOutLocked(e.Key, x)
	}
	for _, e := range delIn {
		r := k.in[e.Key]
		r.have, r.packets, r.bytes = false, 0, 0
		k.setInLocked(e.Key, r)
	}
	for _, e := range addOut {
		x := k.out[e.Key]
		x.have, x.hdata, x.packets, x.bytes = true, e.OutData, 0, 0
		k.out[e.Key] = x
		if !x.want || x.differs() {
			k.dirtyOut[e.Key] = struct{}{} // changed while the transaction ran
		}
	}
	for _, e := range addIn {
		r := k.in[e.Key]
		r.have, r.hdata, r.packets, r.bytes = true, e.InData, 0, 0
		k.in[e.Key] = r
		if !r.want || r.differs() {
			k.dirtyIn[e.Key] = struct{}{}
		}
	}
	return nil
}

// setOutLocked stores x, or forgets the key if neither wanted nor held.
func (k *kernelPath) setOutLocked(key conntrack.OutKey, x outRec) {
	if !x.want && !x.have {
		delete(k.out, key)
		return
	}
	k.out[key] = x
}

func (k *kernelPath) setInLocked(key conntrack.InKey, r inRec) {
	if !r.want && !r.have {
		delete(k.in, key)
		return
	}
	k.in[key] = r
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
// holds (after a failed transaction) and marks every element concerned
// dirty, those of the failed transaction too. Counters read now are the
// new baseline: what was carried since the last read is given up for those
// elements. fmu is held.
func (k *kernelPath) reloadHave(delOut []conntrack.GREOut, delIn []conntrack.GREIn, addOut []conntrack.GREOut, addIn []conntrack.GREIn) error {
	outs, ins, err := k.maps.Read()
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, e := range delOut {
		k.dirtyOut[e.Key] = struct{}{}
	}
	for _, e := range addOut {
		k.dirtyOut[e.Key] = struct{}{}
	}
	for _, e := range delIn {
		k.dirtyIn[e.Key] = struct{}{}
	}
	for _, e := range addIn {
		k.dirtyIn[e.Key] = struct{}{}
	}
	if err != nil {
		return err
	}
	for key, x := range k.out {
		x.have = false
		k.out[key] = x
		k.dirtyOut[key] = struct{}{}
	}
	for key, r := range k.in {
		r.have = false
		k.in[key] = r
		k.dirtyIn[key] = struct{}{}
	}
	for _, o := range outs {
		x := k.out[o.Key]
		x.have, x.hdata, x.packets, x.bytes = true, o.OutData, o.Packets, o.Bytes
		k.out[o.Key] = x
		k.dirtyOut[o.Key] = struct{}{}
	}
	for _, i := range ins {
		r := k.in[i.Key]
		r.have, r.hdata, r.packets, r.bytes = true, i.InData, i.Packets, i.Bytes
		k.in[i.Key] = r
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
	k.mu.Lock()
	for _, o := range outs {
		x, ok := k.out[o.Key]
		if !ok || !x.have {
			continue // not ours (yet): the next flush settles it
		}
		if p, b := grew(x.packets, x.bytes, o.Packets, o.Bytes); p > 0 {
			ds = append(ds, conntrack.GREDelta{Out: true, OutKey: o.Key, Packets: p, Bytes: b})
		}
		x.packets, x.bytes = o.Packets, o.Bytes
		k.out[o.Key] = x
	}
	for _, i := range ins {
		r, ok := k.in[i.Key]
		if !ok || !r.have {
			continue
		}
		if p, b := grew(r.packets, r.bytes, i.Packets, i.Bytes); p > 0 {
			ds = append(ds, conntrack.GREDelta{InKey: i.Key, Packets: p, Bytes: b})
		}
		r.packets, r.bytes = i.Packets, i.Bytes
		k.in[i.Key] = r
	}
	pol := k.policedLocked(outs, ins) // kfeat: kernelpath_qos.go
	k.mu.Unlock()
	k.fmu.Unlock()
	k.accountPoliced(pol)
	if len(ds) > 0 {
		k.table.AccountGRE(ds) // Table.mu after fmu and mu are released
		if k.carried != nil {
			k.carried(ds)
		}
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
	outs, ins := k.table.EstablishedGREFill(k.eligible, k.fill)
	k.fmu.Lock()
	defer k.fmu.Unlock()
	k.mu.Lock()
	defer k.mu.Unlock()
	for i := range outs {
		k.wantLocked(outs[i], ins[i])
	}
	var keptOut []conntrack.GREOut
	var keptIn []conntrack.GREIn
	for _, o := range foundOut {
		if x, ok := k.out[o.Key]; ok && x.want && x.data == o.OutData {
			keptOut = append(keptOut, o)
			x.have, x.hdata, x.packets, x.bytes = true, o.OutData, 0, 0
			k.out[o.Key] = x
		}
	}
	for _, i := range foundIn {
		if r, ok := k.in[i.Key]; ok && r.want && r.data == i.InData {
			keptIn = append(keptIn, i)
			r.have, r.hdata, r.packets, r.bytes = true, i.InData, 0, 0
			k.in[i.Key] = r
		}
	}
	k.wake()
	return keptOut, keptIn
}

// stats returns the number of elements the kernel holds and the failed
// transactions so far.
func (k *kernelPath) stats() (out, in int, failed uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, x := range k.out {
		if x.have {
			out++
		}
	}
	for _, r := range k.in {
		if r.have {
			in++
		}
	}
	return out, in, k.errs
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

// emptied returns m emptied. A Go map keeps the size of its largest
// contents, so a dirty set that a burst of set-ups (thousands of calls in
// one flush interval) grew is replaced rather than cleared: kept, it would
// cost every call about 20 bytes for good (TestMemoryKernelPathPerCall).
func emptied[K comparable](m map[K]struct{}) map[K]struct{} {
	if len(m) > 256 {
		return make(map[K]struct{})
	}
	clear(m)
	return m
}
