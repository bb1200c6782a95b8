// Package mschap implements the MS-CHAPv2 computations of RFC 2759 §8
// (NT password hash, challenge hash, NT-Response, Authenticator Response)
// and the RFC 1994 CHAP-MD5 response.
//
// MD4 comes from golang.org/x/crypto/md4 and DES from crypto/des, with the
// RFC 2759 §8.6 expansion of each 7-octet key slice into an 8-octet DES key
// (parity bits are left zero: crypto/des ignores them).
//
// These primitives are only as strong as MS-CHAPv2 itself, which is weak
// (the NT-Response can be reduced to a single 2^56 DES search); they exist
// for interoperability with PPTP clients, nothing more.
//
// It owns the computations. It must not know the CHAP packet formats and
// their exchange (pptp/ppp), nor where passwords are kept (pptp/secrets).
package mschap

import (
	"crypto/des"
	"crypto/md5"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/hex"
	"strings"
	"unicode/utf16"

	"golang.org/x/crypto/md4"
)

// Sizes of the MS-CHAPv2 fields (RFC 2759 §3, §4).
const (
	ChallengeLen   = 16 // Authenticator and Peer Challenge
	NTResponseLen  = 24
	ResponseLen    = 49 // Response Value: Peer-Challenge(16) Reserved(8) NT-Response(24) Flags(1)
	AuthRespStrLen = 42 // "S=" + 40 hex digits
)

// magic constants of RFC 2759 §8.7 GenerateAuthenticatorResponse.
var (
	magic1 = []byte("Magic server to client signing constant")
	magic2 = []byte("Pad to make it do more than one iteration")
)

// utf16le encodes s as UTF-16 little endian without a terminating zero
// (RFC 2759 §8.3 and its erratum 1924).
func utf16le(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		b[2*i] = byte(c)
		b[2*i+1] = byte(c >> 8)
	}
	return b
}

// NTPasswordHash is MD4(UTF-16LE(password)) (RFC 2759 §8.3).
func NTPasswordHash(password string) [16]byte {
	h := md4.New()
	h.Write(utf16le(password))
	var out [16]byte
	h.Sum(out[:0])
	return out
}

// HashNTPasswordHash is MD4(passwordHash) (RFC 2759 §8.4).
func HashNTPasswordHash(passwordHash [16]byte) [16]byte {
	h := md4.New()
	h.Write(passwordHash[:])
	var out [16]byte
	h.Sum(out[:0])
	return out
}

// UserNameForHash returns the part of username that MS-CHAPv2 hashes:
// RFC 2759 §8.2 uses the user name "excluding any prepended domain name",
// so "DOMAIN\user" becomes "user" (as pppd does).
func UserNameForHash(username string) string {
	if i := strings.LastIndexByte(username, '\\'); i >= 0 {
		return username[i+1:]
	}
	return username
}

// ChallengeHash is the first 8 octets of SHA1(PeerChallenge | AuthenticatorChallenge | UserName)
// (RFC 2759 §8.2). A "DOMAIN\" prefix of username is ignored.
func ChallengeHash(peerChallenge, authChallenge [16]byte, username string) [8]byte {
	h := sha1.New()
	h.Write(peerChallenge[:])
	h.Write(authChallenge[:])
	h.Write([]byte(UserNameForHash(username)))
	var sum [sha1.Size]byte
	h.Sum(sum[:0])
	var out [8]byte
	copy(out[:], sum[:8])
	return out
}

// desKey expands 7 key octets (56 bits) into an 8-octet DES key, 7 bits per
// octet in the high bits, parity bit (LSB) zero (RFC 2759 §8.6 DesEncrypt).
func desKey(k []byte) [8]byte {
	_ = k[6]
	return [8]byte{
		k[0] & 0xFE,
		(k[0]<<7 | k[1]>>1) & 0xFE,
		(k[1]<<6 | k[2]>>2) & 0xFE,
		(k[2]<<5 | k[3]>>3) & 0xFE,
		(k[3]<<4 | k[4]>>4) & 0xFE,
		(k[4]<<3 | k[5]>>5) & 0xFE,
		(k[5]<<2 | k[6]>>6) & 0xFE,
		k[6] << 1,
	}
}

