// Package dhcpinform answers the DHCPINFORM that Windows PPP clients send
// over the tunnel (UDP 68 -> 67) with a DHCPACK carrying split-tunnel routes:
// option 121 (RFC 3442 classless static routes) and option 249 (Microsoft's
// pre-standard copy of it, same encoding), plus optional DNS servers (6) and
// domain name (15).
//
// The way of a request:
//  1. Parse checks the IPv4 header (no options beyond IHL, not fragmented),
//     the UDP header (68 -> 67, lengths), the BOOTP request and magic cookie,
//     and finds option 53 = DHCPINFORM;
//  2. Build writes a BOOTREPLY with the same xid/flags/ciaddr/chaddr, the
//     options, pads the BOOTP message to 300 octets, and wraps it in UDP
//     (67 -> 68) and IPv4 from the server's address to ciaddr (or, when
//     ciaddr is 0, the request's source address), checksums included.
//
// It owns the DHCPINFORM/DHCPACK formats (on internal/pkt's IPv4 and UDP
// views). It must not know sessions, PPP or the server's configuration: the
// caller passes what to answer with.
package dhcpinform

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"pptpgw/internal/pkt"
)

// Ports and message types.
const (
	ServerPort = 67
	ClientPort = 68

	MsgInform = 8
	MsgAck    = 5

	OptPad          = 0
	OptSubnetMask   = 1
	OptDNS          = 6
	OptDomainName   = 15
	OptMessageType  = 53
	OptServerID     = 54
	OptParamRequest = 55
	OptClassless    = 121 // RFC 3442
	OptMSClassless  = 249 // Microsoft classless static routes
	OptEnd          = 255
)

// BOOTP fixed header (RFC 2131 §2), 236 octets, then the magic cookie:
//
//	op(1) htype(1) hlen(1) hops(1) | xid(4) | secs(2) flags(2) |
//	ciaddr(4) | yiaddr(4) | siaddr(4) | giaddr(4) | chaddr(16) |
//	sname(64) | file(128) | magic cookie 99.130.83.99 (4) | options...
const (
	bootpLen     = 236
	offOp        = 0
	offHtype     = 1
	offHlen      = 2
	offXid       = 4
	offFlags     = 10
	offCiaddr    = 12
	offYiaddr    = 16
	offGiaddr    = 24
	offChaddr    = 28
	offCookie    = bootpLen
	minBootpSize = 300 // BOOTP messages are padded to at least this (RFC 1542 §2.1)
)

var magicCookie = [4]byte{99, 130, 83, 99}

// Parse errors (constant reasons for counters).
var (
	ErrNotIPv4     = errors.New("dhcpinform: not an IPv4 packet")
	ErrIPHeader    = errors.New("dhcpinform: bad IPv4 header or length")
	ErrFragment    = errors.New("dhcpinform: fragmented packet")
	ErrNotUDP      = errors.New("dhcpinform: not UDP")
	ErrUDPHeader   = errors.New("dhcpinform: bad UDP header or length")
	ErrPorts       = errors.New("dhcpinform: not UDP 68 -> 67")
	ErrBOOTP       = errors.New("dhcpinform: not a BOOTREQUEST with the DHCP magic cookie")
	ErrOptions     = errors.New("dhcpinform: malformed DHCP options")
	ErrNotInform   = errors.New("dhcpinform: not a DHCPINFORM")
	ErrNoAddress   = errors.New("dhcpinform: server address is not IPv4")
	ErrReplyTooBig = errors.New("dhcpinform: reply options exceed the limit")
)

// Inform is a parsed DHCPINFORM.
type Inform struct {
	Src, Dst   netip.Addr // IPv4 header addresses
	Xid        uint32
	Flags      uint16
	Ciaddr     netip.Addr
	Giaddr     netip.Addr
	Htype      byte
	Hlen       byte
	Chaddr     [16]byte
	ParamReq   []byte // option 55, if present (a copy)
	MaxMsgSize uint16 // option 57, 0 if absent
}

// Requested reports whether the client listed option code in option 55
// (true when it sent no list).
func (in *Inform) Requested(code byte) bool {
	if in.ParamReq == nil {
		return true
	}
	for _, c := range in.ParamReq {
		if c == code {
			return true
		}
	}
	return false
}

func addr4(b []byte) netip.Addr { return netip.AddrFrom4([4]byte(b[:4])) }

