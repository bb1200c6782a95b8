package pkt

import "encoding/binary"

// IPv4 is a view of an IPv4 packet (RFC 791). Call IsValid before any getter.
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|Version|  IHL  |Type of Service|          Total Length         |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|         Identification        |Flags|      Fragment Offset    |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  Time to Live |    Protocol   |         Header Checksum       |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                       Source Address                          |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Destination Address                        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Options                    |    Padding    |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
type IPv4 []byte

// IPv4 field offsets and sizes.
const (
	IPv4VersIHLOffset   = 0
	IPv4TOSOffset       = 1
	IPv4TotalLenOffset  = 2
	IPv4IDOffset        = 4
	IPv4FlagsFragOffset = 6
	IPv4TTLOffset       = 8
	IPv4ProtocolOffset  = 9
	IPv4ChecksumOffset  = 10
	IPv4SrcAddrOffset   = 12
	IPv4DstAddrOffset   = 16
	IPv4MinimumSize     = 20
	IPv4MaximumSize     = 65535
	IPv4FlagMoreFrags   = 0x2000
	IPv4FlagDontFrag    = 0x4000
	IPv4FragOffsetMask  = 0x1fff
	IPv4ProtocolICMP    = 1
	IPv4ProtocolTCP     = 6
	IPv4ProtocolUDP     = 17
	IPv4ProtocolGRE     = 47
	ipv4Version         = 4
)

// IsVersion4 reports whether b can be an IPv4 packet: at least a minimal
// header, version 4. Unlike IsValid it does not check the lengths (a GSO
// packet's Total Length, for one, may be anything).
func (b IPv4) IsVersion4() bool {
	return len(b) >= IPv4MinimumSize && b[IPv4VersIHLOffset]>>4 == ipv4Version
}

// IsValid reports whether b holds a whole IPv4 header and the packet its
// Total Length announces, pktSize being the number of bytes received. It
// must be called before any other method.
func (b IPv4) IsValid(pktSize int) bool {
	if len(b) < IPv4MinimumSize || pktSize > len(b) {
		return false
	}
	if b[IPv4VersIHLOffset]>>4 != ipv4Version {
		return false
	}
	hl := b.HeaderLength()
	tl := int(b.TotalLength())
	return hl >= IPv4MinimumSize && hl <= tl && tl <= pktSize
}

// HeaderLength returns the header length in bytes (IHL*4).
func (b IPv4) HeaderLength() int { return int(b[IPv4VersIHLOffset]&0xf) * 4 }

// TotalLength returns the Total Length field.
func (b IPv4) TotalLength() uint16 { return binary.BigEndian.Uint16(b[IPv4TotalLenOffset:]) }

// ID returns the Identification field.
func (b IPv4) ID() uint16 { return binary.BigEndian.Uint16(b[IPv4IDOffset:]) }

// FragmentOffset returns the fragment offset in bytes.
func (b IPv4) FragmentOffset() int {
	return int(binary.BigEndian.Uint16(b[IPv4FlagsFragOffset:])&IPv4FragOffsetMask) * 8
}

// MoreFragments reports the MF flag.
func (b IPv4) MoreFragments() bool {
	return binary.BigEndian.Uint16(b[IPv4FlagsFragOffset:])&IPv4FlagMoreFrags != 0
}

// IsFragment reports whether the packet is any fragment (first, middle or last).
func (b IPv4) IsFragment() bool {
	return binary.BigEndian.Uint16(b[IPv4FlagsFragOffset:])&(IPv4FlagMoreFrags|IPv4FragOffsetMask) != 0
}

// Protocol returns the Protocol field.
func (b IPv4) Protocol() uint8 { return b[IPv4ProtocolOffset] }

// Checksum returns the Header Checksum field.
func (b IPv4) Checksum() uint16 { return binary.BigEndian.Uint16(b[IPv4ChecksumOffset:]) }

// SetChecksum sets the Header Checksum field.
func (b IPv4) SetChecksum(c uint16) { binary.BigEndian.PutUint16(b[IPv4ChecksumOffset:], c) }

// SourceAddress returns the source address.
func (b IPv4) SourceAddress() (a [4]byte) {
	copy(a[:], b[IPv4SrcAddrOffset:])
	return a
}

// DestinationAddress returns the destination address.
func (b IPv4) DestinationAddress() (a [4]byte) {
	copy(a[:], b[IPv4DstAddrOffset:])
	return a
}

// SetSourceAddressWithChecksumUpdate rewrites the source address and patches
// the header checksum incrementally.
func (b IPv4) SetSourceAddressWithChecksumUpdate(a [4]byte) {
	b.SetChecksum(UpdateAddr(b.Checksum(), b.SourceAddress(), a))
	copy(b[IPv4SrcAddrOffset:], a[:])
}

