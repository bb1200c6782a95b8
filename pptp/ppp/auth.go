package ppp

import (
	"bytes"
	"crypto/subtle"
	"encoding/hex"
	"strings"
	"time"

	"pptpgw/pptp/mschap"
)

// PAP codes (RFC 1334 §2.2) and CHAP codes (RFC 1994 §4, RFC 2759 §3-6).
const (
	papReq        = 1
	papAck        = 2
	papNak        = 3
	chapChallenge = 1
	chapResponse  = 2
	chapSuccess   = 3
	chapFailure   = 4
)

// authState runs the authentication phase (RFC 1661 §3.5) for either role.
type authState struct {
	s      *Session
	method AuthMethod // negotiated; AuthNone = no authentication phase
	done   bool       // succeeded
	failed bool

	id       byte
	tries    int
	deadline time.Time
	// Challenge we sent (server) or received (client).
	challenge    [16]byte
	challengeLen int
	// Result / client state.
	user       string
	password   string
	peerChal   [16]byte
	ntResponse [24]byte
	success    []byte // server: the Success packet info we sent, resent on a retransmitted Response
}

func (a *authState) reset(m AuthMethod) {
	s := a.s
	*a = authState{s: s, method: m}
}

// start begins the phase after LCP is up.
func (a *authState) start() {
	s := a.s
	a.tries = s.cfg.MaxConfigure
	if s.cfg.Role == Server {
		switch a.method {
		case AuthCHAPMD5, AuthMSCHAPv2:
			a.sendChallenge()
		case AuthPAP:
			// The peer speaks first; give it the whole retry budget.
			a.deadline = s.now().Add(time.Duration(s.cfg.MaxConfigure) * s.cfg.RestartTimer)
		}
		return
	}
	switch a.method {
	case AuthPAP:
		a.sendPAPRequest()
	case AuthCHAPMD5, AuthMSCHAPv2:
		a.deadline = s.now().Add(time.Duration(s.cfg.MaxConfigure) * s.cfg.RestartTimer)
	}
}

func (a *authState) stop() { a.deadline = time.Time{} }

func (a *authState) tick(now time.Time) {
	if a.deadline.IsZero() || now.Before(a.deadline) || a.done || a.failed {
		return
	}
	a.deadline = time.Time{}
	if a.tries > 0 {
		switch {
		case a.s.cfg.Role == Server && (a.method == AuthCHAPMD5 || a.method == AuthMSCHAPv2):
			a.resendChallenge()
			return
		case a.s.cfg.Role == Client && a.method == AuthPAP:
			a.sendPAPRequest()
			return
		}
	}
	a.failed = true
	a.s.count(ReasonAuthTimeout)
	a.s.closeLater(ReasonAuthTimeout, "authentication timed out")
}

// --- server ---

func (a *authState) sendChallenge() {
	s := a.s
	a.id++
	a.challengeLen = 16
	s.random(a.challenge[:])
	a.resendChallenge()
}

// resendChallenge (re)transmits the current Challenge (RFC 1994 §4.1):
// Value-Size(1) Value Name.
func (a *authState) resendChallenge() {
	s := a.s
	b := s.beginCtl(ProtoCHAP, chapChallenge, a.id)
	b = append(b, byte(a.challengeLen))
	b = append(b, a.challenge[:a.challengeLen]...)
	b = append(b, s.cfg.Name...)
	s.endCtl(b)
	a.tries--
	a.deadline = s.now().Add(s.cfg.RestartTimer)
}

func (a *authState) input(proto uint16, b []byte) {
	s := a.s
	p, r := parseCtl(b)
	if r != ReasonNone {
		s.count(r)
		return
	}
	want := ProtoCHAP
	if a.method == AuthPAP {
		want = ProtoPAP
	}
	if proto != want {
		s.count(ReasonWrongPhase)
		return
	}
	if a.failed {
		return
	}
	switch {
	case s.cfg.Role == Server && proto == ProtoPAP:
		a.serverPAP(p)
	case s.cfg.Role == Server:
		a.serverCHAP(p)
	case proto == ProtoPAP:
		a.clientPAP(p)
	default:
		a.clientCHAP(p)
	}
}

func (a *authState) lookup(user string) (string, bool) {
	if a.s.cfg.Lookup == nil {
		return "", false
	}
	if pw, ok := a.s.cfg.Lookup(user); ok {
		return pw, true
	}
	if u := mschap.UserNameForHash(user); u != user {
		return a.s.cfg.Lookup(u)
	}
	return "", false
}

