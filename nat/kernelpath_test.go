package nat

import (
	"errors"
	"runtime"
	"testing"
	"time"

	"pptpgw/conntrack"
	"pptpgw/helper"
	"pptpgw/internal/pkt"
	"pptpgw/internal/pkt/pkttest"
	"pptpgw/nat/nfq"
)

// fakeMaps is the kernel's maps, with element counters the test advances
// as the kernel would for packets it translated. Elements are keyed as the
// kernel keys them: the engine's key, the uplink's interface, and which
// maps hold them (a classed or policed call's are in others).
type fakeMaps struct {
	out     map[fakeOutKey]conntrack.GREOut
	in      map[fakeInKey]conntrack.GREIn
	updates int
	fail    int // fail this many Updates (after checking them)
}

type fakeOutKey struct {
	k       conntrack.OutKey
	ifx     uint32
	special bool
}

type fakeInKey struct {
	k       conntrack.InKey
	ifx     uint32
	special bool
}

func fkOut(e conntrack.GREOut) fakeOutKey {
	return fakeOutKey{e.Key, e.IfIndex, e.Class != 0 || e.Policed}
}

func fkIn(e conntrack.GREIn) fakeInKey {
	return fakeInKey{e.Key, e.IfIndex, e.Class != 0 || e.Policed}
}

func newFakeMaps() *fakeMaps {
	return &fakeMaps{out: map[fakeOutKey]conntrack.GREOut{}, in: map[fakeInKey]conntrack.GREIn{}}
}

var errFake = errors.New("fake: transaction refused")

// Update behaves as the kernel's transaction: deleting a missing element
// (in the maps the data names: a policed call's drop counter too) or adding
// an existing one fails all of it.
func (f *fakeMaps) Update(delOut []conntrack.GREOut, delIn []conntrack.GREIn, addOut []conntrack.GREOut, addIn []conntrack.GREIn) error {
	out := map[fakeOutKey]conntrack.GREOut{}
	for k, v := range f.out {
		out[k] = v
	}
	in := map[fakeInKey]conntrack.GREIn{}
	for k, v := range f.in {
		in[k] = v
	}
	for _, e := range delOut {
		if x, ok := out[fkOut(e)]; !ok || x.Policed != e.Policed {
			return errors.New("fake: delete of a missing out element")
		}
		delete(out, fkOut(e))
	}
	for _, e := range delIn {
		if x, ok := in[fkIn(e)]; !ok || x.Policed != e.Policed {
			return errors.New("fake: delete of a missing in element")
		}
		delete(in, fkIn(e))
	}
	for _, e := range addOut {
		for k := range out {
			if k.k == e.Key && k.ifx == e.IfIndex {
				return errors.New("fake: add of an existing out element")
			}
		}
		e.Packets, e.Bytes, e.Dropped = 0, 0, 0
		out[fkOut(e)] = e
	}
	for _, e := range addIn {
		for k := range in {
			if k.k == e.Key && k.ifx == e.IfIndex {
				return errors.New("fake: add of an existing in element")
			}
		}
		e.Packets, e.Bytes, e.Dropped = 0, 0, 0
		in[fkIn(e)] = e
	}
	if f.fail > 0 {
		f.fail--
		return errFake
	}
	f.out, f.in = out, in
	f.updates++
	return nil
}

func (f *fakeMaps) Read() ([]conntrack.GREOut, []conntrack.GREIn, error) {
	var o []conntrack.GREOut
	for _, v := range f.out {
		o = append(o, v)
	}
	var i []conntrack.GREIn
	for _, v := range f.in {
		i = append(i, v)
	}
	return o, i, nil
}

// outElem and inElem return the element with engine key k (the test's
// elements have one interface each).
func (f *fakeMaps) outElem(k conntrack.OutKey) (fakeOutKey, conntrack.GREOut, bool) {
	for fk, e := range f.out {
		if fk.k == k {
			return fk, e, true
		}
	}
	return fakeOutKey{}, conntrack.GREOut{}, false
}

func (f *fakeMaps) inElem(k conntrack.InKey) (fakeInKey, conntrack.GREIn, bool) {
	for fk, e := range f.in {
		if fk.k == k {
			return fk, e, true
		}
	}
	return fakeInKey{}, conntrack.GREIn{}, false
}

// carry counts n packets of size bytes through element k, as the kernel does.
func (f *fakeMaps) carryOut(k conntrack.OutKey, n, size uint64) {
	fk, e, _ := f.outElem(k)
	e.Packets += n
	e.Bytes += n * size
	f.out[fk] = e
}

