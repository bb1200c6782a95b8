package helper

import (
	"encoding/binary"

	"pptpgw/pptp/wire"
)

// The call state machine. Which party is inside does not matter: the
// inside party's ID (InsideID/OutsideID) is the one the gateway
// translates, the outside party's own ID is PeerID.
//
//	outgoing call (PNS asks PAC):  OCRQ ->requested; OCRP ok ->established, else failed
//	incoming call (PAC asks PNS):  ICRQ ->requested; ICRP ok ->replied, else failed;
//	                               ICCN ->established
//	clearing:                      CCRQ ->clearing (CallCleared); CDN ->removed (CallCleared
//	                               unless already sent)
//	the whole connection:          SCCRQ one way, SCCRP ok the other ->ControlEstablished;
//	                               StopCCRQ/StopCCRP/FIN/RST ->ControlStopped, all calls gone

// complete runs the state machine for the message just completed in s.
// After ControlStopped there are no calls left to report on.
func (c *Translator) complete(s *stream, dir Dir) {
	if c.stopped {
		return
	}
	k := s.keep[:]
	// Fields of the message just completed, at pptp/wire's offsets. Every
	// message type read here has the field asked for and keepLen covers it
	// (TestKeptFieldsFit).
	own := func() uint16 { off, _ := wire.CallIDOffset(s.typ); return binary.BigEndian.Uint16(k[off:]) }
	peerOf := func() uint16 { off, _ := wire.PeerCallIDOffset(s.typ); return binary.BigEndian.Uint16(k[off:]) }
	result := func() uint8 { off, _ := wire.ResultOffset(s.typ); return k[off] }
	out := dir == Outbound
	switch t := s.typ; t {
	case wire.StopCtrlConnRequest, wire.StopCtrlConnReply:
		c.stop(t)
	case wire.EchoRequest, wire.EchoReply:
		c.m.Event(Event{Kind: EchoSeen, Msg: t})
	case wire.StartCtrlConnRequest:
		c.sccrq[dir] = true
	case wire.StartCtrlConnReply:
		// Only a reply to a request seen going the other way sets the
		// connection up: a lone SCCRP (a connection picked up mid-stream,
		// or one side talking to itself) would otherwise make state that
		// early drop can no longer remove.
		if res := result(); res == wire.SCCRPResultOK && c.sccrq[1-dir] {
			c.m.Event(Event{Kind: ControlEstablished, Msg: t, Result: res})
		}
	case wire.OutgoingCallRequest, wire.IncomingCallRequest:
		if out {
			if !s.fieldOK {
				return
			}
			c.setCall(call{inside: s.fieldOld, outside: s.fieldNew, hasInside: true, state: PhaseRequested})
			c.m.Event(Event{Kind: CallRequested, Msg: t, InsideID: s.fieldOld, OutsideID: s.fieldNew})
			return
		}
		peer := own()
		c.setCall(call{peer: peer, hasPeer: true, state: PhaseRequested})
		c.m.Event(Event{Kind: CallRequested, Msg: t, PeerID: peer})
	case wire.OutgoingCallReply, wire.IncomingCallReply:
		res := result()
		var cl call
		var idx int
		if out { // the inside party answers: own ID = inside, peer ID = outside party's
			if !s.fieldOK {
				return
			}
			cl = call{inside: s.fieldOld, outside: s.fieldNew, peer: peerOf(), hasInside: true, hasPeer: true}
			idx = c.findPeer(cl.peer)
		} else { // the outside party answers: its own ID = peer, Peer's Call ID = ours
			if !s.fieldOK {
				return
			}
			cl = call{inside: s.fieldNew, outside: s.fieldOld, peer: own(), hasInside: true, hasPeer: true}
			idx = c.findInside(cl.inside)
		}
		ev := Event{Msg: t, InsideID: cl.inside, OutsideID: cl.outside, PeerID: cl.peer, Result: res}
		ok := (t == wire.OutgoingCallReply && res == wire.OCRPResultConnected) ||
			(t == wire.IncomingCallReply && res == wire.ICRPResultConnect)
		switch {
		case !ok:
			c.removeCall(idx)
			ev.Kind = CallFailed
			c.m.Event(ev)
		case t == wire.OutgoingCallReply:
			cl.state = PhaseConnected
			c.putCall(idx, cl)
			ev.Kind = CallEstablished
			c.m.Event(ev)
		default: // ICRP "connect": the call is up once the PAC sends ICCN
			cl.state = PhaseAnswered
			c.putCall(idx, cl)
		}
	case wire.IncomingCallConnected:
		var idx int
		if out { // inside PAC: Peer's Call ID is the outside PNS's own
			idx = c.findPeer(peerOf())
		} else {
			if !s.fieldOK {
				return
			}
			idx = c.findInside(s.fieldNew)
		}
		if idx < 0 {
			return
		}
		cl := &c.calls[idx]
		cl.state = PhaseConnected
		c.m.Event(Event{Kind: CallEstablished, Msg: t, InsideID: cl.inside, OutsideID: cl.outside, PeerID: cl.peer})
	case wire.CallClearRequest, wire.CallDisconnectNotify:
		var idx int
		ev := Event{Kind: CallCleared, Msg: t}
		if t == wire.CallDisconnectNotify {
			ev.Result = result()
		}
		if out { // our own ID, translated
			if !s.fieldOK {
				return
			}
			idx = c.findInside(s.fieldOld)
			if idx < 0 && s.fieldRecalled {
				return // a call already cleared and forgotten on both sides
			}
			ev.InsideID, ev.OutsideID = s.fieldOld, s.fieldNew
		} else { // the outside party's own ID
			idx = c.findPeer(own())
			if idx < 0 {
				return
			}
			ev.InsideID, ev.OutsideID = c.calls[idx].inside, c.calls[idx].outside
		}
		if idx >= 0 {
			ev.PeerID = c.calls[idx].peer
			already := c.calls[idx].state == PhaseClearing
			if t == wire.CallClearRequest {
				c.calls[idx].state = PhaseClearing
			} else {
				c.removeCall(idx)
			}
			if already {
				return
			}
		}
		c.m.Event(ev)
	}
}

