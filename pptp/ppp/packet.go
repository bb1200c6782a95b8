package ppp

import "encoding/binary"

// PPP protocol numbers (RFC 1661 §2, assigned numbers).
const (
	ProtoIP   uint16 = 0x0021
	ProtoMPPE uint16 = 0x00FD // compressed/encrypted datagram (RFC 1962 §2, RFC 3078)
	ProtoIPCP uint16 = 0x8021
	ProtoCCP  uint16 = 0x80FD
	ProtoLCP  uint16 = 0xC021
	ProtoPAP  uint16 = 0xC023
	ProtoCHAP uint16 = 0xC223
)

// Control packet codes shared by LCP, IPCP and CCP (RFC 1661 §5).
const (
	codeConfReq        = 1
	codeConfAck        = 2
	codeConfNak        = 3
	codeConfRej        = 4
	codeTermReq        = 5
	codeTermAck        = 6
	codeCodeRej        = 7
	codeProtoRej       = 8  // LCP only
	codeEchoReq        = 9  // LCP only
	codeEchoRep        = 10 // LCP only
	codeDiscard        = 11 // LCP only
	codeIdentification = 12 // LCP only (RFC 1570)
	codeTimeRemaining  = 13 // LCP only (RFC 1570)
	codeResetReq       = 14 // CCP only (RFC 1962 §5)
	codeResetAck       = 15 // CCP only
	cpHeaderLen        = 4
	frameProtoLen      = 2
)

// A control packet (RFC 1661 §5):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|     Code      |  Identifier   |            Length             |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|    Data ...
//
// Octets past Length are padding and are ignored (RFC 1661 §5).
type ctlPacket struct {
	code, id byte
	data     []byte
}

func parseCtl(b []byte) (ctlPacket, Reason) {
	if len(b) < cpHeaderLen {
		return ctlPacket{}, ReasonShort
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if n < cpHeaderLen || n > len(b) {
		return ctlPacket{}, ReasonBadLength
	}
	return ctlPacket{code: b[0], id: b[1], data: b[cpHeaderLen:n]}, ReasonNone
}

// splitFrame strips an optional FF 03 address/control field (ACFC) and
// decodes a one- or two-octet protocol field (PFC). The protocol number's
// least significant bit must be 1 and the most significant octet's 0
// (RFC 1661 §2).
func splitFrame(f []byte) (proto uint16, info []byte, r Reason) {
	if len(f) >= 2 && f[0] == 0xFF && f[1] == 0x03 {
		f = f[2:]
	}
	if len(f) == 0 {
		return 0, nil, ReasonShort
	}
	if f[0]&1 == 1 { // compressed protocol field
		return uint16(f[0]), f[1:], ReasonNone
	}
	if len(f) < 2 {
		return 0, nil, ReasonShort
	}
	if f[1]&1 == 0 {
		return 0, nil, ReasonBadProtocol
	}
	return binary.BigEndian.Uint16(f), f[2:], ReasonNone
}

// An option (RFC 1661 §6) is Type(1) Length(1) Data(Length-2).
// optIter walks a list of options; err is set on the first malformed one.
type optIter struct {
	b   []byte
	err bool
}

func (it *optIter) next() (typ byte, val, whole []byte, ok bool) {
	if len(it.b) == 0 {
		return 0, nil, nil, false
	}
	if len(it.b) < 2 || it.b[1] < 2 || int(it.b[1]) > len(it.b) {
		it.err = true
		it.b = nil
		return 0, nil, nil, false
	}
	n := int(it.b[1])
	whole = it.b[:n]
	it.b = it.b[n:]
	return whole[0], whole[2:], whole, true
}

// validOptions reports whether b is a well-formed list of options.
func validOptions(b []byte) bool {
	it := optIter{b: b}
	for {
		if _, _, _, ok := it.next(); !ok {
			return !it.err
		}
	}
}

func appendOpt(b []byte, typ byte, val ...byte) []byte {
	b = append(b, typ, byte(2+len(val)))
	return append(b, val...)
}

func appendOpt16(b []byte, typ byte, v uint16) []byte {
	return append(b, typ, 4, byte(v>>8), byte(v))
}

func appendOpt32(b []byte, typ byte, v uint32) []byte {
	return append(b, typ, 6, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}
