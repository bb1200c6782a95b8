package nat

import (
	"errors"
	"testing"

	"pptpgw/conntrack"
	"pptpgw/helper"
)

// The kernel path's records live in the calls (conntrack.KernelRec): the
// cases where two calls meet at one element key, and changes that happen
// while a transaction is in flight.

// hookMaps runs during once inside the next Update, after the kernel took
// the transaction: what the engine does while a transaction is in flight.
type hookMaps struct {
	*fakeMaps
	during func()
}

func (h *hookMaps) Update(delOut []conntrack.GREOut, delIn []conntrack.GREIn, addOut []conntrack.GREOut, addIn []conntrack.GREIn) error {
	err := h.fakeMaps.Update(delOut, delIn, addOut, addIn)
	if f := h.during; f != nil {
		h.during = nil
		f()
	}
	return err
}

func hookEngine(t *testing.T) (*Engine, *hookMaps) {
	t.Helper()
	h := &hookMaps{fakeMaps: newFakeMaps()}
	e, _ := newEngine(t, func(c *EngineConfig) { c.KernelMaps = h })
	return e, h
}

func mapperOf(t *testing.T, e *Engine, ip [4]byte, port uint16) *mapper {
	t.Helper()
	cn, ok := e.table.LookupControl(conntrack.ControlKey{InsideIP: ip, PeerIP: server, InsidePort: port, PeerPort: 1723})
	if !ok {
		t.Fatal("no control connection")
	}
	return &mapper{e, cn.Data.(*control)}
}

func checkStats(t *testing.T, e *Engine, f *fakeMaps) {
	t.Helper()
	o, i, _ := e.kp.stats()
	if o != len(f.out) || i != len(f.in) {
		t.Fatalf("the flusher believes the kernel holds %d and %d elements; it holds %d and %d", o, i, len(f.out), len(f.in))
	}
}

// A call whose outbound key another call takes over (the peer reused its
// call ID on another connection of the same host) gives its element up in
// the transaction that adds the new call's: the new call's packets are
// counted to it.
func TestKernelPathOutKeyTakenOver(t *testing.T) {
	e, f, _ := kernelEngine(t)
	addCall(t, e, lanA, 40000, 7, 555)
	flush(t, e)
	outB := addCall(t, e, lanA, 40001, 9, 555) // replaces A (same outbound key)
	if _, n := e.table.Len(); n != 1 {
		t.Fatalf("%d calls, want 1 (A replaced)", n)
	}
	flush(t, e)
	ko := conntrack.OutKey{InsideIP: lanA, PeerIP: server, PeerCallID: 555}
	kiB := conntrack.InKey{PublicIP: pubIP, PeerIP: server, OutsideCallID: outB}
	if _, eB, _ := f.inElem(kiB); len(f.out) != 1 || len(f.in) != 1 || eB.InsideCallID != 9 || f.updates != 2 {
		t.Fatalf("after the take-over: out %v in %v, %d transactions", f.out, f.in, f.updates)
	}
	checkStats(t, e, f)
	f.carryOut(ko, 5, 100)
	if err := e.SyncKernelGRE(); err != nil {
		t.Fatal(err)
	}
	if s := e.table.Snapshot(); len(s) != 1 || s[0].InsideCallID != 9 || s[0].PktsOut != 5 {
		t.Fatalf("B's counters: %+v", s)
	}
}

// A call cleared while the transaction adding its elements is in flight:
// the next flush deletes them, and its outside call ID waits for their
// counters.
func TestKernelPathClearedInFlight(t *testing.T) {
	e, h := hookEngine(t)
	addCall(t, e, lanA, 40000, 7, 555)
	h.during = func() { mapperOf(t, e, lanA, 40000).Event(helper.Event{Kind: helper.CallCleared, InsideID: 7}) }
	flush(t, e)
	if len(h.out) != 1 || len(h.in) != 1 {
		t.Fatalf("the transaction in flight: %v %v", h.out, h.in)
	}
	pk := PoolKey{pubIP, server}
	if used, _ := e.alloc.InUse(pk); used != 1 {
		t.Fatalf("%d outside IDs in use; want the cleared call's held until its counters are read", used)
	}
	flush(t, e)
	if len(h.out)+len(h.in) != 0 {
		t.Fatalf("elements of the cleared call left: %v %v", h.out, h.in)
	}
	checkStats(t, e, h.fakeMaps)
	if used, q := e.alloc.InUse(pk); used != 0 || q != 0 {
		t.Fatalf("after the flush: %d used, %d quarantined; want the ID free (no GRE carried)", used, q)
	}
	if len(e.kp.dirty) != 0 {
		t.Fatalf("%d calls still queued", len(e.kp.dirty))
	}
}

