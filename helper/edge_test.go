package helper

import (
	"bytes"
	"testing"

	"pptpgw/internal/pkt"
	"pptpgw/pptp/wire"
)

// start returns a runner whose conversation cv has gone through turns
// [0, upto).
func start(t *testing.T, cv conversation, cfg Config, upto int) *runner {
	t.Helper()
	r := newRunner(t, cv, cfg)
	r.run(conversation{turns: cv.turns[:upto]}, whole)
	return r
}

func countKind(evs []Event, k EventKind) int {
	n := 0
	for _, e := range evs {
		if e.Kind == k {
			n++
		}
	}
	return n
}

func TestRetransmission(t *testing.T) {
	cv := pnsInside()
	r := start(t, cv, Config{Strict: true}, 4) // up to the OCRPs
	ocrq := cv.turns[2]
	seq0 := r.seq[Outbound] - uint32(len(ocrq.inside))

	// An exact resend of the OCRQ turn gets the same rewrite, no new events.
	evs := len(r.m.events)
	p := ocrq.wireIn()
	res := r.process(Outbound, seq0, false, p)
	if res.Verdict != pkt.Accept || res.Reason != ReasonRetransmission || !bytes.Equal(p, ocrq.want()) {
		t.Fatalf("resend: %+v\n% x\nwant\n% x", res, p, ocrq.want())
	}
	if len(res.Patches) != 6 { // three call IDs, two bytes each
		t.Errorf("%d patches, want 6", len(res.Patches))
	}
	// A resend of part of it overlapping new data (the SLI turn): old part
	// from memory, new part parsed.
	sli := cv.turns[4]
	tail := ocrq.wireIn()[100:]
	p = append(tail, sli.wireIn()...)
	res = r.process(Outbound, seq0+100, false, p)
	want := append(ocrq.want()[100:], sli.want()...)
	if res.Verdict != pkt.Accept || res.Reason != ReasonNone || !bytes.Equal(p, want) {
		t.Fatalf("overlap: %+v\n% x\nwant\n% x", res, p, want)
	}
	if len(r.m.events) != evs {
		t.Errorf("resends added events:\n%s", eventsString(r.m.events[evs:]))
	}
	// Inbound resend of the OCRPs.
	ocrp := cv.turns[3]
	p = ocrp.wireIn()
	res = r.process(Inbound, r.seq[Inbound]-uint32(len(p)), false, p)
	if res.Verdict != pkt.Accept || !bytes.Equal(p, ocrp.want()) {
		t.Fatalf("inbound resend: %+v", res)
	}
}

func TestOutOfOrder(t *testing.T) {
	cv := pnsInside()
	r := start(t, cv, Config{Strict: true}, 2)
	ocrq := cv.turns[2].wireIn()
	seq := r.seq[Outbound]
	res := r.process(Outbound, seq+10, false, ocrq[10:])
	if res.Verdict != pkt.Drop || res.Reason != ReasonOutOfOrder || len(res.Patches) != 0 {
		t.Fatalf("gap: %+v", res)
	}
	if !bytes.Equal(ocrq[10:], cv.turns[2].wireIn()[10:]) {
		t.Fatal("dropped segment was modified")
	}
	// The stream is where it was: in-order data still works.
	p := cv.turns[2].wireIn()
	if res := r.process(Outbound, seq, false, p); res.Verdict != pkt.Accept || !bytes.Equal(p, cv.turns[2].want()) {
		t.Fatalf("in order after gap: %+v", res)
	}
}

