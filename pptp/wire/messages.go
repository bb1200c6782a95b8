package wire

import "encoding/binary"

// Result and error codes of RFC 2637 §2.
const (
	// Start-Control-Connection-Reply Result Code.
	SCCRPResultOK             uint8 = 1
	SCCRPResultGeneralError   uint8 = 2
	SCCRPResultAlreadyExists  uint8 = 3
	SCCRPResultNotAuthorized  uint8 = 4
	SCCRPResultBadProtocolVer uint8 = 5

	// Stop-Control-Connection-Request Reason.
	StopReasonNone          uint8 = 1
	StopReasonStopProtocol  uint8 = 2
	StopReasonLocalShutdown uint8 = 3

	// Stop-Control-Connection-Reply Result Code.
	StopCCRPResultOK           uint8 = 1
	StopCCRPResultGeneralError uint8 = 2

	// Echo-Reply Result Code.
	EchoRPResultOK           uint8 = 1
	EchoRPResultGeneralError uint8 = 2

	// Outgoing-Call-Reply Result Code.
	OCRPResultConnected    uint8 = 1
	OCRPResultGeneralError uint8 = 2
	OCRPResultNoCarrier    uint8 = 3
	OCRPResultBusy         uint8 = 4
	OCRPResultNoDialTone   uint8 = 5
	OCRPResultTimeout      uint8 = 6
	OCRPResultDoNotAccept  uint8 = 7

	// Incoming-Call-Reply Result Code.
	ICRPResultConnect      uint8 = 1
	ICRPResultGeneralError uint8 = 2
	ICRPResultDoNotAccept  uint8 = 3

	// Call-Disconnect-Notify Result Code.
	CDNResultLostCarrier   uint8 = 1
	CDNResultGeneralError  uint8 = 2
	CDNResultAdminShutdown uint8 = 3
	CDNResultRequest       uint8 = 4

	// General Error Codes (the Error Code byte after a General Error).
	ErrorNone         uint8 = 0
	ErrorNotConnected uint8 = 1
	ErrorBadFormat    uint8 = 2
	ErrorBadValue     uint8 = 3
	ErrorNoResource   uint8 = 4
	ErrorBadCallID    uint8 = 5
	ErrorPACError     uint8 = 6
)

// Capabilities and types.
const (
	ProtocolVersion uint16 = 0x0100 // version 1, revision 0

	FramingAsync uint32 = 1
	FramingSync  uint32 = 2

	BearerAnalog  uint32 = 1
	BearerDigital uint32 = 2
)

// Fixed string field sizes.
const (
	HostnameLen    = 64
	VendorLen      = 64
	PhoneNumberLen = 64
	SubaddressLen  = 64
	CallStatsLen   = 128
)

// SCCRQ is a Start-Control-Connection-Request (RFC 2637 §2.1), 156 bytes:
// header; Protocol Version(2) @12; Reserved1(2) @14; Framing
// Capabilities(4) @16; Bearer Capabilities(4) @20; Maximum Channels(2) @24;
// Firmware Revision(2) @26; Host Name(64) @28; Vendor String(64) @92.
type SCCRQ struct {
	ProtocolVersion  uint16
	FramingCaps      uint32
	BearerCaps       uint32
	MaxChannels      uint16
	FirmwareRevision uint16
	Hostname         string
	Vendor           string
}

func (*SCCRQ) Type() MsgType { return StartCtrlConnRequest }
func (m *SCCRQ) decode(b []byte) {
	m.ProtocolVersion = u16(b, 12)
	m.FramingCaps, m.BearerCaps = u32(b, 16), u32(b, 20)
	m.MaxChannels, m.FirmwareRevision = u16(b, 24), u16(b, 26)
	m.Hostname, m.Vendor = str(b, 28, HostnameLen), str(b, 92, VendorLen)
}
func (m *SCCRQ) Append(b []byte) []byte {
	b = appendHeader(b, m.Type())
	b = binary.BigEndian.AppendUint16(b, m.ProtocolVersion)
	b = zeros(b, 2)
	b = binary.BigEndian.AppendUint32(b, m.FramingCaps)
	b = binary.BigEndian.AppendUint32(b, m.BearerCaps)
	b = binary.BigEndian.AppendUint16(b, m.MaxChannels)
	b = binary.BigEndian.AppendUint16(b, m.FirmwareRevision)
	b = appendStr(b, m.Hostname, HostnameLen)
	return appendStr(b, m.Vendor, VendorLen)
}

