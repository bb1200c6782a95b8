// Package helper is the PPTP control-connection ALG of the gateway: a
// Translator follows both byte streams of one TCP 1723 connection, rewrites
// call IDs in place and reports the call state machine to a Mapper.
//
// It owns the control stream: reassembly by sequence number, the call-ID
// rewrite, holding a segment split inside a call-ID field, the strict or
// lenient policy for malformed messages, and each call's signalling Phase.
// It must not know about IP packets, checksums, NFQUEUE, the call table or
// the allocator (the Mapper is its only window on them); it does no I/O,
// takes no lock and keeps no clock (the engine expires held segments).
//
// A segment's way through Process:
//
//  1. SYN starts a direction's stream (next expected seq = ISN+1); a
//     direction first seen without SYN is passed untouched (lenient) or
//     dropped (strict), reason "no_syn".
//  2. Bytes beyond the next expected seq: Drop "out_of_order" (TCP resends).
//  3. Bytes before it (a retransmission, or the old part of an overlapping
//     segment): the patches remembered for those stream positions are
//     applied again, so the resent bytes carry the same rewrite.
//  4. New bytes feed the message reassembler: 12 header bytes are
//     collected (across segments) and checked with wire.PeekHeader; a bad
//     header drops the segment (strict) or stops parsing the direction
//     (lenient). Then the message body is skipped, keeping its first
//     bytes for the event fields.
//  5. The call-ID field due for rewriting (Outbound: the sender's own Call
//     ID, inside->outside; Inbound: the Peer's Call ID, outside->inside) is
//     rewritten in place as soon as both of its bytes are seen. If a segment
//     ends between the two bytes, it is held (Verdict Hold) and patched and
//     released when the next byte arrives.
//  6. At the end of each message the call state machine advances and
//     Events go to the Mapper.
//
// Process does not allocate in the steady state (echoes, retransmissions,
// rewrites of known calls); a call record is allocated when a call starts.
package helper

import (
	"encoding/binary"
	"errors"

	"pptpgw/internal/pkt"
	"pptpgw/pptp/wire"
)

// Dir is the direction of a segment relative to the gateway's inside.
type Dir uint8

const (
	Outbound Dir = iota // sent by the inside party
	Inbound             // sent by the outside party
)

func (d Dir) String() string {
	if d == Outbound {
		return "out"
	}
	return "in"
}

// Reason says why a segment got its verdict (or what was noticed about it).
// The engine counts each as helper_<name>. An accepted plain in-order
// segment has no reason (ReasonNone).
type Reason uint8

const (
	ReasonNone           Reason = iota
	ReasonNoSYN                 // direction not seen from its SYN: untouched (lenient) / dropped
	ReasonOutOfOrder            // starts beyond the next expected byte: dropped
	ReasonRetransmission        // only bytes already seen: remembered patches re-applied
	ReasonHistoryLost           // retransmits bytes older than the patch memory
	ReasonSplitCallID           // Hold: segment ends inside a call-ID field
	ReasonHeldDuplicate         // a copy of the held segment: dropped
	ReasonBadMagic              // malformed: magic cookie
	ReasonBadLength             // malformed: length is not the type's fixed length
	ReasonUnknownType           // malformed: control message type not 1..15
	ReasonNotControl            // malformed: PPTP message type is not 1 (control)
	ReasonDesynced              // lenient: direction no longer parsed after malformed input
	ReasonUnknownCallID         // call ID with no mapping: left as is
	ReasonAllocFailed           // Mapper could not allocate an outside ID: left as is
	ReasonUnexpectedSYN         // SYN with another ISN on a running stream
	ReasonRSTNotInSeq           // RST whose seq is not the next expected: no teardown
	ReasonBadDir                // Dir out of range (caller bug)
	NumReasons                  // number of reasons, ReasonNone included
)

var reasonNames = [NumReasons]string{"",
	"no_syn",
	"out_of_order",
	"retransmission",
	"history_lost",
	"split_call_id",
	"held_duplicate",
	"bad_magic",
	"bad_length",
	"unknown_type",
	"not_control",
	"desynced",
	"unknown_call_id",
	"alloc_failed",
	"unexpected_syn",
	"rst_not_in_seq",
	"bad_dir",
}