func TestHold(t *testing.T) {
	cv := pnsInside()
	ocrq := cv.turns[2]
	const cut = 13 // between the two bytes of the first OCRQ's Call ID
	fresh := func() []byte { return ocrq.wireIn() }

	t.Run("release", func(t *testing.T) {
		r := start(t, cv, Config{Strict: true}, 2)
		seq := r.seq[Outbound]
		a, b := fresh(), fresh()
		res := r.process(Outbound, seq, false, a[:cut])
		if res.Verdict != pkt.Hold || res.Reason != ReasonSplitCallID || !r.c.Held(Outbound) {
			t.Fatalf("first part: %+v", res)
		}
		// A copy of the held segment is dropped.
		dup := fresh()
		if res := r.c.Process(Outbound, seq, false, false, false, dup[:cut]); res.Verdict != pkt.Drop || res.Reason != ReasonHeldDuplicate {
			t.Fatalf("duplicate: %+v", res)
		}
		res = r.process(Outbound, seq+cut, false, b[cut:])
		if res.Verdict != pkt.Accept || !res.Released || len(res.ReleasedPatches) != 1 || res.ReleasedPatches[0].Off != 12 {
			t.Fatalf("second part: %+v", res)
		}
		got := append(a[:cut:cut], b[cut:]...)
		if !bytes.Equal(got, ocrq.want()) {
			t.Fatalf("joined\n% x\nwant\n% x", got, ocrq.want())
		}
	})
	t.Run("collapsed resend", func(t *testing.T) {
		// The sender resends the held bytes together with the rest.
		r := start(t, cv, Config{Strict: true}, 2)
		seq := r.seq[Outbound]
		a := fresh()
		r.process(Outbound, seq, false, a[:cut])
		all := fresh()
		res := r.process(Outbound, seq, false, all)
		if res.Verdict != pkt.Accept || !res.Released || !bytes.Equal(all, ocrq.want()) || !bytes.Equal(a[:cut], ocrq.want()[:cut]) {
			t.Fatalf("collapsed: %+v\n% x", res, all)
		}
	})
	t.Run("expire then resend", func(t *testing.T) {
		r := start(t, cv, Config{Strict: true}, 2)
		seq := r.seq[Outbound]
		r.process(Outbound, seq, false, fresh()[:cut])
		if !r.c.ExpireHeld() || r.c.ExpireHeld() || r.c.Held(Outbound) {
			t.Fatal("ExpireHeld")
		}
		r.held[Outbound] = nil // the caller dropped it
		a := fresh()
		if res := r.process(Outbound, seq, false, a[:cut]); res.Verdict != pkt.Hold {
			t.Fatalf("resend of the expired segment: %+v", res)
		}
		b := fresh()
		if res := r.process(Outbound, seq+cut, false, b[cut:]); !res.Released {
			t.Fatalf("not released: %+v", res)
		}
		if got := append(a[:cut:cut], b[cut:]...); !bytes.Equal(got, ocrq.want()) {
			t.Fatalf("joined\n% x", got)
		}
	})
	t.Run("expire then continue", func(t *testing.T) {
		// Lenient caller sent the held segment unpatched; the rest is still
		// rewritten and a later resend of the first byte gets its patch.
		r := start(t, cv, Config{}, 2)
		seq := r.seq[Outbound]
		r.process(Outbound, seq, false, fresh()[:cut])
		r.c.ExpireHeld()
		r.held[Outbound] = nil
		b := fresh()
		res := r.process(Outbound, seq+cut, false, b[cut:])
		if res.Verdict != pkt.Accept || res.Released || !bytes.Equal(b[cut:], ocrq.want()[cut:]) {
			t.Fatalf("continue: %+v", res)
		}
		a := fresh()
		res = r.process(Outbound, seq, false, a[:cut])
		if res.Verdict != pkt.Accept || res.Reason != ReasonRetransmission || !bytes.Equal(a[:cut], ocrq.want()[:cut]) {
			t.Fatalf("resend: %+v", res)
		}
	})
}

// corrupt returns an Echo-Request damaged in one way.
func corrupt(kind Reason) []byte {
	b := (&wire.EchoRQ{ID: 9}).Append(nil)
	switch kind {
	case ReasonBadMagic:
		b[wire.MagicOffset] = 0
	case ReasonBadLength:
		b[wire.LengthOffset+1] = 17
	case ReasonUnknownType:
		b[wire.CtrlTypeOffset+1] = 99
	case ReasonNotControl:
		b[wire.PPTPTypeOffset+1] = 2
	}
	return b
}

