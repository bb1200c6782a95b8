package nat

import (
	"sync"
	"testing"
	"time"

	"pptpgw/conntrack"
	"pptpgw/helper"
	"pptpgw/internal/pkt"
	"pptpgw/qos/police"
)

// kfeat (issue 12): a classed or policed call takes the kernel path with
// its class and policing in its elements; what the kernel's policers drop
// is counted as the call's policed_out/policed_in and gre_policed drops.
func TestKernelPathClassesAndPolicing(t *testing.T) {
	f := newFakeMaps()
	e, _ := newEngine(t, func(c *EngineConfig) {
		c.KernelMaps = f
		c.QoS = QoSConfig{Classes: qosClasses(t, testClasses),
			CallLimit: police.Limit{BytesPerSecond: 125000, Burst: 15000}}
	})
	boss := [4]byte{10, 0, 0, 77}
	outBoss := addCall(t, e, boss, 40000, 7, 555)
	outA := addCall(t, e, lanA, 40001, 8, 556)
	flush(t, e)
	if len(f.out) != 2 || len(f.in) != 2 {
		t.Fatalf("elements: %d out, %d in; want both calls' (classed and policed calls take the kernel path)", len(f.out), len(f.in))
	}
	kb := conntrack.OutKey{InsideIP: boss, PeerIP: server, PeerCallID: 555}
	ka := conntrack.OutKey{InsideIP: lanA, PeerIP: server, PeerCallID: 556}
	kbIn := conntrack.InKey{PublicIP: pubIP, PeerIP: server, OutsideCallID: outBoss}
	kaIn := conntrack.InKey{PublicIP: pubIP, PeerIP: server, OutsideCallID: outA}
	for _, c := range []struct {
		out   conntrack.OutKey
		in    conntrack.InKey
		class uint8
	}{{kb, kbIn, 2}, {ka, kaIn, 3}} { // boss (index 1), tunnels (index 2)
		_, o, _ := f.outElem(c.out)
		_, i, _ := f.inElem(c.in)
		if o.Class != c.class || !o.Policed || i.Class != c.class || !i.Policed || o.IfIndex != wanIf || i.IfIndex != wanIf {
			t.Errorf("elements of %v: out %+v in %+v, want class %d, policed, interface %d", c.out, o, i, c.class, wanIf)
		}
	}

	// The kernel drops 7 of boss's outbound and 3 of A's inbound packets.
	drop := func(n uint64, out conntrack.OutKey, in conntrack.InKey) {
		if out != (conntrack.OutKey{}) {
			fk, el, _ := f.outElem(out)
			el.Dropped += n
			f.out[fk] = el
		} else {
			fk, el, _ := f.inElem(in)
			el.Dropped += n
			f.in[fk] = el
		}
	}
	drop(7, kb, conntrack.InKey{})
	drop(3, conntrack.OutKey{}, kaIn)
	if err := e.SyncKernelGRE(); err != nil {
		t.Fatal(err)
	}
	drop(2, kb, conntrack.InKey{})
	if err := e.SyncKernelGRE(); err != nil {
		t.Fatal(err)
	}
	if err := e.SyncKernelGRE(); err != nil { // nothing new: nothing counted twice
		t.Fatal(err)
	}
	got := map[string][2]uint64{}
	for _, c := range e.Calls() {
		got[c.Class] = [2]uint64{c.PolicedOut, c.PolicedIn}
	}
	if got["boss"] != [2]uint64{9, 0} || got["tunnels"] != [2]uint64{0, 3} {
		t.Errorf("policed per call: %v, want boss 9 out, tunnels 3 in", got)
	}
	if n := e.counters.Load(int(rGREPoliced)); n != 12 {
		t.Errorf("gre_policed drops %d, want 12", n)
	}
}

// Without classes or policing the elements are the plain ones (the common
// case's maps).
func TestKernelPathPlainElements(t *testing.T) {
	e, f, _ := kernelEngine(t)
	addCall(t, e, lanA, 40000, 7, 555)
	flush(t, e)
	for _, o := range f.out {
		if o.Class != 0 || o.Policed || o.IfIndex != wanIf {
			t.Errorf("out element %+v", o)
		}
	}
	for _, i := range f.in {
		if i.Class != 0 || i.Policed || i.IfIndex != wanIf {
			t.Errorf("in element %+v", i)
		}
	}
}