// String returns the reason's constant name ("" for ReasonNone).
func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "reason?"
}

// Patch is one rewritten byte: Off is an offset into the payload it
// belongs to (Result.Patches: the payload passed to Process;
// Result.ReleasedPatches: the held payload).
type Patch struct {
	Off      int
	Old, New byte
}

// EventKind classifies an Event.
type EventKind uint8

const (
	CallRequested      EventKind = iota + 1 // OCRQ/ICRQ seen (IDs known so far)
	CallEstablished                         // successful OCRP, or ICCN: expect GRE now
	CallFailed                              // unsuccessful OCRP/ICRP
	CallCleared                             // CCRQ or CDN
	ControlStopped                          // StopCCRQ/StopCCRP, FIN or RST (once per Translator)
	EchoSeen                                // Echo-Request or Echo-Reply: the connection is alive
	ControlEstablished                      // Start-Control-Connection-Reply "OK": the connection is set up
)

func (k EventKind) String() string {
	switch k {
	case CallRequested:
		return "requested"
	case CallEstablished:
		return "established"
	case CallFailed:
		return "failed"
	case CallCleared:
		return "cleared"
	case ControlStopped:
		return "stopped"
	case EchoSeen:
		return "echo"
	case ControlEstablished:
		return "control_established"
	}
	return "event?"
}

// Event reports a step of a call (or of the control connection) to the
// Mapper. InsideID/OutsideID are the inside party's call ID before/after
// translation; PeerID is the outside party's own call ID. Fields not known
// at that step are 0 (e.g. an inbound OCRQ only has PeerID). Result is the
// message's Result Code, where it has one.
type Event struct {
	Kind                        EventKind
	Msg                         wire.MsgType
	InsideID, OutsideID, PeerID uint16
	Result                      uint8
}

// Mapper translates call IDs of one control connection and receives its
// events. Process calls it synchronously.
type Mapper interface {
	// AllocOutside returns the outside ID for a new inside call ID; for an
	// ID it already maps (a repeated request) it should return the same.
	AllocOutside(insideID uint16) (outsideID uint16, err error)
	// OutsideOf may forget a call from its first CallCleared event on;
	// the Translator then maps the rest of that call's clearing itself.
	OutsideOf(insideID uint16) (uint16, bool)
	InsideOf(outsideID uint16) (uint16, bool)
	Event(ev Event)
}

// Config is the per-connection policy.
type Config struct {
	// Strict drops malformed input and segments of a stream not seen from
	// its SYN; lenient passes them untouched and stops parsing.
	Strict bool
}

// Result of one Process call. Patches and ReleasedPatches point into the
// Translator and are valid until its next Process call.
type Result struct {
	Verdict pkt.Verdict
	Reason  Reason
	Patches []Patch
	// Released: the segment held by an earlier Hold is complete, patched in
	// place (ReleasedPatches, offsets into that payload) and may be sent.
	Released        bool
	ReleasedPatches []Patch
}

// Phase is where a call is in its signalling, as the control messages tell
// it. It is not conntrack.CallState, which is what the gateway knows of the
// call's GRE (requested, unreplied, replied): a call is PhaseConnected here
// from its OCRP/ICCN on, whatever its GRE does.
type Phase uint8

const (
	PhaseRequested Phase = iota + 1 // OCRQ/ICRQ seen
	PhaseAnswered                   // ICRP "connect" seen, waiting for ICCN
	PhaseConnected                  // OCRP "connected" / ICCN seen
	PhaseClearing                   // CCRQ seen, waiting for CDN
)

func (s Phase) String() string {
	switch s {
	case PhaseRequested:
		return "requested"
	case PhaseAnswered:
		return "answered"
	case PhaseConnected:
		return "connected"
	case PhaseClearing:
		return "clearing"
	}
	return "state?"
}

const (
	// ringSize bounds the remembered patches per direction (each rewritten
	// call ID costs at most two): 2 KiB, enough for a full 1460-byte
	// segment of the smallest rewritten message (CCRQ, 16 bytes: 91 IDs)
	// plus the ones before it. The ring grows as patches are made (a
	// connection that never had a call ID rewritten has none), so a
	// tracked connection costs what it holds.
	ringSize = 256
	// keepLen is how many leading bytes of each message are kept: enough
	// for every field the state machine reads (the last is OCRP/ICRP's
	// Error Code at 17).
	keepLen = 20
	// maxCalls bounds the call records per connection.
	maxCalls = 1024
)