// stop reports ControlStopped once and forgets all calls.
func (c *Translator) stop(t wire.MsgType) {
	if c.stopped {
		return
	}
	c.stopped = true
	for _, cl := range c.calls {
		c.forget(cl)
	}
	c.calls = c.calls[:0]
	c.m.Event(Event{Kind: ControlStopped, Msg: t})
}

func (c *Translator) findInside(id uint16) int {
	for i := range c.calls {
		if c.calls[i].hasInside && c.calls[i].inside == id {
			return i
		}
	}
	return -1
}

func (c *Translator) findPeer(id uint16) int {
	for i := range c.calls {
		if c.calls[i].hasPeer && c.calls[i].peer == id {
			return i
		}
	}
	return -1
}

// setCall records a new call, replacing one with the same ID (a repeated
// request).
func (c *Translator) setCall(cl call) {
	idx := -1
	if cl.hasInside {
		idx = c.findInside(cl.inside)
	} else {
		idx = c.findPeer(cl.peer)
	}
	c.putCall(idx, cl)
}

func (c *Translator) putCall(idx int, cl call) {
	if idx >= 0 {
		c.calls[idx] = cl
		return
	}
	if len(c.calls) >= maxCalls {
		return // still translated by the Mapper, just not tracked here
	}
	c.calls = append(c.calls, cl)
}

func (c *Translator) removeCall(idx int) {
	if idx < 0 {
		return
	}
	c.forget(c.calls[idx])
	last := len(c.calls) - 1
	c.calls[idx] = c.calls[last]
	c.calls = c.calls[:last]
}

// forget remembers the translation of a call being removed, if it has one.
func (c *Translator) forget(cl call) {
	if !cl.hasInside {
		return
	}
	g := goneCall{cl.inside, cl.outside}
	if len(c.gone) < goneLen {
		c.gone = append(c.gone, g)
	} else {
		c.gone[c.goneNext] = g
	}
	c.goneNext = (c.goneNext + 1) % goneLen
}

// recall returns the outside ID of the inside call ID insideID from the
// Translator's own memory: a tracked call, else the most recently forgotten one.
func (c *Translator) recall(insideID uint16) (uint16, bool) {
	if i := c.findInside(insideID); i >= 0 {
		return c.calls[i].outside, true
	}
	for k := 1; k <= len(c.gone); k++ {
		g := c.gone[(c.goneNext-k+goneLen)%goneLen]
		if g.inside == insideID {
			return g.outside, true
		}
	}
	return 0, false
}

// Call reports the state of the call whose inside ID is insideID.
func (c *Translator) Call(insideID uint16) (Phase, bool) {
	if i := c.findInside(insideID); i >= 0 {
		return c.calls[i].state, true
	}
	return 0, false
}

// NumCalls returns how many calls the Translator tracks.
func (c *Translator) NumCalls() int { return len(c.calls) }
