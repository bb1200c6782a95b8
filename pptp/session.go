package pptp

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"pptpgw/internal/pkt"
	"pptpgw/pptp/gre"
	"pptpgw/pptp/ppp"
	"pptpgw/pptp/wire"
)

// hdlcAddrCtrl is the PPP address and control field (FF 03) put in front of every frame
// we send over GRE: without ACFC negotiated (we never request it) RFC 1662 wants it, and
// LCP frames must always carry it.
var hdlcAddrCtrl = []byte{0xff, 0x03}

// session glues one call: gre.Call <-> ppp.Session (Server role) <-> Net.
type session struct {
	srv     *Server
	cc      *ctrlConn
	call    *gre.Call
	ppp     *ppp.Session
	peerID  uint16
	started time.Time

	// Under Server.mu: unauth: the call counts against the limits of calls that have
	// not authenticated (Server.reserveUnauthCall) until PPP authenticates its peer;
	// authTimedOut: Tick has cleared it for not authenticating within AuthTimeout.
	unauth, authTimedOut bool

	mu      sync.Mutex
	user    string
	addr    netip.Addr // allocated address with its MaxSessions slot (both released on end)
	routed  bool
	ended   bool
	logged  atomic.Uint64 // bit c: failure counter c was logged (countOnce)
	spoofed atomic.Uint64
	endOnce sync.Once
	endCh   chan struct{}
	gate    inputGate
	txq     txQueue

	// Shaping (issue 9): ratelimit.go.
	rate sessionShaper
}

func newSession(s *Server, cc *ctrlConn, call *gre.Call, peerID uint16) *session {
	ss := &session{srv: s, cc: cc, call: call, peerID: peerID, started: s.cfg.Now(), endCh: make(chan struct{})}
	ss.txq.kick = make(chan struct{}, 1)
	cfg := ppp.Config{
		Role:           ppp.Server,
		MRU:            s.cfg.MRU,
		Auth:           s.cfg.Auth,
		RequireMPPE:    !s.cfg.AllowUnencrypted,
		MPPEStrengths:  s.cfg.MPPEStrengths,
		AllowStateless: !s.cfg.StatefulOnly,
		AllowStateful:  !s.cfg.StatelessOnly,
		LocalIP:        s.cfg.LocalIP,
		AllocIP:        ss.allocIP,
		DNS:            s.conf().DNS,
		Lookup:         ss.lookup,
		Name:           s.cfg.Hostname,
		EchoInterval:   s.conf().PPPEcho,
		Now:            s.cfg.Now,
		Logger:         s.log.With("peer", cc.peer.String(), "call_id", call.LocalID()),
		Totals:         s.pppTotals,
		ServerTotals:   &s.obsTotals,
	}
	if cfg.EchoInterval < 0 {
		cfg.EchoInterval = 0
	}
	ss.ppp = ppp.NewSession(cfg, func(frame []byte) {
		if err := call.SendPrefixed(hdlcAddrCtrl, frame); err != nil && err != gre.ErrWindowFull {
			ss.countOnce(cGRESendFailed, err)
		}
	})
	ss.ppp.OnIP(ss.onPeerIP)
	call.SetHandler(ss.gate.input)
	return ss
}

func (ss *session) lookup(user string) (string, bool) {
	ss.mu.Lock()
	ss.user = user
	ss.mu.Unlock()
	return ss.srv.lookupPassword(user)
}

// errSessionLimit refuses an address to an authenticated peer when MaxSessions
// sessions are up.
var errSessionLimit = errors.New("pptp: session limit reached")

// allocIP is ppp.Config.AllocIP, which PPP calls only once the peer has
// authenticated: the call leaves the unauthenticated limits, and gets a
// MaxSessions slot and its address only now.
func (ss *session) allocIP(user string) (netip.Addr, error) {
	s := ss.srv
	s.authenticated(ss)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.addr.IsValid() { // IPCP renegotiation: keep the address
		return ss.addr, nil
	}
	if ss.ended { // end has run: it would not give the address back
		return netip.Addr{}, errSessionLimit
	}
	if !s.takeSessionSlot() {
		s.count(cSessionLimit)
		return netip.Addr{}, errSessionLimit
	}
	a, err := s.allocIP(user)
	if err != nil {
		s.mu.Lock()
		s.authed--
		s.mu.Unlock()
		s.count(cPoolExhausted)
		return a, err
	}
	ss.addr = a
	return a, nil
}