type mode uint8

const (
	modeUnsynced mode = iota // no SYN seen
	modeSynced
	modeDesynced // lenient, after malformed input: passed untouched
	modePoisoned // strict, after malformed input: new bytes dropped
)

type memo struct {
	seq      uint32
	old, new byte
}

// fieldKind says how a message's rewritten call-ID field is mapped.
type fieldKind uint8

const (
	fieldNone    fieldKind = iota
	fieldAlloc             // outbound request/reply: a new inside ID
	fieldOutside           // outbound CCRQ/CDN: a known inside ID
	fieldInside            // inbound Peer's Call ID
)

// stream is one direction of the control connection.
type stream struct {
	mode mode
	isn  uint32
	next uint32 // next expected stream seq

	// The message being reassembled.
	msgSeq uint32 // stream seq of its first byte
	keep   [keepLen]byte
	have   int // bytes of it consumed
	length int // 0 until the header is complete and valid
	typ    wire.MsgType
	field  int // offset of the call-ID field to rewrite, -1 if none
	kind   fieldKind
	// Outcome of the field's rewrite, for the state machine.
	fieldOld, fieldNew uint16
	fieldOK            bool
	fieldRecalled      bool // the Mapper had forgotten it; the Translator's own memory mapped it

	// pending: the field's first byte (at pendSeq == next-1) is seen, the
	// second is not.
	pending bool
	pendSeq uint32
	held    []byte // the segment holding the pending byte, if kept
	heldSeq uint32
	heldAge uint64 // Translator.holdClock at hold time

	badSeq    uint32 // modePoisoned: first byte of the malformed message
	badReason Reason

	ring     []memo // grows to ringSize, then wraps at ringNext
	ringNext int
	floor    uint32 // with hasFloor: patches before floor were forgotten
	hasFloor bool
}

type call struct {
	inside, outside, peer uint16
	hasInside, hasPeer    bool
	state                 Phase
}

// goneLen is how many translations of calls the Translator has forgotten (CDN,
// failure, connection stop) it still remembers, for a late Call-Clear-
// Request or Call-Disconnect-Notify of the inside party.
const goneLen = 16

// goneCall is such a remembered translation.
type goneCall struct{ inside, outside uint16 }

// Translator is the ALG state of one PPTP control connection. It is not safe for
// concurrent use.
type Translator struct {
	m       Mapper
	cfg     Config
	dirs    [2]stream
	calls   []call
	stopped bool
	// sccrq: a Start-Control-Connection-Request was seen in that
	// direction; only a reply in the other direction sets the connection up.
	sccrq [2]bool
	// gone remembers the last goneLen translations of calls removed from
	// calls (a ring once it has grown to goneLen; goneNext is the next slot
	// to overwrite).
	gone     []goneCall
	goneNext int

	holdClock uint64
	// patches and relPatches are allocated by the first rewrite and reused
	// from then on, like the rings and gone: a connection that never has a
	// call ID rewritten (a SYN, a flood) costs only the Translator itself.
	patches    []Patch
	relPatches []Patch
	res        Result
}

// NewTranslator returns the ALG state for a new control connection.
func NewTranslator(m Mapper, cfg Config) *Translator {
	return &Translator{m: m, cfg: cfg}
}

// maxKeptPatches bounds the patch scratch a Translator keeps between
// segments (memory, issue 12): one large segment (a burst of call requests
// in one GSO segment: hundreds of call IDs) would otherwise leave every
// connection holding its size for good (about 2 KiB per connection, 20
// bytes per call at 100 calls per connection, in `pptpgw bench`).
const maxKeptPatches = 16

// reusePatches empties a patch scratch for the next segment, or drops it
// if a large segment grew it beyond maxKeptPatches (the Result that
// returned it has been used by then).
func reusePatches(p []Patch) []Patch {
	if cap(p) > maxKeptPatches {
		return nil
	}
	return p[:0]
}

