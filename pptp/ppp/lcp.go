package ppp

import (
	"encoding/binary"
	"time"
)

// LCP configuration options (RFC 1661 §6, RFC 1570).
const (
	lcpMRU      = 1
	lcpACCM     = 2
	lcpAuth     = 3
	lcpQuality  = 4
	lcpMagic    = 5
	lcpPFC      = 7
	lcpACFC     = 8
	chapAlgMD5  = 0x05
	chapAlgMSv2 = 0x81
	minMRU      = 128
)

// lcpOpts is one direction's negotiated LCP options.
type lcpOpts struct {
	mru       uint16 // 0 = not negotiated (1500)
	auth      AuthMethod
	magic     uint32 // 0 = no magic number
	accm      uint32
	hasACCM   bool
	pfc, acfc bool
}

type lcp struct {
	f    fsm
	s    *Session
	want lcpOpts // what we ask for
	his  lcpOpts // what we Acked of the peer's request
	// server: auth methods the peer Nak'd or rejected in this negotiation
	triedAuth [4]bool
	loopNaks  int // peer sent our magic back
	// keepalive
	echoNext    time.Time
	echoPending int
}

func (l *lcp) init(s *Session) {
	l.s = s
	l.f = fsm{s: s, proto: ProtoLCP, name: "LCP", h: l}
}

func authFor(b []byte) (AuthMethod, bool) {
	if len(b) < 2 {
		return AuthNone, false
	}
	switch binary.BigEndian.Uint16(b) {
	case ProtoPAP:
		if len(b) == 2 {
			return AuthPAP, true
		}
	case ProtoCHAP:
		if len(b) == 3 && b[2] == chapAlgMD5 {
			return AuthCHAPMD5, true
		}
		if len(b) == 3 && b[2] == chapAlgMSv2 {
			return AuthMSCHAPv2, true
		}
	}
	return AuthNone, false
}

func appendAuthOpt(b []byte, m AuthMethod) []byte {
	switch m {
	case AuthPAP:
		return appendOpt(b, lcpAuth, 0xC0, 0x23)
	case AuthCHAPMD5:
		return appendOpt(b, lcpAuth, 0xC2, 0x23, chapAlgMD5)
	case AuthMSCHAPv2:
		return appendOpt(b, lcpAuth, 0xC2, 0x23, chapAlgMSv2)
	}
	return b
}

func (l *lcp) resetCI() {
	cfg := &l.s.cfg
	l.want = lcpOpts{magic: l.s.randMagic()}
	if cfg.MRU != 1500 {
		l.want.mru = cfg.MRU
	}
	l.triedAuth = [4]bool{}
	if cfg.Role == Server {
		l.want.auth = l.nextAuth()
	}
	l.his = lcpOpts{}
	l.loopNaks = 0
}

// nextAuth: the server's first acceptable method not yet refused by the peer.
func (l *lcp) nextAuth() AuthMethod {
	for _, m := range l.s.cfg.Auth {
		if m != AuthNone && int(m) < len(l.triedAuth) && !l.triedAuth[m] {
			return m
		}
	}
	return AuthNone
}

func (l *lcp) addCI(b []byte) []byte {
	if l.want.mru != 0 {
		b = appendOpt16(b, lcpMRU, l.want.mru)
	}
	b = appendAuthOpt(b, l.want.auth)
	if l.want.magic != 0 {
		b = appendOpt32(b, lcpMagic, l.want.magic)
	}
	return b
}

// authRefused is called on the server when the peer refuses auth method m.
func (l *lcp) authRefused(m AuthMethod, suggested AuthMethod) {
	if int(m) < len(l.triedAuth) {
		l.triedAuth[m] = true
	}
	if suggested != AuthNone && l.s.cfg.allowsAuth(suggested) && !l.triedAuth[suggested] {
		l.want.auth = suggested
		return
	}
	l.want.auth = l.nextAuth()
	if l.want.auth == AuthNone && !l.s.cfg.allowsAuth(AuthNone) {
		l.s.closeLater(ReasonAuthFailed, "peer refuses every acceptable authentication protocol")
	}
}

func (l *lcp) nakCI(opts []byte, asReject bool) bool {
	if asReject {
		return l.rejCI(opts)
	}
	it := optIter{b: opts}
	for {
		typ, val, _, ok := it.next()
		if !ok {
			break
		}
		switch typ {
		case lcpMRU:
			if len(val) == 2 && l.want.mru != 0 {
				if v := binary.BigEndian.Uint16(val); v >= minMRU && v <= 1500 {
					l.want.mru = v
				} else {
					l.want.mru = 0
				}
			}
		case lcpAuth:
			if l.want.auth != AuthNone {
				sug, _ := authFor(val)
				if sug != l.want.auth {
					l.authRefused(l.want.auth, sug)
				}
			}
		case lcpMagic:
			if l.want.magic != 0 {
				l.want.magic = l.s.randMagic()
			}
		}
	}
	return !it.err
}

func (l *lcp) rejCI(opts []byte) bool {
	it := optIter{b: opts}
	for {
		typ, _, _, ok := it.next()
		if !ok {
			break
		}
		switch typ {
		case lcpMRU:
			l.want.mru = 0
		case lcpAuth:
			if l.want.auth != AuthNone {
				for m := range l.triedAuth {
					l.triedAuth[m] = true
				}
				l.want.auth = AuthNone
				if !l.s.cfg.allowsAuth(AuthNone) {
					l.s.closeLater(ReasonAuthFailed, "peer refuses to authenticate")
				}
			}
		case lcpMagic:
			l.want.magic = 0
		}
	}
	return !it.err
}

