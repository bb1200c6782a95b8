package mschap

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func arr16(t testing.TB, s string) (a [16]byte) {
	t.Helper()
	b := unhex(t, s)
	if len(b) != 16 {
		t.Fatalf("%q is %d octets", s, len(b))
	}
	copy(a[:], b)
	return a
}

// RFC 2759 §9.2 "Hash Example": intermediate values for user name "User"
// and password "clientPass" (transcribed from the RFC text).
const (
	rfcUser          = "User"
	rfcPassword      = "clientPass"
	rfcUserHex       = "55 73 65 72"
	rfcPasswordU16   = "63 00 6C 00 69 00 65 00 6E 00 74 00 50 00 61 00 73 00 73 00"
	rfcAuthChallenge = "5B 5D 7C 7D 7B 3F 2F 3E 3C 2C 60 21 32 26 26 28"
	rfcPeerChallenge = "21 40 23 24 25 5E 26 2A 28 29 5F 2B 3A 33 7C 7E"
	rfcChallenge     = "D0 2E 43 86 BC E9 12 26"
	rfcPasswordHash  = "44 EB BA 8D 53 12 B8 D6 11 47 44 11 F5 69 89 AE"
	rfcNTResponse    = "82 30 9E CD 8D 70 8B 5E A0 8F AA 39 81 CD 83 54 42 33 11 4A 3D 85 D6 DF"
	rfcPwHashHash    = "41 C0 0C 58 4B D2 D9 1C 40 17 A2 A1 2F A5 9F 3F"
	rfcAuthResponse  = "S=407A5589115FD0D6209F510FE9C04566932CDA56"
)

func TestRFC2759HashExample(t *testing.T) {
	auth := arr16(t, rfcAuthChallenge)
	peer := arr16(t, rfcPeerChallenge)

	if got := []byte(rfcUser); !bytes.Equal(got, unhex(t, rfcUserHex)) {
		t.Fatalf("user name octets %X", got)
	}
	if got := utf16le(rfcPassword); !bytes.Equal(got, unhex(t, rfcPasswordU16)) {
		t.Errorf("unicode password = %X", got)
	}
	if got := ChallengeHash(peer, auth, rfcUser); !bytes.Equal(got[:], unhex(t, rfcChallenge)) {
		t.Errorf("ChallengeHash = %X, want %s", got, rfcChallenge)
	}
	ph := NTPasswordHash(rfcPassword)
	if !bytes.Equal(ph[:], unhex(t, rfcPasswordHash)) {
		t.Errorf("NTPasswordHash = %X, want %s", ph, rfcPasswordHash)
	}
	nt := GenerateNTResponse(auth, peer, rfcUser, rfcPassword)
	if !bytes.Equal(nt[:], unhex(t, rfcNTResponse)) {
		t.Errorf("NT-Response = %X, want %s", nt, rfcNTResponse)
	}
	if hh := HashNTPasswordHash(ph); !bytes.Equal(hh[:], unhex(t, rfcPwHashHash)) {
		t.Errorf("PasswordHashHash = %X, want %s", hh, rfcPwHashHash)
	}
	ar := GenerateAuthenticatorResponse(rfcPassword, nt, peer, auth, rfcUser)
	if ar != rfcAuthResponse {
		t.Errorf("AuthenticatorResponse = %s, want %s", ar, rfcAuthResponse)
	}
	if !CheckAuthenticatorResponse(rfcPassword, nt, peer, auth, rfcUser, rfcAuthResponse) {
		t.Error("CheckAuthenticatorResponse rejected the RFC value")
	}
	if !CheckAuthenticatorResponse(rfcPassword, nt, peer, auth, rfcUser, "S="+strings.ToLower(rfcAuthResponse[2:])) {
		t.Error("CheckAuthenticatorResponse must accept lower-case hex")
	}
	if !VerifyNTResponse(auth, peer, rfcUser, rfcPassword, nt) {
		t.Error("VerifyNTResponse rejected the RFC NT-Response")
	}
}