// Serial-number comparisons of TCP sequence numbers.
func seqLT(a, b uint32) bool { return int32(a-b) < 0 }
func seqLE(a, b uint32) bool { return int32(a-b) <= 0 }

// Process handles one TCP segment of the control connection in direction
// dir: seq is the segment's sequence number, syn/fin/rst its flags and
// payload its TCP payload, which may be rewritten in place. With Verdict
// Hold the Translator keeps payload (the caller must own it and keep the packet)
// until a later Result reports Released, or ExpireHeld.
func (c *Translator) Process(dir Dir, seq uint32, syn, fin, rst bool, payload []byte) Result {
	c.patches = reusePatches(c.patches) // memory (issue 12)
	c.relPatches = reusePatches(c.relPatches)
	c.res = Result{}
	if dir > Inbound {
		return Result{Verdict: pkt.Drop, Reason: ReasonBadDir}
	}
	s := &c.dirs[dir]
	if syn {
		switch {
		case s.mode == modeUnsynced:
			s.mode, s.isn, s.next, s.msgSeq = modeSynced, seq, seq+1, seq+1
		case seq != s.isn:
			c.reason(ReasonUnexpectedSYN)
		}
		seq++ // the SYN occupies one sequence number
	}
	if s.mode == modeUnsynced {
		if fin || rst {
			c.stop(0)
		}
		if len(payload) == 0 {
			return c.result()
		}
		c.reason(ReasonNoSYN)
		if c.cfg.Strict {
			c.res.Verdict = pkt.Drop
		}
		return c.result()
	}
	if rst {
		if seq == s.next || s.mode != modeSynced {
			c.stop(0)
		} else {
			c.reason(ReasonRSTNotInSeq)
		}
		return c.result()
	}
	if len(payload) > 0 {
		c.data(s, dir, seq, payload)
	}
	if fin && c.res.Verdict != pkt.Drop {
		c.stop(0)
	}
	return c.result()
}

func (c *Translator) result() Result {
	r := c.res
	if len(c.patches) > 0 {
		r.Patches = c.patches
	}
	if len(c.relPatches) > 0 {
		r.ReleasedPatches = c.relPatches
	}
	return r
}

// reason records why; the first reason of a segment wins, except that a
// drop reason replaces an informational one.
func (c *Translator) reason(r Reason) {
	if c.res.Reason == ReasonNone {
		c.res.Reason = r
	}
}

func (c *Translator) drop(r Reason) {
	if c.res.Verdict != pkt.Drop {
		c.res.Reason = r
	}
	c.res.Verdict = pkt.Drop
}

// data handles the payload bytes [seq, seq+len(p)) of stream s.
func (c *Translator) data(s *stream, dir Dir, seq uint32, p []byte) {
	end := seq + uint32(len(p))
	if s.mode == modeDesynced && seqLT(s.next, seq) {
		s.next = end
		c.reason(ReasonDesynced)
		return
	}
	if seqLT(s.next, seq) {
		c.drop(ReasonOutOfOrder)
		return
	}
	// Old bytes [seq, min(end, next)): re-apply what was done to them.
	oldEnd := end
	if seqLT(s.next, end) {
		oldEnd = s.next
	}
	if seqLT(seq, oldEnd) {
		if s.hasFloor && seqLT(seq, s.floor) {
			if c.cfg.Strict {
				c.drop(ReasonHistoryLost)
				return
			}
			c.reason(ReasonHistoryLost)
		}
		c.reapply(s, seq, oldEnd, p)
	}
	if seqLE(end, s.next) {
		// Nothing new. A copy of the segment ending in a split field must
		// wait for the field too.
		if s.pending && seqLE(seq, s.pendSeq) && seqLT(s.pendSeq, end) {
			if s.held != nil {
				c.drop(ReasonHeldDuplicate)
				return
			}
			c.hold(s, seq, p)
			return
		}
		c.reason(ReasonRetransmission)
		return
	}
	switch s.mode {
	case modeDesynced:
		s.next = end
		c.reason(ReasonDesynced)
		return
	case modePoisoned:
		c.drop(s.badReason)
		return
	}
	c.parse(s, dir, seq, p, int(s.next-seq))
}

