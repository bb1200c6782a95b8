package ppp

import "time"

// fsmState is a state of the RFC 1661 §4 option negotiation automaton.
type fsmState uint8

const (
	stInitial fsmState = iota
	stStarting
	stClosed
	stStopped
	stClosing
	stStopping
	stReqSent
	stAckRcvd
	stAckSent
	stOpened
)

var stateNames = [...]string{"Initial", "Starting", "Closed", "Stopped", "Closing",
	"Stopping", "Req-Sent", "Ack-Rcvd", "Ack-Sent", "Opened"}

func (s fsmState) String() string { return stateNames[s] }

// fsmHandler is the per-protocol part of the automaton (LCP, IPCP, CCP): it
// builds and judges Configure options and receives the This-Layer actions.
type fsmHandler interface {
	resetCI()                                                 // back to the options we first want (on Open / irc before a fresh negotiation)
	addCI(b []byte) []byte                                    // append our Configure-Request options
	nakCI(opts []byte, asReject bool) bool                    // peer's Configure-Nak: adjust our request; false = bad packet
	rejCI(opts []byte) bool                                   // peer's Configure-Reject: drop options; false = bad packet
	reqCI(opts, reply []byte, rejectOnly bool) (byte, []byte) // peer's Configure-Request: code and options to send back (Ack echoes opts)
	up()                                                      // This-Layer-Up
	down()                                                    // This-Layer-Down
	finished()                                                // This-Layer-Finished
	extCode(code, id byte, data []byte) bool                  // protocol-specific codes; false = unknown code
}

// fsm is the RFC 1661 §4.1 option negotiation automaton shared by LCP, IPCP
// and CCP. Actions: tlu/tld/tls/tlf, irc/zrc (restart counter), scr, sca,
// scn, str, sta, scj, ser. All methods run with Session.mu held.
type fsm struct {
	s       *Session
	proto   uint16
	name    string
	h       fsmHandler
	state   fsmState
	id      byte // identifier of our last Configure-Request or Terminate-Request
	nextID  byte
	restart int       // restart counter
	timer   time.Time // restart timer deadline; zero = stopped
	naksOut int       // Configure-Naks we sent in a row (Max-Failure)
	loops   int       // Naks/Rejects received in this negotiation (hard bound)
	badReqs int       // Configure-Requests we could not Ack in this negotiation (hard bound)
}

func (f *fsm) newID() byte { f.nextID++; return f.nextID }

func (f *fsm) startTimer() { f.timer = f.s.now().Add(f.s.cfg.RestartTimer) }
func (f *fsm) stopTimer()  { f.timer = time.Time{} }

func (f *fsm) ircConf() { f.restart = f.s.cfg.MaxConfigure }
func (f *fsm) ircTerm() { f.restart = f.s.cfg.MaxTerminate }

func (f *fsm) setState(st fsmState) {
	if f.state != st {
		f.s.log.Debug("ppp fsm", "proto", f.name, "from", f.state.String(), "to", st.String())
	}
	f.state = st
}

// scr: Send-Configure-Request. A retransmission keeps its identifier.
func (f *fsm) scr(retransmit bool) {
	if !retransmit {
		f.id = f.newID()
	}
	b := f.s.beginCtl(f.proto, codeConfReq, f.id)
	b = f.h.addCI(b)
	f.s.endCtl(b)
	f.restart--
	f.startTimer()
}

func (f *fsm) str() {
	f.id = f.newID()
	f.s.endCtl(f.s.beginCtl(f.proto, codeTermReq, f.id))
	f.restart--
	f.startTimer()
}

func (f *fsm) sta(id byte) { f.s.endCtl(f.s.beginCtl(f.proto, codeTermAck, id)) }

func (f *fsm) scj(pkt []byte) {
	b := f.s.beginCtl(f.proto, codeCodeRej, f.newID())
	b = append(b, f.s.truncForPeer(pkt, len(b))...)
	f.s.endCtl(b)
}

// tlu etc. are the This-Layer actions.
func (f *fsm) tlu() { f.loops, f.badReqs, f.naksOut = 0, 0, 0; f.h.up() }
func (f *fsm) tld() { f.h.down() }
func (f *fsm) tlf() { f.stopTimer(); f.h.finished() }

// --- events (RFC 1661 §4.1 table) ---

func (f *fsm) lowerUp() {
	switch f.state {
	case stInitial:
		f.setState(stClosed)
	case stStarting:
		f.beginNegotiation()
	}
}