// SCCRP is a Start-Control-Connection-Reply (RFC 2637 §2.2), 156 bytes:
// header; Protocol Version(2) @12; Result Code(1) @14; Error Code(1) @15;
// then as SCCRQ from @16.
type SCCRP struct {
	ProtocolVersion  uint16
	Result, Error    uint8
	FramingCaps      uint32
	BearerCaps       uint32
	MaxChannels      uint16
	FirmwareRevision uint16
	Hostname         string
	Vendor           string
}

func (*SCCRP) Type() MsgType { return StartCtrlConnReply }
func (m *SCCRP) decode(b []byte) {
	m.ProtocolVersion = u16(b, 12)
	m.Result, m.Error = b[14], b[15]
	m.FramingCaps, m.BearerCaps = u32(b, 16), u32(b, 20)
	m.MaxChannels, m.FirmwareRevision = u16(b, 24), u16(b, 26)
	m.Hostname, m.Vendor = str(b, 28, HostnameLen), str(b, 92, VendorLen)
}
func (m *SCCRP) Append(b []byte) []byte {
	b = appendHeader(b, m.Type())
	b = binary.BigEndian.AppendUint16(b, m.ProtocolVersion)
	b = append(b, m.Result, m.Error)
	b = binary.BigEndian.AppendUint32(b, m.FramingCaps)
	b = binary.BigEndian.AppendUint32(b, m.BearerCaps)
	b = binary.BigEndian.AppendUint16(b, m.MaxChannels)
	b = binary.BigEndian.AppendUint16(b, m.FirmwareRevision)
	b = appendStr(b, m.Hostname, HostnameLen)
	return appendStr(b, m.Vendor, VendorLen)
}

// StopCCRQ is a Stop-Control-Connection-Request (RFC 2637 §2.3), 16 bytes:
// header; Reason(1) @12; Reserved1(1) @13; Reserved2(2) @14.
type StopCCRQ struct {
	Reason uint8
}

func (*StopCCRQ) Type() MsgType     { return StopCtrlConnRequest }
func (m *StopCCRQ) decode(b []byte) { m.Reason = b[12] }
func (m *StopCCRQ) Append(b []byte) []byte {
	b = appendHeader(b, m.Type())
	return append(b, m.Reason, 0, 0, 0)
}

// StopCCRP is a Stop-Control-Connection-Reply (RFC 2637 §2.4), 16 bytes:
// header; Result Code(1) @12; Error Code(1) @13; Reserved1(2) @14.
type StopCCRP struct {
	Result, Error uint8
}

func (*StopCCRP) Type() MsgType     { return StopCtrlConnReply }
func (m *StopCCRP) decode(b []byte) { m.Result, m.Error = b[12], b[13] }
func (m *StopCCRP) Append(b []byte) []byte {
	b = appendHeader(b, m.Type())
	return append(b, m.Result, m.Error, 0, 0)
}

// EchoRQ is an Echo-Request (RFC 2637 §2.5), 16 bytes: header;
// Identifier(4) @12.
type EchoRQ struct {
	ID uint32
}

func (*EchoRQ) Type() MsgType     { return EchoRequest }
func (m *EchoRQ) decode(b []byte) { m.ID = u32(b, 12) }
func (m *EchoRQ) Append(b []byte) []byte {
	return binary.BigEndian.AppendUint32(appendHeader(b, m.Type()), m.ID)
}

// EchoRP is an Echo-Reply (RFC 2637 §2.6), 20 bytes: header;
// Identifier(4) @12; Result Code(1) @16; Error Code(1) @17; Reserved1(2) @18.
type EchoRP struct {
	ID            uint32
	Result, Error uint8
}

func (*EchoRP) Type() MsgType { return EchoReply }
func (m *EchoRP) decode(b []byte) {
	m.ID = u32(b, 12)
	m.Result, m.Error = b[16], b[17]
}
func (m *EchoRP) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(appendHeader(b, m.Type()), m.ID)
	return append(b, m.Result, m.Error, 0, 0)
}

