package helper

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"pptpgw/internal/pkt"
	"pptpgw/pptp/wire"
)

// fakeMapper translates inside ID x to outside ID x^0xFFFF (both bytes
// change, so every rewrite patches two bytes) and records events.
type fakeMapper struct {
	out2in    map[uint16]uint16
	in2out    map[uint16]uint16
	events    []Event
	failAlloc bool
	noRecord  bool // for allocation tests: count only
	nEvents   int
	// forgetOnClear drops a call's mapping at its first CallCleared event,
	// as the gateway's table does (nat.Engine releases the outside ID to
	// quarantine at once).
	forgetOnClear bool
}

func newFakeMapper() *fakeMapper {
	return &fakeMapper{out2in: map[uint16]uint16{}, in2out: map[uint16]uint16{}}
}

var errFull = errors.New("no IDs left")

func (m *fakeMapper) AllocOutside(in uint16) (uint16, error) {
	if m.failAlloc {
		return 0, errFull
	}
	out := in ^ 0xFFFF
	m.in2out[in], m.out2in[out] = out, in
	return out, nil
}
func (m *fakeMapper) OutsideOf(in uint16) (uint16, bool) { o, ok := m.in2out[in]; return o, ok }
func (m *fakeMapper) InsideOf(out uint16) (uint16, bool) { i, ok := m.out2in[out]; return i, ok }
func (m *fakeMapper) Event(ev Event) {
	m.nEvents++
	if m.forgetOnClear && ev.Kind == CallCleared {
		delete(m.out2in, m.in2out[ev.InsideID])
		delete(m.in2out, ev.InsideID)
	}
	if !m.noRecord {
		m.events = append(m.events, ev)
	}
}

// outsideView returns the bytes the outside party sends or receives for a
// buffer of whole messages as the inside party sees them: the inside
// party's call IDs (outbound: own Call ID; inbound: Peer's Call ID)
// replaced by x^0xFFFF.
func outsideView(dir Dir, b []byte) []byte {
	b = bytes.Clone(b)
	for p := b; len(p) >= wire.HeaderLen; {
		n, t, err := wire.PeekHeader(p)
		if err != nil || n > len(p) {
			break
		}
		off, ok := wire.CallIDOffset(t)
		if dir == Inbound {
			off, ok = wire.PeerCallIDOffset(t)
		}
		if ok {
			p[off] ^= 0xFF
			p[off+1] ^= 0xFF
		}
		p = p[n:]
	}
	return b
}

// A turn is a run of consecutive messages in one direction: the other side
// does not speak until it has them, so segment boundaries never straddle
// turns. inside holds the bytes as the inside party sees them.
type turn struct {
	dir    Dir
	inside []byte
	fin    bool // FIN after the turn's data
}

// wireIn returns what arrives at the gateway for a turn: outbound it is the
// inside view, inbound the outside view.
func (t turn) wireIn() []byte {
	if t.dir == Outbound {
		return bytes.Clone(t.inside)
	}
	return outsideView(Inbound, t.inside)
}

// want returns what must leave the gateway.
func (t turn) want() []byte {
	if t.dir == Outbound {
		return outsideView(Outbound, t.inside)
	}
	return bytes.Clone(t.inside)
}

// conversation is a TCP control connection: ISNs and turns.
type conversation struct {
	name  string
	isn   [2]uint32
	turns []turn
}

type segment struct {
	frame    int
	src, dst uint16
	seq      uint32
	flags    string
	payload  []byte
}

func loadSegments(t testing.TB, name string) []segment {
	t.Helper()
	f, err := os.Open("../pptp/wire/testdata/" + name + ".segments.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var segs []segment
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		var s segment
		s.frame, _ = strconv.Atoi(fs[0])
		src, _ := strconv.Atoi(fs[1])
		dst, _ := strconv.Atoi(fs[2])
		seq, _ := strconv.ParseUint(fs[3], 10, 32)
		s.src, s.dst, s.seq, s.flags = uint16(src), uint16(dst), uint32(seq), fs[4]
		if len(fs) > 5 {
			if s.payload, err = hex.DecodeString(fs[5]); err != nil {
				t.Fatal(err)
			}
		}
		segs = append(segs, s)
	}
	return segs
}

func (s segment) has(flag byte) bool { return strings.IndexByte(s.flags, flag) >= 0 }

// dirOf: the PPTP client (the non-1723 port) is the inside party.
func (s segment) dir() Dir {
	if s.dst == wire.ControlPort {
		return Outbound
	}
	return Inbound
}