// A call established again with another peer call ID while its elements
// are being added: the next flush moves the outbound element.
func TestKernelPathReestablishedInFlight(t *testing.T) {
	e, h := hookEngine(t)
	out := addCall(t, e, lanA, 40000, 7, 555)
	h.during = func() {
		mapperOf(t, e, lanA, 40000).Event(helper.Event{Kind: helper.CallEstablished, InsideID: 7, OutsideID: out, PeerID: 601})
	}
	flush(t, e)
	flush(t, e)
	if _, _, ok := h.outElem(conntrack.OutKey{InsideIP: lanA, PeerIP: server, PeerCallID: 601}); !ok || len(h.out) != 1 || len(h.in) != 1 {
		t.Fatalf("after the move: %v %v", h.out, h.in)
	}
	checkStats(t, e, h.fakeMaps)
}

// After a failed transaction the maps are read back: an element no call
// owns (left behind our back) is deleted, the calls' elements stay or are
// added, and what the flusher believes matches the kernel.
func TestKernelPathRecoversOrphans(t *testing.T) {
	e, f, _ := kernelEngine(t)
	addCall(t, e, lanA, 40000, 7, 555)
	flush(t, e)
	stray := conntrack.OutKey{InsideIP: lanB, PeerIP: server, PeerCallID: 999}
	se := conntrack.GREOut{Key: stray, OutData: conntrack.OutData{PublicIP: pubIP, IfIndex: wanIf}}
	f.out[fkOut(se)] = se
	addCall(t, e, lanB, 40001, 9, 556)
	f.fail = 1
	if err := e.kp.flush(); err == nil {
		t.Fatal("the failed transaction was not reported")
	}
	flush(t, e)
	if _, _, ok := f.outElem(stray); ok || len(f.out) != 2 || len(f.in) != 2 {
		t.Fatalf("after the recovery: %v %v", f.out, f.in)
	}
	checkStats(t, e, f)
	// And the next flush has nothing to do.
	n := f.updates
	flush(t, e)
	if f.updates != n {
		t.Fatal("a flush with nothing changed sent a transaction")
	}
}

// sizedMaps refuses a transaction of more than max elements, as the
// kernel refuses a netlink message larger than the socket's buffer.
type sizedMaps struct {
	*fakeMaps
	max, most int
}

func (s *sizedMaps) Update(delOut []conntrack.GREOut, delIn []conntrack.GREIn, addOut []conntrack.GREOut, addIn []conntrack.GREIn) error {
	n := len(delOut) + len(delIn) + len(addOut) + len(addIn)
	s.most = max(s.most, n)
	if n > s.max {
		return errors.New("fake: message too long")
	}
	return s.fakeMaps.Update(delOut, delIn, addOut, addIn)
}

// Thousands of calls set up, then cleared, between two flushes: their
// elements go in and out in transactions of at most maxTransaction
// elements (one transaction of them all was refused for ever).
func TestKernelPathBigBurst(t *testing.T) {
	s := &sizedMaps{fakeMaps: newFakeMaps(), max: maxTransaction}
	e, _ := newEngine(t, func(c *EngineConfig) {
		c.KernelMaps = s
		c.MaxCalls = 4000
		c.Limits.CallsPerConn, c.Limits.CallsPerSource = 1000, 4000
	})
	const n = 3000
	for i := range n {
		addCall(t, e, insideHost(i/1000), 40000, uint16(0x100+i%1000), uint16(0x4000+i%1000))
	}
	flush(t, e)
	if len(s.out) != n || len(s.in) != n || s.most > maxTransaction || s.updates < 2*n/maxTransaction {
		t.Fatalf("after the set-ups: %d out, %d in, %d transactions, the largest %d elements", len(s.out), len(s.in), s.updates, s.most)
	}
	checkStats(t, e, s.fakeMaps)
	for i := range 3 {
		m := mapperOf(t, e, insideHost(i*1000/1000), 40000)
		for j := range uint16(1000) {
			m.Event(helper.Event{Kind: helper.CallCleared, InsideID: 0x100 + j})
		}
	}
	flush(t, e)
	if len(s.out)+len(s.in) != 0 || s.most > maxTransaction {
		t.Fatalf("after the clears: %d out, %d in, the largest transaction %d elements", len(s.out), len(s.in), s.most)
	}
	checkStats(t, e, s.fakeMaps)
	if len(e.kp.dirty) != 0 {
		t.Fatalf("%d calls still queued", len(e.kp.dirty))
	}
}

