package ppp

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"pptpgw/internal/metrics"
	"pptpgw/pptp/mppe"
)

// Errors of the data path.
var (
	ErrNotUp  = errors.New("ppp: network layer not up")
	ErrTooBig = errors.New("ppp: packet larger than the peer's MRU")
)

type phase uint8

const (
	phaseDead phase = iota
	phaseEstablish
	phaseAuthenticate
	phaseNetwork
	phaseTerminate
)

// txState is what SendIP needs, published atomically when the network
// layer comes up; nil means down.
type txState struct {
	enc *mppe.Encrypter // nil = plain (MPPE not negotiated and not required)
	mtu int             // largest IP packet the peer's MRU takes
}

// mppeOverhead is what MPPE adds inside the peer's MRU: the MPPE header and
// the encrypted protocol field (RFC 3078 §3; pppd lowers the MTU by 4 too).
const mppeOverhead = mppe.HeaderLen + 2

// Session is one PPP link, server or client role, over any transport that
// carries whole PPP frames (GRE for PPTP, async HDLC on a pty).
//
// The way of a frame through a Session:
//  1. Input strips FF 03 and the protocol field (PFC accepted).
//  2. 0x00FD (MPPE) is decrypted under rxMu; an inner 0x0021 goes to OnIP,
//     an inner control protocol continues at 4. Stateful loss =>
//     CCP Reset-Request.
//  3. plain 0x0021 is accepted only when no MPPE is negotiated or required.
//  4. LCP, PAP/CHAP, IPCP and CCP run under mu through the RFC 1661
//     automaton (fsm.go); replies go out through send at once.
//  5. SendIP prefixes 0x0021, encrypts into 0x00FD if MPPE is on and calls
//     send under txMu, so coherency counts leave in order.
//
// Locks: mu (control) may be taken while holding rxMu; txMu may be taken
// while holding mu. send and the OnIP callback must not call back into the
// Session except SendIP from OnIP.
type Session struct {
	cfg  Config
	send func([]byte)
	log  *slog.Logger

	mu       sync.Mutex
	phase    phase
	started  bool
	finished bool
	lcp      lcp
	auth     authState
	ipcp     ipcp
	ccp      ccp
	out      []byte // control packet being built (proto + packet)
	reply    []byte // Configure-Nak/Reject options
	nakBuf   []byte
	tmp      []byte
	pending  bool
	pendingR Reason
	reason   string // why the session ends
	closing  bool

	mppePossible bool
	mppeActive   bool
	strength     mppe.Strength
	stateless    bool
	sendKey      [16]byte
	recvKey      [16]byte
	assigned     netip.Addr
	startedAt    time.Time
	upAt         time.Time
	resetAt      time.Time // last CCP Reset-Request sent
	isUp         bool
	upCh, doneCh chan struct{}

	tx        atomic.Pointer[txState]
	dec       atomic.Pointer[mppe.Decrypter]
	ipUp      atomic.Bool
	plainRxOK atomic.Bool
	onIP      atomic.Pointer[func([]byte)]
	resetSent atomic.Bool

	txMu  sync.Mutex
	enc   *mppe.Encrypter // under mu (for Reset-Request); also published in tx
	txBuf []byte
	rxMu  sync.Mutex
	rxBuf []byte

	cnt                                counters
	pktsIn, pktsOut, bytesIn, bytesOut atomic.Uint64
}

// NewSession makes a Session; nothing is sent before Start. send receives
// each outgoing PPP frame as protocol(2)+information (no FF 03, no FCS); the
// slice is only valid during the call. send may be called from the
// goroutines of Input, Tick, Close and SendIP, concurrently.
func NewSession(cfg Config, send func(frame []byte)) *Session {
	cfg.fill()
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Session{
		cfg:    cfg,
		send:   send,
		log:    cfg.Logger.With("ppp_role", cfg.Role.String()),
		out:    make([]byte, 0, 1600),
		reply:  make([]byte, 0, 256),
		nakBuf: make([]byte, 0, 256),
		tmp:    make([]byte, 0, 256),
		upCh:   make(chan struct{}),
		doneCh: make(chan struct{}),
		txBuf:  make([]byte, 0, 2048),
		rxBuf:  make([]byte, 0, 2048),
	}
	s.lcp.init(s)
	s.auth.s = s
	s.ipcp.init(s)
	s.ccp.init(s)
	return s
}