// hold keeps p, the segment ending in the pending field's first byte. A
// segment dropped anyway is not kept: its resend will be.
func (c *Translator) hold(s *stream, seq uint32, p []byte) {
	if c.res.Verdict == pkt.Drop {
		return
	}
	c.holdClock++
	s.held, s.heldSeq, s.heldAge = p, seq, c.holdClock
	c.res.Verdict = pkt.Hold
	c.res.Reason = ReasonSplitCallID
}

// reapply re-applies the remembered patches that fall in [seq, end).
func (c *Translator) reapply(s *stream, seq, end uint32, p []byte) {
	for i := range s.ring {
		m := &s.ring[i]
		if seqLE(seq, m.seq) && seqLT(m.seq, end) {
			off := int(m.seq - seq)
			if p[off] == m.old {
				p[off] = m.new
				c.patches = append(c.patches, Patch{Off: off, Old: m.old, New: m.new})
			}
		}
	}
}

func (s *stream) remember(seq uint32, old, new byte) {
	m := memo{seq: seq, old: old, new: new}
	if len(s.ring) < ringSize {
		// Grow by append (doubling) up to ringSize: a connection with a
		// call or two keeps a few entries, not 2 KiB.
		s.ring = append(s.ring, m)
		s.ringNext = len(s.ring) % ringSize
		return
	}
	s.floor, s.hasFloor = s.ring[s.ringNext].seq+1, true
	s.ring[s.ringNext] = m
	s.ringNext = (s.ringNext + 1) % ringSize
}

// parse feeds p[start:] (the new bytes, p starting at stream seq seq) to
// the reassembler.
func (c *Translator) parse(s *stream, dir Dir, seq uint32, p []byte, start int) {
	i := start
	for i < len(p) {
		if s.have < wire.HeaderLen {
			n := min(wire.HeaderLen-s.have, len(p)-i)
			copy(s.keep[s.have:], p[i:i+n])
			s.have += n
			i += n
			if s.have < wire.HeaderLen {
				break
			}
			length, typ, err := wire.PeekHeader(s.keep[:wire.HeaderLen])
			if err != nil {
				c.malformed(s, err)
				if s.mode == modeDesynced {
					s.next = seq + uint32(len(p))
				}
				return
			}
			s.length, s.typ = length, typ
			s.field, s.kind = fieldOf(dir, typ)
			continue
		}
		n := min(s.length-s.have, len(p)-i)
		if s.have < keepLen {
			copy(s.keep[s.have:], p[i:i+min(n, keepLen-s.have)])
		}
		if f := s.field; f >= 0 {
			switch {
			case s.have <= f && f+1 < s.have+n: // both bytes here
				c.rewrite(s, seq+uint32(i+f-s.have), seq, p)
			case s.have <= f && f < s.have+n: // first byte ends the segment
				s.pending, s.pendSeq = true, seq+uint32(i+f-s.have)
			case s.pending && s.have == f+1: // second byte starts this chunk
				c.rewrite(s, s.pendSeq, seq, p)
			}
		}
		s.have += n
		i += n
		if s.have == s.length {
			c.complete(s, dir)
			s.have, s.length, s.field, s.kind = 0, 0, -1, fieldNone
			s.msgSeq = seq + uint32(i)
		}
	}
	s.next = seq + uint32(len(p))
	if s.pending {
		if s.held != nil { // cannot happen: the old hold completed first
			c.drop(ReasonHeldDuplicate)
			return
		}
		c.hold(s, seq, p)
	}
}

// fieldOf returns the call-ID field a message in direction dir has
// rewritten, per the symmetric rule: outbound the sender's own Call ID
// (inside->outside), inbound the Peer's Call ID (outside->inside).
func fieldOf(dir Dir, t wire.MsgType) (int, fieldKind) {
	if dir == Outbound {
		off, ok := wire.CallIDOffset(t)
		if !ok {
			return -1, fieldNone
		}
		if t == wire.CallClearRequest || t == wire.CallDisconnectNotify {
			return off, fieldOutside
		}
		return off, fieldAlloc
	}
	if off, ok := wire.PeerCallIDOffset(t); ok {
		return off, fieldInside
	}
	return -1, fieldNone
}