// A call whose class or policer the configuration no longer has (restored
// from a state snapshot into a daemon started with another configuration)
// stays on the userspace path: its elements would jump to a chain the
// table lacks.
func TestKernelPathQoSFits(t *testing.T) {
	f := newFakeMaps()
	q := QoSConfig{Classes: qosClasses(t, testClasses), CallLimit: police.Limit{BytesPerSecond: 125000, Burst: 15000}}
	e, _ := newEngine(t, func(c *EngineConfig) { c.KernelMaps = f; c.QoS = q })
	addCall(t, e, lanA, 40001, 8, 556) // class tunnels (index 2), policed
	eligible := func() (r []bool) {
		e.table.EstablishedGREFill(func(c *conntrack.Call) bool { r = append(r, e.kernelEligible(c)); return false }, nil)
		return r
	}
	if got := eligible(); len(got) != 1 || !got[0] {
		t.Fatalf("with its class and policer configured: eligible %v", got)
	}
	e.setQoS(QoSConfig{Classes: q.Classes}) // policing off
	if got := eligible(); len(got) != 1 || got[0] {
		t.Errorf("policed, policing off: eligible %v", got)
	}
	e.setQoS(QoSConfig{Classes: q.Classes[:2], CallLimit: q.CallLimit}) // class index 2 gone
	if got := eligible(); len(got) != 1 || got[0] {
		t.Errorf("class 2 of 2: eligible %v", got)
	}
	e.setQoS(q)
	if got := eligible(); len(got) != 1 || !got[0] {
		t.Errorf("configured again: eligible %v", got)
	}
	// The table's chains, once known, bound it too.
	for _, c := range []struct {
		classes int
		policed bool
		want    bool
	}{{4, true, true}, {2, true, false}, {4, false, false}, {3, true, true}} {
		e.SetKernelQoSChains(c.classes, c.policed)
		if got := eligible(); len(got) != 1 || got[0] != c.want {
			t.Errorf("table with chains for %d classes, policed %v: eligible %v, want %v", c.classes, c.policed, got, c.want)
		}
	}
}

// The WAN's interface comes back with another index: every call's elements
// move to the new key in one transaction (the old ones deleted as the
// kernel holds them; the fake refuses any other deletion).
func TestKernelPathWANIndexChange(t *testing.T) {
	e, f, _ := kernelEngine(t)
	addCall(t, e, lanA, 40000, 7, 555)
	addCall(t, e, lanB, 40001, 9, 556)
	flush(t, e)
	updates := f.updates
	e.SetWANIndex(wanIf + 40)
	flush(t, e)
	if f.updates != updates+1 {
		t.Errorf("%d transactions for the move, want 1", f.updates-updates)
	}
	if len(f.out) != 2 || len(f.in) != 2 {
		t.Fatalf("elements after the move: %d out, %d in", len(f.out), len(f.in))
	}
	for k := range f.out {
		if k.ifx != wanIf+40 {
			t.Errorf("out element %+v on interface %d, want %d", k, k.ifx, wanIf+40)
		}
	}
	for k := range f.in {
		if k.ifx != wanIf+40 {
			t.Errorf("in element %+v on interface %d, want %d", k, k.ifx, wanIf+40)
		}
	}
	flush(t, e) // nothing left to do
	if f.updates != updates+1 {
		t.Errorf("a flush with nothing changed sent a transaction")
	}
}

// A refresh (the WAN's interface index changing) racing calls being set up
// and cleared never wants a cleared call's elements again: once all calls
// are gone, so are their elements (the refresh queues calls under the
// table's lock and sets no record wanted).
func TestKernelPathRefreshRacesRemoval(t *testing.T) {
	e, f, _ := kernelEngine(t)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := uint32(0); ; i++ {
			select {
			case <-done:
				return
			default:
			}
			e.SetWANIndex(wanIf + 1 + i%2)
		}
	}()
	for i := range 3000 {
		id := uint16(0x100 + i%20)
		addCall(t, e, lanA, 40000, id, 0x4000+id)
		if i%7 == 0 {
			flush(t, e)
		}
		mapperOf(t, e, lanA, 40000).Event(helper.Event{Kind: helper.CallCleared, InsideID: id})
	}
	close(done)
	wg.Wait()
	flush(t, e)
	if _, n := e.table.Len(); n != 0 || len(f.out)+len(f.in) != 0 {
		t.Fatalf("%d calls, %d out and %d in elements left", n, len(f.out), len(f.in))
	}
	checkStats(t, e, f)
}

// A call the configuration would no longer put on the kernel path (its
// class or policer dropped by a reload) still gets its elements moved when
// the WAN's interface changes: they stay in the kernel until the call ends.
func TestKernelPathRefreshKeepsUnfitCalls(t *testing.T) {
	e, f, _ := kernelEngine(t)
	addCall(t, e, lanA, 40000, 7, 555)
	flush(t, e)
	e.kp.eligible = func(*conntrack.Call) bool { return false } // as after such a reload
	e.SetWANIndex(wanIf + 40)
	flush(t, e)
	if len(f.out) != 1 || len(f.in) != 1 {
		t.Fatalf("elements after the move: %d out, %d in", len(f.out), len(f.in))
	}
	for k := range f.out {
		if k.ifx != wanIf+40 {
			t.Errorf("out element on interface %d, want %d", k.ifx, wanIf+40)
		}
	}
}

