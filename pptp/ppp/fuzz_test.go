package ppp

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// checkReply checks a reply to a Configure-Request carrying opts: same
// identifier, a consistent length, Ack echoes the options, Reject only
// carries options of the request, verbatim.
func checkReply(t *testing.T, proto uint16, id byte, opts []byte, frames [][]byte) {
	t.Helper()
	for _, f := range frames {
		if len(f) < 6 || int(binary.BigEndian.Uint16(f[4:]))+2 != len(f) {
			t.Fatalf("bad frame % x", f)
		}
		if binary.BigEndian.Uint16(f) != proto || f[3] != id {
			continue
		}
		switch f[2] {
		case codeConfAck:
			if !bytes.Equal(f[6:], opts) {
				t.Fatalf("Ack % x of % x", f[6:], opts)
			}
		case codeConfRej:
			it := optIter{b: f[6:]}
			for {
				_, _, whole, ok := it.next()
				if !ok {
					break
				}
				if !bytes.Contains(opts, whole) {
					t.Fatalf("rejected % x not in request % x", whole, opts)
				}
			}
		case codeConfNak:
			if !validOptions(f[6:]) {
				t.Fatalf("malformed Nak % x", f)
			}
		}
	}
}

func FuzzLCPOptions(f *testing.F) {
	f.Add(unhex(f, "02 06 00 00 00 00 05 06 2b 3a eb 57 07 02 08 02"), false)
	f.Add(unhex(f, "01 04 05 78 05 06 51 2c 7a 13 07 02 08 02 0d 03 06"), false)
	f.Add(unhex(f, "02 06 00 00 00 00 03 05 c2 23 81 05 06 0b 5e 9a 4f 07 02 08 02"), true)
	f.Add(unhex(f, "03 04 c2 27 05 06 00 00 00 00 01 04 00 10"), true)
	f.Add([]byte{1, 1}, false)
	f.Add([]byte{3, 2, 5, 3, 0}, true)
	f.Fuzz(func(t *testing.T, opts []byte, client bool) {
		clk := newClock()
		cfg := serverConfig(clk)
		if client {
			cfg = clientConfig(clk)
		}
		r := newRawPeer(t, cfg)
		r.s.Start()
		ours := r.take()[0]
		r.s.Input(ctlFrame(ProtoLCP, codeConfReq, 0x77, opts...))
		checkReply(t, ProtoLCP, 0x77, opts, r.take())
		// The same options as a Nak, then a Reject, of our request.
		r.s.Input(ctlFrame(ProtoLCP, codeConfNak, ours[3], opts...))
		for _, fr := range r.take() {
			if fr[2] == codeConfReq {
				ours = fr
			}
		}
		r.s.Input(ctlFrame(ProtoLCP, codeConfRej, ours[3], opts...))
		r.take()
		r.s.Tick(clk.Advance(5e9))
	})
}

// ipcpPeer is a server with no authentication in the network phase.
func ipcpPeer(t *testing.T, client bool) (*rawPeer, []byte) {
	clk := newClock()
	cfg := serverConfig(clk)
	cfg.Auth = []AuthMethod{AuthNone}
	cfg.RequireMPPE = false
	if client {
		cfg = clientConfig(clk)
		cfg.RequireMPPE = false
	}
	r := newRawPeer(t, cfg)
	openLCP(t, r, unhex(t, "05 06 2b 3a eb 57"))
	var req []byte
	for _, f := range r.take() {
		if binary.BigEndian.Uint16(f) == ProtoIPCP && f[2] == codeConfReq {
			req = f
		}
	}
	if req == nil {
		t.Fatal("no IPCP request")
	}
	return r, req
}

