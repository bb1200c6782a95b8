package ppp

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"pptpgw/internal/metrics"
	"pptpgw/pptp/mppe"
)

func TestWrongPasswordTerminates(t *testing.T) {
	for _, m := range []AuthMethod{AuthMSCHAPv2, AuthCHAPMD5, AuthPAP} {
		for _, user := range []string{testUser, "mallory"} {
			t.Run(m.String()+"/"+user, func(t *testing.T) {
				clk, s, c := newConfigs()
				s.Auth = []AuthMethod{m}
				s.RequireMPPE = m == AuthMSCHAPv2
				c.RequireMPPE = false
				c.Username, c.Password = user, "wrong"
				p := newPairClk(t, clk, s, c)
				p.start()
				if !p.runUntil(30, p.bothDone) {
					t.Fatalf("not done: srv %s cli %s", p.srv.State(), p.cli.State())
				}
				if isClosed(p.srv.Up()) || isClosed(p.cli.Up()) {
					t.Fatal("came up with a wrong password")
				}
				if got := p.srv.Counters()["auth_failed"]; got != 1 {
					t.Errorf("server auth_failed = %d (%v)", got, p.srv.Counters())
				}
				if got := p.cli.Counters()["auth_failed"]; got != 1 {
					t.Errorf("client auth_failed = %d (%v)", got, p.cli.Counters())
				}
				if r := p.srv.Info().Reason; r != "authentication failed" {
					t.Errorf("server reason %q", r)
				}
				if p.allocs != 0 || len(p.released) != 0 {
					t.Errorf("address allocated for a failed login")
				}
			})
		}
	}
}

// The MS-CHAPv2 Failure packet must carry E=691, a fresh challenge and V=3.
func TestMSCHAPv2FailureMessage(t *testing.T) {
	clk, s, c := newConfigs()
	c.Password = "wrong"
	p := newPairClk(t, clk, s, c)
	var failure []byte
	p.drop = func(fromServer bool, f []byte) bool {
		if fromServer && binary.BigEndian.Uint16(f) == ProtoCHAP && f[2] == chapFailure {
			failure = append([]byte(nil), f...)
		}
		return false
	}
	p.start()
	p.runUntil(30, p.bothDone)
	if failure == nil {
		t.Fatal("no CHAP Failure sent")
	}
	msg := string(failure[6:])
	if len(msg) < 50 || msg[:12] != "E=691 R=0 C=" || msg[44:50] != " V=3 M" {
		t.Fatalf("failure message %q", msg)
	}
}

func TestClientRejectsBadAuthenticatorResponse(t *testing.T) {
	clk, s, c := newConfigs()
	p := newPairClk(t, clk, s, c)
	p.drop = func(fromServer bool, f []byte) bool {
		if fromServer && binary.BigEndian.Uint16(f) == ProtoCHAP && f[2] == chapSuccess {
			f[10] ^= 1 // flip a bit of the S= digest
		}
		return false
	}
	p.start()
	if !p.runUntil(30, p.bothDone) {
		t.Fatal("not done")
	}
	if p.cli.Counters()["bad_authenticator_response"] != 1 || isClosed(p.cli.Up()) {
		t.Fatalf("client counters %v", p.cli.Counters())
	}
}