// Parse decodes an IPv4/UDP DHCPINFORM. It never panics.
func Parse(b []byte) (*Inform, error) {
	ip := pkt.IPv4(b)
	if !ip.IsVersion4() {
		return nil, ErrNotIPv4
	}
	if !ip.IsValid(len(b)) {
		return nil, ErrIPHeader
	}
	if ip.IsFragment() {
		return nil, ErrFragment
	}
	if ip.Protocol() != pkt.IPv4ProtocolUDP {
		return nil, ErrNotUDP
	}
	udp := pkt.UDP(ip.Payload())
	if !udp.IsValid() {
		return nil, ErrUDPHeader
	}
	if udp.SourcePort() != ClientPort || udp.DestinationPort() != ServerPort {
		return nil, ErrPorts
	}
	m := udp.Payload()
	if len(m) < bootpLen+4 || m[offOp] != 1 || [4]byte(m[offCookie:offCookie+4]) != magicCookie {
		return nil, ErrBOOTP
	}
	in := &Inform{
		Src:    netip.AddrFrom4(ip.SourceAddress()),
		Dst:    netip.AddrFrom4(ip.DestinationAddress()),
		Xid:    binary.BigEndian.Uint32(m[offXid:]),
		Flags:  binary.BigEndian.Uint16(m[offFlags:]),
		Ciaddr: addr4(m[offCiaddr:]),
		Giaddr: addr4(m[offGiaddr:]),
		Htype:  m[offHtype],
		Hlen:   m[offHlen],
		Chaddr: [16]byte(m[offChaddr : offChaddr+16]),
	}
	msgType := -1
	opts := m[bootpLen+4:]
	for i := 0; i < len(opts); {
		code := opts[i]
		if code == OptPad {
			i++
			continue
		}
		if code == OptEnd {
			break
		}
		if i+1 >= len(opts) || i+2+int(opts[i+1]) > len(opts) {
			return nil, ErrOptions
		}
		val := opts[i+2 : i+2+int(opts[i+1])]
		switch code {
		case OptMessageType:
			if len(val) != 1 {
				return nil, ErrOptions
			}
			msgType = int(val[0])
		case OptParamRequest:
			in.ParamReq = append(in.ParamReq, val...)
		case 57: // maximum DHCP message size
			if len(val) == 2 {
				in.MaxMsgSize = binary.BigEndian.Uint16(val)
			}
		}
		i += 2 + len(val)
	}
	if msgType != MsgInform {
		return nil, ErrNotInform
	}
	return in, nil
}

// Config is what the server puts in the DHCPACK.
type Config struct {
	ServerIP netip.Addr     // the server's tunnel address: IP source and option 54
	Routes   []netip.Prefix // IPv4 routes for options 121 and 249
	Router   netip.Addr     // next hop of the routes; zero value = ServerIP
	DNS      []netip.Addr   // option 6, IPv4 only; omitted when empty
	Domain   string         // option 15; omitted when empty
}

// EncodeRoutes is the RFC 3442 encoding of routes via router: for each, the
// prefix width, the significant octets of the destination and the router.
// Non-IPv4 prefixes are skipped; host bits are masked off.
func EncodeRoutes(b []byte, routes []netip.Prefix, router netip.Addr) []byte {
	r4 := router.As4()
	for _, p := range routes {
		if !p.Addr().Is4() || !p.IsValid() {
			continue
		}
		p = p.Masked()
		bits := p.Bits()
		a := p.Addr().As4()
		b = append(b, byte(bits))
		b = append(b, a[:(bits+7)/8]...)
		b = append(b, r4[:]...)
	}
	return b
}

// DecodeRoutes parses an RFC 3442 option value (for tests and clients).
func DecodeRoutes(v []byte) (routes []netip.Prefix, routers []netip.Addr, err error) {
	for i := 0; i < len(v); {
		bits := int(v[i])
		n := (bits + 7) / 8
		if bits > 32 || i+1+n+4 > len(v) {
			return nil, nil, ErrOptions
		}
		var a [4]byte
		copy(a[:], v[i+1:i+1+n])
		p := netip.PrefixFrom(netip.AddrFrom4(a), bits).Masked()
		routes = append(routes, p)
		routers = append(routers, netip.AddrFrom4([4]byte(v[i+1+n:i+1+n+4])))
		i += 1 + n + 4
	}
	return routes, routers, nil
}

// appendOption appends code/value, split into several instances when the
// value is longer than 255 octets (RFC 3396; RFC 3442 §2 allows it).
func appendOption(b []byte, code byte, val []byte) []byte {
	for {
		n := min(len(val), 255)
		b = append(b, code, byte(n))
		b = append(b, val[:n]...)
		val = val[n:]
		if len(val) == 0 {
			return b
		}
	}
}

// maxOptions bounds the reply's options (the reply must fit a PPP frame).
const maxOptions = 1000