// captureConversation turns a captured connection into turns.
func captureConversation(t testing.TB, name string) conversation {
	cv := conversation{name: name}
	for _, s := range loadSegments(t, name) {
		d := s.dir()
		if s.has('S') {
			cv.isn[d] = s.seq
		}
		if len(s.payload) > 0 {
			n := len(cv.turns)
			if n > 0 && cv.turns[n-1].dir == d && !cv.turns[n-1].fin {
				cv.turns[n-1].inside = append(cv.turns[n-1].inside, s.payload...)
			} else {
				cv.turns = append(cv.turns, turn{dir: d, inside: bytes.Clone(s.payload)})
			}
		}
		if s.has('F') {
			// A FIN ends the direction: give it an empty turn if needed.
			n := len(cv.turns)
			if n == 0 || cv.turns[n-1].dir != d || cv.turns[n-1].fin {
				cv.turns = append(cv.turns, turn{dir: d})
			}
			cv.turns[len(cv.turns)-1].fin = true
		}
	}
	return cv
}

func msgs(ms ...wire.Message) []byte {
	var b []byte
	for _, m := range ms {
		b = m.Append(b)
	}
	return b
}

// pnsInside: the inside party is the PNS (a PPTP client), several calls on
// one control connection, every message type.
func pnsInside() conversation {
	return conversation{name: "pns-inside", isn: [2]uint32{0xFFFFFF00, 77}, turns: []turn{ // seq wraps
		{dir: Outbound, inside: msgs(&wire.SCCRQ{ProtocolVersion: wire.ProtocolVersion, Hostname: "c"})},
		{dir: Inbound, inside: msgs(&wire.SCCRP{ProtocolVersion: wire.ProtocolVersion, Result: 1})},
		{dir: Outbound, inside: msgs(&wire.OCRQ{CallID: 0x0101, CallSerial: 1}, &wire.OCRQ{CallID: 0x0202, CallSerial: 2},
			&wire.OCRQ{CallID: 0x0303, CallSerial: 3}, &wire.EchoRQ{ID: 1})},
		{dir: Inbound, inside: msgs(&wire.OCRP{CallID: 0x7001, PeerCallID: 0x0101, Result: wire.OCRPResultConnected},
			&wire.OCRP{CallID: 0x7002, PeerCallID: 0x0202, Result: wire.OCRPResultBusy},
			&wire.EchoRP{ID: 1, Result: 1},
			&wire.OCRP{CallID: 0x7003, PeerCallID: 0x0303, Result: wire.OCRPResultConnected})},
		{dir: Outbound, inside: msgs(&wire.SLI{PeerCallID: 0x7001, SendACCM: 0xffffffff})},
		{dir: Inbound, inside: msgs(&wire.WEN{PeerCallID: 0x0101, CRCErrors: 2},
			&wire.ICRQ{CallID: 0x7004, CallSerial: 9})},
		{dir: Outbound, inside: msgs(&wire.ICRP{CallID: 0x0404, PeerCallID: 0x7004, Result: wire.ICRPResultConnect})},
		{dir: Inbound, inside: msgs(&wire.ICCN{PeerCallID: 0x0404, ConnectSpeed: 9600})},
		{dir: Outbound, inside: msgs(&wire.CCRQ{CallID: 0x0101}, &wire.CCRQ{CallID: 0x0404})},
		{dir: Inbound, inside: msgs(&wire.CDN{CallID: 0x7001, Result: wire.CDNResultRequest},
			&wire.CDN{CallID: 0x7004, Result: wire.CDNResultRequest},
			&wire.CDN{CallID: 0x7003, Result: wire.CDNResultLostCarrier})},
		{dir: Outbound, inside: msgs(&wire.StopCCRQ{Reason: wire.StopReasonNone})},
		{dir: Inbound, inside: msgs(&wire.StopCCRP{Result: 1}), fin: true},
	}}
}

// pacInside: the inside party is the PAC (a server behind the gateway).
func pacInside() conversation {
	return conversation{name: "pac-inside", isn: [2]uint32{5, 0xFFFFFFFF}, turns: []turn{
		{dir: Inbound, inside: msgs(&wire.SCCRQ{ProtocolVersion: wire.ProtocolVersion})},
		{dir: Outbound, inside: msgs(&wire.SCCRP{ProtocolVersion: wire.ProtocolVersion, Result: 1})},
		{dir: Inbound, inside: msgs(&wire.OCRQ{CallID: 0x6001, CallSerial: 1})},
		{dir: Outbound, inside: msgs(&wire.OCRP{CallID: 0x0A0A, PeerCallID: 0x6001, Result: wire.OCRPResultConnected},
			&wire.ICRQ{CallID: 0x0B0B, CallSerial: 2})},
		{dir: Inbound, inside: msgs(&wire.ICRP{CallID: 0x6002, PeerCallID: 0x0B0B, Result: wire.ICRPResultConnect},
			&wire.SLI{PeerCallID: 0x0A0A, RecvACCM: 1})},
		{dir: Outbound, inside: msgs(&wire.ICCN{PeerCallID: 0x6002}, &wire.WEN{PeerCallID: 0x6001})},
		{dir: Inbound, inside: msgs(&wire.CCRQ{CallID: 0x6001})},
		{dir: Outbound, inside: msgs(&wire.CDN{CallID: 0x0A0A, Result: wire.CDNResultRequest},
			&wire.CDN{CallID: 0x0B0B, Result: wire.CDNResultAdminShutdown}), fin: true},
	}}
}

