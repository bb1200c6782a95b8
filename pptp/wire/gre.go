package wire

import (
	"encoding/binary"
	"errors"
)

// GREProtoPPP is the GRE Protocol Type of PPTP data (PPP, RFC 2637 §4.1).
const GREProtoPPP = 0x880B

// Enhanced GRE header (RFC 2637 §4.1):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|C|R|K|S|s|Recur|A| Flags | Ver |         Protocol Type         |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|    Key (HW) Payload Length    |       Key (LW) Call ID        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                  Sequence Number (Optional)                   |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|               Acknowledgment Number (Optional)                |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// C, R, s, Recur and Flags are 0, K is 1, Ver is 1. The sequence number is
// present when S is set, the acknowledgment number when A is set.
const (
	GREFlagsOffset          = 0
	GREProtoOffset          = 2
	GREPayloadLenOffset     = 4
	GREKeyCallIDOffset      = 6
	GREMinLen               = 8
	GREMaxLen               = 16
	greVersion              = 1
	greFlagC, greFlagR      = 0x80, 0x40
	greFlagK, greFlagS      = 0x20, 0x10
	greFlagStrict, greRecur = 0x08, 0x07
	greFlagA                = 0x80
	greFlags2, greVerMask   = 0x78, 0x07
)

// GRE sentinel errors (ErrShort is shared with the control parser).
var (
	ErrGREVersion    = errors.New("pptp: GRE version is not 1")
	ErrGREFlags      = errors.New("pptp: GRE flags not valid for PPTP (C, R, s, Recur or K)")
	ErrGREProto      = errors.New("pptp: GRE protocol is not PPP (0x880B)")
	ErrGREPayloadLen = errors.New("pptp: GRE payload length exceeds packet")
)

// GREHeader is the decoded enhanced GRE header.
type GREHeader struct {
	CallID     uint16 // low half of the key: the receiver's (peer's) call ID
	PayloadLen uint16 // high half of the key
	HasSeq     bool
	Seq        uint32
	HasAck     bool
	Ack        uint32
}

// Len returns the encoded header length: 8, 12 or 16.
func (h GREHeader) Len() int {
	n := GREMinLen
	if h.HasSeq {
		n += 4
	}
	if h.HasAck {
		n += 4
	}
	return n
}

// Append appends the header (not the payload) to b.
func (h GREHeader) Append(b []byte) []byte {
	f0 := byte(greFlagK)
	if h.HasSeq {
		f0 |= greFlagS
	}
	f1 := byte(greVersion)
	if h.HasAck {
		f1 |= greFlagA
	}
	b = append(b, f0, f1)
	b = binary.BigEndian.AppendUint16(b, GREProtoPPP)
	b = binary.BigEndian.AppendUint16(b, h.PayloadLen)
	b = binary.BigEndian.AppendUint16(b, h.CallID)
	if h.HasSeq {
		b = binary.BigEndian.AppendUint32(b, h.Seq)
	}
	if h.HasAck {
		b = binary.BigEndian.AppendUint32(b, h.Ack)
	}
	return b
}

// ParseGRE parses an enhanced GRE header at the start of b (the IP payload)
// and returns the header and its payload, b[h.Len():h.Len()+PayloadLen].
// Bytes after the payload (link padding) are ignored. Checks: version 1,
// K set, C/R/s/Recur/Flags clear, protocol 0x880B, payload length within b.
func ParseGRE(b []byte) (h GREHeader, payload []byte, err error) {
	if len(b) < GREMinLen {
		return h, nil, ErrShort
	}
	f0, f1 := b[0], b[1]
	if f1&greVerMask != greVersion {
		return h, nil, ErrGREVersion
	}
	if f0&greFlagK == 0 || f0&(greFlagC|greFlagR|greFlagStrict|greRecur) != 0 || f1&greFlags2 != 0 {
		return h, nil, ErrGREFlags
	}
	if binary.BigEndian.Uint16(b[GREProtoOffset:]) != GREProtoPPP {
		return h, nil, ErrGREProto
	}
	h.PayloadLen = binary.BigEndian.Uint16(b[GREPayloadLenOffset:])
	h.CallID = binary.BigEndian.Uint16(b[GREKeyCallIDOffset:])
	h.HasSeq = f0&greFlagS != 0
	h.HasAck = f1&greFlagA != 0
	n := h.Len()
	if len(b) < n {
		return GREHeader{}, nil, ErrShort
	}
	off := GREMinLen
	if h.HasSeq {
		h.Seq = binary.BigEndian.Uint32(b[off:])
		off += 4
	}
	if h.HasAck {
		h.Ack = binary.BigEndian.Uint32(b[off:])
	}
	if int(h.PayloadLen) > len(b)-n {
		return GREHeader{}, nil, ErrGREPayloadLen
	}
	return h, b[n : n+int(h.PayloadLen)], nil
}
