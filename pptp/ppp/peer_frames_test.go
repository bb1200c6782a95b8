package ppp

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"io"
	"strings"
	"testing"
	"time"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fixedChallenge answers 16-octet reads with a fixed challenge and anything
// else from a seeded stream (magic numbers).
type fixedChallenge struct {
	chal []byte
	rest io.Reader
}

func (f fixedChallenge) Read(b []byte) (int, error) {
	if len(b) == 16 {
		return copy(b, f.chal), nil
	}
	return f.rest.Read(b)
}

// openLCP plays the peer's side of LCP against r.s: Ack its request, send
// peerReq (options) and expect an Ack.
func openLCP(t *testing.T, r *rawPeer, peerReq []byte) {
	t.Helper()
	r.s.Start()
	out := r.take()
	if len(out) != 1 || out[0][2] != codeConfReq {
		t.Fatalf("no Configure-Request: %x", out)
	}
	req := out[0]
	r.s.Input(append([]byte{0xFF, 0x03}, ctlFrame(ProtoLCP, codeConfAck, req[3], req[6:]...)...))
	r.s.Input(ctlFrame(ProtoLCP, codeConfReq, 0x33, peerReq...))
	out = r.take()
	if len(out) < 1 || out[0][2] != codeConfAck || !bytes.Equal(out[0][6:], peerReq) {
		t.Fatalf("peer request not acked: %x", out)
	}
	r.out = out[1:]
}

// First LCP Configure-Requests as real peers send them.
func TestRealPeerLCPRequests(t *testing.T) {
	cases := []struct {
		name  string
		role  Role
		frame string // PPP information field, LCP packet
		code  byte
		reply string // options expected in the reply (Ack: the request's)
	}{
		// pppd default (asyncmap 0, magic, pcomp, accomp); PortMaster PPP debug trace.
		{"pppd", Server, "01 03 00 14 02 06 00 00 00 00 05 06 2b 3a eb 57 07 02 08 02", codeConfAck,
			"02 06 00 00 00 00 05 06 2b 3a eb 57 07 02 08 02"},
		// pppd with "mru 1400" (the pptp-linux example options).
		{"pppd mru", Server, "01 01 00 18 01 04 05 78 02 06 00 00 00 00 05 06 6a 1f 0c 33 07 02 08 02", codeConfAck,
			"01 04 05 78 02 06 00 00 00 00 05 06 6a 1f 0c 33 07 02 08 02"},
		// Windows RAS client: MRU 1400, magic, PFC, ACFC, Callback (CBCP, op 6) => Reject the callback.
		{"windows", Server, "01 00 00 15 01 04 05 78 05 06 51 2c 7a 13 07 02 08 02 0d 03 06", codeConfRej,
			"0d 03 06"},
		// Windows with multilink: MRRU and endpoint discriminator are rejected too.
		{"windows multilink", Server, "01 01 00 1f 01 04 05 78 05 06 51 2c 7a 13 07 02 08 02 11 04 06 4e 13 09 01 de ad be ef 01 02", codeConfRej,
			"11 04 06 4e 13 09 01 de ad be ef 01 02"},
		// pptpd (pppd as server) asking the client for MS-CHAPv2.
		{"pptpd to client", Client, "01 01 00 19 02 06 00 00 00 00 03 05 c2 23 81 05 06 0b 5e 9a 4f 07 02 08 02", codeConfAck,
			"02 06 00 00 00 00 03 05 c2 23 81 05 06 0b 5e 9a 4f 07 02 08 02"},
		// A server asking for EAP: the client Naks with MS-CHAPv2.
		{"eap to client", Client, "01 01 00 10 03 04 c2 27 05 06 0b 5e 9a 4f 07 02", codeConfNak,
			"03 05 c2 23 81"},
		// Client asked to authenticate with CHAP-MD5: acceptable.
		{"chap-md5 to client", Client, "01 02 00 0f 03 05 c2 23 05 05 06 0b 5e 9a 4f", codeConfAck,
			"03 05 c2 23 05 05 06 0b 5e 9a 4f"},
		// A client must not ask the server to authenticate itself.
		{"auth to server", Server, "01 02 00 0f 03 05 c2 23 81 05 06 0b 5e 9a 4f", codeConfRej,
			"03 05 c2 23 81"},
		// Magic number 0 is invalid: Nak with a fresh one (checked by length only).
		{"magic zero", Server, "01 02 00 0a 05 06 00 00 00 00", codeConfNak, ""},
		// MRU below 128: Nak with 128.
		{"tiny mru", Server, "01 02 00 08 01 04 00 40", codeConfNak, "01 04 00 80"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clk := newClock()
			cfg := serverConfig(clk)
			if c.role == Client {
				cfg = clientConfig(clk)
			}
			r := newRawPeer(t, cfg)
			r.s.Start()
			r.take()
			pkt := unhex(t, c.frame)
			r.s.Input(append([]byte{0xFF, 0x03, 0xC0, 0x21}, pkt...))
			out := r.take()
			if len(out) != 1 {
				t.Fatalf("%d replies", len(out))
			}
			got := out[0]
			if binary.BigEndian.Uint16(got) != ProtoLCP || got[2] != c.code || got[3] != pkt[1] {
				t.Fatalf("reply % x, want code %d id %d", got, c.code, pkt[1])
			}
			if c.reply == "" {
				if c.code == codeConfNak && (len(got) != 12 || got[6] != lcpMagic || binary.BigEndian.Uint32(got[8:]) == 0) {
					t.Fatalf("magic nak % x", got)
				}
				return
			}
			if want := unhex(t, c.reply); !bytes.Equal(got[6:], want) {
				t.Fatalf("reply options % x, want % x", got[6:], want)
			}
		})
	}
}