// countOnce counts a data-path failure and logs only its first occurrence per session.
func (ss *session) countOnce(c counter, err error) {
	ss.srv.count(c)
	if ss.logged.Or(1<<c)&(1<<c) == 0 {
		ss.mu.Lock()
		user := ss.user
		ss.mu.Unlock()
		ss.srv.log.Warn("session data path failure (logged once)", "peer", ss.cc.peer.String(),
			"call_id", ss.call.LocalID(), "user", user, "reason", c.key(), "err", err)
	}
}

func (ss *session) start() {
	ss.ppp.Start()
	ss.gate.start(ss.ppp.Input)
	go ss.watch()
}

// firstFrameWait is how long a new call waits for the client's first GRE packet before
// the server starts PPP (and sends its own LCP Configure-Request) anyway.
//
// Why wait at all: a client behind a NAT with Linux's PPTP conntrack helper needs its
// GRE flow to be set up from the expectation the helper derives from our OCRP. Our OCRP
// (TCP) and our first LCP packet (raw GRE) can reach that NAT in the other order (they
// leave from different contexts and CPUs); then the LCP packet creates a plain,
// un-NATed GRE entry that our retransmissions keep alive, and the call never comes up.
// Clients send their Configure-Request as soon as they have the OCRP, so waiting for it
// costs nothing; a passive client still gets ours after firstFrameWait.
const firstFrameWait = 500 * time.Millisecond

// startOnFirstFrame starts the session when the client's first GRE frame arrives, or
// after firstFrameWait, whichever comes first; not after the session ended.
func (ss *session) startOnFirstFrame() {
	var once sync.Once
	begin := func() {
		once.Do(func() {
			ss.mu.Lock()
			ended := ss.ended
			ss.mu.Unlock()
			if !ended {
				ss.start()
			}
		})
	}
	t := time.AfterFunc(firstFrameWait, begin)
	ss.gate.onFirst(func() {
		t.Stop()
		go begin()
	})
}

// watch installs the route when PPP is up and cleans up when it is done.
func (ss *session) watch() {
	select {
	case <-ss.ppp.Up():
		if !ss.up() {
			return
		}
		go ss.drainTx()
	case <-ss.ppp.Done():
		ss.end("ppp ended", true, wire.CDNResultGeneralError)
		return
	case <-ss.endCh:
		return
	}
	select {
	case <-ss.ppp.Done():
		ss.end("ppp ended", true, wire.CDNResultRequest)
	case <-ss.endCh:
	}
}

func (ss *session) up() bool {
	s := ss.srv
	ss.mu.Lock()
	addr, ended := ss.addr, ss.ended
	ss.mu.Unlock()
	if ended {
		return false
	}
	if !addr.IsValid() {
		ss.end("ppp up without an address", true, wire.CDNResultGeneralError)
		return false
	}
	if err := s.net.AddRoute(addr, s.cfg.LocalIP); err != nil {
		ss.countOnce(cRouteAddFailed, err)
		ss.end("route setup failed", true, wire.CDNResultGeneralError)
		return false
	}
	ss.mu.Lock()
	ss.routed = true
	ss.mu.Unlock()
	info := ss.ppp.Info()
	ss.setRate(info.Username) // shaping (issue 9): before the first packet can reach it
	s.byAddr.Store(addr, ss)
	s.count(cSessionsUp)
	s.log.Info("session up", "peer", ss.cc.peer.String(), "call_id", ss.call.LocalID(), "peer_call_id", ss.peerID,
		"user", info.Username, "address", addr, "auth", info.Auth.String(), "encryption", encryptionString(info))
	return true
}

