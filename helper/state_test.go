package helper

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"pptpgw/internal/pkt"
	"pptpgw/pptp/wire"
)

// A Translator restored from its saved State (through JSON) is the same
// Translator: same state, and the same answer to the next segments
// (completing a split call-ID field, a retransmission of rewritten bytes,
// a clear of a forgotten call).
func TestStateRoundTrip(t *testing.T) {
	m := newFakeMapper()
	tr := NewTranslator(m, Config{})
	tr.Process(Outbound, 1000, true, false, false, nil)
	tr.Process(Inbound, 5000, true, false, false, nil)
	out, in := uint32(1001), uint32(5001)
	send := func(tr *Translator, d Dir, seq *uint32, b []byte) Result {
		r := tr.Process(d, *seq, false, false, false, b)
		*seq += uint32(len(b))
		return r
	}
	send(tr, Outbound, &out, msgs(&wire.SCCRQ{ProtocolVersion: 0x100}))
	send(tr, Inbound, &in, msgs(&wire.SCCRP{ProtocolVersion: 0x100, Result: 1}))
	// 200 calls set up and cleared: the patch ring wraps, the forgotten
	// calls fill their ring.
	for i := range uint16(200) {
		send(tr, Outbound, &out, msgs(&wire.OCRQ{CallID: i + 1}))
		send(tr, Inbound, &in, msgs(&wire.OCRP{CallID: 0x4000 + i, PeerCallID: (i + 1) ^ 0xFFFF, Result: 1}))
		if i < 190 {
			send(tr, Outbound, &out, msgs(&wire.CCRQ{CallID: i + 1}))
			send(tr, Inbound, &in, msgs(&wire.CDN{CallID: 0x4000 + i, Result: 3}))
		}
	}
	lastOCRQ := out
	send(tr, Outbound, &out, msgs(&wire.OCRQ{CallID: 500}))
	// A split field: the segment ends after the call ID's first byte.
	split := msgs(&wire.OCRQ{CallID: 0x0102})
	if r := send(tr, Outbound, &out, append([]byte(nil), split[:13]...)); r.Verdict != pkt.Hold || r.Reason != ReasonSplitCallID {
		t.Fatalf("split: %+v", r)
	}
	st := tr.State()
	if len(st.Dirs[Outbound].Ring) != ringSize || !st.Dirs[Outbound].HasFloor || len(st.Gone) != goneLen ||
		!st.Dirs[Outbound].Pending || len(st.Calls) != 11 {
		t.Fatalf("the state to save is not the rich one intended: ring %d floor %v gone %d pending %v calls %d",
			len(st.Dirs[Outbound].Ring), st.Dirs[Outbound].HasFloor, len(st.Gone), st.Dirs[Outbound].Pending, len(st.Calls))
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back State
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	tr2, err := RestoreTranslator(m, Config{}, back)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(tr2.State(), st) {
		t.Fatalf("restored state differs:\n%+v\n%+v", tr2.State(), st)
	}
	// The same segments to both: the rest of the split field (the held
	// copy is not restored: its resend comes first), a retransmission of
	// the OCRQ of call 500, a clear of a forgotten call.
	o1, o2 := out, out
	resend := append([]byte(nil), split[:13]...)
	r1 := tr.Process(Outbound, out-13, false, false, false, append([]byte(nil), resend...))
	tr.ExpireHeld() // the original held it already: it reports a duplicate
	r2 := tr2.Process(Outbound, out-13, false, false, false, append([]byte(nil), resend...))
	if r2.Verdict != pkt.Hold || r1.Reason != ReasonHeldDuplicate {
		t.Fatalf("the resend of the held segment: original %+v, restored %+v", r1, r2)
	}
	rest1, rest2 := append([]byte(nil), split[13:]...), append([]byte(nil), split[13:]...)
	a1, a2 := send(tr, Outbound, &o1, rest1), send(tr2, Outbound, &o2, rest2)
	if !bytes.Equal(rest1, rest2) || a1.Verdict != a2.Verdict || !a2.Released {
		t.Fatalf("completing the split field: % x %+v vs % x %+v", rest1, a1, rest2, a2)
	}
	re1, re2 := msgs(&wire.OCRQ{CallID: 500}), msgs(&wire.OCRQ{CallID: 500})
	tr.Process(Outbound, lastOCRQ, false, false, false, re1)
	tr2.Process(Outbound, lastOCRQ, false, false, false, re2)
	if !bytes.Equal(re1, re2) || bytes.Equal(re2, msgs(&wire.OCRQ{CallID: 500})) {
		t.Fatalf("retransmission: % x vs % x", re1, re2)
	}
	c1, c2 := msgs(&wire.CCRQ{CallID: 185}), msgs(&wire.CCRQ{CallID: 185})
	send(tr, Outbound, &o1, c1)
	send(tr2, Outbound, &o2, c2)
	if !bytes.Equal(c1, c2) {
		t.Fatalf("clear of a forgotten call: % x vs % x", c1, c2)
	}
}

func TestRestoreRefusesBadState(t *testing.T) {
	good := func() State {
		tr := NewTranslator(newFakeMapper(), Config{})
		tr.Process(Outbound, 1, true, false, false, nil)
		tr.Process(Outbound, 2, false, false, false, msgs(&wire.OCRQ{CallID: 7})[:14])
		return tr.State()
	}
	if _, err := RestoreTranslator(newFakeMapper(), Config{}, good()); err != nil {
		t.Fatalf("good state refused: %v", err)
	}
	for name, mod := range map[string]func(*State){
		"mode":          func(s *State) { s.Dirs[0].Mode = 9 },
		"reason":        func(s *State) { s.Dirs[0].BadReason = uint8(NumReasons) },
		"have":          func(s *State) { s.Dirs[0].Have = 500 },
		"keep":          func(s *State) { s.Dirs[0].Keep = s.Dirs[0].Keep[:3] },
		"header":        func(s *State) { s.Dirs[0].Keep[0] ^= 0xFF },
		"have>=length":  func(s *State) { s.Dirs[0].Have = 168; s.Dirs[0].Keep = append(s.Dirs[0].Keep, 0, 0, 0, 0, 0, 0) },
		"pending":       func(s *State) { s.Dirs[0].Pending = true },
		"ring":          func(s *State) { s.Dirs[1].Ring = make([]MemoRecord, ringSize+1) },
		"ring next":     func(s *State) { s.Dirs[0].RingNext = 5 },
		"phase":         func(s *State) { s.Calls = []CallRecord{{Phase: 9}} },
		"calls":         func(s *State) { s.Calls = make([]CallRecord, maxCalls+1) },
		"gone":          func(s *State) { s.Gone = make([]GoneRecord, goneLen+1) },
		"gone next":     func(s *State) { s.Gone = make([]GoneRecord, 3); s.GoneNext = 7 },
		"negative have": func(s *State) { s.Dirs[0].Have = -1 },
	} {
		st := good()
		mod(&st)
		if _, err := RestoreTranslator(newFakeMapper(), Config{}, st); !errors.Is(err, ErrBadState) {
			t.Errorf("%s: %v, want ErrBadState", name, err)
		}
	}
}