func TestMalformed(t *testing.T) {
	cv := pnsInside()
	for _, kind := range []Reason{ReasonBadMagic, ReasonBadLength, ReasonUnknownType, ReasonNotControl} {
		for _, strict := range []bool{true, false} {
			name := kind.String() + "/lenient"
			if strict {
				name = kind.String() + "/strict"
			}
			t.Run(name, func(t *testing.T) {
				r := start(t, cv, Config{Strict: strict}, 2)
				seq := r.seq[Outbound]
				seg := append((&wire.EchoRQ{ID: 1}).Append(nil), corrupt(kind)...)
				orig := bytes.Clone(seg)
				evs := countKind(r.m.events, EchoSeen)
				res := r.process(Outbound, seq, false, seg)
				if res.Reason != kind || !bytes.Equal(seg, orig) {
					t.Fatalf("%+v", res)
				}
				if countKind(r.m.events, EchoSeen) != evs+1 {
					t.Errorf("the good message before the bad one was not seen")
				}
				next := cv.turns[2].wireIn() // OCRQs
				if strict {
					if res.Verdict != pkt.Drop {
						t.Fatalf("strict: %+v", res)
					}
					// Every resend is dropped the same way; nothing moves on.
					if res := r.process(Outbound, seq, false, bytes.Clone(orig)); res.Verdict != pkt.Drop || res.Reason != kind {
						t.Fatalf("strict resend: %+v", res)
					}
					if res := r.process(Outbound, seq+uint32(len(seg)), false, next); res.Verdict != pkt.Drop {
						t.Fatalf("strict later data: %+v", res)
					}
					// The good message alone (resent) still passes.
					if res := r.process(Outbound, seq, false, bytes.Clone(orig[:16])); res.Verdict != pkt.Accept {
						t.Fatalf("strict resend of the good part: %+v", res)
					}
					if countKind(r.m.events, EchoSeen) != evs+1 {
						t.Errorf("resends re-ran the state machine")
					}
					return
				}
				if res.Verdict != pkt.Accept {
					t.Fatalf("lenient: %+v", res)
				}
				// Desynchronised: later data passes untouched.
				want := bytes.Clone(next)
				res = r.process(Outbound, seq+uint32(len(seg)), false, next)
				if res.Verdict != pkt.Accept || res.Reason != ReasonDesynced || !bytes.Equal(next, want) {
					t.Fatalf("lenient later data: %+v", res)
				}
				if countKind(r.m.events, CallRequested) != 0 {
					t.Errorf("desynchronised stream still parsed")
				}
				// The other direction is still parsed.
				in := cv.turns[3].wireIn()
				if res := r.process(Inbound, r.seq[Inbound], false, in); res.Verdict != pkt.Accept {
					t.Fatalf("inbound: %+v", res)
				}
			})
		}
	}
}

// A malformed header split over two segments is found in the second.
func TestMalformedSplitHeader(t *testing.T) {
	r := start(t, pnsInside(), Config{Strict: true}, 2)
	seq := r.seq[Outbound]
	bad := corrupt(ReasonBadMagic)
	if res := r.process(Outbound, seq, false, bad[:6]); res.Verdict != pkt.Accept {
		t.Fatalf("first part: %+v", res)
	}
	if res := r.process(Outbound, seq+6, false, bad[6:]); res.Verdict != pkt.Drop || res.Reason != ReasonBadMagic {
		t.Fatalf("second part: %+v", res)
	}
	// The stream stays at the bad message's start: a resend of the first
	// part is old news, its rest is dropped.
	if res := r.process(Outbound, seq, false, bytes.Clone(bad)); res.Verdict != pkt.Drop {
		t.Fatalf("resend: %+v", res)
	}
}