func TestMPPERequiredButRefused(t *testing.T) {
	t.Run("no common strength", func(t *testing.T) {
		clk, s, c := newConfigs()
		c.MPPEStrengths = []mppe.Strength{mppe.Bits40}
		c.RequireMPPE = false
		p := newPairClk(t, clk, s, c)
		p.start()
		if !p.runUntil(60, p.bothDone) {
			t.Fatalf("not done: %s %s", p.srv.State(), p.cli.State())
		}
		if isClosed(p.srv.Up()) || len(p.gotSrv) != 0 {
			t.Fatal("server came up without MPPE")
		}
		if r := p.srv.Info().Reason; r != "peer refuses MPPE" && r != "MPPE not agreed in both directions" &&
			r != "CCP failed and MPPE is required" {
			t.Errorf("reason %q, counters %v", r, p.srv.Counters())
		}
	})
	t.Run("CCP protocol-rejected", func(t *testing.T) {
		clk, s, c := newConfigs()
		p := newPairClk(t, clk, s, c)
		rejected := false
		p.drop = func(fromServer bool, f []byte) bool {
			if fromServer || binary.BigEndian.Uint16(f) != ProtoCCP {
				return false
			}
			if !rejected {
				rejected = true
				// LCP Protocol-Reject of the server's CCP, as a peer without CCP sends.
				pr := []byte{0xC0, 0x21, codeProtoRej, 77, 0, 0, 0x80, 0xFD, 1, 1, 0, 4}
				binary.BigEndian.PutUint16(pr[4:], uint16(len(pr)-2))
				p.srv.Input(pr)
			}
			return true
		}
		p.start()
		if !p.runUntil(60, func() bool { return isClosed(p.srv.Done()) }) {
			t.Fatalf("server not done: %s", p.srv.State())
		}
		if !rejected || isClosed(p.srv.Up()) {
			t.Fatal("server came up without MPPE")
		}
		if r := p.srv.Info().Reason; r != "CCP failed and MPPE is required" {
			t.Errorf("reason %q", r)
		}
	})
	t.Run("PAP yields no keys", func(t *testing.T) {
		clk, s, c := newConfigs()
		s.Auth = []AuthMethod{AuthPAP}
		p := newPairClk(t, clk, s, c)
		p.start()
		if !p.runUntil(30, p.bothDone) {
			t.Fatal("not done")
		}
		if isClosed(p.srv.Up()) || p.srv.Counters()["auth_failed"] != 0 {
			t.Fatalf("up or auth failure: %v", p.srv.Counters())
		}
		if r := p.srv.Info().Reason; r != "MPPE required but pap yields no keys" {
			t.Errorf("reason %q", r)
		}
	})
	t.Run("plain IP dropped", func(t *testing.T) {
		clk, s, c := newConfigs()
		p := upPair(t, s, c, clk)
		p.srv.Input(append([]byte{0x00, 0x21}, ipPacket(40, 1)...))
		if len(p.gotSrv) != 0 || p.srv.Counters()["plain_ip_with_mppe"] != 1 {
			t.Fatalf("plain IP accepted with MPPE on: %v", p.srv.Counters())
		}
	})
}

// The server falls back along its list when the client Naks the auth protocol.
func TestAuthNegotiation(t *testing.T) {
	clk, s, c := newConfigs()
	s.Auth = []AuthMethod{AuthMSCHAPv2, AuthCHAPMD5, AuthPAP}
	s.RequireMPPE = false
	c.Auth = []AuthMethod{AuthPAP}
	c.RequireMPPE = false
	p := upPair(t, s, c, clk)
	if a := p.srv.Info().Auth; a != AuthPAP {
		t.Fatalf("negotiated %v", a)
	}

	clk, s, c = newConfigs()
	c.Auth = []AuthMethod{AuthPAP} // server only does MS-CHAPv2
	p = newPairClk(t, clk, s, c)
	p.start()
	if !p.runUntil(60, p.bothDone) || isClosed(p.srv.Up()) {
		t.Fatal("session with no common auth method did not end")
	}
	if p.srv.Counters()["auth_failed"] != 0 && p.srv.Info().Reason == "" {
		t.Fatal("no reason")
	}
}

// rawPeer is a scripted peer: the test answers the Session's frames itself.
type rawPeer struct {
	s   *Session
	out [][]byte
}

func newRawPeer(t testing.TB, cfg Config) *rawPeer {
	r := &rawPeer{}
	if cfg.AllocIP == nil {
		cfg.AllocIP = func(string) (netip.Addr, error) { return cliIP, nil }
	}
	r.s = NewSession(cfg, func(f []byte) { r.out = append(r.out, append([]byte(nil), f...)) })
	return r
}

func (r *rawPeer) take() [][]byte { o := r.out; r.out = nil; return o }