func (f *fsm) beginNegotiation() {
	f.h.resetCI()
	f.loops, f.badReqs, f.naksOut = 0, 0, 0
	f.ircConf()
	f.scr(false)
	f.setState(stReqSent)
}

func (f *fsm) lowerDown() {
	switch f.state {
	case stClosed, stClosing:
		f.stopTimer()
		f.setState(stInitial)
	case stStopped:
		f.setState(stStarting)
	case stStopping, stReqSent, stAckRcvd, stAckSent:
		f.stopTimer()
		f.setState(stStarting)
	case stOpened:
		f.tld()
		f.setState(stStarting)
	}
}

func (f *fsm) open() {
	switch f.state {
	case stInitial:
		f.setState(stStarting)
	case stClosed:
		f.beginNegotiation()
	case stClosing:
		f.setState(stStopping)
	}
}

func (f *fsm) close() {
	switch f.state {
	case stStarting:
		f.setState(stInitial)
		f.tlf()
	case stStopped:
		f.setState(stClosed)
		f.tlf()
	case stStopping:
		f.setState(stClosing)
	case stReqSent, stAckRcvd, stAckSent, stOpened:
		if f.state == stOpened {
			f.tld()
		}
		f.ircTerm()
		f.str()
		f.setState(stClosing)
	}
}

func (f *fsm) timeout(now time.Time) {
	if f.timer.IsZero() || now.Before(f.timer) {
		return
	}
	f.timer = time.Time{}
	switch f.state {
	case stClosing, stStopping:
		if f.restart > 0 {
			f.str()
			return
		}
		if f.state == stClosing {
			f.setState(stClosed)
		} else {
			f.setState(stStopped)
		}
		f.tlf()
	case stReqSent, stAckRcvd, stAckSent:
		if f.restart > 0 {
			f.scr(true)
			if f.state == stAckRcvd {
				f.setState(stReqSent)
			}
			return
		}
		f.setState(stStopped)
		f.tlf()
	}
}

// input handles one control packet of this protocol.
func (f *fsm) input(b []byte) {
	p, r := parseCtl(b)
	if r != ReasonNone {
		f.s.count(r)
		return
	}
	if f.state == stInitial || f.state == stStarting {
		f.s.count(ReasonWrongPhase)
		return
	}
	switch p.code {
	case codeConfReq:
		f.rcvConfReq(p)
	case codeConfAck:
		f.rcvConfAck(p)
	case codeConfNak, codeConfRej:
		f.rcvConfNakRej(p)
	case codeTermReq:
		f.rcvTermReq(p)
	case codeTermAck:
		f.rcvTermAck(p)
	case codeCodeRej:
		f.rcvCodeRej(p)
	default:
		if !f.h.extCode(p.code, p.id, p.data) {
			f.s.count(ReasonUnknownCode)
			f.scj(b[:cpHeaderLen+len(p.data)])
		}
	}
}

func (f *fsm) rcvConfReq(p ctlPacket) {
	switch f.state {
	case stClosed:
		f.sta(p.id)
		return
	case stClosing, stStopping:
		return
	case stOpened:
		f.tld()
		f.ircConf()
		f.scr(false)
		f.setState(stReqSent)
	case stStopped:
		f.h.resetCI()
		f.loops, f.badReqs, f.naksOut = 0, 0, 0
		f.ircConf()
		f.scr(false)
		f.setState(stReqSent)
	}
	if !validOptions(p.data) {
		f.s.count(ReasonBadOptions)
		return
	}
	rejectOnly := f.naksOut >= f.s.cfg.MaxFailure
	code, reply := f.h.reqCI(p.data, f.s.reply[:0], rejectOnly)
	f.s.reply = reply[:0]
	b := f.s.beginCtl(f.proto, code, p.id)
	if code == codeConfAck {
		b = append(b, p.data...)
	} else {
		b = append(b, reply...)
	}
	f.s.endCtl(b)
	if code == codeConfAck {
		f.naksOut = 0
		switch f.state {
		case stAckRcvd:
			f.setState(stOpened)
			f.stopTimer()
			f.tlu()
		case stReqSent, stAckSent:
			f.setState(stAckSent)
		}
		return
	}
	if code == codeConfNak {
		f.naksOut++
	}
	f.badReqs++
	if f.badReqs > 2*f.s.cfg.MaxFailure+f.s.cfg.MaxConfigure {
		f.s.count(ReasonNakLoop)
		f.giveUp()
		return
	}
	if f.state == stAckSent {
		f.setState(stReqSent)
	}
}