func TestNoSYN(t *testing.T) {
	p := (&wire.OCRQ{CallID: 5}).Append(nil)
	for _, strict := range []bool{false, true} {
		m := newFakeMapper()
		c := NewTranslator(m, Config{Strict: strict})
		q := bytes.Clone(p)
		res := c.Process(Outbound, 1000, false, false, false, q)
		wantV := pkt.Accept
		if strict {
			wantV = pkt.Drop
		}
		if res.Verdict != wantV || res.Reason != ReasonNoSYN || !bytes.Equal(q, p) || len(m.events) != 0 {
			t.Errorf("strict=%v: %+v", strict, res)
		}
		// A FIN on such a connection still reports the stop.
		c.Process(Outbound, 1000+uint32(len(p)), false, true, false, nil)
		if countKind(m.events, ControlStopped) != 1 {
			t.Errorf("strict=%v: no stop event", strict)
		}
	}
}

func TestRST(t *testing.T) {
	cv := pnsInside()
	r := start(t, cv, Config{Strict: true}, 3)
	res := r.c.Process(Inbound, r.seq[Inbound]+1000, false, false, true, nil)
	if res.Verdict != pkt.Accept || res.Reason != ReasonRSTNotInSeq || countKind(r.m.events, ControlStopped) != 0 {
		t.Fatalf("blind RST: %+v", res)
	}
	r.c.Process(Inbound, r.seq[Inbound], false, false, true, nil)
	if countKind(r.m.events, ControlStopped) != 1 || r.c.NumCalls() != 0 {
		t.Fatalf("RST: %s", eventsString(r.m.events))
	}
	r.c.Process(Outbound, r.seq[Outbound], false, true, false, nil)
	if countKind(r.m.events, ControlStopped) != 1 {
		t.Fatal("ControlStopped twice")
	}
}

func TestUnknownCallID(t *testing.T) {
	cv := pnsInside()
	r := start(t, cv, Config{Strict: true}, 2)
	// OCRP for an outside ID nobody allocated: untouched, no event (the
	// SCCRP's ControlEstablished came before).
	r.m.events = r.m.events[:0]
	p := (&wire.OCRP{CallID: 1, PeerCallID: 0x4242, Result: 1}).Append(nil)
	orig := bytes.Clone(p)
	res := r.process(Inbound, r.seq[Inbound], false, p)
	if res.Verdict != pkt.Accept || res.Reason != ReasonUnknownCallID || !bytes.Equal(p, orig) || len(r.m.events) != 0 {
		t.Fatalf("%+v %s", res, eventsString(r.m.events))
	}
	p = (&wire.CCRQ{CallID: 0x4242}).Append(nil)
	if res := r.process(Outbound, r.seq[Outbound], false, p); res.Reason != ReasonUnknownCallID {
		t.Fatalf("CCRQ: %+v", res)
	}
}

func TestAllocFailed(t *testing.T) {
	cv := pnsInside()
	r := start(t, cv, Config{Strict: true}, 2)
	r.m.failAlloc = true
	r.m.events = r.m.events[:0] // the SCCRP's ControlEstablished
	p := (&wire.OCRQ{CallID: 0x0101}).Append(nil)
	orig := bytes.Clone(p)
	res := r.process(Outbound, r.seq[Outbound], false, p)
	if res.Verdict != pkt.Accept || res.Reason != ReasonAllocFailed || !bytes.Equal(p, orig) || len(r.m.events) != 0 {
		t.Fatalf("%+v", res)
	}
}