// reqCI judges the peer's Configure-Request (RFC 1661 §5.1-5.4): Reject
// beats Nak beats Ack.
func (l *lcp) reqCI(opts, reply []byte, rejectOnly bool) (byte, []byte) {
	var his lcpOpts
	var rej, nak []byte
	rej = reply
	nak = l.s.nakBuf[:0]
	it := optIter{b: opts}
	for {
		typ, val, whole, ok := it.next()
		if !ok {
			break
		}
		switch typ {
		case lcpMRU:
			if len(val) != 2 {
				rej = append(rej, whole...)
				continue
			}
			v := binary.BigEndian.Uint16(val)
			if v < minMRU {
				if rejectOnly {
					rej = append(rej, whole...)
				} else {
					nak = appendOpt16(nak, lcpMRU, minMRU)
				}
				continue
			}
			his.mru = v
		case lcpACCM:
			if len(val) != 4 {
				rej = append(rej, whole...)
				continue
			}
			his.accm, his.hasACCM = binary.BigEndian.Uint32(val), true
		case lcpAuth:
			m, known := authFor(val)
			if l.s.cfg.Role == Server || len(val) < 2 {
				rej = append(rej, whole...) // we never authenticate ourselves to a client
				continue
			}
			if known && l.s.cfg.allowsAuth(m) {
				his.auth = m
				continue
			}
			if rejectOnly {
				rej = append(rej, whole...)
				continue
			}
			// Nak with the method we would rather use.
			var pref AuthMethod
			for _, a := range l.s.cfg.Auth {
				if a != AuthNone {
					pref = a
					break
				}
			}
			if pref == AuthNone {
				rej = append(rej, whole...)
				continue
			}
			nak = appendAuthOpt(nak, pref)
		case lcpMagic:
			if len(val) != 4 {
				rej = append(rej, whole...)
				continue
			}
			v := binary.BigEndian.Uint32(val)
			if v == 0 || (l.want.magic != 0 && v == l.want.magic) {
				if v != 0 {
					l.loopNaks++
					l.s.count(ReasonLoopback)
					if l.loopNaks > l.s.cfg.MaxFailure {
						l.s.closeLater(ReasonLoopback, "loopback detected (magic number)")
					}
				}
				nak = appendOpt32(nak, lcpMagic, l.s.randMagic())
				continue
			}
			his.magic = v
		case lcpPFC:
			if len(val) != 0 {
				rej = append(rej, whole...)
				continue
			}
			his.pfc = true
		case lcpACFC:
			if len(val) != 0 {
				rej = append(rej, whole...)
				continue
			}
			his.acfc = true
		default: // Quality-Protocol, Callback, multilink, ...: not supported
			rej = append(rej, whole...)
		}
	}
	l.s.nakBuf = nak[:0]
	if len(rej) > 0 {
		return codeConfRej, rej
	}
	if len(nak) > 0 {
		return codeConfNak, append(rej, nak...)
	}
	l.his = his
	return codeConfAck, rej
}

func (l *lcp) up() {
	l.echoPending = 0
	if l.s.cfg.EchoInterval > 0 {
		l.echoNext = l.s.now().Add(l.s.cfg.EchoInterval)
	}
	l.s.lcpUp()
}

func (l *lcp) down() {
	l.echoNext = time.Time{}
	l.s.lcpDown()
}

func (l *lcp) finished() { l.s.lcpFinished() }

func (l *lcp) extCode(code, id byte, data []byte) bool {
	switch code {
	case codeProtoRej:
		if l.f.state != stOpened {
			return true
		}
		if len(data) < 2 {
			l.s.count(ReasonShort)
			return true
		}
		l.s.protocolRejected(binary.BigEndian.Uint16(data))
	case codeEchoReq:
		if l.f.state != stOpened {
			return true
		}
		if len(data) < 4 {
			l.s.count(ReasonShort)
			return true
		}
		if m := binary.BigEndian.Uint32(data); m != 0 && m == l.want.magic {
			l.s.count(ReasonLoopback)
			return true
		}
		b := l.s.beginCtl(ProtoLCP, codeEchoRep, id)
		b = binary.BigEndian.AppendUint32(b, l.want.magic)
		b = append(b, l.s.truncForPeer(data[4:], len(b))...)
		l.s.endCtl(b)
	case codeEchoRep:
		if len(data) < 4 {
			l.s.count(ReasonShort)
			return true
		}
		if m := binary.BigEndian.Uint32(data); m != 0 && m == l.want.magic {
			l.s.count(ReasonLoopback)
			return true
		}
		l.echoPending = 0
	case codeDiscard:
		l.s.count(ReasonDiscard)
	case codeIdentification, codeTimeRemaining:
		// RFC 1570, informational (Windows sends its version string): ignore.
	default:
		return false
	}
	return true
}

// tickEcho sends the keepalive and closes the link after EchoFailures
// unanswered Echo-Requests.
func (l *lcp) tickEcho(now time.Time) {
	if l.f.state != stOpened || l.echoNext.IsZero() || now.Before(l.echoNext) {
		return
	}
	if l.echoPending >= l.s.cfg.EchoFailures {
		l.s.count(ReasonEchoTimeout)
		l.s.closeLater(ReasonEchoTimeout, "no reply to LCP Echo-Request")
		l.echoNext = time.Time{}
		return
	}
	l.echoPending++
	b := l.s.beginCtl(ProtoLCP, codeEchoReq, l.f.newID())
	b = binary.BigEndian.AppendUint32(b, l.want.magic)
	l.s.endCtl(b)
	l.echoNext = now.Add(l.s.cfg.EchoInterval)
}