// OCRQ is an Outgoing-Call-Request (RFC 2637 §2.7), 168 bytes: header;
// Call ID(2) @12; Call Serial Number(2) @14; Minimum BPS(4) @16; Maximum
// BPS(4) @20; Bearer Type(4) @24; Framing Type(4) @28; Packet Recv. Window
// Size(2) @32; Packet Processing Delay(2) @34; Phone Number Length(2) @36;
// Reserved1(2) @38; Phone Number(64) @40; Subaddress(64) @104.
type OCRQ struct {
	CallID, CallSerial uint16
	MinBPS, MaxBPS     uint32
	BearerType         uint32
	FramingType        uint32
	RecvWindow         uint16
	ProcessingDelay    uint16
	PhoneNumberLen     uint16 // sent as is; set it to len(PhoneNumber)
	PhoneNumber        string
	Subaddress         string
}

func (*OCRQ) Type() MsgType { return OutgoingCallRequest }
func (m *OCRQ) decode(b []byte) {
	m.CallID, m.CallSerial = u16(b, 12), u16(b, 14)
	m.MinBPS, m.MaxBPS = u32(b, 16), u32(b, 20)
	m.BearerType, m.FramingType = u32(b, 24), u32(b, 28)
	m.RecvWindow, m.ProcessingDelay = u16(b, 32), u16(b, 34)
	m.PhoneNumberLen = u16(b, 36)
	m.PhoneNumber, m.Subaddress = str(b, 40, PhoneNumberLen), str(b, 104, SubaddressLen)
}
func (m *OCRQ) Append(b []byte) []byte {
	b = appendHeader(b, m.Type())
	b = binary.BigEndian.AppendUint16(b, m.CallID)
	b = binary.BigEndian.AppendUint16(b, m.CallSerial)
	b = binary.BigEndian.AppendUint32(b, m.MinBPS)
	b = binary.BigEndian.AppendUint32(b, m.MaxBPS)
	b = binary.BigEndian.AppendUint32(b, m.BearerType)
	b = binary.BigEndian.AppendUint32(b, m.FramingType)
	b = binary.BigEndian.AppendUint16(b, m.RecvWindow)
	b = binary.BigEndian.AppendUint16(b, m.ProcessingDelay)
	b = binary.BigEndian.AppendUint16(b, m.PhoneNumberLen)
	b = zeros(b, 2)
	b = appendStr(b, m.PhoneNumber, PhoneNumberLen)
	return appendStr(b, m.Subaddress, SubaddressLen)
}

// OCRP is an Outgoing-Call-Reply (RFC 2637 §2.8), 32 bytes: header;
// Call ID(2) @12; Peer's Call ID(2) @14; Result Code(1) @16; Error Code(1)
// @17; Cause Code(2) @18; Connect Speed(4) @20; Packet Recv. Window Size(2)
// @24; Packet Processing Delay(2) @26; Physical Channel ID(4) @28.
type OCRP struct {
	CallID, PeerCallID uint16
	Result, Error      uint8
	Cause              uint16
	ConnectSpeed       uint32
	RecvWindow         uint16
	ProcessingDelay    uint16
	PhysChannelID      uint32
}

func (*OCRP) Type() MsgType { return OutgoingCallReply }
func (m *OCRP) decode(b []byte) {
	m.CallID, m.PeerCallID = u16(b, 12), u16(b, 14)
	m.Result, m.Error, m.Cause = b[16], b[17], u16(b, 18)
	m.ConnectSpeed = u32(b, 20)
	m.RecvWindow, m.ProcessingDelay = u16(b, 24), u16(b, 26)
	m.PhysChannelID = u32(b, 28)
}
func (m *OCRP) Append(b []byte) []byte {
	b = appendHeader(b, m.Type())
	b = binary.BigEndian.AppendUint16(b, m.CallID)
	b = binary.BigEndian.AppendUint16(b, m.PeerCallID)
	b = append(b, m.Result, m.Error)
	b = binary.BigEndian.AppendUint16(b, m.Cause)
	b = binary.BigEndian.AppendUint32(b, m.ConnectSpeed)
	b = binary.BigEndian.AppendUint16(b, m.RecvWindow)
	b = binary.BigEndian.AppendUint16(b, m.ProcessingDelay)
	return binary.BigEndian.AppendUint32(b, m.PhysChannelID)
}

