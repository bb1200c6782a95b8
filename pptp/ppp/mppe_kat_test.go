package ppp

import (
	"bytes"
	"crypto/rc4"
	"testing"

	"pptpgw/pptp/mppe"
)

// The credentials of RFC 2759 §9.2 and the 128-bit keys RFC 3079 §3.5.3
// derives from them, transcribed from the RFC's text (not computed here).
// The RFC lists the server's send direction: GetAsymmetricStartKey(...,
// IsSend = TRUE, IsServer = TRUE), which is the client's receive key.
const (
	katUser          = "User"
	katPassword      = "clientPass"
	katAuthChallenge = "5B 5D 7C 7D 7B 3F 2F 3E 3C 2C 60 21 32 26 26 28"
	katPeerChallenge = "21 40 23 24 25 5E 26 2A 28 29 5F 2B 3A 33 7C 7E"
	katNTResponse    = "82 30 9E CD 8D 70 8B 5E A0 8F AA 39 81 CD 83 54 42 33 11 4A 3D 85 D6 DF"
	// RFC 3079 §3.5.3: SendStartKey128 and the first session key from it.
	katSendStartKey128   = "8B 7C DC 14 9B 99 3A 1B A1 18 CB 15 3F 56 DC CB"
	katSendSessionKey128 = "40 5C B2 24 7A 79 56 E6 E2 11 00 7A E2 7B 22 D4"
)

// TestMPPEKnownAnswerRFC3079: sessions authenticated with the RFC's
// credentials and challenges use the RFC's keys in the right direction. The
// server's first MPPE-128 packet (stateful: no key change before it) must be
// RC4 under the RFC's SendSessionKey128, and the client must decrypt a packet
// made that way. Our own PPP on both ends would not notice swapped send and
// receive keys; this test does. RC4 here is crypto/rc4, not ours.
func TestMPPEKnownAnswerRFC3079(t *testing.T) {
	clk, s, c := newConfigs()
	s.Lookup = func(u string) (string, bool) { return katPassword, u == katUser }
	s.Rand = fixedChallenge{unhex(t, katAuthChallenge), newSeeded(3)}
	c.Username, c.Password = katUser, katPassword
	c.Rand = fixedChallenge{unhex(t, katPeerChallenge), newSeeded(4)}
	s.AllowStateless, s.AllowStateful = false, true
	c.MPPEStrengths = []mppe.Strength{mppe.Bits128}
	p := upPair(t, s, c, clk)
	if in := p.srv.Info(); !in.MPPE || in.MPPEStrength != mppe.Bits128 || in.Stateless {
		t.Fatalf("session %+v: want stateful MPPE-128", in)
	}
	if !bytes.Equal(p.srv.auth.ntResponse[:], unhex(t, katNTResponse)) {
		t.Fatalf("NT-Response %X: the RFC's credentials did not reach the exchange", p.srv.auth.ntResponse)
	}
	// Control: the RFC's start key gives the RFC's session key (the first
	// packet's key), RFC 3079 §3.3 and §3.5.3.
	var start [16]byte
	copy(start[:], unhex(t, katSendStartKey128))
	if got := mppe.InitialSessionKey(start, mppe.Bits128); !bytes.Equal(got, unhex(t, katSendSessionKey128)) {
		t.Fatalf("InitialSessionKey(SendStartKey128) = %X", got)
	}
	// plain is what MPPE encrypts: the PPP protocol field of IP, then the packet.
	ip := ipPacket(120, 0x3c)
	plain := append([]byte{byte(ProtoIP >> 8), byte(ProtoIP)}, ip...)
	want := rfcEncrypt(t, plain)

	// Server -> client: the server encrypts with the RFC's server send key.
	p.mu.Lock()
	p.toCli = nil
	p.mu.Unlock()
	if err := p.srv.SendIP(ip); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	sent := p.toCli
	p.toCli = nil // the client gets the RFC's packet below, not ours
	p.mu.Unlock()
	if len(sent) != 1 {
		t.Fatalf("%d frames sent", len(sent))
	}
	f := sent[0]
	if len(f) != 4+len(plain) || f[0] != byte(ProtoMPPE>>8) || f[1] != byte(ProtoMPPE) {
		t.Fatalf("not an MPPE frame: % x", f[:min(len(f), 8)])
	}
	if hdr := uint16(f[2])<<8 | uint16(f[3]); hdr != mppe.FlagEncrypted {
		t.Fatalf("MPPE header %#04x, want %#04x (D, count 0)", hdr, mppe.FlagEncrypted)
	}
	if !bytes.Equal(f[4:], want) {
		t.Fatalf("server's first packet is not RC4 under RFC 3079's SendSessionKey128:\n got % x\nwant % x", f[4:20], want[:16])
	}

	// The client decrypts with the same key: its receive key.
	p.gotCli = nil
	frame := append([]byte{byte(ProtoMPPE >> 8), byte(ProtoMPPE), byte(mppe.FlagEncrypted >> 8), 0}, want...)
	p.cli.Input(frame)
	if len(p.gotCli) != 1 || !bytes.Equal(p.gotCli[0], ip) {
		t.Fatalf("client did not decrypt the RFC-keyed packet: got %d packets, counters %v", len(p.gotCli), p.cli.Counters())
	}
}

// rfcEncrypt is RC4 (crypto/rc4) keyed with RFC 3079's SendSessionKey128.
func rfcEncrypt(t *testing.T, plain []byte) []byte {
	rc, err := rc4.NewCipher(unhex(t, katSendSessionKey128))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, len(plain))
	rc.XORKeyStream(out, plain)
	return out
}