// A transaction refused in the middle of a burst: those before it stay,
// the rest is retried from what the kernel holds.
func TestKernelPathBurstFailsMidway(t *testing.T) {
	f := newFakeMaps()
	e, _ := newEngine(t, func(c *EngineConfig) {
		c.KernelMaps = f
		c.MaxCalls = 4000
		c.Limits.CallsPerConn, c.Limits.CallsPerSource = 1000, 4000
	})
	for i := range 1000 {
		addCall(t, e, insideHost(0), 40000, uint16(0x100+i), uint16(0x4000+i))
	}
	h := &hookMaps{fakeMaps: f}
	e.kp.maps = h
	calls := 0
	h.during = func() { calls++; f.fail = 1 } // the second transaction fails
	if err := e.kp.flush(); err == nil {
		t.Fatal("the failed transaction was not reported")
	}
	if len(f.out) != maxTransaction || len(f.in) != 0 {
		t.Fatalf("after the first transaction and a failed second: %d out, %d in", len(f.out), len(f.in))
	}
	checkStats(t, e, f)
	flush(t, e)
	if len(f.out) != 1000 || len(f.in) != 1000 {
		t.Fatalf("after the retry: %d out, %d in", len(f.out), len(f.in))
	}
	checkStats(t, e, f)
}

// A record keeps the low 32 bits of an element's packet counter: what a
// read interval added is still exact across the wrap, and a counter that
// went back (the element replaced behind the daemon's back) counts from
// zero as with full counters.
func TestGrewRec(t *testing.T) {
	for _, tc := range []struct {
		p0     uint32
		b0     uint64
		p1, b1 uint64
		wp, wb uint64
	}{
		{10, 1000, 15, 1500, 5, 500},
		{0xfffffffe, 1 << 40, 1<<32 + 3, 1<<40 + 500, 5, 500}, // the packets' low bits wrapped
		{10, 1000, 4, 400, 4, 400},                            // bytes went back: replaced
		{10, 1000, 4, 5000, 4, 5000},                          // packets went back, bytes not: replaced
		{10, 1000, 10, 1000, 0, 0},
	} {
		if p, b := grewRec(tc.p0, tc.b0, tc.p1, tc.b1); p != tc.wp || b != tc.wb {
			t.Errorf("grewRec(%d, %d, %d, %d) = %d, %d; want %d, %d", tc.p0, tc.b0, tc.p1, tc.b1, p, b, tc.wp, tc.wb)
		}
	}
}

// readFailMaps fails the next reads of the maps.
type readFailMaps struct {
	*fakeMaps
	failReads int
}

func (r *readFailMaps) Read() ([]conntrack.GREOut, []conntrack.GREIn, error) {
	if r.failReads > 0 {
		r.failReads--
		return nil, nil, errors.New("fake: read refused")
	}
	return r.fakeMaps.Read()
}

// An element no call owns, whose deletion fails together with reading the
// maps back, is deleted by a later flush, not forgotten (a stale element
// would go on translating in the kernel).
func TestKernelPathOrphanSurvivesFailedRead(t *testing.T) {
	f := newFakeMaps()
	r := &readFailMaps{fakeMaps: f}
	e, _ := newEngine(t, func(c *EngineConfig) { c.KernelMaps = r })
	addCall(t, e, lanA, 40000, 7, 555)
	flush(t, e)
	stray := conntrack.OutKey{InsideIP: lanB, PeerIP: server, PeerCallID: 999}
	se := conntrack.GREOut{Key: stray, OutData: conntrack.OutData{PublicIP: pubIP, IfIndex: wanIf}}
	f.out[fkOut(se)] = se
	addCall(t, e, lanB, 40001, 9, 556)
	f.fail = 1
	if err := e.kp.flush(); err == nil { // fails; the read back finds the stray: an orphan
		t.Fatal("the failed transaction was not reported")
	}
	if len(e.kp.orphOut) != 1 {
		t.Fatalf("%d orphans after the read back, want the stray", len(e.kp.orphOut))
	}
	f.fail, r.failReads = 1, 1 // the orphan's deletion fails, and so does the read back
	if err := e.kp.flush(); err == nil {
		t.Fatal("the failed transaction was not reported")
	}
	flush(t, e)
	if _, _, ok := f.outElem(stray); ok {
		t.Fatal("the stray element is still in the kernel")
	}
	if len(f.out) != 2 || len(f.in) != 2 {
		t.Fatalf("elements: %d out, %d in; want the two calls'", len(f.out), len(f.in))
	}
}