// ICRQ is an Incoming-Call-Request (RFC 2637 §2.9), 220 bytes: header;
// Call ID(2) @12; Call Serial Number(2) @14; Call Bearer Type(4) @16;
// Physical Channel ID(4) @20; Dialed Number Length(2) @24; Dialing Number
// Length(2) @26; Dialed Number(64) @28; Dialing Number(64) @92;
// Subaddress(64) @156.
type ICRQ struct {
	CallID, CallSerial uint16
	BearerType         uint32
	PhysChannelID      uint32
	DialedNumberLen    uint16 // sent as is
	DialingNumberLen   uint16 // sent as is
	DialedNumber       string
	DialingNumber      string
	Subaddress         string
}

func (*ICRQ) Type() MsgType { return IncomingCallRequest }
func (m *ICRQ) decode(b []byte) {
	m.CallID, m.CallSerial = u16(b, 12), u16(b, 14)
	m.BearerType, m.PhysChannelID = u32(b, 16), u32(b, 20)
	m.DialedNumberLen, m.DialingNumberLen = u16(b, 24), u16(b, 26)
	m.DialedNumber = str(b, 28, PhoneNumberLen)
	m.DialingNumber = str(b, 92, PhoneNumberLen)
	m.Subaddress = str(b, 156, SubaddressLen)
}
func (m *ICRQ) Append(b []byte) []byte {
	b = appendHeader(b, m.Type())
	b = binary.BigEndian.AppendUint16(b, m.CallID)
	b = binary.BigEndian.AppendUint16(b, m.CallSerial)
	b = binary.BigEndian.AppendUint32(b, m.BearerType)
	b = binary.BigEndian.AppendUint32(b, m.PhysChannelID)
	b = binary.BigEndian.AppendUint16(b, m.DialedNumberLen)
	b = binary.BigEndian.AppendUint16(b, m.DialingNumberLen)
	b = appendStr(b, m.DialedNumber, PhoneNumberLen)
	b = appendStr(b, m.DialingNumber, PhoneNumberLen)
	return appendStr(b, m.Subaddress, SubaddressLen)
}

// ICRP is an Incoming-Call-Reply (RFC 2637 §2.10), 24 bytes: header;
// Call ID(2) @12; Peer's Call ID(2) @14; Result Code(1) @16; Error Code(1)
// @17; Packet Recv. Window Size(2) @18; Packet Transmit Delay(2) @20;
// Reserved1(2) @22.
type ICRP struct {
	CallID, PeerCallID uint16
	Result, Error      uint8
	RecvWindow         uint16
	TransmitDelay      uint16
}

func (*ICRP) Type() MsgType { return IncomingCallReply }
func (m *ICRP) decode(b []byte) {
	m.CallID, m.PeerCallID = u16(b, 12), u16(b, 14)
	m.Result, m.Error = b[16], b[17]
	m.RecvWindow, m.TransmitDelay = u16(b, 18), u16(b, 20)
}
func (m *ICRP) Append(b []byte) []byte {
	b = appendHeader(b, m.Type())
	b = binary.BigEndian.AppendUint16(b, m.CallID)
	b = binary.BigEndian.AppendUint16(b, m.PeerCallID)
	b = append(b, m.Result, m.Error)
	b = binary.BigEndian.AppendUint16(b, m.RecvWindow)
	b = binary.BigEndian.AppendUint16(b, m.TransmitDelay)
	return zeros(b, 2)
}

// ICCN is an Incoming-Call-Connected (RFC 2637 §2.11), 28 bytes: header;
// Peer's Call ID(2) @12; Reserved1(2) @14; Connect Speed(4) @16; Packet
// Recv. Window Size(2) @20; Packet Transmit Delay(2) @22; Framing Type(4) @24.
type ICCN struct {
	PeerCallID    uint16
	ConnectSpeed  uint32
	RecvWindow    uint16
	TransmitDelay uint16
	FramingType   uint32
}

func (*ICCN) Type() MsgType { return IncomingCallConnected }
func (m *ICCN) decode(b []byte) {
	m.PeerCallID = u16(b, 12)
	m.ConnectSpeed = u32(b, 16)
	m.RecvWindow, m.TransmitDelay = u16(b, 20), u16(b, 22)
	m.FramingType = u32(b, 24)
}
func (m *ICCN) Append(b []byte) []byte {
	b = appendHeader(b, m.Type())
	b = binary.BigEndian.AppendUint16(b, m.PeerCallID)
	b = zeros(b, 2)
	b = binary.BigEndian.AppendUint32(b, m.ConnectSpeed)
	b = binary.BigEndian.AppendUint16(b, m.RecvWindow)
	b = binary.BigEndian.AppendUint16(b, m.TransmitDelay)
	return binary.BigEndian.AppendUint32(b, m.FramingType)
}