func (f *fakeMaps) carryIn(k conntrack.InKey, n, size uint64) {
	fk, e, _ := f.inElem(k)
	e.Packets += n
	e.Bytes += n * size
	f.in[fk] = e
}

func kernelEngine(t *testing.T) (*Engine, *fakeMaps, *conntrack.FakeClock) {
	t.Helper()
	f := newFakeMaps()
	e, clk := newEngine(t, func(c *EngineConfig) { c.KernelMaps = f })
	return e, f, clk
}

func flush(t *testing.T, e *Engine) {
	t.Helper()
	if err := e.kp.flush(); err != nil {
		t.Fatal(err)
	}
}

func TestKernelPathFollowsCalls(t *testing.T) {
	e, f, clk := kernelEngine(t)
	outA := addCall(t, e, lanA, 40000, 7, 555)
	outB := addCall(t, e, lanB, 40001, 9, 556)
	flush(t, e)
	if len(f.out) != 2 || len(f.in) != 2 || f.updates != 1 {
		t.Fatalf("after two set-ups and one flush: %d out, %d in, %d transactions", len(f.out), len(f.in), f.updates)
	}
	ko := conntrack.OutKey{InsideIP: lanA, PeerIP: server, PeerCallID: 555}
	ki := conntrack.InKey{PublicIP: pubIP, PeerIP: server, OutsideCallID: outA}
	_, eo, _ := f.outElem(ko)
	_, ei, _ := f.inElem(ki)
	if eo.PublicIP != pubIP || ei.InsideIP != lanA || ei.InsideCallID != 7 || eo.IfIndex != e.WANIndex() || ei.IfIndex != e.WANIndex() {
		t.Fatalf("elements of call A: out %+v in %+v", eo, ei)
	}

	// The kernel carries A's GRE both ways: the table learns it at the
	// next read, as if the packets had crossed the engine.
	clk.Advance(20 * time.Second)
	f.carryOut(ko, 100, 1424)
	f.carryIn(ki, 40, 1424)
	calls := e.Calls() // reads the counters first
	var a CallInfo
	for _, c := range calls {
		if c.InsideCallID == 7 {
			a = c
		}
	}
	if a.PktsOut != 100 || a.BytesOut != 142400 || a.PktsIn != 40 || a.BytesIn != 56960 || a.State != "replied" || a.IdleSeconds != 0 {
		t.Fatalf("call A after the kernel carried its GRE: %+v", a)
	}
	// A second read adds only what grew since.
	f.carryOut(ko, 1, 100)
	if err := e.SyncKernelGRE(); err != nil {
		t.Fatal(err)
	}
	if s := e.table.Snapshot(); s[0].PktsOut+s[1].PktsOut != 101 {
		t.Fatalf("after one more packet: %+v", s)
	}

	// B carried nothing: it expires (unreplied timeout) and its elements
	// go; A, kept alive by the kernel's counters, stays.
	clk.Advance(conntrack.DefaultGREUnreplied - 5*time.Second)
	f.carryOut(ko, 1, 100)
	f.carryIn(ki, 1, 100)
	e.SyncKernelGRE()
	e.Tick()
	flush(t, e)
	if _, n := e.table.Len(); n != 1 || len(f.out) != 1 || len(f.in) != 1 {
		t.Fatalf("after B's expiry: %d calls, %d out, %d in elements", n, len(f.out), len(f.in))
	}
	if _, _, ok := f.inElem(conntrack.InKey{PublicIP: pubIP, PeerIP: server, OutsideCallID: outB}); ok {
		t.Fatal("expired call B's inbound element is still there")
	}

	// A is cleared by signalling: its elements go with it.
	cn, _ := e.table.LookupControl(conntrack.ControlKey{InsideIP: lanA, PeerIP: server, InsidePort: 40000, PeerPort: 1723})
	m := &mapper{e, cn.Data.(*control)}
	m.Event(helper.Event{Kind: helper.CallCleared, InsideID: 7})
	flush(t, e)
	if len(f.out) != 0 || len(f.in) != 0 {
		t.Fatalf("after the clear: %v %v", f.out, f.in)
	}
}