func TestHistoryLost(t *testing.T) {
	for _, strict := range []bool{true, false} {
		cv := pnsInside()
		r := start(t, cv, Config{Strict: strict}, 2)
		seq0 := r.seq[Outbound]
		first := (&wire.OCRQ{CallID: 0x1000}).Append(nil)
		r.process(Outbound, seq0, false, bytes.Clone(first))
		r.seq[Outbound] += uint32(len(first))
		// ringSize/2 more calls push the first one's patches out.
		for i := range ringSize / 2 {
			p := (&wire.OCRQ{CallID: 0x2000 + uint16(i)}).Append(nil)
			r.process(Outbound, r.seq[Outbound], false, p)
			r.seq[Outbound] += uint32(len(p))
		}
		res := r.process(Outbound, seq0, false, bytes.Clone(first))
		wantV := pkt.Accept
		if strict {
			wantV = pkt.Drop
		}
		if res.Verdict != wantV || res.Reason != ReasonHistoryLost {
			t.Errorf("strict=%v: %+v", strict, res)
		}
		// A recent one is still remembered.
		last := (&wire.OCRQ{CallID: 0x2000 + ringSize/2 - 1}).Append(nil)
		res = r.process(Outbound, r.seq[Outbound]-uint32(len(last)), false, last)
		if res.Verdict != pkt.Accept || res.Reason != ReasonRetransmission || len(res.Patches) != 2 {
			t.Errorf("strict=%v: recent resend %+v", strict, res)
		}
	}
}

func TestCallStates(t *testing.T) {
	cv := pnsInside()
	r := newRunner(t, cv, Config{Strict: true})
	steps := []struct {
		upto  int
		id    uint16
		state Phase
		ok    bool
	}{
		{3, 0x0101, PhaseRequested, true},
		{4, 0x0101, PhaseConnected, true},
		{4, 0x0202, 0, false}, // OCRP busy: failed and gone
		{7, 0x0404, PhaseAnswered, true},
		{8, 0x0404, PhaseConnected, true},
		{9, 0x0101, PhaseClearing, true},
		{10, 0x0101, 0, false},
		{10, 0x0303, 0, false},
	}
	done := 0
	for _, s := range steps {
		r.run(conversation{turns: cv.turns[done:s.upto]}, whole)
		done = s.upto
		st, ok := r.c.Call(s.id)
		if st != s.state || ok != s.ok {
			t.Errorf("after turn %d: call %#x = %v %v, want %v %v", s.upto, s.id, st, ok, s.state, s.ok)
		}
	}
}

func TestBadDir(t *testing.T) {
	c := NewTranslator(newFakeMapper(), Config{})
	if res := c.Process(7, 0, true, false, false, nil); res.Verdict != pkt.Drop || res.Reason != ReasonBadDir {
		t.Fatalf("%+v", res)
	}
}