func (s *Session) now() time.Time { return s.cfg.Now() }

func (s *Session) count(r Reason) {
	if i, ok := r.index(); ok {
		s.cnt[i].Add(1)
		if s.cfg.Totals != nil {
			s.cfg.Totals.Inc(i)
		}
	}
}

func (s *Session) random(b []byte) {
	if _, err := io.ReadFull(s.cfg.Rand, b); err != nil {
		s.log.Warn("ppp random source failed", "err", err)
	}
}

func (s *Session) randMagic() uint32 {
	var b [4]byte
	s.random(b[:])
	if m := binary.BigEndian.Uint32(b[:]); m != 0 {
		return m
	}
	return 1
}

// beginCtl starts a control packet of proto in s.out; endCtl fills in the
// length and sends it.
func (s *Session) beginCtl(proto uint16, code, id byte) []byte {
	return append(s.out[:0], byte(proto>>8), byte(proto), code, id, 0, 0)
}

func (s *Session) endCtl(b []byte) {
	binary.BigEndian.PutUint16(b[frameProtoLen+2:], uint16(len(b)-frameProtoLen))
	s.send(b)
	s.out = b[:0]
}

func (s *Session) peerMRU() int {
	if s.lcp.his.mru != 0 {
		return int(s.lcp.his.mru)
	}
	return 1500
}

// truncForPeer cuts data so that a frame of used octets (protocol field
// included) plus data fits the peer's MRU.
func (s *Session) truncForPeer(data []byte, used int) []byte {
	if max := s.peerMRU() - (used - frameProtoLen); len(data) > max {
		if max < 0 {
			max = 0
		}
		return data[:max]
	}
	return data
}

// Start begins LCP negotiation: both roles send a Configure-Request at once.
func (s *Session) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.finished {
		return
	}
	s.started = true
	s.startedAt = s.now()
	s.phase = phaseEstablish
	s.lcp.f.open()
	s.lcp.f.lowerUp()
	s.runPending()
}

// Close terminates the link with LCP Terminate-Request; Done is closed when
// the peer acks or the terminate retries run out (Tick).
func (s *Session) Close(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeLocked(ReasonClosed, reason)
}

// LowerDown tells the Session its transport is gone: it ends at once,
// without a Terminate exchange.
func (s *Session) LowerDown(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reason == "" {
		s.reason = reason
	}
	s.lcp.f.lowerDown()
	s.finish()
}

func (s *Session) closeLocked(r Reason, reason string) {
	if s.finished {
		return
	}
	if s.reason == "" {
		s.reason = reason
		if r != ReasonClosed {
			s.log.Info("ppp closing session", "reason", reason, "code", r.String(), "user", s.auth.user)
		}
	}
	s.closing = true
	s.phase = phaseTerminate
	s.auth.stop()
	s.lcp.f.close()
	switch s.lcp.f.state {
	case stInitial, stClosed, stStopped:
		s.finish()
	}
}

// closeLater records a failure found while an automaton is mid-event; the
// close runs when the event is done (runPending).
func (s *Session) closeLater(r Reason, reason string) {
	if !s.pending && !s.closing {
		s.pending, s.pendingR = true, r
		if s.reason == "" {
			s.reason = reason
			s.log.Info("ppp closing session", "reason", reason, "code", r.String(), "user", s.auth.user)
		}
	}
}

func (s *Session) runPending() {
	if s.pending {
		s.pending = false
		s.closeLocked(s.pendingR, s.reason)
	}
}

func (s *Session) finish() {
	if s.finished {
		return
	}
	s.finished = true
	s.phase = phaseDead
	s.setDown()
	s.tx.Store(nil)
	s.dec.Store(nil)
	s.lcp.f.stopTimer()
	s.ipcp.f.stopTimer()
	s.ccp.f.stopTimer()
	s.auth.stop()
	if s.reason == "" {
		s.reason = "link finished"
	}
	if s.assigned.IsValid() && s.cfg.ReleaseIP != nil {
		s.cfg.ReleaseIP(s.assigned)
	}
	s.log.Debug("ppp session done", "reason", s.reason)
	close(s.doneCh)
}