// Build returns the IPv4 packet carrying the DHCPACK for in.
func Build(in *Inform, cfg Config) ([]byte, error) {
	if !cfg.ServerIP.Is4() {
		return nil, ErrNoAddress
	}
	router := cfg.Router
	if !router.Is4() {
		router = cfg.ServerIP
	}
	var opts []byte
	opts = append(opts, OptMessageType, 1, MsgAck)
	sid := cfg.ServerIP.As4()
	opts = appendOption(opts, OptServerID, sid[:])
	if len(cfg.Routes) > 0 {
		rv := EncodeRoutes(nil, cfg.Routes, router)
		if len(rv) > 0 {
			opts = appendOption(opts, OptClassless, rv)
			opts = appendOption(opts, OptMSClassless, rv)
		}
	}
	var dns []byte
	for _, d := range cfg.DNS {
		if d.Is4() {
			a := d.As4()
			dns = append(dns, a[:]...)
		}
	}
	if len(dns) > 0 {
		opts = appendOption(opts, OptDNS, dns)
	}
	if cfg.Domain != "" {
		opts = appendOption(opts, OptDomainName, []byte(cfg.Domain))
	}
	opts = append(opts, OptEnd)
	if len(opts) > maxOptions {
		return nil, ErrReplyTooBig
	}

	msgLen := max(bootpLen+4+len(opts), minBootpSize)
	total := pkt.IPv4MinimumSize + pkt.UDPMinimumSize + msgLen
	b := make([]byte, total)

	dst := in.Ciaddr
	if !dst.IsValid() || dst.IsUnspecified() {
		dst = in.Src
	}
	if !dst.Is4() || dst.IsUnspecified() {
		dst = netip.AddrFrom4([4]byte{255, 255, 255, 255})
	}
	src4, dst4 := cfg.ServerIP.As4(), dst.As4()
	// IPv4 header
	ip := pkt.IPv4(b[:pkt.IPv4MinimumSize])
	ip[pkt.IPv4VersIHLOffset] = 0x45
	binary.BigEndian.PutUint16(ip[pkt.IPv4TotalLenOffset:], uint16(total))
	ip[pkt.IPv4TTLOffset] = 64
	ip[pkt.IPv4ProtocolOffset] = pkt.IPv4ProtocolUDP
	copy(ip[pkt.IPv4SrcAddrOffset:], src4[:])
	copy(ip[pkt.IPv4DstAddrOffset:], dst4[:])
	ip.SetChecksum(ip.CalculateChecksum())

	// BOOTP reply
	m := b[pkt.IPv4MinimumSize+pkt.UDPMinimumSize:]
	m[offOp] = 2
	m[offHtype] = in.Htype
	// RFC 2131 section 2: chaddr is 16 bytes; a longer hlen echoed as it
	// came would make the reply malformed.
	m[offHlen] = min(in.Hlen, 16)
	binary.BigEndian.PutUint32(m[offXid:], in.Xid)
	binary.BigEndian.PutUint16(m[offFlags:], in.Flags)
	if in.Ciaddr.Is4() {
		c := in.Ciaddr.As4()
		copy(m[offCiaddr:], c[:])
	}
	if in.Giaddr.Is4() {
		g := in.Giaddr.As4()
		copy(m[offGiaddr:], g[:])
	}
	copy(m[offChaddr:offChaddr+16], in.Chaddr[:])
	copy(m[offCookie:], magicCookie[:])
	copy(m[bootpLen+4:], opts) // the rest stays zero (pad)

	// UDP header and checksum over the pseudo-header
	udp := pkt.UDP(b[pkt.IPv4MinimumSize:])
	binary.BigEndian.PutUint16(udp[pkt.UDPSrcPortOffset:], ServerPort)
	binary.BigEndian.PutUint16(udp[pkt.UDPDstPortOffset:], ClientPort)
	binary.BigEndian.PutUint16(udp[pkt.UDPLengthOffset:], uint16(len(udp)))
	udp.SetChecksum(udp.CalculateChecksum(src4, dst4))
	return b, nil
}

// Answer returns the DHCPACK for ipPacket when it is a DHCPINFORM; ok is
// false otherwise (the caller forwards or drops the packet as usual).
func Answer(ipPacket []byte, serverIP netip.Addr, routes []netip.Prefix, dns []netip.Addr) (reply []byte, ok bool) {
	r, err := AnswerConfig(ipPacket, Config{ServerIP: serverIP, Routes: routes, DNS: dns})
	return r, err == nil
}

// AnswerConfig is Answer with the full Config and the reason for a refusal.
func AnswerConfig(ipPacket []byte, cfg Config) ([]byte, error) {
	in, err := Parse(ipPacket)
	if err != nil {
		return nil, err
	}
	return Build(in, cfg)
}

// IsDHCPRequest is a cheap pre-filter for the data path: a whole, unfragmented
// IPv4/UDP packet to port 67 from port 68.
func IsDHCPRequest(b []byte) bool {
	var p pkt.Parsed
	p.Parse(b)
	return p.Err == "" && !p.Fragment && p.Proto == pkt.IPv4ProtocolUDP &&
		p.SrcPort == ClientPort && p.DstPort == ServerPort
}