// ackMatches reports whether a Configure-Ack's options are exactly those of
// our last Configure-Request (RFC 1661 5.2: identical values, same order);
// the request is rebuilt from the handler into the session's scratch buffer.
func (f *fsm) ackMatches(opts []byte) bool {
	exp := f.h.addCI(f.s.tmp[:0])
	f.s.tmp = exp[:0]
	return string(exp) == string(opts)
}

func (f *fsm) rcvConfAck(p ctlPacket) {
	if p.id != f.id || !f.ackMatches(p.data) {
		f.s.count(ReasonUnexpected)
		return
	}
	switch f.state {
	case stClosed, stStopped:
		f.sta(p.id)
	case stReqSent:
		f.ircConf()
		f.stopTimer() // restart timer keeps running for our peer's sake in RFC; we restart on scr only
		f.startTimer()
		f.setState(stAckRcvd)
	case stAckRcvd:
		f.scr(false)
		f.setState(stReqSent)
	case stAckSent:
		f.ircConf()
		f.stopTimer()
		f.setState(stOpened)
		f.tlu()
	case stOpened:
		f.tld()
		f.scr(false)
		f.setState(stReqSent)
	}
}

func (f *fsm) rcvConfNakRej(p ctlPacket) {
	if p.id != f.id {
		f.s.count(ReasonUnexpected)
		return
	}
	switch f.state {
	case stClosed, stStopped:
		f.sta(p.id)
		return
	case stClosing, stStopping:
		return
	}
	if !validOptions(p.data) {
		f.s.count(ReasonBadOptions)
		return
	}
	f.loops++
	var ok bool
	if p.code == codeConfNak {
		ok = f.h.nakCI(p.data, f.loops > f.s.cfg.MaxFailure)
	} else {
		ok = f.h.rejCI(p.data)
	}
	if !ok {
		f.s.count(ReasonBadOptions)
		return
	}
	if f.loops > 2*f.s.cfg.MaxFailure+f.s.cfg.MaxConfigure {
		f.s.count(ReasonNakLoop)
		f.giveUp()
		return
	}
	switch f.state {
	case stReqSent, stAckSent:
		f.ircConf()
		f.scr(false)
	case stAckRcvd:
		f.scr(false)
		f.setState(stReqSent)
	case stOpened:
		f.tld()
		f.scr(false)
		f.setState(stReqSent)
	}
}

// giveUp ends a negotiation that does not converge (bounded Nak loops):
// like running out of the restart counter.
func (f *fsm) giveUp() {
	if f.state == stOpened {
		f.tld()
	}
	f.setState(stStopped)
	f.tlf()
}

func (f *fsm) rcvTermReq(p ctlPacket) {
	switch f.state {
	case stAckRcvd, stAckSent:
		f.setState(stReqSent)
	case stOpened:
		f.tld()
		f.restart = 0
		f.startTimer()
		f.setState(stStopping)
	}
	f.sta(p.id)
}

func (f *fsm) rcvTermAck(p ctlPacket) {
	switch f.state {
	case stClosing:
		f.setState(stClosed)
		f.tlf()
	case stStopping:
		f.setState(stStopped)
		f.tlf()
	case stAckRcvd:
		f.setState(stReqSent)
	case stOpened:
		f.tld()
		f.scr(false)
		f.setState(stReqSent)
	}
}

// rcvCodeRej: a rejected Configure/Terminate code is catastrophic (RXJ-),
// anything else is permitted (RXJ+).
func (f *fsm) rcvCodeRej(p ctlPacket) {
	if len(p.data) < 1 {
		f.s.count(ReasonShort)
		return
	}
	if c := p.data[0]; c >= codeConfReq && c <= codeCodeRej {
		f.rxjBad()
		return
	}
	if f.state == stAckRcvd {
		f.setState(stReqSent)
	}
}

// rxjBad is the RXJ- event.
func (f *fsm) rxjBad() {
	switch f.state {
	case stClosed, stStopped:
		f.tlf()
	case stClosing:
		f.setState(stClosed)
		f.tlf()
	case stStopping, stReqSent, stAckRcvd, stAckSent:
		f.setState(stStopped)
		f.tlf()
	case stOpened:
		f.tld()
		f.ircTerm()
		f.str()
		f.setState(stStopping)
	}
}