// SetDestinationAddressWithChecksumUpdate rewrites the destination address
// and patches the header checksum incrementally.
func (b IPv4) SetDestinationAddressWithChecksumUpdate(a [4]byte) {
	b.SetChecksum(UpdateAddr(b.Checksum(), b.DestinationAddress(), a))
	copy(b[IPv4DstAddrOffset:], a[:])
}

// CalculateChecksum computes the header checksum from scratch (the field
// itself counted as zero).
func (b IPv4) CalculateChecksum() uint16 {
	hl := b.HeaderLength()
	s := Sum(b[:IPv4ChecksumOffset], 0)
	s = Sum(b[IPv4ChecksumOffset+2:hl], s)
	return ^s
}

// IsChecksumValid reports whether the header checksum verifies.
func (b IPv4) IsChecksumValid() bool { return Sum(b[:b.HeaderLength()], 0) == 0xffff }

// Payload returns the bytes after the header up to Total Length.
func (b IPv4) Payload() []byte { return b[b.HeaderLength():b.TotalLength()] }

// TCP is a view of a TCP segment (RFC 793). Call IsValid before any getter.
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|          Source Port          |       Destination Port        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                        Sequence Number                        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Acknowledgment Number                      |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  Data |       |C|E|U|A|P|R|S|F|                               |
//	| Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
//	|       |       |R|E|G|K|H|T|N|N|                               |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|           Checksum            |         Urgent Pointer        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Options                    |    Padding    |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
type TCP []byte

// TCP field offsets, sizes and flags.
const (
	TCPSrcPortOffset    = 0
	TCPDstPortOffset    = 2
	TCPSeqNumOffset     = 4
	TCPAckNumOffset     = 8
	TCPDataOffsetOffset = 12
	TCPFlagsOffset      = 13
	TCPWindowOffset     = 14
	TCPChecksumOffset   = 16
	TCPUrgentOffset     = 18
	TCPMinimumSize      = 20

	TCPFlagFin = 0x01
	TCPFlagSyn = 0x02
	TCPFlagRst = 0x04
	TCPFlagPsh = 0x08
	TCPFlagAck = 0x10
	TCPFlagUrg = 0x20
	TCPFlagEce = 0x40 // RFC 3168
	TCPFlagCwr = 0x80 // RFC 3168; of a TSO burst, only the first segment carries it
)

// IsValid reports whether b holds a whole TCP header (including options).
func (b TCP) IsValid() bool {
	if len(b) < TCPMinimumSize {
		return false
	}
	off := b.DataOffset()
	return off >= TCPMinimumSize && off <= len(b)
}

// SourcePort returns the source port.
func (b TCP) SourcePort() uint16 { return binary.BigEndian.Uint16(b[TCPSrcPortOffset:]) }

// DestinationPort returns the destination port.
func (b TCP) DestinationPort() uint16 { return binary.BigEndian.Uint16(b[TCPDstPortOffset:]) }

// SequenceNumber returns the sequence number.
func (b TCP) SequenceNumber() uint32 { return binary.BigEndian.Uint32(b[TCPSeqNumOffset:]) }

// AckNumber returns the acknowledgment number.
func (b TCP) AckNumber() uint32 { return binary.BigEndian.Uint32(b[TCPAckNumOffset:]) }

// DataOffset returns the header length in bytes.
func (b TCP) DataOffset() int { return int(b[TCPDataOffsetOffset]>>4) * 4 }

// Flags returns the flag byte (CWR..FIN).
func (b TCP) Flags() uint8 { return b[TCPFlagsOffset] }

// Checksum returns the checksum field.
func (b TCP) Checksum() uint16 { return binary.BigEndian.Uint16(b[TCPChecksumOffset:]) }

// SetChecksum sets the checksum field.
func (b TCP) SetChecksum(c uint16) { binary.BigEndian.PutUint16(b[TCPChecksumOffset:], c) }

// Payload returns the data after the header.
func (b TCP) Payload() []byte { return b[b.DataOffset():] }

// CalculateChecksum computes the checksum of the whole segment b from
// scratch (the field counted as zero), with the IPv4 pseudo-header.
func (b TCP) CalculateChecksum(src, dst [4]byte) uint16 {
	s := PseudoHeaderSum(src, dst, IPv4ProtocolTCP, uint16(len(b)))
	s = Sum(b[:TCPChecksumOffset], s)
	s = Sum(b[TCPChecksumOffset+2:], s)
	return ^s
}

// IsChecksumValid reports whether the segment's checksum verifies.
func (b TCP) IsChecksumValid(src, dst [4]byte) bool {
	return Sum(b, PseudoHeaderSum(src, dst, IPv4ProtocolTCP, uint16(len(b)))) == 0xffff
}
