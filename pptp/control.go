package pptp

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"pptpgw/pptp/gre"
	"pptpgw/pptp/wire"
)

type ctrlState uint8

const (
	ctrlIdle        ctrlState = iota // waiting for SCCRQ
	ctrlEstablished                  // SCCRP sent
	ctrlClosing                      // StopCCRQ sent or received
)

// ctrlConn is one control connection, PAC side. Lock order: Server.mu, then ctrlConn.mu.
type ctrlConn struct {
	srv    *Server
	c      net.Conn
	peer   netip.AddrPort
	peerIP netip.Addr
	wmu    sync.Mutex // serialises writes
	wbuf   []byte

	// authed: one of its calls has authenticated; from then on the connection is
	// neither evicted nor closed by the pre-authentication timeouts.
	authed atomic.Bool
	// Under Server.mu: its place in Server.preauth (zero once authenticated or
	// forgotten) and its calls that have not authenticated yet.
	preauth     preauthPos
	unauthCalls int

	mu          sync.Mutex
	state       ctrlState
	started     time.Time
	established time.Time // SCCRP sent
	lastRx      time.Time
	echoID      uint32
	echoSent    time.Time           // zero: no Echo-Request outstanding
	calls       map[uint16]*session // by our call ID
	closed      bool
}

func (cc *ctrlConn) logAttrs() []any { return []any{"peer", cc.peer.String()} }

func (cc *ctrlConn) send(m wire.Message) error {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	cc.wbuf = m.Append(cc.wbuf[:0])
	_ = cc.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := cc.c.Write(cc.wbuf)
	return err
}

func (cc *ctrlConn) run() {
	s := cc.srv
	defer func() {
		cc.closeAll("control connection closed")
		cc.close()
		s.dropConn(cc)
	}()
	buf := make([]byte, 256)
	for {
		m, err := wire.ReadMessage(cc.c, buf)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				reason := cCtrlReadError
				switch {
				case errors.Is(err, wire.ErrBadMagic), errors.Is(err, wire.ErrBadLength),
					errors.Is(err, wire.ErrUnknownType), errors.Is(err, wire.ErrNotControl):
					reason = cCtrlBadMessage
				}
				s.count(reason)
				s.limited.Warn("control connection error", append(cc.logAttrs(), "err", err)...)
			}
			return
		}
		cc.mu.Lock()
		cc.lastRx = s.cfg.Now()
		cc.echoSent = time.Time{} // any traffic proves the peer alive
		cc.mu.Unlock()
		if !cc.handle(m) {
			return
		}
	}
}

// handle processes one message; false closes the connection.
func (cc *ctrlConn) handle(m wire.Message) bool {
	s := cc.srv
	cc.mu.Lock()
	state := cc.state
	cc.mu.Unlock()
	if state == ctrlIdle && m.Type() != wire.StartCtrlConnRequest {
		s.count(cCtrlNotStarted)
		s.limited.Warn("control message before SCCRQ", append(cc.logAttrs(), "type", m.Type().String())...)
		return false
	}
	switch m := m.(type) {
	case *wire.SCCRQ:
		if state != ctrlIdle {
			s.count(cCtrlDuplicateSCCRQ)
			return true
		}
		rep := &wire.SCCRP{ProtocolVersion: wire.ProtocolVersion, Result: wire.SCCRPResultOK,
			FramingCaps: wire.FramingAsync | wire.FramingSync, BearerCaps: wire.BearerAnalog | wire.BearerDigital,
			MaxChannels: uint16(min(s.conf().MaxSessions, 65535)), FirmwareRevision: 1, Hostname: s.cfg.Hostname, Vendor: "pptpgw"}
		if m.ProtocolVersion>>8 != 1 {
			rep.Result = wire.SCCRPResultBadProtocolVer
			_ = cc.send(rep)
			s.count(cCtrlBadVersion)
			return false
		}
		// Established before the reply leaves: a peer that has the reply is never
		// taken for one that has sent nothing (first-message timeout).
		cc.mu.Lock()
		cc.state = ctrlEstablished
		cc.established = s.cfg.Now()
		cc.mu.Unlock()
		if err := cc.send(rep); err != nil {
			return false
		}
		s.log.Debug("control connection started", append(cc.logAttrs(), "host", m.Hostname, "vendor", m.Vendor)...)
	case *wire.OCRQ:
		cc.outgoingCall(m)
	case *wire.ICRP:
		// We never send ICRQ (no dial-in lines), so any ICRP is for an unknown call.
		s.count(cCtrlUnexpectedICRP)
	case *wire.ICRQ, *wire.ICCN:
		// PNS -> PAC direction only carries ICRP; an ICRQ/ICCN from the PNS is a role error.
		s.count(cCtrlWrongDirection)
	case *wire.SLI:
		// ACCMs are meaningless for our synchronous PPP over GRE; accept and count.
		s.count(cCtrlSetLinkInfo)
	case *wire.EchoRQ:
		_ = cc.send(&wire.EchoRP{ID: m.ID, Result: wire.EchoRPResultOK})
	case *wire.EchoRP:
		// handled by the lastRx/echoSent reset above
	case *wire.CCRQ:
		ss := cc.findByPeerID(m.CallID)
		if ss == nil {
			s.count(cCtrlCCRQUnknownCall)
			// Still confirm: the PNS wants the call gone.
			_ = cc.send(&wire.CDN{CallID: 0, Result: wire.CDNResultGeneralError, Error: wire.ErrorBadCallID})
			return true
		}
		ss.end("call clear request", true, wire.CDNResultRequest)
	case *wire.CDN:
		s.count(cCtrlUnexpectedCDN)
	case *wire.WEN:
		s.count(cCtrlWANErrorNotify)
	case *wire.StopCCRQ:
		cc.closeAll("stop control connection request")
		_ = cc.send(&wire.StopCCRP{Result: wire.StopCCRPResultOK})
		return false
	case *wire.StopCCRP:
		return false
	default:
		s.count(cCtrlUnexpected)
	}
	return true
}

