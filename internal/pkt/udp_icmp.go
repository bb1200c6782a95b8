package pkt

import "encoding/binary"

// UDP is a view of a UDP datagram (RFC 768). Call IsValid before any getter.
//
//	 0      7 8     15 16    23 24    31
//	+--------+--------+--------+--------+
//	|     Source      |   Destination   |
//	|      Port       |      Port       |
//	+--------+--------+--------+--------+
//	|     Length      |    Checksum     |
//	+--------+--------+--------+--------+
//	|          data octets ...
type UDP []byte

// UDP field offsets and sizes.
const (
	UDPSrcPortOffset  = 0
	UDPDstPortOffset  = 2
	UDPLengthOffset   = 4
	UDPChecksumOffset = 6
	UDPMinimumSize    = 8
)

// IsValid reports whether b holds a UDP header and the datagram its Length
// announces.
func (b UDP) IsValid() bool {
	if len(b) < UDPMinimumSize {
		return false
	}
	l := int(b.Length())
	return l >= UDPMinimumSize && l <= len(b)
}

// SourcePort returns the source port.
func (b UDP) SourcePort() uint16 { return binary.BigEndian.Uint16(b[UDPSrcPortOffset:]) }

// DestinationPort returns the destination port.
func (b UDP) DestinationPort() uint16 { return binary.BigEndian.Uint16(b[UDPDstPortOffset:]) }

// Length returns the Length field (header and data).
func (b UDP) Length() uint16 { return binary.BigEndian.Uint16(b[UDPLengthOffset:]) }

// Checksum returns the checksum field (0: none was computed).
func (b UDP) Checksum() uint16 { return binary.BigEndian.Uint16(b[UDPChecksumOffset:]) }

// SetChecksum sets the checksum field.
func (b UDP) SetChecksum(c uint16) { binary.BigEndian.PutUint16(b[UDPChecksumOffset:], c) }

// Payload returns the data after the header, up to Length.
func (b UDP) Payload() []byte { return b[UDPMinimumSize:b.Length()] }

// CalculateChecksum returns the checksum for the datagram as it stands
// (checksum field treated as zero) with the IPv4 pseudo-header of src and
// dst; 0 is sent as 0xffff (RFC 768).
func (b UDP) CalculateChecksum(src, dst [4]byte) uint16 {
	l := b.Length()
	s := PseudoHeaderSum(src, dst, IPv4ProtocolUDP, l)
	s = Sum(b[:UDPChecksumOffset], s)
	s = Sum(b[UDPChecksumOffset+2:l], s)
	if c := ^s; c != 0 {
		return c
	}
	return 0xffff
}

// ICMPv4 is a view of an ICMP message (RFC 792). Call IsValid before any
// getter.
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|     Type      |     Code      |          Checksum             |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|           Identifier          |        Sequence Number        |  (echo)
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
type ICMPv4 []byte

// ICMPv4 field offsets, sizes and the types used here.
const (
	ICMPv4TypeOffset     = 0
	ICMPv4CodeOffset     = 1
	ICMPv4ChecksumOffset = 2
	ICMPv4IDOffset       = 4
	ICMPv4SeqOffset      = 6
	ICMPv4MinimumSize    = 8

	ICMPv4EchoReply   = 0
	ICMPv4Unreachable = 3
	ICMPv4Echo        = 8
	ICMPv4TimeExceed  = 11
)

// IsValid reports whether b holds an ICMP header.
func (b ICMPv4) IsValid() bool { return len(b) >= ICMPv4MinimumSize }

// Type returns the message type.
func (b ICMPv4) Type() uint8 { return b[ICMPv4TypeOffset] }

// Code returns the message code.
func (b ICMPv4) Code() uint8 { return b[ICMPv4CodeOffset] }

// Checksum returns the checksum field.
func (b ICMPv4) Checksum() uint16 { return binary.BigEndian.Uint16(b[ICMPv4ChecksumOffset:]) }

// SetChecksum sets the checksum field.
func (b ICMPv4) SetChecksum(c uint16) { binary.BigEndian.PutUint16(b[ICMPv4ChecksumOffset:], c) }

// Ident returns an echo message's identifier.
func (b ICMPv4) Ident() uint16 { return binary.BigEndian.Uint16(b[ICMPv4IDOffset:]) }

// Sequence returns an echo message's sequence number.
func (b ICMPv4) Sequence() uint16 { return binary.BigEndian.Uint16(b[ICMPv4SeqOffset:]) }

// CalculateChecksum returns the checksum of the whole message with the
// checksum field treated as zero (ICMP has no pseudo-header).
func (b ICMPv4) CalculateChecksum() uint16 {
	s := Sum(b[:ICMPv4ChecksumOffset], 0)
	return ^Sum(b[ICMPv4ChecksumOffset+2:], s)
}
