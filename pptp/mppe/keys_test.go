package mppe

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	"pptpgw/pptp/mschap"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// RFC 3079 §3.5 "Sample Key Derivations" (MS-CHAP-2 credentials). The
// initial values are those of RFC 2759 §9.2: user "User", password
// "clientPass".
const (
	rfcPasswordHash     = "44 EB BA 8D 53 12 B8 D6 11 47 44 11 F5 69 89 AE"
	rfcPasswordHashHash = "41 C0 0C 58 4B D2 D9 1C 40 17 A2 A1 2F A5 9F 3F"
	rfcNTResponse       = "82 30 9E CD 8D 70 8B 5E A0 8F AA 39 81 CD 83 54 42 33 11 4A 3D 85 D6 DF"
	rfcMasterKey        = "FD EC E3 71 7A 8C 83 8C B3 88 E5 27 AE 3C DD 31"
	// §3.5.1 (40-bit)
	rfcSendStartKey40   = "8B 7C DC 14 9B 99 3A 1B"
	rfcSendSessionKey40 = "D1 26 9E C4 9F A6 2E 3E"
	// §3.5.2 (56-bit)
	rfcSendStartKey56   = "8B 7C DC 14 9B 99 3A 1B"
	rfcSendSessionKey56 = "D1 5C 00 C4 9F A6 2E 3E"
	// §3.5.3 (128-bit)
	rfcSendStartKey128   = "8B 7C DC 14 9B 99 3A 1B A1 18 CB 15 3F 56 DC CB"
	rfcSendSessionKey128 = "40 5C B2 24 7A 79 56 E6 E2 11 00 7A E2 7B 22 D4"
)

func rfcInputs(t testing.TB) (hh [16]byte, nt [24]byte) {
	copy(hh[:], unhex(t, rfcPasswordHashHash))
	copy(nt[:], unhex(t, rfcNTResponse))
	return
}

func TestMagicConstants(t *testing.T) {
	if len(magic1) != 27 || len(magic2) != 84 || len(magic3) != 84 {
		t.Fatalf("magic lengths %d %d %d, want 27 84 84", len(magic1), len(magic2), len(magic3))
	}
	for i := range shaPadLen {
		if shaPad1[i] != 0 || shaPad2[i] != 0xF2 {
			t.Fatal("SHA pads")
		}
	}
}

func TestRFC3079SampleKeys(t *testing.T) {
	hh, nt := rfcInputs(t)
	// Cross-check the inputs against mschap (RFC 2759 §9.2 has the same values).
	ph := mschap.NTPasswordHash("clientPass")
	if !bytes.Equal(ph[:], unhex(t, rfcPasswordHash)) {
		t.Fatalf("PasswordHash %X", ph)
	}
	if got := mschap.HashNTPasswordHash(ph); got != hh {
		t.Fatalf("PasswordHashHash %X", got)
	}

	mk := GetMasterKey(hh, nt)
	if !bytes.Equal(mk[:], unhex(t, rfcMasterKey)) {
		t.Fatalf("MasterKey = %X, want %s", mk, rfcMasterKey)
	}
	for _, c := range []struct {
		s              Strength
		start, session string
	}{
		{Bits40, rfcSendStartKey40, rfcSendSessionKey40},
		{Bits56, rfcSendStartKey56, rfcSendSessionKey56},
		{Bits128, rfcSendStartKey128, rfcSendSessionKey128},
	} {
		// The RFC computes the server's send key: GetAsymmetricStartKey(..., TRUE, TRUE).
		sk := GetAsymmetricStartKey(mk, c.s.KeyLen(), true, true)
		if !bytes.Equal(sk, unhex(t, c.start)) {
			t.Errorf("%v: SendStartKey = %X, want %s", c.s, sk, c.start)
		}
		var start [16]byte
		copy(start[:], sk)
		if got := InitialSessionKey(start, c.s); !bytes.Equal(got, unhex(t, c.session)) {
			t.Errorf("%v: SendSessionKey = %X, want %s", c.s, got, c.session)
		}
		// The Encrypter must start from the same session key.
		e := NewEncrypter(start, c.s, false)
		if !bytes.Equal(e.k.sess[:e.k.n], unhex(t, c.session)) {
			t.Errorf("%v: Encrypter initial key %X", c.s, e.k.sess[:e.k.n])
		}
	}
}

func TestDirections(t *testing.T) {
	_, nt := rfcInputs(t)
	cs, cr := MasterKeysFromMSCHAPv2("clientPass", nt, false)
	ss, sr := MasterKeysFromMSCHAPv2("clientPass", nt, true)
	if cs != sr || cr != ss {
		t.Fatal("client send must equal server receive and vice versa")
	}
	if cs == cr {
		t.Fatal("send and receive keys must differ")
	}
	if !bytes.Equal(ss[:], unhex(t, rfcSendStartKey128)) {
		t.Errorf("server send key %X, want the RFC 3079 SendStartKey128", ss)
	}
	// 8-octet start keys are the prefix of the 16-octet ones.
	mk := GetMasterKey(mschap.HashNTPasswordHash(mschap.NTPasswordHash("clientPass")), nt)
	if !bytes.Equal(GetAsymmetricStartKey(mk, 8, false, false), cr[:8]) {
		t.Error("8-octet client receive key is not the prefix of the 16-octet one")
	}
}

func TestGetNewKeyFromSHAMatchesInitial(t *testing.T) {
	var start [16]byte
	copy(start[:], unhex(t, rfcSendStartKey128))
	got := GetNewKeyFromSHA(start[:], start[:])
	if !bytes.Equal(got, unhex(t, rfcSendSessionKey128)) {
		t.Errorf("GetNewKeyFromSHA = %X", got)
	}
}

func TestOptions(t *testing.T) {
	o := OptS | OptL | OptH
	b := o.Append(nil)
	if !bytes.Equal(b, []byte{18, 6, 0x01, 0, 0, 0x60}) {
		t.Fatalf("Append = %X", b)
	}
	p, err := ParseOption(b)
	if err != nil || p != o {
		t.Fatalf("ParseOption = %v %v", p, err)
	}
	if !o.Stateless() || !o.Has(Bits128) || o.Has(Bits56) || !o.Has(Bits40) {
		t.Error("Has/Stateless")
	}
	if s, ok := o.Strongest([]Strength{Bits40, Bits56}); !ok || s != Bits40 {
		t.Errorf("Strongest = %v %v", s, ok)
	}
	if s, ok := o.Strongest([]Strength{Bits128, Bits40}); !ok || s != Bits128 {
		t.Errorf("Strongest = %v %v", s, ok)
	}
	if o.Final() || !Make(Bits56, true).Final() || (Make(Bits128, false) | OptC).Final() {
		t.Error("Final")
	}
	if Make(Bits56, true) != OptM|OptH {
		t.Error("Make")
	}
	if _, err := ParseOption([]byte{18, 5, 0, 0, 0, 0}); err == nil {
		t.Error("bad length accepted")
	}
	if got := (OptS | OptH).String(); got != "H|S128" {
		t.Errorf("String = %q", got)
	}
}