// Set-up and clear before a flush cost no transaction; a call
// established again with another peer call ID moves its outbound element.
func TestKernelPathCoalesces(t *testing.T) {
	e, f, _ := kernelEngine(t)
	addCall(t, e, lanA, 40000, 7, 555)
	cn, _ := e.table.LookupControl(conntrack.ControlKey{InsideIP: lanA, PeerIP: server, InsidePort: 40000, PeerPort: 1723})
	m := &mapper{e, cn.Data.(*control)}
	m.Event(helper.Event{Kind: helper.CallCleared, InsideID: 7})
	flush(t, e)
	if f.updates != 0 || len(f.out)+len(f.in) != 0 {
		t.Fatalf("a call set up and cleared between flushes: %d transactions, %d elements", f.updates, len(f.out)+len(f.in))
	}
	out := addCall(t, e, lanA, 40000, 8, 600)
	flush(t, e)
	m.Event(helper.Event{Kind: helper.CallEstablished, InsideID: 8, OutsideID: out, PeerID: 601})
	flush(t, e)
	if len(f.out) != 1 || len(f.in) != 1 {
		t.Fatalf("re-established: %v %v", f.out, f.in)
	}
	if _, _, ok := f.outElem(conntrack.OutKey{InsideIP: lanA, PeerIP: server, PeerCallID: 601}); !ok {
		t.Fatalf("the outbound element did not follow the new peer call ID: %v", f.out)
	}
}

// A failed transaction is retried from what the kernel holds.
func TestKernelPathRecovers(t *testing.T) {
	e, f, _ := kernelEngine(t)
	addCall(t, e, lanA, 40000, 7, 555)
	f.fail = 1
	if err := e.kp.flush(); err == nil {
		t.Fatal("the failed transaction was not reported")
	}
	flush(t, e)
	if len(f.out) != 1 || len(f.in) != 1 {
		t.Fatalf("after the retry: %v %v", f.out, f.in)
	}
	// Someone deleted the elements behind our back; the call is then
	// cleared: the deletion fails, the table is read back, nothing is left.
	f.out, f.in = map[fakeOutKey]conntrack.GREOut{}, map[fakeInKey]conntrack.GREIn{}
	cn, _ := e.table.LookupControl(conntrack.ControlKey{InsideIP: lanA, PeerIP: server, InsidePort: 40000, PeerPort: 1723})
	(&mapper{e, cn.Data.(*control)}).Event(helper.Event{Kind: helper.CallCleared, InsideID: 7})
	if err := e.kp.flush(); err == nil {
		t.Fatal("deleting missing elements did not fail")
	}
	flush(t, e)
	if o, i, _ := e.kp.stats(); o != 0 || i != 0 {
		t.Fatalf("the flusher believes the kernel holds %d and %d elements", o, i)
	}
}

// At start the elements of calls the table holds are kept, others not.
func TestKernelPathAdopt(t *testing.T) {
	e, f, _ := kernelEngine(t)
	outA := addCall(t, e, lanA, 40000, 7, 555) // "restored" calls
	addCall(t, e, lanB, 40001, 9, 556)
	wan := e.WANIndex()
	found := []conntrack.GREOut{
		{Key: conntrack.OutKey{InsideIP: lanA, PeerIP: server, PeerCallID: 555}, OutData: conntrack.OutData{PublicIP: pubIP, IfIndex: wan}, Packets: 5},
		{Key: conntrack.OutKey{InsideIP: lanA, PeerIP: server, PeerCallID: 777}, OutData: conntrack.OutData{PublicIP: pubIP, IfIndex: wan}},                     // no such call
		{Key: conntrack.OutKey{InsideIP: lanB, PeerIP: server, PeerCallID: 556}, OutData: conntrack.OutData{PublicIP: [4]byte{198, 51, 100, 99}, IfIndex: wan}}, // other address
	}
	foundIn := []conntrack.GREIn{
		{Key: conntrack.InKey{PublicIP: pubIP, PeerIP: server, OutsideCallID: outA}, InData: conntrack.InData{InsideIP: lanA, InsideCallID: 7, IfIndex: wan}},
		{Key: conntrack.InKey{PublicIP: pubIP, PeerIP: server, OutsideCallID: outA + 1}, InData: conntrack.InData{InsideIP: lanB, InsideCallID: 9, IfIndex: wan + 1}}, // an older uplink
	}
	keepOut, keepIn := e.AdoptKernelGRE(found, foundIn)
	if len(keepOut) != 1 || keepOut[0].Key.PeerCallID != 555 || len(keepIn) != 1 {
		t.Fatalf("kept %+v %+v", keepOut, keepIn)
	}
	// Install puts the kept ones back; the flusher adds the rest only.
	for _, o := range keepOut {
		f.out[fkOut(o)] = conntrack.GREOut{Key: o.Key, OutData: o.OutData}
	}
	for _, i := range keepIn {
		f.in[fkIn(i)] = conntrack.GREIn{Key: i.Key, InData: i.InData}
	}
	flush(t, e)
	if len(f.out) != 2 || len(f.in) != 2 {
		t.Fatalf("after adoption and a flush: %v %v", f.out, f.in)
	}
}

