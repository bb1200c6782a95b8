package helper

import (
	"bytes"
	"math/rand/v2"
	"strconv"
	"testing"

	"pptpgw/pptp/wire"
)

func conversations(t testing.TB) []conversation {
	return []conversation{captureConversation(t, "long"), captureConversation(t, "clear"), pnsInside(), pacInside()}
}

// TestConversations runs each conversation unsplit and checks the bytes
// that leave the gateway and the events, written out by hand.
func TestConversations(t *testing.T) {
	want := map[string]string{
		// pptp-linux -> pptpd: call ID 0x9dff (inside) -> 0x6200; pptpd's call ID 0.
		"long": `control_established Start-Control-Connection-Reply in=0x0 out=0x0 peer=0x0 res=1
requested Outgoing-Call-Request in=0x9dff out=0x6200 peer=0x0 res=0
established Outgoing-Call-Reply in=0x9dff out=0x6200 peer=0x0 res=1
echo Echo-Request in=0x0 out=0x0 peer=0x0 res=0
echo Echo-Reply in=0x0 out=0x0 peer=0x0 res=0
echo Echo-Request in=0x0 out=0x0 peer=0x0 res=0
echo Echo-Reply in=0x0 out=0x0 peer=0x0 res=0
echo Echo-Request in=0x0 out=0x0 peer=0x0 res=0
echo Echo-Reply in=0x0 out=0x0 peer=0x0 res=0
stopped MsgType(0) in=0x0 out=0x0 peer=0x0 res=0
`,
		// Echo-Request and Call-Clear-Request in one segment; pptpd's FIN;
		// pptp-linux's second CCRQ, after the stop, adds no event.
		"clear": `control_established Start-Control-Connection-Reply in=0x0 out=0x0 peer=0x0 res=1
requested Outgoing-Call-Request in=0x5e6d out=0xa192 peer=0x0 res=0
established Outgoing-Call-Reply in=0x5e6d out=0xa192 peer=0x0 res=1
echo Echo-Request in=0x0 out=0x0 peer=0x0 res=0
cleared Call-Clear-Request in=0x5e6d out=0xa192 peer=0x0 res=0
echo Echo-Reply in=0x0 out=0x0 peer=0x0 res=0
stopped MsgType(0) in=0x0 out=0x0 peer=0x0 res=0
`,
		"pns-inside": `control_established Start-Control-Connection-Reply in=0x0 out=0x0 peer=0x0 res=1
requested Outgoing-Call-Request in=0x101 out=0xfefe peer=0x0 res=0
requested Outgoing-Call-Request in=0x202 out=0xfdfd peer=0x0 res=0
requested Outgoing-Call-Request in=0x303 out=0xfcfc peer=0x0 res=0
echo Echo-Request in=0x0 out=0x0 peer=0x0 res=0
established Outgoing-Call-Reply in=0x101 out=0xfefe peer=0x7001 res=1
failed Outgoing-Call-Reply in=0x202 out=0xfdfd peer=0x7002 res=4
echo Echo-Reply in=0x0 out=0x0 peer=0x0 res=0
established Outgoing-Call-Reply in=0x303 out=0xfcfc peer=0x7003 res=1
requested Incoming-Call-Request in=0x0 out=0x0 peer=0x7004 res=0
established Incoming-Call-Connected in=0x404 out=0xfbfb peer=0x7004 res=0
cleared Call-Clear-Request in=0x101 out=0xfefe peer=0x7001 res=0
cleared Call-Clear-Request in=0x404 out=0xfbfb peer=0x7004 res=0
cleared Call-Disconnect-Notify in=0x303 out=0xfcfc peer=0x7003 res=1
stopped Stop-Control-Connection-Request in=0x0 out=0x0 peer=0x0 res=0
`,
		"pac-inside": `control_established Start-Control-Connection-Reply in=0x0 out=0x0 peer=0x0 res=1
requested Outgoing-Call-Request in=0x0 out=0x0 peer=0x6001 res=0
established Outgoing-Call-Reply in=0xa0a out=0xf5f5 peer=0x6001 res=1
requested Incoming-Call-Request in=0xb0b out=0xf4f4 peer=0x0 res=0
established Incoming-Call-Connected in=0xb0b out=0xf4f4 peer=0x6002 res=0
cleared Call-Clear-Request in=0xa0a out=0xf5f5 peer=0x6001 res=0
cleared Call-Disconnect-Notify in=0xb0b out=0xf4f4 peer=0x6002 res=3
stopped MsgType(0) in=0x0 out=0x0 peer=0x0 res=0
`,
	}
	for _, cv := range conversations(t) {
		t.Run(cv.name, func(t *testing.T) {
			r := newRunner(t, cv, Config{Strict: true})
			out := r.run(cv, whole)
			for i, tn := range cv.turns {
				if !bytes.Equal(out[i], tn.want()) {
					t.Errorf("turn %d (%v): left the gateway\n% x\nwant\n% x", i, tn.dir, out[i], tn.want())
				}
			}
			if got := eventsString(r.m.events); got != want[cv.name] {
				t.Errorf("events:\n%s\nwant:\n%s", got, want[cv.name])
			}
			if n := r.c.NumCalls(); n != 0 {
				t.Errorf("%d calls left after the connection stopped", n)
			}
		})
	}
}

