// Package wire holds the PPTP wire formats of RFC 2637: the 15 control
// messages carried on TCP port 1723 and the enhanced GRE header that
// carries PPP frames.
//
// Control messages come in two forms:
//
//   - typed structs (SCCRQ, OCRP, ...) with Decode and Append, for code that
//     builds or inspects whole messages (test peers, the server);
//   - a zero-allocation Header view plus field offsets (CallIDOffset,
//     PeerCallIDOffset, ResultOffset), for the gateway ALG that rewrites
//     fields in place inside a TCP stream.
//
// Naming: the MsgType constants carry the long RFC names
// (OutgoingCallRequest, ...); the message structs use the RFC's own
// abbreviations (OCRQ, ...) so the two can live in one package.
//
// Decode is lenient about reserved fields (RFC 2637 says they MUST be 0;
// receivers ignore them) and Append writes them as zero, so a decoded
// message re-encodes to the same bytes except in the ranges that
// ReservedRanges lists.
//
// It owns wire formats only, for both products (the server and the
// gateway's ALG). It must not know connection or call state, sockets, or
// either product's policy.
package wire

import (
	"encoding/binary"
	"errors"
	"strconv"
)

// ControlPort is the TCP port of the PPTP control connection.
const ControlPort = 1723

// MagicCookie is the constant in every control message header.
const MagicCookie uint32 = 0x1A2B3C4D

// PPTP message types (the second header word). Only control messages are
// defined on the wire; management messages were never specified.
const (
	PPTPTypeControl    uint16 = 1
	PPTPTypeManagement uint16 = 2
)

// Control message header (RFC 2637 §2), common to all control messages:
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|             Length            |       PPTP Message Type       |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                         Magic Cookie                          |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|     Control Message Type      |           Reserved0           |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
const (
	LengthOffset    = 0
	PPTPTypeOffset  = 2
	MagicOffset     = 4
	CtrlTypeOffset  = 8
	Reserved0Offset = 10
	HeaderLen       = 12
)

// Sentinel errors. Test with errors.Is.
var (
	ErrShort       = errors.New("pptp: message too short")
	ErrBadMagic    = errors.New("pptp: bad magic cookie")
	ErrBadLength   = errors.New("pptp: length field does not match message type")
	ErrUnknownType = errors.New("pptp: unknown control message type")
	ErrNotControl  = errors.New("pptp: not a control message")
)

// MsgType is the Control Message Type of RFC 2637 §2.
type MsgType uint16

// Control message types.
const (
	StartCtrlConnRequest  MsgType = 1
	StartCtrlConnReply    MsgType = 2
	StopCtrlConnRequest   MsgType = 3
	StopCtrlConnReply     MsgType = 4
	EchoRequest           MsgType = 5
	EchoReply             MsgType = 6
	OutgoingCallRequest   MsgType = 7
	OutgoingCallReply     MsgType = 8
	IncomingCallRequest   MsgType = 9
	IncomingCallReply     MsgType = 10
	IncomingCallConnected MsgType = 11
	CallClearRequest      MsgType = 12
	CallDisconnectNotify  MsgType = 13
	WANErrorNotify        MsgType = 14
	SetLinkInfo           MsgType = 15
)

var msgNames = [...]string{
	StartCtrlConnRequest:  "Start-Control-Connection-Request",
	StartCtrlConnReply:    "Start-Control-Connection-Reply",
	StopCtrlConnRequest:   "Stop-Control-Connection-Request",
	StopCtrlConnReply:     "Stop-Control-Connection-Reply",
	EchoRequest:           "Echo-Request",
	EchoReply:             "Echo-Reply",
	OutgoingCallRequest:   "Outgoing-Call-Request",
	OutgoingCallReply:     "Outgoing-Call-Reply",
	IncomingCallRequest:   "Incoming-Call-Request",
	IncomingCallReply:     "Incoming-Call-Reply",
	IncomingCallConnected: "Incoming-Call-Connected",
	CallClearRequest:      "Call-Clear-Request",
	CallDisconnectNotify:  "Call-Disconnect-Notify",
	WANErrorNotify:        "WAN-Error-Notify",
	SetLinkInfo:           "Set-Link-Info",
}