func TestNegative(t *testing.T) {
	auth := arr16(t, rfcAuthChallenge)
	peer := arr16(t, rfcPeerChallenge)
	nt := GenerateNTResponse(auth, peer, rfcUser, rfcPassword)
	if VerifyNTResponse(auth, peer, rfcUser, "clientPasS", nt) {
		t.Error("wrong password accepted")
	}
	if VerifyNTResponse(auth, peer, "user", rfcPassword, nt) {
		t.Error("wrong user name accepted (the hash is case sensitive)")
	}
	bad := nt
	bad[23] ^= 1
	if VerifyNTResponse(auth, peer, rfcUser, rfcPassword, bad) {
		t.Error("corrupted NT-Response accepted")
	}
	for _, r := range []string{
		"", "S=407A5589115FD0D6209F510FE9C04566932CDA5", "S=407A5589115FD0D6209F510FE9C04566932CDA57",
		"X=407A5589115FD0D6209F510FE9C04566932CDA56", rfcAuthResponse + " ",
	} {
		if CheckAuthenticatorResponse(rfcPassword, nt, peer, auth, rfcUser, r) {
			t.Errorf("CheckAuthenticatorResponse accepted %q", r)
		}
	}
	if CheckAuthenticatorResponse("other", nt, peer, auth, rfcUser, rfcAuthResponse) {
		t.Error("authenticator response accepted for another password")
	}
}

func TestDomainPrefixIgnored(t *testing.T) {
	auth := arr16(t, rfcAuthChallenge)
	peer := arr16(t, rfcPeerChallenge)
	a := GenerateNTResponse(auth, peer, `CORP\User`, rfcPassword)
	b := GenerateNTResponse(auth, peer, rfcUser, rfcPassword)
	if a != b {
		t.Error(`"CORP\User" must hash like "User" (RFC 2759 §8.2)`)
	}
	if UserNameForHash(`a\b\c`) != "c" || UserNameForHash("plain") != "plain" {
		t.Error("UserNameForHash")
	}
}

// naiveDESKey builds the DES key bit by bit: bit i of the 56-bit input goes
// to bit 7-(i%7) of output octet i/7.
func naiveDESKey(k []byte) [8]byte {
	var out [8]byte
	for i := 0; i < 56; i++ {
		bit := (k[i/8] >> (7 - uint(i%8))) & 1
		out[i/7] |= bit << (7 - uint(i%7))
	}
	return out
}

func TestDESKeyExpansion(t *testing.T) {
	keys := [][]byte{
		{0, 0, 0, 0, 0, 0, 0},
		{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF},
		{0x44, 0xEB, 0xBA, 0x8D, 0x53, 0x12, 0xB8},
		{0x80, 0x01, 0x02, 0x04, 0x08, 0x10, 0x21},
	}
	for _, k := range keys {
		if got, want := desKey(k), naiveDESKey(k); got != want {
			t.Errorf("desKey(%X) = %X, want %X", k, got, want)
		}
	}
}

func TestUTF16Password(t *testing.T) {
	// A non-BMP rune must become a surrogate pair.
	got := utf16le("a\U0001F600")
	want := []byte{'a', 0, 0x3D, 0xD8, 0x00, 0xDE}
	if !bytes.Equal(got, want) {
		t.Errorf("utf16le = %X, want %X", got, want)
	}
}

func TestCHAPMD5Response(t *testing.T) {
	ch := make([]byte, 16)
	for i := range ch {
		ch[i] = byte(i)
	}
	// MD5(0x07 | "secret" | 00..0F), computed independently with Python hashlib.
	want := unhex(t, "821643665b430359e52ac524d29c8f95")
	got := CHAPMD5Response(7, "secret", ch)
	if !bytes.Equal(got[:], want) {
		t.Errorf("CHAPMD5Response = %X, want %X", got, want)
	}
}

func TestResponseRoundTrip(t *testing.T) {
	r := Response{PeerChallenge: arr16(t, rfcPeerChallenge)}
	copy(r.NTResponse[:], unhex(t, rfcNTResponse))
	b := r.Append(nil)
	if len(b) != ResponseLen {
		t.Fatalf("len %d", len(b))
	}
	got, err := ParseResponse(b)
	if err != nil || got != r {
		t.Fatalf("ParseResponse = %+v, %v", got, err)
	}
	if _, err := ParseResponse(b[:48]); err != ErrResponseLen {
		t.Errorf("short response: %v", err)
	}
}