func (cc *ctrlConn) findByPeerID(peerID uint16) *session {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for _, ss := range cc.calls {
		if ss.peerID == peerID {
			return ss
		}
	}
	return nil
}

func (cc *ctrlConn) outgoingCall(m *wire.OCRQ) {
	s := cc.srv
	reject := func(reason counter, code uint8) {
		s.count(reason)
		s.limited.Warn("outgoing call refused", append(cc.logAttrs(), "reason", reason.key(), "peer_call_id", m.CallID)...)
		_ = cc.send(&wire.OCRP{PeerCallID: m.CallID, Result: wire.OCRPResultGeneralError, Error: code})
	}
	cc.mu.Lock()
	n := len(cc.calls)
	cc.mu.Unlock()
	if n >= s.conf().MaxCallsPerConn {
		reject(cCallLimitConn, wire.ErrorNoResource)
		return
	}
	if cc.findByPeerID(m.CallID) != nil {
		reject(cCallDuplicatePeerID, wire.ErrorBadCallID)
		return
	}
	// The call counts as unauthenticated until PPP authenticates its peer
	// (Server.authenticated); it takes an address and a MaxSessions slot only then.
	if reason, ok := s.reserveUnauthCall(cc); !ok {
		reject(reason, wire.ErrorNoResource)
		return
	}
	call, err := s.mux.RegisterAuto(gre.CallConfig{Peer: cc.peerIP, PeerID: m.CallID, PeerWindow: m.RecvWindow})
	if err != nil {
		s.mu.Lock()
		s.releaseUnauthLocked(cc)
		s.mu.Unlock()
		reject(cCallIDExhausted, wire.ErrorNoResource)
		return
	}
	ss := newSession(s, cc, call, m.CallID)
	// The session owns the reservation before anything can end it: once it
	// is in cc.calls, closeAll (a timeout, shutdown) may end it at once,
	// and its end must find it in s.sessions with unauth set to give the
	// reservation back (else the source loses one unauthenticated call for
	// good).
	s.mu.Lock()
	s.sessions[ss] = struct{}{}
	ss.unauth = true
	s.mu.Unlock()
	cc.mu.Lock()
	closing := cc.state == ctrlClosing
	if !closing {
		cc.calls[call.LocalID()] = ss
	}
	cc.mu.Unlock()
	if closing { // closeAll has already run: it would never end this call
		ss.end("control connection closing", false, 0)
		return
	}
	speed := m.MaxBPS
	if speed == 0 {
		speed = 100_000_000
	}
	if err := cc.send(&wire.OCRP{CallID: call.LocalID(), PeerCallID: m.CallID, Result: wire.OCRPResultConnected,
		ConnectSpeed: speed, RecvWindow: s.mux.Config().RecvWindow, PhysChannelID: uint32(call.LocalID())}); err != nil {
		ss.end("control write failed", false, 0)
		return
	}
	s.count(cCallsStarted)
	ss.startOnFirstFrame()
}