// splitter returns the segment lengths for a turn of n bytes.
type splitter func(turn, n int) []int

func whole(_, n int) []int { return []int{n} }

// runner feeds a conversation through a Translator, checking every Result
// against the bytes it changed.
type runner struct {
	t       testing.TB
	c       *Translator
	m       *fakeMapper
	seq     [2]uint32
	held    [2][]byte // held payload
	heldPre [2][]byte // its bytes when it was held
}

func newRunner(t testing.TB, cv conversation, cfg Config) *runner {
	m := newFakeMapper()
	r := &runner{t: t, c: NewTranslator(m, cfg), m: m}
	for d := Outbound; d <= Inbound; d++ {
		res := r.c.Process(d, cv.isn[d], true, false, false, nil)
		if res.Verdict != pkt.Accept || res.Reason != ReasonNone {
			t.Fatalf("SYN: %+v", res)
		}
		r.seq[d] = cv.isn[d] + 1
	}
	return r
}

// process sends p (owned by the caller, may be kept if held) and checks
// that Patches/ReleasedPatches describe exactly the bytes that changed.
func (r *runner) process(d Dir, seq uint32, fin bool, p []byte) Result {
	r.t.Helper()
	before := bytes.Clone(p)
	res := r.c.Process(d, seq, false, fin, false, p)
	checkPatches(r.t, "segment", before, p, res.Patches)
	if res.Released {
		if r.held[d] == nil {
			r.t.Fatalf("released with nothing held")
		}
		checkPatches(r.t, "released", r.heldPre[d], r.held[d], res.ReleasedPatches)
		r.held[d], r.heldPre[d] = nil, nil
	} else if len(res.ReleasedPatches) > 0 {
		r.t.Fatalf("ReleasedPatches without Released")
	}
	if res.Verdict == pkt.Hold {
		if r.held[d] != nil {
			r.t.Fatalf("second hold in one direction")
		}
		r.held[d], r.heldPre[d] = p, bytes.Clone(p)
	}
	return res
}

// checkPatches: every changed byte has exactly one patch with the right
// old/new values, and no patch is outside the buffer.
func checkPatches(t testing.TB, what string, before, after []byte, ps []Patch) {
	t.Helper()
	seen := map[int]bool{}
	for _, p := range ps {
		if p.Off < 0 || p.Off >= len(after) {
			t.Fatalf("%s: patch %+v outside %d bytes", what, p, len(after))
		}
		if seen[p.Off] {
			t.Fatalf("%s: two patches at %d", what, p.Off)
		}
		seen[p.Off] = true
		if before[p.Off] != p.Old || after[p.Off] != p.New || p.Old == p.New {
			t.Fatalf("%s: patch %+v but byte %#x -> %#x", what, p, before[p.Off], after[p.Off])
		}
	}
	for i := range after {
		if before[i] != after[i] && !seen[i] {
			t.Fatalf("%s: byte %d changed %#x -> %#x without a patch", what, i, before[i], after[i])
		}
	}
}

// run feeds cv split by sp and returns what left the gateway per turn.
func (r *runner) run(cv conversation, sp splitter) [][]byte {
	r.t.Helper()
	var out [][]byte
	for ti, tn := range cv.turns {
		buf := tn.wireIn()
		off := 0
		lens := sp(ti, len(buf))
		for si, n := range lens {
			fin := tn.fin && si == len(lens)-1
			res := r.process(tn.dir, r.seq[tn.dir], fin, buf[off:off+n])
			if res.Verdict == pkt.Drop {
				r.t.Fatalf("turn %d: dropped: %+v", ti, res)
			}
			r.seq[tn.dir] += uint32(n)
			off += n
		}
		if len(lens) == 0 && tn.fin {
			r.process(tn.dir, r.seq[tn.dir], true, nil)
		}
		if r.held[tn.dir] != nil {
			r.t.Fatalf("turn %d: still held at its end", ti)
		}
		out = append(out, buf)
	}
	return out
}

func eventsString(evs []Event) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "%v %v in=%#x out=%#x peer=%#x res=%d\n", e.Kind, e.Msg, e.InsideID, e.OutsideID, e.PeerID, e.Result)
	}
	return b.String()
}