// The server's own Configure-Request: MRU 1400, MS-CHAPv2, magic.
func TestServerLCPRequest(t *testing.T) {
	clk := newClock()
	r := newRawPeer(t, serverConfig(clk))
	r.s.Start()
	out := r.take()
	if len(out) != 1 {
		t.Fatal(len(out))
	}
	f := out[0]
	if !bytes.Equal(f[:6], []byte{0xC0, 0x21, 1, f[3], 0, 19}) ||
		!bytes.Equal(f[6:15], unhex(t, "01 04 05 78 03 05 c2 23 81")) || f[15] != lcpMagic || f[16] != 6 {
		t.Fatalf("server request % x", f)
	}
}

// RFC 2759 §9.2: a Response carrying the RFC's NT-Response for the RFC's
// challenges earns the RFC's Authenticator Response in our Success.
func TestServerMSCHAPv2RFC2759Vector(t *testing.T) {
	clk := newClock()
	cfg := serverConfig(clk)
	cfg.RequireMPPE = false
	authChal := unhex(t, "5B5D7C7D7B3F2F3E3C2C602132262628")
	cfg.Rand = fixedChallenge{authChal, newSeeded(9)}
	cfg.Lookup = func(u string) (string, bool) { return "clientPass", u == "User" }
	r := newRawPeer(t, cfg)
	openLCP(t, r, unhex(t, "05 06 2b 3a eb 57"))
	out := r.take()
	if len(out) != 1 || binary.BigEndian.Uint16(out[0]) != ProtoCHAP || out[0][2] != chapChallenge {
		t.Fatalf("no challenge: %x", out)
	}
	ch := out[0]
	if ch[6] != 16 || !bytes.Equal(ch[7:23], authChal) || string(ch[23:]) != DefaultServerName {
		t.Fatalf("challenge % x", ch)
	}
	val := unhex(t, "21402324255E262A28295F2B3A337C7E 0000000000000000 82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF 00")
	resp := append([]byte{byte(len(val))}, val...)
	resp = append(resp, "User"...)
	r.s.Input(ctlFrame(ProtoCHAP, chapResponse, ch[3], resp...))
	out = r.take()
	if len(out) < 1 || out[0][2] != chapSuccess {
		t.Fatalf("no success: %q counters %v", out, r.s.Counters())
	}
	if msg := string(out[0][6:]); !strings.HasPrefix(msg, "S=407A5589115FD0D6209F510FE9C04566932CDA56 M=") {
		t.Fatalf("success message %q", msg)
	}
	// The server goes on with CCP (MPPE-128, stateless preferred) and IPCP,
	// announcing its address.
	if len(out) != 3 || !bytes.Equal(out[1][6:], unhex(t, "12 06 01 00 00 40")) ||
		binary.BigEndian.Uint16(out[2]) != ProtoIPCP || !bytes.Equal(out[2][6:], []byte{ipcpAddr, 6, 10, 9, 0, 1}) {
		t.Fatalf("no CCP+IPCP requests after success: % x", out)
	}
	// A retransmitted Response (our Success was lost) gets the same Success again.
	r.s.Input(ctlFrame(ProtoCHAP, chapResponse, ch[3], resp...))
	if again := r.take(); len(again) != 1 || !bytes.Equal(again[0], out[0]) {
		t.Fatalf("retransmitted response: % x", again)
	}
}