// --- phase transitions, called by the automatons ---

func (s *Session) lcpUp() {
	if s.closing {
		return
	}
	s.phase = phaseAuthenticate
	m := s.lcp.want.auth // server: the method the peer Acked
	if s.cfg.Role == Client {
		m = s.lcp.his.auth
	}
	s.auth.reset(m)
	if m == AuthNone {
		if s.cfg.Role == Server && !s.cfg.allowsAuth(AuthNone) {
			s.closeLater(ReasonAuthFailed, "peer did not agree to authenticate")
			return
		}
		s.authDone()
		return
	}
	s.auth.start()
}

func (s *Session) lcpDown() {
	s.auth.stop()
	s.ipcp.f.lowerDown()
	s.ccp.f.lowerDown()
	if !s.closing {
		s.phase = phaseEstablish
	}
	s.networkChanged()
}

func (s *Session) lcpFinished() { s.finish() }

// authDone enters the network phase (RFC 1661 §3.6).
func (s *Session) authDone() {
	if s.closing || s.phase != phaseAuthenticate {
		return
	}
	s.phase = phaseNetwork
	if s.cfg.Role == Server && !s.assigned.IsValid() {
		if s.cfg.AllocIP == nil {
			s.closeLater(ReasonIPAlloc, "no address pool (AllocIP)")
			return
		}
		a, err := s.cfg.AllocIP(s.auth.user)
		if err != nil || !a.Is4() {
			s.count(ReasonIPAlloc)
			s.closeLater(ReasonIPAlloc, "address allocation failed")
			return
		}
		s.assigned = a
		s.ipcp.assigned = a
	}
	s.mppePossible = s.auth.method == AuthMSCHAPv2 && s.ccp.allowStrength != 0
	if s.mppePossible {
		s.sendKey, s.recvKey = mppe.MasterKeysFromMSCHAPv2(s.auth.password, s.auth.ntResponse, s.cfg.Role == Server)
		s.ccp.f.open()
		s.ccp.f.lowerUp()
	} else if s.cfg.RequireMPPE {
		s.closeLater(ReasonNoMPPE, "MPPE required but "+s.auth.method.String()+" yields no keys")
		return
	}
	s.ipcp.f.open()
	s.ipcp.f.lowerUp()
}

func (s *Session) mppeUp(st mppe.Strength, stateless bool) {
	s.strength, s.stateless, s.mppeActive = st, stateless, true
	s.enc = mppe.NewEncrypter(s.sendKey, st, stateless)
	s.dec.Store(mppe.NewDecrypter(s.recvKey, st, stateless))
	s.resetSent.Store(false)
	s.networkChanged()
}

func (s *Session) mppeDown() {
	s.mppeActive = false
	s.enc = nil
	s.dec.Store(nil)
	s.networkChanged()
}

func (s *Session) mppeResetReceived() {
	if s.enc == nil {
		return
	}
	s.txMu.Lock()
	s.enc.ResetReceived()
	s.txMu.Unlock()
}

// networkChanged publishes whether IP may flow: IPCP Opened, and MPPE on,
// or (not required and) CCP settled without it.
func (s *Session) networkChanged() {
	ccpSettled := true
	switch s.ccp.f.state {
	case stReqSent, stAckRcvd, stAckSent, stClosing, stStopping:
		ccpSettled = false
	}
	up := !s.closing && !s.finished && s.lcp.f.state == stOpened && s.ipcp.f.state == stOpened &&
		(s.mppeActive || (!s.cfg.RequireMPPE && ccpSettled))
	if !up {
		s.setDown()
		return
	}
	var enc *mppe.Encrypter
	if s.mppeActive {
		enc = s.enc
	}
	s.tx.Store(&txState{enc: enc, mtu: s.mtuLocked()})
	s.plainRxOK.Store(!s.mppeActive && !s.cfg.RequireMPPE)
	s.ipUp.Store(true)
	if !s.isUp {
		s.isUp = true
		s.upAt = s.now()
		s.log.Info("ppp up", "user", s.auth.user, "local", s.ipcp.localAddr(), "peer", s.peerAddr(),
			"auth", s.auth.method.String(), "mppe", s.mppeActive, "bits", s.strength.String(), "stateless", s.stateless)
		close(s.upCh)
	}
}

