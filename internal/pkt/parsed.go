package pkt

// Parsed is a packet decoded once: the flat summary that every later step
// reads instead of parsing the headers again (as tailscale's net/packet
// does). Parse fills it without allocating and without an error return: a
// packet it cannot read has Err set and the fields it could not reach left
// zero.
type Parsed struct {
	// Err is "" for a packet whose IPv4 header (and, unless it is a
	// fragment, first or not, transport header) is whole and valid;
	// otherwise a constant reason: ErrIPv4 or ErrTransport.
	Err string

	Src, Dst [4]byte
	Proto    uint8 // IPv4 protocol number
	IPLen    int   // IPv4 header length (bytes)
	TotalLen int   // IPv4 Total Length: the packet's bytes
	Fragment bool  // a fragment (MF set or offset not zero)

	// Transport, for TCP, UDP and ICMP, when not a fragment: ports (the
	// identifier of an ICMP echo or echo reply, 0 for other ICMP), TCP
	// flags and sequence number, and where the transport payload lies in
	// the packet.
	SrcPort, DstPort uint16
	TCPFlags         uint8
	TCPSeq           uint32
	PayloadOff       int // offset of the transport payload; for other protocols the IP payload
	PayloadEnd       int // end of it: Total Length, or for UDP the end its Length gives
}

// Reasons of Parsed.Err.
const (
	ErrIPv4      = "ip_malformed"        // no whole IPv4 header, or Total Length beyond the bytes
	ErrTransport = "transport_malformed" // a TCP/UDP/ICMP header that does not fit (for TCP: bad data offset)
)

// Parse decodes the IPv4 packet b into p.
func (p *Parsed) Parse(b []byte) {
	*p = Parsed{}
	ip := IPv4(b)
	if !ip.IsValid(len(b)) {
		p.Err = ErrIPv4
		return
	}
	p.Src, p.Dst = ip.SourceAddress(), ip.DestinationAddress()
	p.Proto = ip.Protocol()
	p.IPLen = ip.HeaderLength()
	p.TotalLen = int(ip.TotalLength())
	p.Fragment = ip.IsFragment()
	p.PayloadOff, p.PayloadEnd = p.IPLen, p.TotalLen
	if p.Fragment {
		return
	}
	l4 := b[p.IPLen:p.TotalLen]
	switch p.Proto {
	case IPv4ProtocolTCP:
		t := TCP(l4)
		if !t.IsValid() {
			p.Err = ErrTransport
			return
		}
		p.SrcPort, p.DstPort = t.SourcePort(), t.DestinationPort()
		p.TCPFlags, p.TCPSeq = t.Flags(), t.SequenceNumber()
		p.PayloadOff = p.IPLen + t.DataOffset()
	case IPv4ProtocolUDP:
		u := UDP(l4)
		if !u.IsValid() {
			p.Err = ErrTransport
			return
		}
		p.SrcPort, p.DstPort = u.SourcePort(), u.DestinationPort()
		p.PayloadOff = p.IPLen + UDPMinimumSize
		p.PayloadEnd = p.IPLen + int(u.Length())
	case IPv4ProtocolICMP:
		c := ICMPv4(l4)
		if !c.IsValid() {
			p.Err = ErrTransport
			return
		}
		if t := c.Type(); t == ICMPv4Echo || t == ICMPv4EchoReply {
			p.SrcPort, p.DstPort = c.Ident(), c.Ident()
		}
		p.PayloadOff = p.IPLen + ICMPv4MinimumSize
	}
}

// IPv4 returns the packet's IPv4 view (b must be the parsed packet).
func (p *Parsed) IPv4(b []byte) IPv4 { return IPv4(b[:p.TotalLen]) }

// Transport returns the bytes from the transport header to the end of the
// packet (the IP payload).
func (p *Parsed) Transport(b []byte) []byte { return b[p.IPLen:p.TotalLen] }

// Payload returns the transport payload (for GRE and others, the IP
// payload).
func (p *Parsed) Payload(b []byte) []byte { return b[p.PayloadOff:p.PayloadEnd] }