func FuzzIPCPOptions(f *testing.F) {
	f.Add(unhex(f, "03 06 00 00 00 00 81 06 00 00 00 00 82 06 00 00 00 00 83 06 00 00 00 00 84 06 00 00 00 00"), false)
	f.Add(unhex(f, "03 06 0a 09 00 02 81 06 0a 09 00 35 83 06 0a 09 00 36"), false)
	f.Add(unhex(f, "02 06 00 2d 0f 00 03 06 c0 a8 05 19"), true)
	f.Add(unhex(f, "03 06 0a 09 00 02"), true)
	f.Add([]byte{3, 5, 1, 2, 3}, false)
	f.Fuzz(func(t *testing.T, opts []byte, client bool) {
		r, ours := ipcpPeer(t, client)
		r.s.Input(ctlFrame(ProtoIPCP, codeConfReq, 0x55, opts...))
		checkReply(t, ProtoIPCP, 0x55, opts, r.take())
		r.s.Input(ctlFrame(ProtoIPCP, codeConfNak, ours[3], opts...))
		for _, fr := range r.take() {
			if binary.BigEndian.Uint16(fr) == ProtoIPCP && fr[2] == codeConfReq {
				ours = fr
			}
		}
		r.s.Input(ctlFrame(ProtoIPCP, codeConfRej, ours[3], opts...))
		r.take()
		in := r.s.Info()
		if client && in.State == "Running" && (!in.LocalIP.Is4() || in.LocalIP.IsUnspecified()) {
			t.Fatalf("client running without an address: %+v", in)
		}
	})
}

func FuzzCCPOptions(f *testing.F) {
	f.Add(unhex(f, "12 06 01 00 00 40"), byte(codeConfReq))
	f.Add(unhex(f, "12 06 01 00 00 e0"), byte(codeConfNak))
	f.Add(unhex(f, "12 06 00 00 00 01 1a 04 78 00"), byte(codeConfRej))
	f.Add([]byte{}, byte(codeResetReq))
	f.Add([]byte{18, 6, 0, 0, 0}, byte(codeConfAck))
	f.Fuzz(func(t *testing.T, opts []byte, code byte) {
		clk, s, c := newConfigs()
		p := upPair(t, s, c, clk)
		id := byte(0x66)
		if code != codeConfReq {
			id = p.srv.ccp.f.id
		}
		var out [][]byte
		p.drop = func(fromServer bool, f []byte) bool {
			if fromServer {
				out = append(out, f)
			}
			return false
		}
		p.srv.Input(ctlFrame(ProtoCCP, code, id, opts...))
		if code == codeConfReq {
			checkReply(t, ProtoCCP, id, opts, p.toCli)
		}
		p.pump()
		for range 40 {
			if p.srv.ipUp.Load() && !p.srv.mppeActive {
				t.Fatal("server passes IP without MPPE while MPPE is required")
			}
			p.tick(1e9)
		}
		if p.srv.ipUp.Load() {
			p.exchange(t, 2, 60)
		}
	})
}