func ctlFrame(proto uint16, code, id byte, data ...byte) []byte {
	b := []byte{byte(proto >> 8), byte(proto), code, id, 0, 0}
	b = append(b, data...)
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)-2))
	return b
}

func TestNakLoopsBounded(t *testing.T) {
	t.Run("peer Naks forever", func(t *testing.T) {
		clk := newClock()
		cfg := serverConfig(clk)
		r := newRawPeer(t, cfg)
		r.s.Start()
		mru := uint16(1000)
		for i := 0; i < 200 && !isClosed(r.s.Done()); i++ {
			for _, f := range r.take() {
				if binary.BigEndian.Uint16(f) == ProtoLCP && f[2] == codeConfReq {
					mru++
					r.s.Input(ctlFrame(ProtoLCP, codeConfNak, f[3], lcpMRU, 4, byte(mru>>8), byte(mru), lcpMagic, 6, 1, 2, 3, 4))
				}
			}
			r.s.Tick(clk.Advance(100 * time.Millisecond))
		}
		if !isClosed(r.s.Done()) {
			t.Fatalf("Nak loop not bounded: %s", r.s.State())
		}
		if r.s.Counters()["nak_loop"] != 1 {
			t.Errorf("counters %v", r.s.Counters())
		}
	})
	t.Run("peer insists on a bad option", func(t *testing.T) {
		clk := newClock()
		cfg := serverConfig(clk)
		r := newRawPeer(t, cfg)
		r.s.Start()
		var naks, rejs int
		for i := 0; i < 200 && !isClosed(r.s.Done()); i++ {
			r.s.Input(ctlFrame(ProtoLCP, codeConfReq, byte(i), lcpMagic, 6, 0, 0, 0, 0)) // magic 0 is invalid
			for _, f := range r.take() {
				if binary.BigEndian.Uint16(f) == ProtoLCP && f[2] == codeConfNak {
					naks++
				}
				if binary.BigEndian.Uint16(f) == ProtoLCP && f[2] == codeConfRej {
					rejs++
				}
			}
		}
		if !isClosed(r.s.Done()) || naks == 0 || naks > 25 {
			t.Fatalf("done=%v naks=%d rejs=%d", isClosed(r.s.Done()), naks, rejs)
		}
	})
}

// A peer that never answers: Max-Configure Configure-Requests, then the end.
func TestNoAnswerGivesUp(t *testing.T) {
	clk := newClock()
	r := newRawPeer(t, serverConfig(clk))
	r.s.Start()
	reqs := 0
	for i := 0; i < 100 && !isClosed(r.s.Done()); i++ {
		reqs += len(r.take())
		r.s.Tick(clk.Advance(time.Second))
	}
	if !isClosed(r.s.Done()) || reqs != DefaultMaxConfigure {
		t.Fatalf("done=%v after %d requests", isClosed(r.s.Done()), reqs)
	}
}

func TestProtocolAndCodeReject(t *testing.T) {
	clk, s, c := newConfigs()
	p := upPair(t, s, c, clk)
	var got [][]byte
	p.drop = func(fromServer bool, f []byte) bool {
		if fromServer {
			got = append(got, f)
		}
		return false
	}
	// IPv6CP Configure-Request: not supported => Protocol-Reject.
	p.srv.Input([]byte{0x80, 0x57, 1, 9, 0, 14, 1, 10, 1, 2, 3, 4, 5, 6, 7, 8})
	// LCP code 42 => Code-Reject.
	p.srv.Input([]byte{0xFF, 0x03, 0xC0, 0x21, 42, 7, 0, 5, 0xAA})
	p.pump()
	if len(got) != 2 {
		t.Fatalf("got %d frames", len(got))
	}
	if pr := got[0]; binary.BigEndian.Uint16(pr) != ProtoLCP || pr[2] != codeProtoRej ||
		binary.BigEndian.Uint16(pr[6:]) != 0x8057 || string(pr[8:]) != string([]byte{1, 9, 0, 14, 1, 10, 1, 2, 3, 4, 5, 6, 7, 8}) {
		t.Errorf("protocol reject % x", pr)
	}
	if cr := got[1]; binary.BigEndian.Uint16(cr) != ProtoLCP || cr[2] != codeCodeRej || string(cr[6:]) != string([]byte{42, 7, 0, 5, 0xAA}) {
		t.Errorf("code reject % x", cr)
	}
	if !p.bothUp() || p.srv.State() != "Running" {
		t.Fatal("session went down")
	}
	p.exchange(t, 3, 100)
}