// TestClearedMappingForgotten: the Mapper forgets a call at its first
// CallCleared event (the gateway releases the outside ID to quarantine at
// once). A Call-Disconnect-Notify the inside PAC sends after the outside
// PNS's Call-Clear-Request must still leave with the outside ID: the
// helper remembers it for the clearing call.
func TestClearedMappingForgotten(t *testing.T) {
	for _, cv := range conversations(t) {
		t.Run(cv.name, func(t *testing.T) {
			r := newRunner(t, cv, Config{Strict: true})
			r.m.forgetOnClear = true
			out := r.run(cv, whole)
			for i, tn := range cv.turns {
				if !bytes.Equal(out[i], tn.want()) {
					t.Errorf("turn %d (%v): left the gateway\n% x\nwant\n% x", i, tn.dir, out[i], tn.want())
				}
			}
		})
	}
}

// reference runs cv unsplit: the output and events every split must match.
func reference(t *testing.T, cv conversation) ([][]byte, string) {
	r := newRunner(t, cv, Config{Strict: true})
	return r.run(cv, whole), eventsString(r.m.events)
}

func checkSplit(t *testing.T, cv conversation, sp splitter, label string, want [][]byte, wantEv string) {
	t.Helper()
	r := newRunner(t, cv, Config{Strict: true})
	got := r.run(cv, sp)
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("%s: turn %d differs from the unsplit rewrite\n% x\nwant\n% x", label, i, got[i], want[i])
		}
	}
	if ev := eventsString(r.m.events); ev != wantEv {
		t.Fatalf("%s: events\n%s\nwant\n%s", label, ev, wantEv)
	}
}

// TestSplitEveryBoundary cuts each turn once at every byte boundary, and
// also into 1-byte segments.
func TestSplitEveryBoundary(t *testing.T) {
	for _, cv := range conversations(t) {
		t.Run(cv.name, func(t *testing.T) {
			want, wantEv := reference(t, cv)
			for ti, tn := range cv.turns {
				for k := 1; k < len(tn.inside); k++ {
					sp := func(i, n int) []int {
						if i == ti {
							return []int{k, n - k}
						}
						return []int{n}
					}
					checkSplit(t, cv, sp, "turn "+itoa(ti)+" cut at "+itoa(k), want, wantEv)
				}
			}
			bytewise := func(_, n int) []int {
				l := make([]int, n)
				for i := range l {
					l[i] = 1
				}
				if n == 0 {
					return []int{0}
				}
				return l
			}
			checkSplit(t, cv, bytewise, "1-byte segments", want, wantEv)
		})
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestSplitRandom cuts every turn at random boundaries.
func TestSplitRandom(t *testing.T) {
	for _, cv := range conversations(t) {
		t.Run(cv.name, func(t *testing.T) {
			want, wantEv := reference(t, cv)
			for seed := range uint64(300) {
				rng := rand.New(rand.NewPCG(seed, 7))
				sp := func(_, n int) []int {
					var l []int
					for n > 0 {
						k := 1 + rng.IntN(min(n, 40))
						l = append(l, k)
						n -= k
					}
					if len(l) == 0 {
						l = []int{0}
					}
					return l
				}
				checkSplit(t, cv, sp, "random seed", want, wantEv)
			}
		})
	}
}

// Every field the state machine reads (helper/calls.go, at pptp/wire's
// offsets) lies within the keepLen bytes kept of each message.
func TestKeptFieldsFit(t *testing.T) {
	for mt := wire.MsgType(1); mt <= 15; mt++ {
		if off, ok := wire.CallIDOffset(mt); ok && off+2 > keepLen {
			t.Errorf("%v: Call ID at %d not kept (keepLen %d)", mt, off, keepLen)
		}
		if off, ok := wire.PeerCallIDOffset(mt); ok && off+2 > keepLen {
			t.Errorf("%v: Peer's Call ID at %d not kept", mt, off)
		}
		if off, ok := wire.ResultOffset(mt); ok && off+1 > keepLen {
			t.Errorf("%v: Result Code at %d not kept", mt, off)
		}
	}
}

// Only an SCCRP answering an SCCRQ seen going the other way sets the
// connection up: a lone SCCRP, or one in the same direction as the request,
// would make state that early drop can no longer remove.
func TestControlEstablishedNeedsRequest(t *testing.T) {
	sccrq := (&wire.SCCRQ{ProtocolVersion: 0x100}).Append(nil)
	sccrp := (&wire.SCCRP{ProtocolVersion: 0x100, Result: wire.SCCRPResultOK}).Append(nil)
	established := func(m *fakeMapper) bool {
		for _, ev := range m.events {
			if ev.Kind == ControlEstablished {
				return true
			}
		}
		return false
	}
	for _, tc := range []struct {
		name string
		segs []struct {
			d Dir
			b []byte
		}
		want bool
	}{
		{"request out, reply in", []struct {
			d Dir
			b []byte
		}{{Outbound, sccrq}, {Inbound, sccrp}}, true},
		{"lone reply out", []struct {
			d Dir
			b []byte
		}{{Outbound, sccrp}}, false},
		{"request and reply out", []struct {
			d Dir
			b []byte
		}{{Outbound, sccrq}, {Outbound, sccrp}}, false},
	} {
		m := newFakeMapper()
		tr := NewTranslator(m, Config{})
		seq := [2]uint32{100, 200}
		tr.Process(Outbound, seq[Outbound], true, false, false, nil)
		tr.Process(Inbound, seq[Inbound], true, false, false, nil)
		seq[Outbound]++
		seq[Inbound]++
		for _, s := range tc.segs {
			tr.Process(s.d, seq[s.d], false, false, false, bytes.Clone(s.b))
			seq[s.d] += uint32(len(s.b))
		}
		if got := established(m); got != tc.want {
			t.Errorf("%s: ControlEstablished %v, want %v (events %v)", tc.name, got, tc.want, m.events)
		}
	}
}