// CCRQ is a Call-Clear-Request (RFC 2637 §2.12), 16 bytes: header;
// Call ID(2) @12; Reserved1(2) @14. Call ID is the PNS's own ID.
type CCRQ struct {
	CallID uint16
}

func (*CCRQ) Type() MsgType     { return CallClearRequest }
func (m *CCRQ) decode(b []byte) { m.CallID = u16(b, 12) }
func (m *CCRQ) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(appendHeader(b, m.Type()), m.CallID)
	return zeros(b, 2)
}

// CDN is a Call-Disconnect-Notify (RFC 2637 §2.13), 148 bytes: header;
// Call ID(2) @12; Result Code(1) @14; Error Code(1) @15; Cause Code(2) @16;
// Reserved1(2) @18; Call Statistics(128) @20. Call ID is the PAC's own ID.
type CDN struct {
	CallID        uint16
	Result, Error uint8
	Cause         uint16
	CallStats     string
}

func (*CDN) Type() MsgType { return CallDisconnectNotify }
func (m *CDN) decode(b []byte) {
	m.CallID = u16(b, 12)
	m.Result, m.Error, m.Cause = b[14], b[15], u16(b, 16)
	m.CallStats = str(b, 20, CallStatsLen)
}
func (m *CDN) Append(b []byte) []byte {
	b = appendHeader(b, m.Type())
	b = binary.BigEndian.AppendUint16(b, m.CallID)
	b = append(b, m.Result, m.Error)
	b = binary.BigEndian.AppendUint16(b, m.Cause)
	b = zeros(b, 2)
	return appendStr(b, m.CallStats, CallStatsLen)
}

// WEN is a WAN-Error-Notify (RFC 2637 §2.14), 40 bytes: header; Peer's
// Call ID(2) @12; Reserved1(2) @14; CRC Errors(4) @16; Framing Errors(4)
// @20; Hardware Overruns(4) @24; Buffer Overruns(4) @28; Time-out Errors(4)
// @32; Alignment Errors(4) @36.
type WEN struct {
	PeerCallID       uint16
	CRCErrors        uint32
	FramingErrors    uint32
	HardwareOverruns uint32
	BufferOverruns   uint32
	TimeoutErrors    uint32
	AlignmentErrors  uint32
}

func (*WEN) Type() MsgType { return WANErrorNotify }
func (m *WEN) decode(b []byte) {
	m.PeerCallID = u16(b, 12)
	m.CRCErrors, m.FramingErrors = u32(b, 16), u32(b, 20)
	m.HardwareOverruns, m.BufferOverruns = u32(b, 24), u32(b, 28)
	m.TimeoutErrors, m.AlignmentErrors = u32(b, 32), u32(b, 36)
}
func (m *WEN) Append(b []byte) []byte {
	b = appendHeader(b, m.Type())
	b = binary.BigEndian.AppendUint16(b, m.PeerCallID)
	b = zeros(b, 2)
	for _, v := range [...]uint32{m.CRCErrors, m.FramingErrors, m.HardwareOverruns,
		m.BufferOverruns, m.TimeoutErrors, m.AlignmentErrors} {
		b = binary.BigEndian.AppendUint32(b, v)
	}
	return b
}

// SLI is a Set-Link-Info (RFC 2637 §2.15), 24 bytes: header; Peer's Call
// ID(2) @12; Reserved1(2) @14; Send ACCM(4) @16; Receive ACCM(4) @20.
type SLI struct {
	PeerCallID uint16
	SendACCM   uint32
	RecvACCM   uint32
}

func (*SLI) Type() MsgType { return SetLinkInfo }
func (m *SLI) decode(b []byte) {
	m.PeerCallID = u16(b, 12)
	m.SendACCM, m.RecvACCM = u32(b, 16), u32(b, 20)
}
func (m *SLI) Append(b []byte) []byte {
	b = appendHeader(b, m.Type())
	b = binary.BigEndian.AppendUint16(b, m.PeerCallID)
	b = zeros(b, 2)
	b = binary.BigEndian.AppendUint32(b, m.SendACCM)
	return binary.BigEndian.AppendUint32(b, m.RecvACCM)
}
