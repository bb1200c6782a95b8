package helper

import (
	"errors"
	"fmt"

	"pptpgw/pptp/wire"
)

// Saving and restoring a Translator across a restart of the daemon (issue
// 8, "calls survive a restart"): its stream positions, the message being
// reassembled, the remembered patches (so a retransmission after the
// restart gets the same rewrite), the call records and the forgotten
// translations. A held segment is not saved: it is in the kernel's queue,
// which a restart drops, and TCP resends it (the restored pending field
// holds the resend again).

// State is a Translator's saved state. Restore checks every field a
// corrupted or hostile file could use to break an invariant.
type State struct {
	Dirs    [2]StreamState `json:"dirs"`
	Calls   []CallRecord   `json:"calls,omitempty"`
	Stopped bool           `json:"stopped,omitempty"`
	SCCRQ   [2]bool        `json:"sccrq"`
	// Gone: the forgotten translations in slot order; GoneNext is the
	// next slot to overwrite.
	Gone     []GoneRecord `json:"gone,omitempty"`
	GoneNext int          `json:"gone_next,omitempty"`
}

// StreamState is one direction of the control stream.
type StreamState struct {
	Mode    uint8  `json:"mode"`
	ISN     uint32 `json:"isn"`
	Next    uint32 `json:"next"`
	MsgSeq  uint32 `json:"msg_seq"`
	Keep    []byte `json:"keep,omitempty"` // the first bytes of the message being reassembled
	Have    int    `json:"have,omitempty"` // bytes of it consumed
	Pending bool   `json:"pending,omitempty"`
	PendSeq uint32 `json:"pend_seq,omitempty"`
	// The outcome of the current message's field rewrite.
	FieldOld      uint16 `json:"field_old,omitempty"`
	FieldNew      uint16 `json:"field_new,omitempty"`
	FieldOK       bool   `json:"field_ok,omitempty"`
	FieldRecalled bool   `json:"field_recalled,omitempty"`
	BadSeq        uint32 `json:"bad_seq,omitempty"`
	BadReason     uint8  `json:"bad_reason,omitempty"`
	// Ring: the remembered patches in slot order; RingNext is the next
	// slot to overwrite.
	Ring     []MemoRecord `json:"ring,omitempty"`
	RingNext int          `json:"ring_next,omitempty"`
	Floor    uint32       `json:"floor,omitempty"`
	HasFloor bool         `json:"has_floor,omitempty"`
}

// MemoRecord is one remembered patch: the byte at stream seq Seq was Old
// and became New.
type MemoRecord struct {
	Seq uint32 `json:"seq"`
	Old byte   `json:"old"`
	New byte   `json:"new"`
}

// CallRecord is one call the Translator follows.
type CallRecord struct {
	Inside    uint16 `json:"inside"`
	Outside   uint16 `json:"outside"`
	Peer      uint16 `json:"peer"`
	HasInside bool   `json:"has_inside,omitempty"`
	HasPeer   bool   `json:"has_peer,omitempty"`
	Phase     Phase  `json:"phase"`
}

// GoneRecord is a forgotten translation (see goneLen).
type GoneRecord struct {
	Inside  uint16 `json:"inside"`
	Outside uint16 `json:"outside"`
}

// ErrBadState is returned by RestoreTranslator for a State no Translator
// can be in.
var ErrBadState = errors.New("helper: invalid saved translator state")

// State returns the Translator's state for saving.
func (c *Translator) State() State {
	st := State{Stopped: c.stopped, SCCRQ: c.sccrq, GoneNext: c.goneNext}
	for i := range c.dirs {
		s := &c.dirs[i]
		ss := StreamState{Mode: uint8(s.mode), ISN: s.isn, Next: s.next, MsgSeq: s.msgSeq, Have: s.have,
			Pending: s.pending, PendSeq: s.pendSeq, FieldOld: s.fieldOld, FieldNew: s.fieldNew, FieldOK: s.fieldOK,
			FieldRecalled: s.fieldRecalled, BadSeq: s.badSeq, BadReason: uint8(s.badReason),
			RingNext: s.ringNext, Floor: s.floor, HasFloor: s.hasFloor}
		if s.have > 0 {
			ss.Keep = append([]byte(nil), s.keep[:min(s.have, keepLen)]...)
		}
		for _, m := range s.ring {
			ss.Ring = append(ss.Ring, MemoRecord{m.seq, m.old, m.new})
		}
		st.Dirs[i] = ss
	}
	for _, cl := range c.calls {
		st.Calls = append(st.Calls, CallRecord{cl.inside, cl.outside, cl.peer, cl.hasInside, cl.hasPeer, cl.state})
	}
	for _, g := range c.gone {
		st.Gone = append(st.Gone, GoneRecord{g.inside, g.outside})
	}
	return st
}