// removeCall forgets a call (the session ended).
func (cc *ctrlConn) removeCall(ss *session) {
	cc.mu.Lock()
	delete(cc.calls, ss.call.LocalID())
	cc.mu.Unlock()
}

// closeAll ends every call of the connection without CDNs (the connection is going away).
func (cc *ctrlConn) closeAll(reason string) {
	cc.mu.Lock()
	cc.state = ctrlClosing
	list := make([]*session, 0, len(cc.calls))
	for _, ss := range cc.calls {
		list = append(list, ss)
	}
	cc.mu.Unlock()
	for _, ss := range list {
		ss.end(reason, false, 0)
	}
}

// shutdown is the server-initiated close: Stop-Control-Connection-Request, then close.
func (cc *ctrlConn) shutdown(reason uint8) {
	cc.closeAll("server shutdown")
	_ = cc.send(&wire.StopCCRQ{Reason: reason})
	cc.close()
}

// close closes the TCP connection; it reports whether this call did it.
func (cc *ctrlConn) close() bool {
	cc.mu.Lock()
	already := cc.closed
	cc.closed = true
	cc.mu.Unlock()
	if !already {
		cc.c.Close()
	}
	return !already
}

// tick enforces the pre-authentication timeouts (no SCCRQ within FirstMessageTimeout;
// until a call has authenticated: no call CallRequestTimeout after the SCCRP, or none
// authenticated CallRequestTimeout + AuthTimeout after it) and the echo keepalive
// (RFC 2637 §2.4: an Echo-Request after EchoIdle without traffic, close after
// EchoTimeout more).
func (cc *ctrlConn) tick(now time.Time) {
	s := cc.srv
	cc.mu.Lock()
	state, started, established, lastRx, echoSent, closed := cc.state, cc.started, cc.established, cc.lastRx, cc.echoSent, cc.closed
	calls := len(cc.calls)
	cc.mu.Unlock()
	if closed {
		return
	}
	preauth := state == ctrlEstablished && !cc.authed.Load()
	switch {
	case state == ctrlIdle && now.Sub(started) >= s.conf().FirstMessageTimeout:
		if !cc.close() {
			return
		}
		s.count(cTimeoutFirstMessage)
		s.limited.Warn("control connection: no SCCRQ in time", append(cc.logAttrs(), "timeout", s.conf().FirstMessageTimeout)...)
	case preauth && calls == 0 && now.Sub(established) >= s.conf().CallRequestTimeout:
		if !cc.close() {
			return
		}
		s.count(cTimeoutCallRequest)
		s.limited.Warn("control connection: no call request in time", append(cc.logAttrs(), "timeout", s.conf().CallRequestTimeout)...)
	case preauth && now.Sub(established) >= s.conf().CallRequestTimeout+s.conf().AuthTimeout:
		cc.closeAll("not authenticated in time")
		if !cc.close() {
			return
		}
		s.count(cTimeoutAuth)
		s.limited.Warn("control connection: no call authenticated in time", append(cc.logAttrs(),
			"timeout", s.conf().CallRequestTimeout+s.conf().AuthTimeout)...)
	case state != ctrlEstablished:
	case !echoSent.IsZero() && now.Sub(echoSent) >= s.conf().EchoTimeout:
		cc.closeAll("echo timeout")
		if !cc.close() {
			return
		}
		s.count(cCtrlEchoTimeout)
		s.limited.Warn("control connection: no Echo-Reply", cc.logAttrs()...)
	case echoSent.IsZero() && now.Sub(lastRx) >= s.conf().EchoIdle:
		cc.mu.Lock()
		cc.echoID++
		id := cc.echoID
		cc.echoSent = now
		cc.mu.Unlock()
		s.count(cCtrlEchoSent)
		if err := cc.send(&wire.EchoRQ{ID: id}); err != nil {
			cc.close()
		}
	}
}

func (cc *ctrlConn) String() string { return fmt.Sprintf("ctrl %s", cc.peer) }