// FuzzCHAP feeds MS-CHAPv2 packets to a server waiting for a Response and
// to a client waiting for a Challenge / Success.
func FuzzCHAP(f *testing.F) {
	rfcResp := unhex(f, "31 21402324255E262A28295F2B3A337C7E 0000000000000000 82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF 00 55736572")
	f.Add(byte(chapResponse), rfcResp)
	f.Add(byte(chapResponse), rfcResp[:20])
	f.Add(byte(chapChallenge), unhex(f, "10 5B5D7C7D7B3F2F3E3C2C602132262628 707074706777"))
	f.Add(byte(chapSuccess), []byte("S=407A5589115FD0D6209F510FE9C04566932CDA56 M=hi"))
	f.Add(byte(chapFailure), []byte("E=691 R=0 C=00000000000000000000000000000000 V=3 M=no"))
	f.Add(byte(7), []byte{1, 2, 3})
	f.Add(byte(papReq), []byte("\x01u\x02pw"))
	f.Add(byte(papReq), []byte{255, 1})
	authChal := unhex(f, "5B5D7C7D7B3F2F3E3C2C602132262628")
	f.Fuzz(func(t *testing.T, code byte, data []byte) {
		// Server side.
		clk := newClock()
		cfg := serverConfig(clk)
		cfg.RequireMPPE = false
		cfg.Rand = fixedChallenge{authChal, newSeeded(9)}
		cfg.Lookup = func(u string) (string, bool) { return "clientPass", u == "User" }
		r := newRawPeer(t, cfg)
		openLCP(t, r, nil)
		ch := r.take()[0]
		r.s.Input(ctlFrame(ProtoCHAP, code, ch[3], data...))
		// Reserved and Flags are not covered by the NT-Response: ignored, as pppd does.
		good := code == chapResponse && len(data) == len(rfcResp) && data[0] == 49 &&
			bytes.Equal(data[1:17], rfcResp[1:17]) && bytes.Equal(data[25:49], rfcResp[25:49]) &&
			bytes.Equal(data[50:], rfcResp[50:])
		if r.s.auth.done != good {
			t.Fatalf("server auth done=%v for % x", r.s.auth.done, data)
		}
		// Client side: a Challenge (fuzzed or fixed), then the fuzzed packet.
		ccfg := clientConfig(clk)
		ccfg.RequireMPPE = false
		cl := newRawPeer(t, ccfg)
		cl.s.Start()
		req := cl.take()[0]
		cl.s.Input(ctlFrame(ProtoLCP, codeConfAck, req[3], req[6:]...))
		cl.s.Input(ctlFrame(ProtoLCP, codeConfReq, 1, 3, 5, 0xC2, 0x23, 0x81))
		cl.s.Input(ctlFrame(ProtoCHAP, chapChallenge, 9, append([]byte{16}, authChal...)...))
		cl.s.Input(ctlFrame(ProtoCHAP, code, 9, data...))
		if cl.s.auth.done {
			t.Fatalf("client accepted a forged Success % x", data)
		}
		cl.take()
		// The same bytes as PAP, to a PAP server (and a CHAP-MD5 server).
		for _, m := range []AuthMethod{AuthPAP, AuthCHAPMD5} {
			cfg := serverConfig(clk)
			cfg.Auth, cfg.RequireMPPE = []AuthMethod{m}, false
			cfg.Lookup = func(u string) (string, bool) { return "pw", u == "u" }
			r := newRawPeer(t, cfg)
			openLCP(t, r, nil)
			id := byte(1)
			if out := r.take(); len(out) > 0 {
				id = out[0][3]
			}
			proto := ProtoPAP
			if m == AuthCHAPMD5 {
				proto = ProtoCHAP
			}
			r.s.Input(ctlFrame(proto, code, id, data...))
			if r.s.auth.done && m == AuthPAP && !(code == papReq && len(data) >= 5 && string(data[:5]) == "\x01u\x02pw") {
				t.Fatalf("PAP accepted % x", data)
			}
		}
	})
}

// FuzzSessionInput: arbitrary frames (1-octet length prefixes) into both
// ends of a running session.
func FuzzSessionInput(f *testing.F) {
	f.Add([]byte{6, 0xC0, 0x21, 9, 1, 0, 8})
	f.Add(append([]byte{10}, ctlFrame(ProtoLCP, codeTermReq, 3, 1, 2)...))
	f.Add(append([]byte{12}, ctlFrame(ProtoCCP, codeConfReq, 3, 18, 6, 0, 0, 0, 0x20)...))
	f.Add([]byte{4, 0, 0xFD, 0x90, 0x00, 3, 0, 0x21, 0x45})
	f.Add(append([]byte{14}, ctlFrame(ProtoIPCP, codeConfReq, 3, 3, 6, 10, 9, 0, 9, 0x81, 2)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		clk, s, c := newConfigs()
		s.EchoInterval = 5e9
		p := upPair(t, s, c, clk)
		for i := 0; len(data) > 0; i++ {
			n := int(data[0])
			data = data[1:]
			if n > len(data) {
				n = len(data)
			}
			if i%2 == 0 {
				p.srv.Input(data[:n])
			} else {
				p.cli.Input(data[:n])
			}
			data = data[n:]
			p.pump()
			if (p.srv.ipUp.Load() && !p.srv.mppeActive) || (p.cli.ipUp.Load() && !p.cli.mppeActive) {
				t.Fatal("IP up without MPPE while MPPE is required")
			}
		}
		for range 30 {
			p.tick(1e9)
		}
		if p.srv.ipUp.Load() && p.cli.ipUp.Load() {
			_ = p.cli.SendIP(ipPacket(60, 1))
			_ = p.srv.SendIP(ipPacket(60, 2))
			p.pump()
		}
	})
}