// Windows' IPCP request: NBNS rejected, then address and DNS Nak'd, then Ack.
func TestRealPeerIPCPAndCCP(t *testing.T) {
	clk := newClock()
	cfg := serverConfig(clk)
	cfg.Auth = []AuthMethod{AuthNone}
	cfg.RequireMPPE = false
	r := newRawPeer(t, cfg)
	openLCP(t, r, unhex(t, "01 04 05 78 05 06 51 2c 7a 13 07 02 08 02"))
	out := r.take()
	if len(out) != 1 || binary.BigEndian.Uint16(out[0]) != ProtoIPCP {
		t.Fatalf("no IPCP request: % x", out)
	}
	win := unhex(t, "03 06 00 00 00 00 81 06 00 00 00 00 82 06 00 00 00 00 83 06 00 00 00 00 84 06 00 00 00 00")
	r.s.Input(ctlFrame(ProtoIPCP, codeConfReq, 5, win...))
	out = r.take()
	if len(out) != 1 || out[0][2] != codeConfRej || !bytes.Equal(out[0][6:], unhex(t, "82 06 00 00 00 00 84 06 00 00 00 00")) {
		t.Fatalf("IPCP reply % x", out)
	}
	win2 := unhex(t, "03 06 00 00 00 00 81 06 00 00 00 00 83 06 00 00 00 00")
	r.s.Input(ctlFrame(ProtoIPCP, codeConfReq, 6, win2...))
	out = r.take()
	if len(out) != 1 || out[0][2] != codeConfNak || !bytes.Equal(out[0][6:], unhex(t, "03 06 0a 09 00 02 81 06 0a 09 00 35 83 06 0a 09 00 36")) {
		t.Fatalf("IPCP nak % x", out)
	}
	win3 := unhex(t, "03 06 0a 09 00 02 81 06 0a 09 00 35 83 06 0a 09 00 36")
	r.s.Input(ctlFrame(ProtoIPCP, codeConfReq, 7, win3...))
	out = r.take()
	if len(out) != 1 || out[0][2] != codeConfAck {
		t.Fatalf("IPCP ack % x", out)
	}
	// Without MS-CHAPv2 there are no MPPE keys: CCP is Protocol-Rejected.
	r.s.Input(ctlFrame(ProtoCCP, codeConfReq, 1, unhex(t, "12 06 01 00 00 40")...))
	out = r.take()
	if len(out) != 1 || out[0][2] != codeProtoRej || binary.BigEndian.Uint16(out[0][6:]) != ProtoCCP {
		t.Fatalf("CCP not protocol-rejected: % x", out)
	}
}

// CCP option 18 as pppd (require-mppe-128: +H +S, 0x01000040) and a peer
// offering everything send it, against the default server policy.
func TestRealPeerCCP(t *testing.T) {
	cases := []struct {
		name, opts string
		code       byte
		reply      string
	}{
		{"pppd mppe-128 stateless", "12 06 01 00 00 40", codeConfAck, "12 06 01 00 00 40"},
		{"offers all", "12 06 01 00 00 e0", codeConfNak, "12 06 01 00 00 40"},
		{"stateful 128", "12 06 00 00 00 40", codeConfAck, "12 06 00 00 00 40"},
		{"40-bit only", "12 06 01 00 00 20", codeConfNak, "12 06 01 00 00 40"},
		{"mppc+deflate", "12 06 00 00 00 01 1a 04 78 00", codeConfRej, "1a 04 78 00"},
		{"no mppe", "", codeConfNak, "12 06 01 00 00 40"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clk, s, cl := newConfigs()
			p := newPairClk(t, clk, s, cl)
			// Bring the pair to the network phase but keep the client's CCP out.
			p.drop = func(fromServer bool, f []byte) bool { return binary.BigEndian.Uint16(f) == ProtoCCP }
			p.start()
			p.runUntil(5, func() bool { return p.srv.ipcp.f.state == stOpened })
			var got []byte
			p.drop = func(fromServer bool, f []byte) bool {
				if fromServer && binary.BigEndian.Uint16(f) == ProtoCCP && f[2] != codeConfReq {
					got = append([]byte(nil), f...)
				}
				return true
			}
			p.srv.Input(ctlFrame(ProtoCCP, codeConfReq, 0x42, unhex(t, c.opts)...))
			p.pump()
			if got == nil || got[2] != c.code || got[3] != 0x42 || !bytes.Equal(got[6:], unhex(t, c.reply)) {
				t.Fatalf("reply % x", got)
			}
		})
	}
}

// Lost authentication packets are retransmitted.
func TestAuthRetransmit(t *testing.T) {
	for _, m := range []AuthMethod{AuthMSCHAPv2, AuthPAP} {
		t.Run(m.String(), func(t *testing.T) {
			clk, s, c := newConfigs()
			s.Auth = []AuthMethod{m}
			s.RequireMPPE = m == AuthMSCHAPv2
			c.RequireMPPE = false
			p := newPairClk(t, clk, s, c)
			dropped := 0
			p.drop = func(fromServer bool, f []byte) bool {
				pr := binary.BigEndian.Uint16(f)
				if (pr == ProtoCHAP || pr == ProtoPAP) && dropped < 2 && (f[2] == 1) {
					dropped++
					return true
				}
				return false
			}
			p.start()
			if !p.runUntil(30, p.bothUp) || dropped != 2 {
				t.Fatalf("up=%v dropped=%d", p.bothUp(), dropped)
			}
		})
	}
	// Nobody authenticates: the server gives up.
	clk := newClock()
	cfg := serverConfig(clk)
	cfg.Auth = []AuthMethod{AuthPAP}
	r := newRawPeer(t, cfg)
	openLCP(t, r, nil)
	for i := 0; i < 100 && !isClosed(r.s.Done()); i++ {
		r.s.Tick(clk.Advance(time.Second))
		r.take()
	}
	if !isClosed(r.s.Done()) || r.s.Counters()["auth_timeout"] != 1 {
		t.Fatalf("no auth timeout: %v", r.s.Counters())
	}
}