func TestSuccessMessage(t *testing.T) {
	m := SuccessMessage(rfcAuthResponse, "welcome")
	ar, msg, err := ParseSuccess(m)
	if err != nil || ar != rfcAuthResponse || msg != "welcome" {
		t.Fatalf("ParseSuccess(%q) = %q %q %v", m, ar, msg, err)
	}
	if ar, _, err := ParseSuccess(rfcAuthResponse); err != nil || ar != rfcAuthResponse {
		t.Errorf("no M=: %v", err)
	}
	for _, bad := range []string{"", "S=12", "S=ZZ7A5589115FD0D6209F510FE9C04566932CDA56", rfcAuthResponse + "xM=a"} {
		if _, _, err := ParseSuccess(bad); err == nil {
			t.Errorf("ParseSuccess(%q) accepted", bad)
		}
	}
}

func TestFailureMessage(t *testing.T) {
	f := Failure{Code: ErrAuthenticationFailure, Retry: false, HasChallenge: true,
		Challenge: arr16(t, rfcAuthChallenge), Message: "Authentication failed"}
	s := f.String()
	if want := "E=691 R=0 C=5B5D7C7D7B3F2F3E3C2C602132262628 V=3 M=Authentication failed"; s != want {
		t.Fatalf("String() = %q, want %q", s, want)
	}
	g, err := ParseFailure(s)
	if err != nil {
		t.Fatal(err)
	}
	f.Version = 3
	if g != f {
		t.Errorf("round trip %+v != %+v", g, f)
	}
	for _, bad := range []string{"", "R=1", "E=x", "E=691 R=2", "E=691 C=12", "E691"} {
		if _, err := ParseFailure(bad); err == nil {
			t.Errorf("ParseFailure(%q) accepted", bad)
		}
	}
}

func FuzzParseFailure(f *testing.F) {
	f.Add("E=691 R=0 C=5B5D7C7D7B3F2F3E3C2C602132262628 V=3 M=Authentication failed")
	f.Add("E=648 R=1 V=3")
	f.Add("E=")
	f.Add("M=x")
	f.Fuzz(func(t *testing.T, s string) {
		fl, err := ParseFailure(s)
		if err != nil {
			return
		}
		// What parsed must re-parse to the same value after formatting,
		// as long as the message contains no field we normalise.
		g, err := ParseFailure(fl.String())
		if err != nil {
			t.Fatalf("re-parse of %q: %v", fl.String(), err)
		}
		if fl.Version == 0 {
			fl.Version = 3
		}
		if g != fl {
			t.Fatalf("round trip %+v != %+v", g, fl)
		}
	})
}

func FuzzParseSuccess(f *testing.F) {
	f.Add(rfcAuthResponse + " M=hello")
	f.Add(rfcAuthResponse)
	f.Add("S=")
	f.Fuzz(func(t *testing.T, s string) {
		ar, msg, err := ParseSuccess(s)
		if err != nil {
			return
		}
		if len(ar) != AuthRespStrLen {
			t.Fatalf("auth response %q", ar)
		}
		if msg != "" && SuccessMessage(ar, msg) != s {
			t.Fatalf("not a round trip: %q", s)
		}
	})
}

func FuzzParseResponse(f *testing.F) {
	f.Add(make([]byte, ResponseLen))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseResponse(b)
		if err != nil {
			return
		}
		out := r.Append(nil)
		if !bytes.Equal(out[:16], b[:16]) || !bytes.Equal(out[24:], b[24:]) {
			t.Fatal("Append does not reproduce the parsed fields")
		}
	})
}

func BenchmarkGenerateNTResponse(b *testing.B) {
	var auth, peer [16]byte
	b.ReportAllocs()
	for b.Loop() {
		GenerateNTResponse(auth, peer, rfcUser, rfcPassword)
	}
}