// What the kernel's policer drops counts in the call's packets, bytes and
// activity, as on the userspace path, which counts every packet and then
// polices it (D3: `pptpgw calls` showed fewer packets out than were sent).
// The engine's GRE counters count it as gre_policed only, as there.
func TestKernelPathPolicedCounted(t *testing.T) {
	f := newFakeMaps()
	e, clk := newEngine(t, func(c *EngineConfig) {
		c.KernelMaps = f
		c.QoS = QoSConfig{CallLimit: police.Limit{BytesPerSecond: 125000, Burst: 15000}}
	})
	addCall(t, e, lanA, 40000, 7, 555)
	flush(t, e)
	ko := conntrack.OutKey{InsideIP: lanA, PeerIP: server, PeerCallID: 555}
	clk.Advance(30 * time.Second)
	fk, el, ok := f.outElem(ko)
	if !ok || !el.Policed {
		t.Fatalf("the call's outbound element: %+v (found %v), want policed", el, ok)
	}
	el.Packets, el.Bytes = 10, 1000
	el.Dropped, el.DroppedBytes = 7, 700
	f.out[fk] = el
	gre0 := e.counters.Load(int(rGREOut))
	calls := e.Calls()
	if len(calls) != 1 {
		t.Fatalf("%d calls", len(calls))
	}
	c := calls[0]
	if c.PktsOut != 17 || c.BytesOut != 1700 || c.PolicedOut != 7 || c.IdleSeconds != 0 {
		t.Errorf("call: %d packets, %d bytes out, %d policed, idle %vs; want 17, 1700, 7, 0", c.PktsOut, c.BytesOut, c.PolicedOut, c.IdleSeconds)
	}
	if d := e.counters.Load(int(rGREOut)) - gre0; d != 10 {
		t.Errorf("GRE out counted %d, want the 10 carried (the policed ones are gre_policed)", d)
	}
	if n := e.counters.Load(int(rGREPoliced)); n != 7 {
		t.Errorf("gre_policed %d, want 7", n)
	}
}

// What a call's elements carried since the last read is counted before a
// refresh replaces them (their successors count from zero): reviewer's R1,
// up to one read interval of packets lost per refresh.
func TestKernelPathRefreshKeepsCounts(t *testing.T) {
	e, f, _ := kernelEngine(t)
	addCall(t, e, lanA, 40000, 7, 555)
	flush(t, e)
	ko := conntrack.OutKey{InsideIP: lanA, PeerIP: server, PeerCallID: 555}
	f.carryOut(ko, 5, 100)
	e.SetWANIndex(wanIf + 40)
	flush(t, e)
	if _, el, ok := f.outElem(ko); !ok || el.IfIndex != wanIf+40 {
		t.Fatalf("the element did not move: %+v", el)
	}
	f.carryOut(ko, 2, 100)
	calls := e.Calls()
	if len(calls) != 1 || calls[0].PktsOut != 7 || calls[0].BytesOut != 700 {
		t.Fatalf("calls %+v: want 7 packets, 700 bytes out", calls)
	}
}

// A policed call cleared before the table read its counters, whose GRE
// the kernel's policer dropped entirely, still carried GRE: its outside
// call ID goes into quarantine (reviewer's N3).
func TestKernelPathQuarantinePolicedOnly(t *testing.T) {
	f := newFakeMaps()
	e, _ := newEngine(t, func(c *EngineConfig) {
		c.KernelMaps = f
		c.QoS = QoSConfig{CallLimit: police.Limit{BytesPerSecond: 125000, Burst: 15000}}
	})
	addCall(t, e, lanA, 40000, 7, 555)
	flush(t, e)
	fk, el, _ := f.outElem(conntrack.OutKey{InsideIP: lanA, PeerIP: server, PeerCallID: 555})
	el.Dropped, el.DroppedBytes = 3, 300
	f.out[fk] = el
	mapperOf(t, e, lanA, 40000).Event(helper.Event{Kind: helper.CallCleared, InsideID: 7})
	flush(t, e)
	if used, q := e.alloc.InUse(PoolKey{pubIP, server}); used != 0 || q != 1 {
		t.Fatalf("after the flush: %d used, %d quarantined; want the ID quarantined", used, q)
	}
}

// A policed call on the kernel path that is set up again with another peer
// call ID after a reload turned policing off (it no longer qualifies)
// gives its elements up instead of leaving them under the old key.
func TestKernelPathReestablishedUnfit(t *testing.T) {
	f := newFakeMaps()
	q := QoSConfig{CallLimit: police.Limit{BytesPerSecond: 125000, Burst: 15000}}
	e, _ := newEngine(t, func(c *EngineConfig) { c.KernelMaps = f; c.QoS = q })
	out := addCall(t, e, lanA, 40000, 7, 555)
	flush(t, e)
	if len(f.out) != 1 || len(f.in) != 1 {
		t.Fatalf("policed call set up: %d out, %d in elements", len(f.out), len(f.in))
	}
	e.setQoS(QoSConfig{}) // policing off: the call keeps its policer, the kernel path no longer fits it
	mapperOf(t, e, lanA, 40000).Event(helper.Event{Kind: helper.CallEstablished, InsideID: 7, OutsideID: out, PeerID: 601})
	flush(t, e)
	if len(f.out) != 0 || len(f.in) != 0 {
		t.Errorf("after the call was set up again, unfit: elements out %v in %v, want none", f.out, f.in)
	}
	if v, _ := sendGRE(t, e, lanA, 601, out, false, 100, 0); v != pkt.Accept {
		t.Errorf("its GRE through the queue: %v", v)
	}
}