// serverPAP: Authenticate-Request is Peer-ID-Length(1) Peer-ID
// Passwd-Length(1) Password (RFC 1334 §2.2.1).
func (a *authState) serverPAP(p ctlPacket) {
	s := a.s
	if p.code != papReq {
		s.count(ReasonUnexpected)
		return
	}
	d := p.data
	if len(d) < 1 || int(d[0])+2 > len(d) {
		s.count(ReasonBadAuthPacket)
		return
	}
	ul := int(d[0])
	pl := int(d[1+ul])
	if 2+ul+pl > len(d) {
		s.count(ReasonBadAuthPacket)
		return
	}
	user := string(d[1 : 1+ul])
	pw := d[2+ul : 2+ul+pl]
	if a.done {
		if user == a.user {
			a.papReply(papAck, p.id, "Access granted")
		}
		return
	}
	secret, ok := a.lookup(user)
	if !ok || subtle.ConstantTimeCompare([]byte(secret), pw) != 1 {
		a.papReply(papNak, p.id, "Login incorrect")
		a.fail(user)
		return
	}
	a.papReply(papAck, p.id, "Access granted")
	a.succeed(user, secret)
}

func (a *authState) papReply(code, id byte, msg string) {
	b := a.s.beginCtl(ProtoPAP, code, id)
	b = append(b, byte(len(msg)))
	b = append(b, msg...)
	a.s.endCtl(b)
}

// serverCHAP: Response is Value-Size(1) Value Name (RFC 1994 §4.1); for
// MS-CHAPv2 the Value is Peer-Challenge(16) Reserved(8) NT-Response(24)
// Flags(1) (RFC 2759 §4).
func (a *authState) serverCHAP(p ctlPacket) {
	s := a.s
	if p.code != chapResponse {
		s.count(ReasonUnexpected) // Success/Failure are ours to send; Change-Password unsupported
		return
	}
	if p.id != a.id {
		s.count(ReasonUnexpected)
		return
	}
	d := p.data
	if len(d) < 1 || int(d[0])+1 > len(d) {
		s.count(ReasonBadAuthPacket)
		return
	}
	vl := int(d[0])
	val, name := d[1:1+vl], string(d[1+vl:])
	if a.done { // retransmitted Response: our Success was lost
		if name == a.user {
			s.endCtl(append(s.beginCtl(ProtoCHAP, chapSuccess, p.id), a.success...))
		}
		return
	}
	secret, ok := a.lookup(name)
	switch a.method {
	case AuthCHAPMD5:
		if len(val) != 16 {
			s.count(ReasonBadAuthPacket)
			return
		}
		var good bool
		if ok {
			want := mschap.CHAPMD5Response(p.id, secret, a.challenge[:a.challengeLen])
			good = subtle.ConstantTimeCompare(want[:], val) == 1
		}
		if !good {
			s.endCtl(append(s.beginCtl(ProtoCHAP, chapFailure, p.id), "Access denied"...))
			a.fail(name)
			return
		}
		a.success = append(a.success[:0], "Access granted"...)
	case AuthMSCHAPv2:
		if len(val) != mschap.ResponseLen {
			s.count(ReasonBadAuthPacket)
			return
		}
		var peer [16]byte
		var nt [24]byte
		copy(peer[:], val[0:16])
		copy(nt[:], val[24:48])
		if !ok || !mschap.VerifyNTResponse(a.challenge, peer, name, secret, nt) {
			// RFC 2759 §6: E=691 R=0 C=<new challenge> V=3 M=<message>.
			var c [16]byte
			s.random(c[:])
			b := s.beginCtl(ProtoCHAP, chapFailure, p.id)
			b = append(b, "E=691 R=0 C="...)
			b = hex.AppendEncode(b, c[:])
			b = bytesUpper(b[len(b)-32:], b)
			b = append(b, " V=3 M=Authentication failure"...)
			s.endCtl(b)
			a.fail(name)
			return
		}
		a.peerChal, a.ntResponse = peer, nt
		a.success = append(a.success[:0], mschap.GenerateAuthenticatorResponse(secret, nt, peer, a.challenge, name)...)
		a.success = append(a.success, " M=Access granted"...)
	}
	s.endCtl(append(s.beginCtl(ProtoCHAP, chapSuccess, p.id), a.success...))
	a.succeed(name, secret)
}

// bytesUpper upper-cases the hex digits in tail (a suffix of b) and returns b.
func bytesUpper(tail, b []byte) []byte {
	for i, c := range tail {
		if c >= 'a' && c <= 'f' {
			tail[i] = c - 'a' + 'A'
		}
	}
	return b
}