func (s *Session) setDown() {
	s.ipUp.Store(false)
	s.tx.Store(nil)
	s.plainRxOK.Store(false)
}

// mtuLocked is the largest IPv4 packet SendIP accepts: the peer's MRU less
// the MPPE overhead when MPPE is on or may come on.
func (s *Session) mtuLocked() int {
	if s.mppeActive || s.mppePossible || s.cfg.RequireMPPE {
		return s.peerMRU() - mppeOverhead
	}
	return s.peerMRU()
}

func (s *Session) peerAddr() netip.Addr {
	if s.cfg.Role == Server {
		return s.assigned
	}
	return s.ipcp.peerAddr
}

// protocolRejected: the peer sent LCP Protocol-Reject for proto.
func (s *Session) protocolRejected(proto uint16) {
	switch proto {
	case ProtoIPCP:
		s.closeLater(ReasonNCPFailed, "peer rejected IPCP")
	case ProtoCCP:
		s.ccp.f.rxjBad()
	}
}

func (s *Session) protoReject(proto uint16, info []byte) {
	s.count(ReasonUnknownProtocol)
	b := s.beginCtl(ProtoLCP, codeProtoRej, s.lcp.f.newID())
	b = append(b, byte(proto>>8), byte(proto))
	b = append(b, s.truncForPeer(info, len(b))...)
	s.endCtl(b)
}

// --- input ---

// Input processes one PPP frame from the peer. It never panics; bad frames
// are counted (Counters).
func (s *Session) Input(frame []byte) {
	proto, info, r := splitFrame(frame)
	if r != ReasonNone {
		s.count(r)
		return
	}
	switch proto {
	case ProtoMPPE:
		s.inputMPPE(info)
		return
	case ProtoIP:
		if !s.plainRxOK.Load() {
			if s.dec.Load() != nil || s.cfg.RequireMPPE {
				s.count(ReasonPlainWithMPPE)
			} else {
				s.count(ReasonNotUp)
			}
			return
		}
		s.deliver(info)
		return
	}
	s.mu.Lock()
	s.control(proto, info)
	s.runPending()
	s.mu.Unlock()
}

func (s *Session) deliver(pkt []byte) {
	if !s.ipUp.Load() {
		s.count(ReasonNotUp)
		return
	}
	s.pktsIn.Add(1)
	s.bytesIn.Add(uint64(len(pkt)))
	s.totalBytes(true, len(pkt))
	if f := s.onIP.Load(); f != nil {
		(*f)(pkt)
	}
}

func (s *Session) inputMPPE(info []byte) {
	dec := s.dec.Load()
	if dec == nil {
		s.count(ReasonNotUp)
		return
	}
	s.rxMu.Lock()
	out, err := dec.Decrypt(s.rxBuf[:0], info)
	if cap(out) > cap(s.rxBuf) {
		s.rxBuf = out[:0]
	}
	if err != nil {
		s.rxMu.Unlock()
		switch {
		case errors.Is(err, mppe.ErrNeedReset):
			s.requestReset()
		case errors.Is(err, mppe.ErrLate):
			s.count(ReasonMPPELate)
		default:
			s.count(ReasonDecrypt)
		}
		return
	}
	if s.resetSent.Load() {
		s.resetSent.Store(false)
	}
	proto, inner, r := splitFrame(out)
	switch {
	case r != ReasonNone:
		s.count(r)
	case proto == ProtoIP:
		s.deliver(inner)
	case proto == ProtoMPPE:
		s.count(ReasonBadProtocol)
	default: // e.g. IPCP sent after CCP came up: Linux encrypts it
		s.mu.Lock()
		s.control(proto, inner)
		s.runPending()
		s.mu.Unlock()
	}
	s.rxMu.Unlock()
}