// malformed handles a bad header of the message starting at s.msgSeq.
func (c *Translator) malformed(s *stream, err error) {
	r := ReasonBadLength
	switch {
	case errors.Is(err, wire.ErrBadMagic):
		r = ReasonBadMagic
	case errors.Is(err, wire.ErrUnknownType):
		r = ReasonUnknownType
	case errors.Is(err, wire.ErrNotControl):
		r = ReasonNotControl
	}
	if c.cfg.Strict {
		// Nothing from the bad message on goes through: the stream stays
		// at its first byte, every resend of it is dropped again.
		s.mode, s.badSeq, s.badReason = modePoisoned, s.msgSeq, r
		s.next = s.msgSeq
		c.drop(r)
		return
	}
	s.mode = modeDesynced
	c.res.Reason = r
}

// rewrite maps the field whose first byte is at stream seq first (its two
// bytes are in s.keep) and patches it wherever it is: in p (starting at
// stream seq seq) and in the held segment.
func (c *Translator) rewrite(s *stream, first, seq uint32, p []byte) {
	f := s.field
	old := binary.BigEndian.Uint16(s.keep[f:])
	s.fieldOld, s.fieldNew, s.fieldOK, s.fieldRecalled = old, old, false, false
	var nv uint16
	var ok bool
	switch s.kind {
	case fieldAlloc:
		var err error
		nv, err = c.m.AllocOutside(old)
		ok = err == nil
		if !ok {
			c.reason(ReasonAllocFailed)
		}
	case fieldOutside:
		// The Mapper may already have let the call go: the gateway
		// releases the outside ID at the first CCRQ or CDN, but the
		// other party's answer (an inside PAC's CDN after the outside
		// PNS's CCRQ) or a repeated CCRQ still names the call by it.
		if nv, ok = c.m.OutsideOf(old); !ok {
			if nv, ok = c.recall(old); ok {
				s.fieldRecalled = true
			} else {
				c.reason(ReasonUnknownCallID)
			}
		}
	case fieldInside:
		if nv, ok = c.m.InsideOf(old); !ok {
			c.reason(ReasonUnknownCallID)
		}
	}
	s.pending = false
	if ok {
		s.fieldNew, s.fieldOK = nv, true
		ob := [2]byte{byte(old >> 8), byte(old)}
		nb := [2]byte{byte(nv >> 8), byte(nv)}
		for k := range uint32(2) {
			if ob[k] == nb[k] {
				continue
			}
			bs := first + k
			s.remember(bs, ob[k], nb[k])
			if seqLE(seq, bs) && seqLT(bs, seq+uint32(len(p))) {
				if off := int(bs - seq); p[off] == ob[k] {
					p[off] = nb[k]
					c.patches = append(c.patches, Patch{Off: off, Old: ob[k], New: nb[k]})
				}
			}
			// A resend may carry the byte too: patch both copies.
			if s.held != nil && seqLE(s.heldSeq, bs) && seqLT(bs, s.heldSeq+uint32(len(s.held))) {
				if off := int(bs - s.heldSeq); s.held[off] == ob[k] {
					s.held[off] = nb[k]
					c.relPatches = append(c.relPatches, Patch{Off: off, Old: ob[k], New: nb[k]})
				}
			}
		}
	}
	if s.held != nil {
		s.held = nil
		c.res.Released = true
	}
}

// ExpireHeld gives up on the oldest held segment: the Translator forgets it and
// the caller decides its fate (lenient: send it unpatched; strict: drop
// it, and TCP resends it). The split field is still completed when its
// second byte arrives, and a resent copy of its first byte is patched. It
// reports whether a segment was held.
func (c *Translator) ExpireHeld() (released bool) {
	var oldest *stream
	for i := range c.dirs {
		s := &c.dirs[i]
		if s.held != nil && (oldest == nil || s.heldAge < oldest.heldAge) {
			oldest = s
		}
	}
	if oldest == nil {
		return false
	}
	oldest.held = nil
	return true
}

// Held reports whether a segment of direction dir is held.
func (c *Translator) Held(dir Dir) bool { return dir <= Inbound && c.dirs[dir].held != nil }