func TestEchoKeepalive(t *testing.T) {
	clk, s, c := newConfigs()
	s.EchoInterval, s.EchoFailures = 10*time.Second, 3
	p := upPair(t, s, c, clk)
	for range 60 { // a healthy peer answers
		p.tick(time.Second)
	}
	if isClosed(p.srv.Done()) {
		t.Fatalf("closed with a live peer: %s", p.srv.Info().Reason)
	}
	// The client vanishes.
	p.drop = func(fromServer bool, f []byte) bool { return true }
	for i := 0; i < 120 && !isClosed(p.srv.Done()); i++ {
		p.tick(time.Second)
	}
	if !isClosed(p.srv.Done()) || p.srv.Counters()["echo_timeout"] != 1 {
		t.Fatalf("dead peer not detected: %v", p.srv.Counters())
	}
	if r := p.srv.Info().Reason; r != "no reply to LCP Echo-Request" {
		t.Errorf("reason %q", r)
	}
}

// Stateful MPPE: a lost packet => Reset-Request => flushed packet => resync.
func TestStatefulResync(t *testing.T) {
	clk, s, c := newConfigs()
	s.AllowStateless, s.AllowStateful = false, true
	p := upPair(t, s, c, clk)
	if p.srv.Info().Stateless {
		t.Fatal("stateless negotiated")
	}
	lost := 0
	p.drop = func(fromServer bool, f []byte) bool {
		if !fromServer && binary.BigEndian.Uint16(f) == ProtoMPPE && lost == 0 {
			lost++
			return true
		}
		return false
	}
	for i := range 10 {
		if err := p.cli.SendIP(ipPacket(100, byte(i))); err != nil {
			t.Fatal(err)
		}
		p.pump()
	}
	// Packet 0 lost; packet 1 triggers the Reset-Request; the client's packet 2 carries the A bit.
	if len(p.gotSrv) != 8 || string(p.gotSrv[0]) != string(ipPacket(100, 2)) {
		t.Fatalf("delivered %d packets; counters %v / %v", len(p.gotSrv), p.srv.Counters(), p.cli.Counters())
	}
	if p.srv.Counters()["mppe_reset_request_sent"] != 1 || p.cli.Counters()["mppe_reset_request_received"] != 1 {
		t.Fatalf("counters srv %v cli %v", p.srv.Counters(), p.cli.Counters())
	}
	p.drop = nil
	p.exchange(t, 300, 64)
}

// Garbage must never panic, in any phase, and is counted.
func TestGarbageFrames(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	junk := func() []byte {
		b := make([]byte, rng.IntN(64))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if len(b) >= 2 && rng.IntN(2) == 0 { // aim at real protocols
			pr := []uint16{ProtoLCP, ProtoPAP, ProtoCHAP, ProtoIPCP, ProtoCCP, ProtoMPPE, ProtoIP}[rng.IntN(7)]
			binary.BigEndian.PutUint16(b, pr)
		}
		return b
	}
	clk := newClock()
	r := newRawPeer(t, serverConfig(clk))
	for range 2000 { // before Start
		r.s.Input(junk())
	}
	r.s.Start()
	for range 2000 {
		r.s.Input(junk())
	}
	clk2, s, c := newConfigs()
	p := upPair(t, s, c, clk2)
	for range 5000 {
		p.srv.Input(junk())
		p.cli.Input(junk())
		p.pump()
	}
	if len(r.s.Counters()) == 0 || len(p.srv.Counters()) == 0 {
		t.Fatal("garbage not counted")
	}
	for _, f := range [][]byte{nil, {}, {0xFF}, {0xFF, 0x03}, {0x00}, {0xC0}, {0xC0, 0x20}} {
		p.srv.Input(f)
	}
}