// requestReset sends a CCP Reset-Request on stateful loss (RFC 3078 §8),
// once per loss (the next packet decrypted clears the flag) and again every
// restart interval while the loss lasts, in case the request was lost.
func (s *Session) requestReset() {
	s.mu.Lock()
	now := s.now()
	if !s.resetSent.Load() || now.Sub(s.resetAt) >= s.cfg.RestartTimer {
		s.resetSent.Store(true)
		s.resetAt = now
		s.count(ReasonMPPEReset)
		s.ccp.sendResetRequest()
	}
	s.mu.Unlock()
}

func (s *Session) control(proto uint16, info []byte) {
	if s.finished || !s.started {
		s.count(ReasonWrongPhase)
		return
	}
	if proto != ProtoLCP && s.lcp.f.state != stOpened {
		s.count(ReasonWrongPhase) // RFC 1661 §3.4: silently discarded
		return
	}
	switch proto {
	case ProtoLCP:
		if len(info) > 0 && info[0] == codeTermReq && s.reason == "" && s.lcp.f.state == stOpened {
			s.reason = "terminated by peer"
		}
		s.lcp.f.input(info)
	case ProtoPAP, ProtoCHAP:
		if s.phase < phaseAuthenticate || s.auth.method == AuthNone || s.closing {
			s.count(ReasonWrongPhase)
			return
		}
		s.auth.input(proto, info)
	case ProtoIPCP:
		if s.phase != phaseNetwork {
			s.count(ReasonWrongPhase)
			return
		}
		s.ipcp.f.input(info)
	case ProtoCCP:
		if s.phase != phaseNetwork {
			s.count(ReasonWrongPhase)
			return
		}
		if !s.mppePossible {
			s.protoReject(proto, info)
			return
		}
		s.ccp.f.input(info)
	case ProtoIP:
		s.count(ReasonUnexpected)
	default:
		s.protoReject(proto, info)
	}
}

// --- data out ---

// OnIP sets the callback for IPv4 packets from the peer. pkt is only valid
// during the call. Set it before Start.
func (s *Session) OnIP(f func(pkt []byte)) { s.onIP.Store(&f) }

// SendIP sends one IPv4 packet to the peer, MPPE-encrypted if negotiated.
// It does not keep pkt.
func (s *Session) SendIP(pkt []byte) error {
	tx := s.tx.Load()
	if tx == nil {
		return ErrNotUp
	}
	if len(pkt) > tx.mtu {
		s.count(ReasonTooBig)
		return ErrTooBig
	}
	s.txMu.Lock()
	if tx.enc == nil {
		b := append(s.txBuf[:0], byte(ProtoIP>>8), byte(ProtoIP))
		b = append(b, pkt...)
		s.send(b)
		s.txBuf = b[:0]
	} else {
		// txBuf: [00 FD][MPPE header][00 21][pkt]; the plaintext is put in
		// place and encrypted there (mppe.Encrypter's in-place form).
		const off = frameProtoLen + mppe.HeaderLen
		b := s.txBuf[:0]
		if n := off + frameProtoLen + len(pkt); cap(b) < n {
			b = make([]byte, 0, n)
		}
		b = append(b, byte(ProtoMPPE>>8), byte(ProtoMPPE), 0, 0, byte(ProtoIP>>8), byte(ProtoIP))
		b = append(b, pkt...)
		b = tx.enc.Encrypt(b[:frameProtoLen], b[off:])
		s.send(b)
		s.txBuf = b[:0]
	}
	s.txMu.Unlock()
	s.pktsOut.Add(1)
	s.bytesOut.Add(uint64(len(pkt)))
	s.totalBytes(false, len(pkt))
	return nil
}

// --- timers and status ---

// Tick runs the restart timers, the authentication retries and the echo
// keepalive; call it about once a second with the current time.
func (s *Session) Tick(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finished || !s.started {
		return
	}
	s.lcp.f.timeout(now)
	s.auth.tick(now)
	s.ipcp.f.timeout(now)
	s.ccp.f.timeout(now)
	s.lcp.tickEcho(now)
	s.runPending()
}

