// Package mppe implements Microsoft Point-to-Point Encryption: the RFC 3079
// key derivation from MS-CHAPv2 credentials and the RFC 3078 packet
// transform (RC4, 40/56/128-bit keys, stateful and stateless key changes,
// coherency count).
//
// The way of one packet through an Encrypter:
//  1. the 12-bit coherency count is advanced;
//  2. stateless mode, a "flag" packet (count low octet 0xFF) or a pending
//     CCP Reset-Request changes the session key (RFC 3078 §7.3) and sets the
//     A (flushed) bit; the RC4 table is re-initialised with the new key;
//  3. the 2-octet MPPE header (A/B/C/D bits + count) is written, the PPP
//     protocol field and data are copied behind it and RC4-encrypted in place.
//
// A Decrypter mirrors it and re-synchronises after loss (see Decrypt).
//
// MPPE has no integrity protection: a forged packet decrypts to garbage that
// the PPP layer must drop; it may also desynchronise the key schedule.
//
// It owns the key schedule and the packet transform. It must not know CCP
// negotiation or when keys change hands (pptp/ppp decides), nor GRE or any
// transport.
package mppe

import (
	"crypto/sha1"

	"pptpgw/pptp/mschap"
)

// Magic constants of RFC 3079 §3.4.
var (
	// magic1 is "This is the MPPE Master Key".
	magic1 = []byte("This is the MPPE Master Key")
	// magic2: the client's send key and the server's receive key.
	magic2 = []byte("On the client side, this is the send key; on the server side, it is the receive key.")
	// magic3: the client's receive key and the server's send key.
	magic3 = []byte("On the client side, this is the receive key; on the server side, it is the send key.")
)

// shaPadLen is the length of SHSpad1/SHSpad2 (RFC 3079 §3.4; SHAPad1/2 in RFC 3078 §7.3).
const shaPadLen = 40

var (
	shaPad1 [shaPadLen]byte // 40 x 0x00
	shaPad2 = func() (p [shaPadLen]byte) {
		for i := range p {
			p[i] = 0xF2
		}
		return p
	}()
)

// Strength is the negotiated MPPE session key strength.
type Strength int

// Key strengths. The value is the effective key length in bits.
const (
	Bits40  Strength = 40
	Bits56  Strength = 56
	Bits128 Strength = 128
)

// KeyLen is the length in octets of the RC4 key: 8 for 40 and 56 bits
// (the top octets are replaced by constants, RFC 3079 §3.1/3.2), 16 for 128.
func (s Strength) KeyLen() int {
	if s == Bits128 {
		return 16
	}
	return 8
}

// Valid reports whether s is one of Bits40, Bits56, Bits128.
func (s Strength) Valid() bool { return s == Bits40 || s == Bits56 || s == Bits128 }

func (s Strength) String() string {
	switch s {
	case Bits40:
		return "40"
	case Bits56:
		return "56"
	case Bits128:
		return "128"
	}
	return "invalid"
}

// GetMasterKey is RFC 3079 §3.4: the first 16 octets of
// SHA1(PasswordHashHash | NTResponse | Magic1).
func GetMasterKey(passwordHashHash [16]byte, ntResponse [24]byte) [16]byte {
	h := sha1.New()
	h.Write(passwordHashHash[:])
	h.Write(ntResponse[:])
	h.Write(magic1)
	var d [sha1.Size]byte
	h.Sum(d[:0])
	var mk [16]byte
	copy(mk[:], d[:16])
	return mk
}

// GetAsymmetricStartKey is RFC 3079 §3.4: the first keyLen (8 or 16) octets
// of SHA1(MasterKey | SHSpad1 | Magic | SHSpad2), Magic being Magic2 for the
// client's send / server's receive key and Magic3 for the other direction.
func GetAsymmetricStartKey(masterKey [16]byte, keyLen int, isSend, isServer bool) []byte {
	if keyLen != 8 && keyLen != 16 {
		panic("mppe: GetAsymmetricStartKey: keyLen must be 8 or 16")
	}
	s := magic2
	if isSend == isServer { // server send or client receive
		s = magic3
	}
	h := sha1.New()
	h.Write(masterKey[:])
	h.Write(shaPad1[:])
	h.Write(s)
	h.Write(shaPad2[:])
	var d [sha1.Size]byte
	h.Sum(d[:0])
	return append([]byte(nil), d[:keyLen]...)
}

// MasterKeysFromMSCHAPv2 derives the 16-octet master send and receive keys
// (the "start keys" an Encrypter / Decrypter are built from) of one end of an
// MS-CHAPv2 authentication, as RFC 3079 §3.3 describes. For 40 and 56-bit
// sessions only the first 8 octets are used, which equals what §3.1/3.2
// derive with an 8-octet GetAsymmetricStartKey.
func MasterKeysFromMSCHAPv2(password string, ntResponse [24]byte, isServer bool) (send, recv [16]byte) {
	hh := mschap.HashNTPasswordHash(mschap.NTPasswordHash(password))
	mk := GetMasterKey(hh, ntResponse)
	copy(send[:], GetAsymmetricStartKey(mk, 16, true, isServer))
	copy(recv[:], GetAsymmetricStartKey(mk, 16, false, isServer))
	return send, recv
}

// GetNewKeyFromSHA is RFC 3078 §7.3 / RFC 3079 §3.4: the first
// len(sessionKey) octets of SHA1(StartKey | SHAPad1 | SessionKey | SHAPad2),
// with StartKey cut to the length of sessionKey.
func GetNewKeyFromSHA(startKey, sessionKey []byte) []byte {
	n := len(sessionKey)
	var buf [16 + shaPadLen + 16 + shaPadLen]byte
	d := newKeyFromSHA(&buf, startKey[:n], sessionKey)
	return append([]byte(nil), d[:n]...)
}

// newKeyFromSHA computes the digest without allocating; buf is scratch.
func newKeyFromSHA(buf *[112]byte, startKey, sessionKey []byte) [sha1.Size]byte {
	n := len(sessionKey)
	copy(buf[0:n], startKey[:n])
	copy(buf[n:n+shaPadLen], shaPad1[:])
	copy(buf[n+shaPadLen:2*n+shaPadLen], sessionKey)
	copy(buf[2*n+shaPadLen:2*n+2*shaPadLen], shaPad2[:])
	return sha1.Sum(buf[:2*n+2*shaPadLen])
}

// ReduceKey applies the 40/56-bit reduction of RFC 3079 §3.1/3.2 in place:
// 40 bits sets the first three octets to 0xD1 0x26 0x9E, 56 bits sets the
// first octet to 0xD1; 128 bits is left unchanged.
func ReduceKey(key []byte, s Strength) {
	switch s {
	case Bits40:
		key[0], key[1], key[2] = 0xD1, 0x26, 0x9E
	case Bits56:
		key[0] = 0xD1
	}
}

// InitialSessionKey is the session key MPPE starts with (RFC 3079 §3.1-3.3):
// GetNewKeyFromSHA(StartKey, StartKey) over KeyLen octets, then reduced.
func InitialSessionKey(startKey [16]byte, s Strength) []byte {
	n := s.KeyLen()
	k := GetNewKeyFromSHA(startKey[:n], startKey[:n])
	ReduceKey(k, s)
	return k
}