func TestLowerDownAndIdentification(t *testing.T) {
	clk, s, c := newConfigs()
	p := upPair(t, s, c, clk)
	// RFC 1570 Identification, as Windows sends: ignored, not Code-Rejected.
	var replies int
	p.drop = func(fromServer bool, f []byte) bool { replies++; return false }
	p.srv.Input(ctlFrame(ProtoLCP, codeIdentification, 4, append([]byte{1, 2, 3, 4}, "MSRASV5.20"...)...))
	p.pump()
	if replies != 0 {
		t.Fatalf("%d replies to Identification", replies)
	}
	in := p.srv.Info()
	if in.PeerACCM != 0xFFFFFFFF || in.PeerPFC || in.PeerACFC {
		t.Errorf("our client asked for no ACCM/PFC/ACFC: %+v", in)
	}
	p.srv.LowerDown("control connection lost")
	if !isClosed(p.srv.Done()) || p.srv.Info().Reason != "control connection lost" || len(p.released) != 1 {
		t.Fatalf("LowerDown: done=%v reason %q released %v", isClosed(p.srv.Done()), p.srv.Info().Reason, p.released)
	}
	if err := p.srv.SendIP(ipPacket(40, 1)); err != ErrNotUp {
		t.Fatalf("SendIP after LowerDown: %v", err)
	}
	p.srv.LowerDown("again") // idempotent
	p.srv.Close("again")
	p.srv.Tick(clk.Advance(time.Hour))
}

// A pppd peer's ACCM/PFC/ACFC are reported for the HDLC framer.
func TestPeerFramingOptions(t *testing.T) {
	clk := newClock()
	r := newRawPeer(t, serverConfig(clk))
	openLCP(t, r, unhex(t, "02 06 00 0a 00 00 05 06 2b 3a eb 57 07 02 08 02"))
	in := r.s.Info()
	if in.PeerACCM != 0x000a0000 || !in.PeerPFC || !in.PeerACFC {
		t.Fatalf("%+v", in)
	}
}

// No IP before CCP is Opened when MPPE is required, even with IPCP Opened.
func TestNoIPBeforeCCP(t *testing.T) {
	clk, s, c := newConfigs()
	p := newPairClk(t, clk, s, c)
	p.drop = func(fromServer bool, f []byte) bool { return binary.BigEndian.Uint16(f) == ProtoCCP }
	p.start()
	p.runUntil(3, func() bool { return p.srv.ipcp.f.state == stOpened && p.cli.ipcp.f.state == stOpened })
	if p.srv.ipcp.f.state != stOpened {
		t.Fatalf("IPCP not opened: %s", p.srv.ipcp.f.state)
	}
	if isClosed(p.srv.Up()) || p.srv.State() != "Network" {
		t.Fatalf("up without CCP: %s", p.srv.State())
	}
	if err := p.srv.SendIP(ipPacket(60, 1)); err != ErrNotUp {
		t.Fatalf("server SendIP: %v", err)
	}
	if err := p.cli.SendIP(ipPacket(60, 1)); err != ErrNotUp {
		t.Fatalf("client SendIP: %v", err)
	}
	p.srv.Input(append([]byte{0x00, 0x21}, ipPacket(60, 2)...))
	p.srv.Input(append([]byte{0x00, 0xFD, 0x90, 0x00}, ipPacket(60, 2)...))
	if len(p.gotSrv) != 0 {
		t.Fatal("IP delivered before CCP")
	}
	// CCP never completes: the restart counter runs out and the server gives up.
	if !p.runUntil(60, func() bool { return isClosed(p.srv.Done()) }) {
		t.Fatalf("server still %s", p.srv.State())
	}
	if r := p.srv.Info().Reason; r != "CCP failed and MPPE is required" {
		t.Errorf("reason %q", r)
	}
}