// msgLens are the fixed lengths (header included) of RFC 2637 §2.1-2.15.
var msgLens = [...]int{
	StartCtrlConnRequest:  156,
	StartCtrlConnReply:    156,
	StopCtrlConnRequest:   16,
	StopCtrlConnReply:     16,
	EchoRequest:           16,
	EchoReply:             20,
	OutgoingCallRequest:   168,
	OutgoingCallReply:     32,
	IncomingCallRequest:   220,
	IncomingCallReply:     24,
	IncomingCallConnected: 28,
	CallClearRequest:      16,
	CallDisconnectNotify:  148,
	WANErrorNotify:        40,
	SetLinkInfo:           24,
}

// MaxMsgLen is the length of the longest control message (ICRQ).
const MaxMsgLen = 220

// Known reports whether t is one of the 15 control message types.
func (t MsgType) Known() bool { return t >= StartCtrlConnRequest && t <= SetLinkInfo }

// Len returns the fixed RFC length of a message of type t, header included,
// or 0 if t is unknown.
func (t MsgType) Len() int {
	if !t.Known() {
		return 0
	}
	return msgLens[t]
}

func (t MsgType) String() string {
	if !t.Known() {
		return "MsgType(" + strconv.Itoa(int(t)) + ")"
	}
	return msgNames[t]
}

// Field offsets shared by several messages (from the start of the message).
const (
	// CallIDOffset of OCRQ, OCRP, ICRQ, ICRP, CCRQ and CDN.
	callIDOff = 12
	// PeerCallIDOffset of ICCN, WEN and SLI.
	peerFirstOff = 12
	// PeerCallIDOffset of OCRP and ICRP (after their own Call ID).
	peerSecondOff = 14
)

// CallIDOffset returns the offset within a message of type t of the
// sender's own Call ID field (OCRQ, OCRP, ICRQ, ICRP, CCRQ, CDN).
func CallIDOffset(t MsgType) (off int, ok bool) {
	switch t {
	case OutgoingCallRequest, OutgoingCallReply, IncomingCallRequest,
		IncomingCallReply, CallClearRequest, CallDisconnectNotify:
		return callIDOff, true
	}
	return 0, false
}

// PeerCallIDOffset returns the offset within a message of type t of the
// Peer's Call ID field (OCRP, ICRP, ICCN, WEN, SLI).
func PeerCallIDOffset(t MsgType) (off int, ok bool) {
	switch t {
	case OutgoingCallReply, IncomingCallReply:
		return peerSecondOff, true
	case IncomingCallConnected, WANErrorNotify, SetLinkInfo:
		return peerFirstOff, true
	}
	return 0, false
}

// ResultOffset returns the offset of the one-byte Result Code of a reply
// (SCCRP, StopCCRP, EchoRP, OCRP, ICRP, CDN). The Error Code follows it.
func ResultOffset(t MsgType) (off int, ok bool) {
	switch t {
	case StartCtrlConnReply:
		return 14, true
	case StopCtrlConnReply:
		return 12, true
	case EchoReply:
		return 16, true
	case OutgoingCallReply, IncomingCallReply:
		return 16, true
	case CallDisconnectNotify:
		return 14, true
	}
	return 0, false
}

// ReservedRanges lists the [start, end) byte ranges of a message of type t
// that the RFC reserves (must be zero). Decode ignores them and Append
// writes zeros there. The header's Reserved0 is always first.
func ReservedRanges(t MsgType) [][2]int {
	r := [][2]int{{Reserved0Offset, HeaderLen}}
	switch t {
	case StartCtrlConnRequest:
		r = append(r, [2]int{14, 16})
	case StopCtrlConnRequest:
		r = append(r, [2]int{13, 16})
	case StopCtrlConnReply:
		r = append(r, [2]int{14, 16})
	case EchoReply:
		r = append(r, [2]int{18, 20})
	case OutgoingCallRequest:
		r = append(r, [2]int{38, 40})
	case IncomingCallReply:
		r = append(r, [2]int{22, 24})
	case IncomingCallConnected, CallClearRequest, WANErrorNotify, SetLinkInfo:
		r = append(r, [2]int{14, 16})
	case CallDisconnectNotify:
		r = append(r, [2]int{18, 20})
	}
	return r
}

// Header is a view over the first HeaderLen bytes of a control message.
// Check its length (or use PeekHeader) before calling the getters.
type Header []byte