// onPeerIP is step 3 of the packet's way: client -> kernel.
func (ss *session) onPeerIP(b []byte) {
	s := ss.srv
	if !pkt.IPv4(b).IsVersion4() {
		ss.countOnce(cPeerNotIPv4, nil)
		return
	}
	if reply, ok := s.answerDHCP(b); ok {
		s.count(cDHCPInformAnswered)
		if err := ss.ppp.SendIP(reply); err != nil {
			ss.countOnce(cSendIPFailed, err)
		}
		return
	}
	ss.mu.Lock()
	addr := ss.addr
	ss.mu.Unlock()
	if netip.AddrFrom4(pkt.IPv4(b).SourceAddress()) != addr {
		ss.spoofed.Add(1)
		ss.countOnce(cPeerSpoofedSource, nil)
		return
	}
	if ss.rate.shape(fromClient, b) { // shaping (issue 9): paced by ratelimit.go
		return
	}
	ClampMSS(b, s.cfg.MSS())
	var err error
	if s.qnet != nil {
		err = s.qnet.QueuePacket(b) // the GRE mux flushes after the batch
	} else {
		err = s.net.WritePacket(b)
	}
	if err != nil {
		ss.countOnce(cNetWriteFailed, err)
	}
}

// end tears the session down once: PPP terminate, CDN (when asked), route, address,
// GRE call, bookkeeping.
func (ss *session) end(reason string, cdn bool, result uint8) {
	ss.endOnce.Do(func() {
		s := ss.srv
		ss.mu.Lock()
		ss.ended = true
		addr, routed, user := ss.addr, ss.routed, ss.user
		ss.mu.Unlock()
		close(ss.endCh)
		ss.ppp.Close(reason)
		// Give the LCP Terminate-Request a chance to leave before the call goes.
		if routed {
			s.byAddr.CompareAndDelete(addr, ss)
			if err := s.net.DelRoute(addr); err != nil {
				s.log.Warn("route delete failed", "address", addr, "err", err)
			}
		}
		if addr.IsValid() {
			s.pool.Release(addr)
		}
		pi := ss.ppp.Info()
		ss.call.Close()
		ss.cc.removeCall(ss)
		s.mu.Lock()
		delete(s.sessions, ss)
		unauth := ss.unauth
		if unauth {
			ss.unauth = false
			s.releaseUnauthLocked(ss.cc)
		}
		if addr.IsValid() {
			s.authed--
		}
		s.mu.Unlock()
		if cdn {
			_ = ss.cc.send(&wire.CDN{CallID: ss.call.LocalID(), Result: result})
		}
		s.count(cSessionsEnded)
		uptime := s.cfg.Now().Sub(ss.started).Round(time.Millisecond).String()
		if unauth {
			// A flood of calls that never authenticate must not write a line each
			// (a refused password is still logged per session by ppp).
			s.limited.Info("call ended before authentication", "peer", ss.cc.peer.String(), "call_id", ss.call.LocalID(),
				"user", user, "reason", reason, "ppp_reason", pi.Reason, "uptime", uptime)
			return
		}
		s.log.Info("session ended", "peer", ss.cc.peer.String(), "call_id", ss.call.LocalID(), "user", user,
			"address", addr, "reason", reason, "ppp_reason", pi.Reason, "bytes_in", pi.BytesIn, "bytes_out", pi.BytesOut,
			"uptime", uptime)
	})
}

func (ss *session) info(now time.Time) SessionInfo {
	st := ss.call.Stats()
	pi := ss.ppp.Info()
	ss.mu.Lock()
	addr, user := ss.addr, ss.user
	ss.mu.Unlock()
	if pi.Username != "" {
		user = pi.Username
	}
	si := SessionInfo{
		User: user, Peer: ss.cc.peer.String(), LocalCallID: ss.call.LocalID(), PeerCallID: ss.peerID,
		State: ss.ppp.State(), Auth: pi.Auth.String(), Encryption: encryptionString(pi),
		BytesIn: pi.BytesIn, BytesOut: pi.BytesOut, PacketsIn: pi.PktsIn, PacketsOut: pi.PktsOut,
		GREPacketsIn: st.RxPackets, GREPacketsOut: st.TxPackets, GREDrops: st.Drops,
		Started: ss.started, UptimeSeconds: now.Sub(ss.started).Seconds(),
	}
	if addr.IsValid() {
		si.Address = addr.String()
	}
	ss.rateInfo(&si) // shaping (issue 9)
	return si
}

func encryptionString(in ppp.Info) string {
	if !in.MPPE {
		return "none"
	}
	mode := "stateful"
	if in.Stateless {
		mode = "stateless"
	}
	return fmt.Sprintf("mppe-%d-%s", int(in.MPPEStrength), mode)
}
