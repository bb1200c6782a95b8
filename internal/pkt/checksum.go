package pkt

import (
	"encoding/binary"
	"math/bits"
)

// Internet checksum helpers (RFC 1071) and incremental updates (RFC 1624).
//
// A checksum field holds the ones' complement of the ones' complement sum of
// the covered 16-bit words. When a covered value m changes to m', RFC 1624
// equation 3 gives the new field without touching the rest of the data:
//
//	HC' = ~(~HC + ~m + m')
//
// All functions here work on the folded 16-bit value and never allocate.

// Sum adds the 16-bit big-endian words of b to initial in ones' complement
// arithmetic and returns the folded sum (not complemented). An odd trailing
// byte is padded with a zero byte, as RFC 1071 specifies.
//
// It adds 64-bit words with carry (RFC 1071 §2(C): the sum of wider words
// folds to the same 16-bit result), 64 bytes per round.
func Sum(b []byte, initial uint16) uint16 {
	acc, c := uint64(initial), uint64(0)
	for len(b) >= 64 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[8:]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[16:]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[24:]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[32:]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[40:]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[48:]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[56:]), c)
		b = b[64:]
	}
	for len(b) >= 8 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b), c)
		b = b[8:]
	}
	if len(b) >= 4 {
		acc, c = bits.Add64(acc, uint64(binary.BigEndian.Uint32(b)), c)
		b = b[4:]
	}
	if len(b) >= 2 {
		acc, c = bits.Add64(acc, uint64(binary.BigEndian.Uint16(b)), c)
		b = b[2:]
	}
	if len(b) == 1 {
		acc, c = bits.Add64(acc, uint64(b[0])<<8, c)
	}
	acc += c // cannot overflow: after a carry out acc is at most 2^64-2
	return fold(acc)
}

// fold reduces a sum to 16 bits (not complemented).
func fold(acc uint64) uint16 {
	acc = (acc >> 32) + (acc & 0xffffffff)
	acc = (acc >> 32) + (acc & 0xffffffff)
	acc = (acc >> 16) + (acc & 0xffff)
	acc = (acc >> 16) + (acc & 0xffff)
	return uint16(acc)
}

// foldSmall reduces a sum of at most 2^16 words to 16 bits (not complemented).
func foldSmall(acc uint32) uint16 {
	acc = (acc >> 16) + (acc & 0xffff)
	acc = (acc >> 16) + (acc & 0xffff)
	return uint16(acc)
}

// Checksum returns the Internet checksum of b (the value to store in a
// zeroed checksum field).
func Checksum(b []byte) uint16 { return ^Sum(b, 0) }

// Combine returns the ones' complement sum of a and b.
func Combine(a, b uint16) uint16 { return foldSmall(uint32(a) + uint32(b)) }

// Update16 returns checksum field hc updated for one covered 16-bit word
// changing from old to new (RFC 1624 eqn. 3).
func Update16(hc, old, new uint16) uint16 {
	return ^foldSmall(uint32(^hc) + uint32(^old) + uint32(new))
}

// UpdateAddr returns checksum field hc updated for a covered IPv4 address
// (two words at an even offset) changing from old to new.
func UpdateAddr(hc uint16, old, new [4]byte) uint16 {
	acc := uint64(^hc) +
		uint64(^binary.BigEndian.Uint16(old[0:])) + uint64(^binary.BigEndian.Uint16(old[2:])) +
		uint64(binary.BigEndian.Uint16(new[0:])) + uint64(binary.BigEndian.Uint16(new[2:]))
	return ^fold(acc)
}

// UpdateByte returns checksum field hc updated for one covered byte changing
// from old to new, off being the byte's offset from the (even-aligned) start
// of the checksummed data: at an even offset the byte is the high half of its
// word, at an odd offset the low half.
func UpdateByte(hc uint16, off int, old, new byte) uint16 {
	if off&1 == 0 {
		return Update16(hc, uint16(old)<<8, uint16(new)<<8)
	}
	return Update16(hc, uint16(old), uint16(new))
}

// PseudoHeaderSum returns the ones' complement sum of the IPv4 pseudo-header
// (RFC 793 §3.1) for a transport segment of the given protocol and length.
func PseudoHeaderSum(src, dst [4]byte, proto uint8, length uint16) uint16 {
	acc := uint64(binary.BigEndian.Uint16(src[0:])) + uint64(binary.BigEndian.Uint16(src[2:])) +
		uint64(binary.BigEndian.Uint16(dst[0:])) + uint64(binary.BigEndian.Uint16(dst[2:])) +
		uint64(proto) + uint64(length)
	return fold(acc)
}