func desEncrypt(clear [8]byte, key7 []byte, out []byte) {
	k := desKey(key7)
	c, err := des.NewCipher(k[:])
	if err != nil { // cannot happen: the key is always 8 octets
		panic("mschap: des.NewCipher: " + err.Error())
	}
	c.Encrypt(out, clear[:])
}

// ChallengeResponse is RFC 2759 §8.5: the 16-octet hash, zero-padded to 21
// octets, is cut into three 7-octet DES keys, each encrypting the challenge.
func ChallengeResponse(challenge [8]byte, passwordHash [16]byte) [24]byte {
	var z [21]byte
	copy(z[:], passwordHash[:])
	var out [24]byte
	desEncrypt(challenge, z[0:7], out[0:8])
	desEncrypt(challenge, z[7:14], out[8:16])
	desEncrypt(challenge, z[14:21], out[16:24])
	return out
}

// GenerateNTResponse is RFC 2759 §8.1.
func GenerateNTResponse(authChallenge, peerChallenge [16]byte, username, password string) [24]byte {
	ch := ChallengeHash(peerChallenge, authChallenge, username)
	return ChallengeResponse(ch, NTPasswordHash(password))
}

// VerifyNTResponse recomputes the NT-Response for the stored password and
// compares it in constant time (what an authenticator does on a Response).
func VerifyNTResponse(authChallenge, peerChallenge [16]byte, username, password string, ntResponse [24]byte) bool {
	want := GenerateNTResponse(authChallenge, peerChallenge, username, password)
	return subtle.ConstantTimeCompare(want[:], ntResponse[:]) == 1
}

// authenticatorDigest is the 20-octet digest of RFC 2759 §8.7.
func authenticatorDigest(password string, ntResponse [24]byte, peerChallenge, authChallenge [16]byte, username string) [sha1.Size]byte {
	hh := HashNTPasswordHash(NTPasswordHash(password))
	h := sha1.New()
	h.Write(hh[:])
	h.Write(ntResponse[:])
	h.Write(magic1)
	var d [sha1.Size]byte
	h.Sum(d[:0])
	ch := ChallengeHash(peerChallenge, authChallenge, username)
	h.Reset()
	h.Write(d[:])
	h.Write(ch[:])
	h.Write(magic2)
	h.Sum(d[:0])
	return d
}

// GenerateAuthenticatorResponse is RFC 2759 §8.7: "S=" followed by 40
// upper-case hex digits.
func GenerateAuthenticatorResponse(password string, ntResponse [24]byte, peerChallenge, authChallenge [16]byte, username string) string {
	d := authenticatorDigest(password, ntResponse, peerChallenge, authChallenge, username)
	return "S=" + strings.ToUpper(hex.EncodeToString(d[:]))
}

// CheckAuthenticatorResponse is RFC 2759 §8.8, run by the peer on the
// Success message. received is compared case-insensitively (hex digits) in
// constant time; anything after the 42 octets (" M=...") must be stripped by
// the caller.
func CheckAuthenticatorResponse(password string, ntResponse [24]byte, peerChallenge, authChallenge [16]byte, username, received string) bool {
	want := GenerateAuthenticatorResponse(password, ntResponse, peerChallenge, authChallenge, username)
	if len(received) != AuthRespStrLen {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToUpper(received))) == 1
}

// CHAPMD5Response is the RFC 1994 §4.1 response: MD5(Identifier | secret | Challenge).
func CHAPMD5Response(id byte, secret string, challenge []byte) [16]byte {
	h := md5.New()
	h.Write([]byte{id})
	h.Write([]byte(secret))
	h.Write(challenge)
	var out [16]byte
	h.Sum(out[:0])
	return out
}