// The userspace GRE path allocates nothing with the kernel path enabled
// either (its first packets still cross it).
func TestNoAllocsGREKernelPathEngine(t *testing.T) {
	e, _, _ := kernelEngine(t)
	addCall(t, e, lanA, 40000, 7, 555)
	outT := pkttest.GRE(t, lanA, server, 555, pkttest.GREOpt{Seq: u32p(1), Payload: make([]byte, 1400)})
	buf := make([]byte, len(outT))
	p := &nfq.Packet{}
	if n := testing.AllocsPerRun(1000, func() {
		copy(buf, outT)
		*p = nfq.Packet{Payload: buf, InDev: lanIf}
		if v, _ := e.Process(p); v != pkt.Accept {
			t.Fatal("not accepted")
		}
	}); n != 0 {
		t.Errorf("%v allocs per GRE packet", n)
	}
}

// A call cleared before the table read its kernel counters still has its
// outside call ID quarantined if the kernel carried its GRE; one that
// carried none gets it back at once.
func TestKernelPathQuarantine(t *testing.T) {
	e, f, _ := kernelEngine(t)
	addCall(t, e, lanA, 40000, 7, 555)
	addCall(t, e, lanA, 40000, 8, 556)
	flush(t, e)
	f.carryOut(conntrack.OutKey{InsideIP: lanA, PeerIP: server, PeerCallID: 555}, 3, 100)
	cn, _ := e.table.LookupControl(conntrack.ControlKey{InsideIP: lanA, PeerIP: server, InsidePort: 40000, PeerPort: 1723})
	m := &mapper{e, cn.Data.(*control)}
	m.Event(helper.Event{Kind: helper.CallCleared, InsideID: 7})
	m.Event(helper.Event{Kind: helper.CallCleared, InsideID: 8})
	pk := PoolKey{pubIP, server}
	if used, q := e.alloc.InUse(pk); used != 2 || q != 0 {
		t.Fatalf("before the flush: %d used, %d quarantined; want both IDs held until the counters are read", used, q)
	}
	flush(t, e)
	if used, q := e.alloc.InUse(pk); used != 0 || q != 1 {
		t.Fatalf("after the flush: %d used, %d quarantined; want the call that carried GRE quarantined, the other free", used, q)
	}
	if st := e.alloc.Stats(); st.ReleasedUnused != 1 {
		t.Fatalf("allocator: %+v", st)
	}
	if len(f.out)+len(f.in) != 0 {
		t.Fatalf("elements left: %v %v", f.out, f.in)
	}
}

// nopMaps is a kernel that takes every change and holds nothing (so that
// only the engine's own memory is measured).
type nopMaps struct{}

func (nopMaps) Update([]conntrack.GREOut, []conntrack.GREIn, []conntrack.GREOut, []conntrack.GREIn) error {
	return nil
}
func (nopMaps) Read() ([]conntrack.GREOut, []conntrack.GREIn, error) { return nil, nil, nil }

// boundKernelPathCall: what the fast path's bookkeeping adds to a call in
// the daemon beyond the userspace path's. Its record lives in the call
// (conntrack.KernelRec), which both paths allocate, so it adds nothing
// measurable (0 bytes measured; 210 when the records were two maps keyed
// by element, 254 before the flush dropped its grown dirty sets): a bound
// of 32 catches any per-call map or a kept dirty list coming back.
const boundKernelPathCall = 32

func TestMemoryKernelPathPerCall(t *testing.T) {
	if testing.Short() {
		t.Skip("measures 10k calls")
	}
	const n = 10000
	per := func(maps KernelMaps) uint64 {
		e, _ := newEngine(t, func(c *EngineConfig) { c.MaxCalls = 2 * n; c.KernelMaps = maps })
		before := heap()
		for i := range n {
			addCall(t, e, insideHost(i/50), 40000, uint16(0x100+i%50), uint16(0x4000+i%50))
		}
		if e.kp != nil {
			flush(t, e)
		}
		d := (heap() - before) / n
		runtime.KeepAlive(e)
		return d
	}
	without, with := per(nil), per(nopMaps{})
	t.Logf("bytes per established call (no GRE yet): userspace path %d, kernel path %d (+%d; bound +%d)",
		without, with, with-without, boundKernelPathCall)
	if with > without+boundKernelPathCall {
		t.Errorf("the kernel path adds %d bytes per call, over the bound %d", with-without, boundKernelPathCall)
	}
}