func (h Header) Length() uint16    { return binary.BigEndian.Uint16(h[LengthOffset:]) }
func (h Header) PPTPType() uint16  { return binary.BigEndian.Uint16(h[PPTPTypeOffset:]) }
func (h Header) Magic() uint32     { return binary.BigEndian.Uint32(h[MagicOffset:]) }
func (h Header) CtrlType() MsgType { return MsgType(binary.BigEndian.Uint16(h[CtrlTypeOffset:])) }
func (h Header) Reserved0() uint16 { return binary.BigEndian.Uint16(h[Reserved0Offset:]) }

// PeekHeader validates the header at the start of b and returns the message
// length and type. It needs only HeaderLen bytes, so a stream reassembler
// can call it before the rest of the message has arrived. Checks, in order:
// ErrShort, ErrBadMagic, ErrNotControl, ErrUnknownType, ErrBadLength.
func PeekHeader(b []byte) (length int, t MsgType, err error) {
	if len(b) < HeaderLen {
		return 0, 0, ErrShort
	}
	h := Header(b)
	if h.Magic() != MagicCookie {
		return 0, 0, ErrBadMagic
	}
	if h.PPTPType() != PPTPTypeControl {
		return 0, 0, ErrNotControl
	}
	t = h.CtrlType()
	if !t.Known() {
		return 0, t, ErrUnknownType
	}
	length = int(h.Length())
	if length != t.Len() {
		return length, t, ErrBadLength
	}
	return length, t, nil
}

// Message is one decoded control message.
type Message interface {
	Type() MsgType
	// Append appends the full message, header included, to b.
	Append(b []byte) []byte
}

// Decode decodes exactly one complete control message. len(b) must equal
// the message's fixed length.
func Decode(b []byte) (Message, error) {
	length, t, err := PeekHeader(b)
	if err != nil {
		return nil, err
	}
	if len(b) < length {
		return nil, ErrShort
	}
	if len(b) > length {
		return nil, ErrBadLength
	}
	var m interface {
		Message
		decode(b []byte)
	}
	switch t {
	case StartCtrlConnRequest:
		m = new(SCCRQ)
	case StartCtrlConnReply:
		m = new(SCCRP)
	case StopCtrlConnRequest:
		m = new(StopCCRQ)
	case StopCtrlConnReply:
		m = new(StopCCRP)
	case EchoRequest:
		m = new(EchoRQ)
	case EchoReply:
		m = new(EchoRP)
	case OutgoingCallRequest:
		m = new(OCRQ)
	case OutgoingCallReply:
		m = new(OCRP)
	case IncomingCallRequest:
		m = new(ICRQ)
	case IncomingCallReply:
		m = new(ICRP)
	case IncomingCallConnected:
		m = new(ICCN)
	case CallClearRequest:
		m = new(CCRQ)
	case CallDisconnectNotify:
		m = new(CDN)
	case WANErrorNotify:
		m = new(WEN)
	case SetLinkInfo:
		m = new(SLI)
	}
	m.decode(b)
	return m, nil
}

// appendHeader appends the 12-byte header of a message of type t.
func appendHeader(b []byte, t MsgType) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(t.Len()))
	b = binary.BigEndian.AppendUint16(b, PPTPTypeControl)
	b = binary.BigEndian.AppendUint32(b, MagicCookie)
	b = binary.BigEndian.AppendUint16(b, uint16(t))
	return binary.BigEndian.AppendUint16(b, 0)
}

func u16(b []byte, off int) uint16 { return binary.BigEndian.Uint16(b[off:]) }
func u32(b []byte, off int) uint32 { return binary.BigEndian.Uint32(b[off:]) }

// str reads a fixed-size, NUL-padded string field. Only trailing NULs are
// removed, so Append restores the field byte for byte.
func str(b []byte, off, n int) string {
	f := b[off : off+n]
	end := n
	for end > 0 && f[end-1] == 0 {
		end--
	}
	return string(f[:end])
}

// appendStr appends s as a NUL-padded field of n bytes, truncating a
// longer s.
func appendStr(b []byte, s string, n int) []byte {
	if len(s) > n {
		s = s[:n]
	}
	b = append(b, s...)
	for i := len(s); i < n; i++ {
		b = append(b, 0)
	}
	return b
}

func zeros(b []byte, n int) []byte {
	for range n {
		b = append(b, 0)
	}
	return b
}