// A server that never assigns an address: the client gives up instead of
// running with 0.0.0.0.
func TestClientNeedsAddress(t *testing.T) {
	clk := newClock()
	cfg := clientConfig(clk)
	cfg.RequireMPPE = false
	r := newRawPeer(t, cfg)
	r.s.Start()
	req := r.take()[0]
	r.s.Input(ctlFrame(ProtoLCP, codeConfAck, req[3], req[6:]...))
	r.s.Input(ctlFrame(ProtoLCP, codeConfReq, 1, 5, 6, 1, 2, 3, 4)) // no auth
	for i := 0; i < 100 && !isClosed(r.s.Done()); i++ {
		for _, f := range r.take() {
			if binary.BigEndian.Uint16(f) == ProtoIPCP && f[2] == codeConfReq {
				// Ack 0.0.0.0 as is, and ask to be acked ourselves.
				r.s.Input(ctlFrame(ProtoIPCP, codeConfAck, f[3], f[6:]...))
				r.s.Input(ctlFrame(ProtoIPCP, codeConfReq, byte(i), 3, 6, 10, 9, 0, 1))
			}
		}
		r.s.Tick(clk.Advance(time.Second))
	}
	if !isClosed(r.s.Done()) || isClosed(r.s.Up()) || r.s.Info().Reason != "no IP address assigned" {
		t.Fatalf("done=%v up=%v reason %q", isClosed(r.s.Done()), isClosed(r.s.Up()), r.s.Info().Reason)
	}
}

// A Configure-Ack must echo our Configure-Request exactly (RFC 1661 5.2):
// one with the right identifier but other option values is not taken.
func TestConfAckMustMatchRequest(t *testing.T) {
	clk := newClock()
	r := newRawPeer(t, clientConfig(clk))
	r.s.Start()
	req := r.take()[0]
	opts := append([]byte(nil), req[6:]...)
	if len(opts) < 3 {
		t.Fatalf("LCP Configure-Request without options: % x", req)
	}
	opts[len(opts)-1] ^= 0xff // alter the last option's last byte
	before := r.s.Counters()[ReasonUnexpected.String()]
	r.s.Input(ctlFrame(ProtoLCP, codeConfAck, req[3], opts...))
	if got := r.s.Counters()[ReasonUnexpected.String()]; got != before+1 {
		t.Fatalf("altered Ack: %s counted %d times, want %d", ReasonUnexpected, got, before+1)
	}
	r.s.Input(ctlFrame(ProtoLCP, codeConfAck, req[3], req[6:]...))
	if got := r.s.Counters()[ReasonUnexpected.String()]; got != before+1 {
		t.Fatalf("exact Ack counted as unexpected")
	}
}

// TestCountersMetrics: a session's snapshot is valid for exporters and names
// every reason; a wrong password counts auth_failed in the session and in the
// shared Totals, and Counters still lists only what occurred.
func TestCountersMetrics(t *testing.T) {
	clk, s, c := newConfigs()
	totals := NewCounters()
	s.Totals = totals
	c.Password = "wrong"
	p := newPairClk(t, clk, s, c)
	p.start()
	if !p.runUntil(30, func() bool { return isClosed(p.srv.Done()) }) {
		t.Fatal("server did not end the session")
	}
	snap := p.srv.Metrics()
	if err := snap.Validate(); err != nil {
		t.Fatal(err)
	}
	if v, ok := snap.Get("ppp_auth_failed"); !ok || v != 1 {
		t.Fatalf("ppp_auth_failed = %d, %v; want 1, true", v, ok)
	}
	if _, ok := snap.Get("ppp_" + ReasonLoopback.String()); !ok || len(snap) != int(reasonCount)-1 {
		t.Fatalf("%d samples: want every reason but none", len(snap))
	}
	tot := metrics.Collect(totals)
	if v, ok := tot.Get("ppp_auth_failed"); !ok || v != 1 {
		t.Fatalf("totals ppp_auth_failed = %d, %v; want 1, true", v, ok)
	}
	if m := p.srv.Counters(); m["auth_failed"] != 1 || len(m) != countNonZero(snap) {
		t.Fatalf("Counters %v", m)
	}
}

func countNonZero(s metrics.Snapshot) (n int) {
	for _, x := range s {
		if x.Value != 0 {
			n++
		}
	}
	return n
}