// TestNoAllocs: echoes, an in-place rewrite of a known call and a
// retransmission with remembered patches do not allocate.
func TestNoAllocs(t *testing.T) {
	cv := pnsInside()
	r := start(t, cv, Config{Strict: true}, 4)
	r.m.noRecord = true
	echo := (&wire.EchoRQ{ID: 1}).Append(nil)
	reply := (&wire.EchoRP{ID: 1, Result: 1}).Append(nil)
	// Inbound WAN-Error-Notify for call 0x0101 (outside 0xfefe): InsideOf rewrite.
	wen := (&wire.WEN{PeerCallID: 0xfefe}).Append(nil)
	wenCopy := bytes.Clone(wen)
	allocs := testing.AllocsPerRun(500, func() {
		r.c.Process(Outbound, r.seq[Outbound], false, false, false, echo)
		r.seq[Outbound] += uint32(len(echo))
		r.c.Process(Inbound, r.seq[Inbound], false, false, false, reply)
		r.seq[Inbound] += uint32(len(reply))
		copy(wen, wenCopy)
		if res := r.c.Process(Inbound, r.seq[Inbound], false, false, false, wen); len(res.Patches) != 2 || res.Reason != ReasonNone {
			panic("WEN not rewritten")
		}
		copy(wen, wenCopy)
		if res := r.c.Process(Inbound, r.seq[Inbound], false, false, false, wen); len(res.Patches) != 2 || res.Reason != ReasonRetransmission {
			panic("WEN resend not patched")
		}
		r.seq[Inbound] += uint32(len(wen))
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per run", allocs)
	}
	if r.m.nEvents < 1000 {
		t.Fatalf("%d events", r.m.nEvents)
	}
}

// A full-sized segment of Call-Clear-Requests (the densest rewrite) can be
// resent and gets every patch back.
func TestResendFullSegment(t *testing.T) {
	cv := pnsInside()
	r := start(t, cv, Config{Strict: true}, 2)
	var inside []byte
	for i := range 1460 / 16 {
		id := 0x1000 + uint16(i)
		r.m.AllocOutside(id)
		inside = (&wire.CCRQ{CallID: id}).Append(inside)
	}
	want := outsideView(Outbound, inside)
	p := bytes.Clone(inside)
	seq := r.seq[Outbound]
	if res := r.process(Outbound, seq, false, p); res.Verdict != pkt.Accept || !bytes.Equal(p, want) {
		t.Fatalf("first: %+v", res)
	}
	p = bytes.Clone(inside)
	res := r.process(Outbound, seq, false, p)
	if res.Verdict != pkt.Accept || res.Reason != ReasonRetransmission || !bytes.Equal(p, want) || len(res.Patches) != 2*91 {
		t.Fatalf("resend: %v %q, %d patches", res.Verdict, res.Reason, len(res.Patches))
	}
}

// A connection costs what it holds: no patch memory before its first
// rewrite, a few entries after one, and at most ringSize per direction
// however many rewrites follow.
func TestPatchMemoryGrowsLazily(t *testing.T) {
	cv := pnsInside()
	r := start(t, cv, Config{Strict: true}, 2) // SYNs, SCCRQ, SCCRP: no call ID
	for d := range r.c.dirs {
		if s := &r.c.dirs[d]; s.ring != nil {
			t.Fatalf("%v: ring of %d allocated before any rewrite", Dir(d), cap(s.ring))
		}
	}
	if r.c.patches != nil || r.c.relPatches != nil || r.c.gone != nil {
		t.Fatal("patch or gone buffers allocated before any rewrite")
	}
	p := (&wire.OCRQ{CallID: 0x0101}).Append(nil)
	if res := r.process(Outbound, r.seq[Outbound], false, p); len(res.Patches) != 2 {
		t.Fatalf("OCRQ: %+v", res)
	}
	if s := &r.c.dirs[Outbound]; len(s.ring) != 2 || cap(s.ring) > 8 || r.c.dirs[Inbound].ring != nil {
		t.Fatalf("after one rewrite: out ring %d/%d, in ring %v", len(s.ring), cap(s.ring), r.c.dirs[Inbound].ring)
	}
	s := &r.c.dirs[Outbound]
	for i := range uint32(3 * ringSize) {
		s.remember(1000+i, 1, 2)
	}
	if len(s.ring) != ringSize || cap(s.ring) > ringSize || !s.hasFloor || s.floor != 1000+2*ringSize {
		t.Fatalf("ring %d/%d, floor %d (%v): want %d entries, wrapped", len(s.ring), cap(s.ring), s.floor, s.hasFloor, ringSize)
	}
}

// A segment carrying many call requests (a GSO burst) grows the patch
// scratch; the next segment drops it rather than keep its size for the
// connection's life (memory, issue 12). Small segments keep theirs
// (TestNoAllocs).
func TestPatchScratchShrinks(t *testing.T) {
	cv := pnsInside()
	r := start(t, cv, Config{Strict: true}, 2)
	var burst []byte
	for i := range uint16(20) {
		burst = (&wire.OCRQ{CallID: 0x0100 + i, CallSerial: i}).Append(burst)
	}
	if res := r.process(Outbound, r.seq[Outbound], false, burst); len(res.Patches) != 40 {
		t.Fatalf("20 OCRQs in one segment: %d patches", len(res.Patches))
	}
	echo := (&wire.EchoRQ{ID: 1}).Append(nil)
	r.process(Outbound, r.seq[Outbound], false, echo)
	if c := cap(r.c.patches); c >= 40 || c > maxKeptPatches {
		t.Fatalf("after a small segment the scratch still holds %d patches", c)
	}
}