// RestoreTranslator returns a Translator in state st, working for m with
// cfg. It refuses (ErrBadState) a state that breaks an invariant Process
// relies on; the message being reassembled is checked again against its
// header, and the field to rewrite is derived from it, not read.
func RestoreTranslator(m Mapper, cfg Config, st State) (*Translator, error) {
	c := &Translator{m: m, cfg: cfg, stopped: st.Stopped, sccrq: st.SCCRQ}
	bad := func(format string, a ...any) (*Translator, error) {
		return nil, fmt.Errorf("%w: %s", ErrBadState, fmt.Sprintf(format, a...))
	}
	for i := range c.dirs {
		ss, s := &st.Dirs[i], &c.dirs[i]
		if ss.Mode > uint8(modePoisoned) {
			return bad("dir %d: mode %d", i, ss.Mode)
		}
		if ss.BadReason >= uint8(NumReasons) {
			return bad("dir %d: reason %d", i, ss.BadReason)
		}
		*s = stream{mode: mode(ss.Mode), isn: ss.ISN, next: ss.Next, msgSeq: ss.MsgSeq, field: -1,
			pending: ss.Pending, pendSeq: ss.PendSeq, fieldOld: ss.FieldOld, fieldNew: ss.FieldNew,
			fieldOK: ss.FieldOK, fieldRecalled: ss.FieldRecalled, badSeq: ss.BadSeq, badReason: Reason(ss.BadReason),
			floor: ss.Floor, hasFloor: ss.HasFloor}
		if ss.Have < 0 || ss.Have >= wire.MaxMsgLen || len(ss.Keep) != min(ss.Have, keepLen) {
			return bad("dir %d: %d bytes of the current message, %d kept", i, ss.Have, len(ss.Keep))
		}
		copy(s.keep[:], ss.Keep)
		s.have = ss.Have
		if s.have >= wire.HeaderLen {
			length, typ, err := wire.PeekHeader(s.keep[:wire.HeaderLen])
			if err != nil || length <= s.have {
				return bad("dir %d: current message header: length %d, %d bytes consumed, %v", i, length, s.have, err)
			}
			s.length, s.typ = length, typ
			s.field, s.kind = fieldOf(Dir(i), typ)
		}
		if s.pending && (s.field < 0 || s.have != s.field+1) {
			return bad("dir %d: pending field without its first byte", i)
		}
		if len(ss.Ring) > ringSize || ss.RingNext < 0 || ss.RingNext >= ringSize ||
			(len(ss.Ring) < ringSize && ss.RingNext != len(ss.Ring)%ringSize) {
			return bad("dir %d: %d remembered patches, next slot %d", i, len(ss.Ring), ss.RingNext)
		}
		for _, r := range ss.Ring {
			s.ring = append(s.ring, memo{r.Seq, r.Old, r.New})
		}
		s.ringNext = ss.RingNext
	}
	if len(st.Calls) > maxCalls {
		return bad("%d calls", len(st.Calls))
	}
	for _, r := range st.Calls {
		if r.Phase < PhaseRequested || r.Phase > PhaseClearing {
			return bad("call phase %d", r.Phase)
		}
		c.calls = append(c.calls, call{r.Inside, r.Outside, r.Peer, r.HasInside, r.HasPeer, r.Phase})
	}
	if len(st.Gone) > goneLen || st.GoneNext < 0 || st.GoneNext >= goneLen ||
		(len(st.Gone) < goneLen && st.GoneNext != len(st.Gone)) {
		return bad("%d forgotten calls, next slot %d", len(st.Gone), st.GoneNext)
	}
	for _, g := range st.Gone {
		c.gone = append(c.gone, goneCall{g.Inside, g.Outside})
	}
	c.goneNext = st.GoneNext
	return c, nil
}

// SetConfig changes the Translator's policy (a reload): it applies from
// the next segment on.
func (c *Translator) SetConfig(cfg Config) { c.cfg = cfg }