func (a *authState) succeed(user, password string) {
	a.done, a.user, a.password = true, user, password
	a.deadline = time.Time{}
	a.s.authDone()
}

func (a *authState) fail(user string) {
	a.failed, a.user = true, user
	a.deadline = time.Time{}
	a.s.count(ReasonAuthFailed)
	a.s.totalAuthFailed(a.method)
	a.s.log.Info("ppp authentication failed", "user", user, "method", a.method.String())
	a.s.closeLater(ReasonAuthFailed, "authentication failed")
}

// --- client ---

func (a *authState) sendPAPRequest() {
	s := a.s
	a.id++
	b := s.beginCtl(ProtoPAP, papReq, a.id)
	u, pw := clip255(s.cfg.Username), clip255(s.cfg.Password)
	b = append(b, byte(len(u)))
	b = append(b, u...)
	b = append(b, byte(len(pw)))
	b = append(b, pw...)
	s.endCtl(b)
	a.tries--
	a.deadline = s.now().Add(s.cfg.RestartTimer)
}

func clip255(s string) string {
	if len(s) > 255 {
		return s[:255]
	}
	return s
}

func (a *authState) clientPAP(p ctlPacket) {
	s := a.s
	if p.id != a.id || (p.code != papAck && p.code != papNak) {
		s.count(ReasonUnexpected)
		return
	}
	if a.done {
		return
	}
	if p.code == papNak {
		a.fail(s.cfg.Username)
		return
	}
	a.succeed(s.cfg.Username, s.cfg.Password)
}

func (a *authState) clientCHAP(p ctlPacket) {
	s := a.s
	switch p.code {
	case chapChallenge:
		d := p.data
		if len(d) < 1 || int(d[0])+1 > len(d) || d[0] == 0 {
			s.count(ReasonBadAuthPacket)
			return
		}
		val := d[1 : 1+int(d[0])]
		if a.method == AuthMSCHAPv2 && len(val) != 16 {
			s.count(ReasonBadAuthPacket)
			return
		}
		if a.done {
			return // RFC 1994 rechallenge is not supported after success
		}
		a.id = p.id
		a.challengeLen = copy(a.challenge[:], val)
		if len(val) > len(a.challenge) {
			a.challengeLen = 0
		}
		b := s.beginCtl(ProtoCHAP, chapResponse, p.id)
		if a.method == AuthCHAPMD5 {
			r := mschap.CHAPMD5Response(p.id, s.cfg.Password, val)
			b = append(b, 16)
			b = append(b, r[:]...)
		} else {
			s.random(a.peerChal[:])
			a.ntResponse = mschap.GenerateNTResponse(a.challenge, a.peerChal, s.cfg.Username, s.cfg.Password)
			b = append(b, mschap.ResponseLen)
			b = append(b, a.peerChal[:]...)
			b = append(b, make([]byte, 8)...)
			b = append(b, a.ntResponse[:]...)
			b = append(b, 0) // Flags
		}
		b = append(b, s.cfg.Username...)
		s.endCtl(b)
		a.deadline = s.now().Add(time.Duration(s.cfg.MaxConfigure) * s.cfg.RestartTimer)
	case chapSuccess:
		if p.id != a.id || a.done {
			if !a.done {
				s.count(ReasonUnexpected)
			}
			return
		}
		if a.method == AuthMSCHAPv2 {
			msg := p.data
			i := bytes.Index(msg, []byte("S="))
			if i < 0 || len(msg) < i+mschap.AuthRespStrLen || a.challengeLen != 16 ||
				!mschap.CheckAuthenticatorResponse(s.cfg.Password, a.ntResponse, a.peerChal, a.challenge,
					s.cfg.Username, string(msg[i:i+mschap.AuthRespStrLen])) {
				a.failed = true
				a.deadline = time.Time{}
				s.count(ReasonBadAuthenticator)
				s.closeLater(ReasonBadAuthenticator, "server's MS-CHAPv2 authenticator response is wrong")
				return
			}
		}
		a.succeed(s.cfg.Username, s.cfg.Password)
	case chapFailure:
		if p.id != a.id {
			s.count(ReasonUnexpected)
			return
		}
		msg := string(p.data)
		if i := strings.Index(msg, "M="); i >= 0 {
			s.log.Info("ppp server refused authentication", "message", msg[i+2:])
		}
		a.fail(s.cfg.Username)
	default:
		s.count(ReasonUnexpected)
	}
}