// Up is closed when IP can flow (IPCP Opened, and MPPE on if required).
func (s *Session) Up() <-chan struct{} { return s.upCh }

// Done is closed when the session has ended (Info().Reason says why).
func (s *Session) Done() <-chan struct{} { return s.doneCh }

// State is the session phase: Dead, Establish, Authenticate, Network,
// Running (IP flows), Terminate or Done.
func (s *Session) State() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stateLocked()
}

func (s *Session) stateLocked() string {
	switch {
	case s.finished:
		return "Done"
	case s.phase == phaseNetwork && s.ipUp.Load():
		return "Running"
	}
	return [...]string{"Dead", "Establish", "Authenticate", "Network", "Terminate"}[s.phase]
}

// Info is a snapshot of a Session.
type Info struct {
	Role         Role
	State        string
	Username     string
	Auth         AuthMethod
	LocalIP      netip.Addr // our address on the link
	PeerIP       netip.Addr // the peer's
	DNS          []netip.Addr
	MPPE         bool
	MPPEStrength mppe.Strength
	Stateless    bool
	PeerMRU      int
	PeerACCM     uint32 // async map the peer asked for (0xFFFFFFFF if none): for HDLC framing
	PeerPFC      bool   // the peer accepts compressed protocol fields
	PeerACFC     bool   // the peer accepts frames without FF 03
	MTU          int    // largest IPv4 packet SendIP takes (PeerMRU less MPPE overhead); for the TUN MTU / MSS clamp
	PktsIn       uint64
	PktsOut      uint64
	BytesIn      uint64
	BytesOut     uint64
	Started      time.Time
	UpSince      time.Time
	Reason       string // why the session ended or is ending
}

func (s *Session) Info() Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := Info{
		Role: s.cfg.Role, State: s.stateLocked(), Username: s.auth.user, Auth: s.auth.method,
		LocalIP: s.ipcp.localAddr(), PeerIP: s.peerAddr(),
		MPPE: s.mppeActive, Stateless: s.stateless, PeerMRU: s.peerMRU(), MTU: s.mtuLocked(),
		PktsIn: s.pktsIn.Load(), PktsOut: s.pktsOut.Load(), BytesIn: s.bytesIn.Load(), BytesOut: s.bytesOut.Load(),
		Started: s.startedAt, UpSince: s.upAt, Reason: s.reason,
	}
	if s.mppeActive {
		in.MPPEStrength = s.strength
	}
	in.PeerACCM = 0xFFFFFFFF
	if s.lcp.f.state == stOpened {
		if s.lcp.his.hasACCM {
			in.PeerACCM = s.lcp.his.accm
		}
		in.PeerPFC, in.PeerACFC = s.lcp.his.pfc, s.lcp.his.acfc
	}
	if s.cfg.Role == Client {
		for i, ok := range s.ipcp.askDNS {
			if ok && s.ipcp.dns[i].Is4() && !s.ipcp.dns[i].IsUnspecified() {
				in.DNS = append(in.DNS, s.ipcp.dns[i])
			}
		}
	} else {
		in.DNS = append(in.DNS, s.cfg.DNS...)
	}
	if !s.ipcp.localAddr().IsValid() || (s.cfg.Role == Client && s.ipcp.f.state != stOpened) {
		in.LocalIP = netip.Addr{}
	}
	return in
}

// Counters returns the non-zero counts of dropped frames and failures by reason.
func (s *Session) Counters() map[string]uint64 {
	m := make(map[string]uint64)
	for r := ReasonNone + 1; r < reasonCount; r++ {
		i, _ := r.index()
		if v := s.cnt[i].Load(); v != 0 {
			m[r.String()] = v
		}
	}
	return m
}

// Collect emits the session's counters, every reason, keys prefixed "ppp_"
// (metrics.Source).
func (s *Session) Collect(emit func(metrics.Sample)) { s.cnt.Collect(emit) }

// Metrics returns a snapshot of the session's counters.
func (s *Session) Metrics() metrics.Snapshot { return metrics.Collect(s) }
