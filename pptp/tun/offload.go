package tun

import (
	"encoding/binary"
	"errors"

	"golang.org/x/sys/unix"

	"pptpgw/internal/pkt"
)

// Offloads (IFF_VNET_HDR): every packet through the device is preceded by a struct
// virtio_net_hdr. That lets both directions work on TCP "super-packets" of up to 64 KiB
// instead of one MTU-sized packet per system call and per trip through the kernel
// stack:
//
//   - Read (TSO, TUN_F_TSO4|TUN_F_CSUM): the kernel hands over a TCP packet of many
//     segments (or one with only a partial checksum); ReadPacket cuts it into MTU-sized
//     IPv4/TCP packets with full checksums, one per call, like the kernel would have.
//   - Write (GRO in userspace): QueuePacket holds consecutive in-order segments of one
//     TCP flow and Flush writes them as one GSO packet, which the kernel forwards or
//     delivers as a whole (and the receiving TCP acknowledges as a whole).
//
// The layout of struct virtio_net_hdr (native byte order, 10 octets):
//
//	flags(1) gso_type(1) hdr_len(2) gso_size(2) csum_start(2) csum_offset(2)
const vnetHdrLen = 10

type vnetHdr struct {
	flags, gsoType                         uint8
	hdrLen, gsoSize, csumStart, csumOffset uint16
}

func (h *vnetHdr) decode(b []byte) {
	h.flags, h.gsoType = b[0], b[1]
	h.hdrLen = binary.NativeEndian.Uint16(b[2:])
	h.gsoSize = binary.NativeEndian.Uint16(b[4:])
	h.csumStart = binary.NativeEndian.Uint16(b[6:])
	h.csumOffset = binary.NativeEndian.Uint16(b[8:])
}

func (h *vnetHdr) encode(b []byte) {
	b[0], b[1] = h.flags, h.gsoType
	binary.NativeEndian.PutUint16(b[2:], h.hdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.gsoSize)
	binary.NativeEndian.PutUint16(b[6:], h.csumStart)
	binary.NativeEndian.PutUint16(b[8:], h.csumOffset)
}

// maxGROSegs bounds the segments merged into one GSO packet.
const maxGROSegs = 64

// The IPv4 header of a mergeable segment has no options (IHL 5), so its TCP
// header starts here.
const tcpAt = pkt.IPv4MinimumSize

var (
	errBadGSO      = errors.New("tun: malformed offload packet from the kernel")
	errShortBuffer = errors.New("tun: buffer too small for the packet")
)

// setChecksums recomputes the IPv4 header checksum of the packet b (IP header
// length ihl) and the full TCP checksum of its segment. Each field is zeroed
// and its header summed in one pass (CalculateChecksum would sum around it).
func setChecksums(b []byte, ihl int) {
	ip, tcp := pkt.IPv4(b), pkt.TCP(b[ihl:])
	ip.SetChecksum(0)
	ip.SetChecksum(pkt.Checksum(b[:ihl]))
	tcp.SetChecksum(0)
	ph := pkt.PseudoHeaderSum(ip.SourceAddress(), ip.DestinationAddress(), pkt.IPv4ProtocolTCP, uint16(len(tcp)))
	tcp.SetChecksum(^pkt.Sum(tcp, ph))
}

// segmenter cuts one TSO packet from the kernel into MTU-sized packets.
type segmenter struct {
	pkt     []byte // IPv4 + TCP header + payload (in Device.rbuf)
	hl, ihl int    // IP+TCP header length, IP header length
	mss     int
	off     int // payload octets already handed out
	i       int // segments handed out
}

func (s *segmenter) pending() bool { return s.pkt != nil && s.hl+s.off < len(s.pkt) }

// start validates a TCPV4 GSO packet and prepares segmenting it.
func (s *segmenter) start(h *vnetHdr, b []byte) error {
	s.pkt = nil
	// The kernel's Total Length of a GSO packet may be anything: only the
	// headers are checked, against the bytes read.
	ip := pkt.IPv4(b)
	if len(b) < pkt.IPv4MinimumSize+pkt.TCPMinimumSize || !ip.IsVersion4() || ip.Protocol() != pkt.IPv4ProtocolTCP {
		return errBadGSO
	}
	ihl := ip.HeaderLength()
	if ihl < pkt.IPv4MinimumSize || len(b) < ihl+pkt.TCPMinimumSize {
		return errBadGSO
	}
	tcp := pkt.TCP(b[ihl:])
	if !tcp.IsValid() || h.gsoSize == 0 {
		return errBadGSO
	}
	hl := ihl + tcp.DataOffset()
	*s = segmenter{pkt: b, hl: hl, ihl: ihl, mss: int(h.gsoSize)}
	if hl == len(b) { // no payload: one packet
		s.mss = 1
	}
	return nil
}

// next writes the next segment to b and returns its length.
func (s *segmenter) next(b []byte) (int, error) {
	pay := min(s.mss, len(s.pkt)-s.hl-s.off)
	if pay < 0 {
		pay = 0
	}
	n := s.hl + pay
	if len(b) < n {
		s.pkt = nil
		return 0, errShortBuffer
	}
	copy(b, s.pkt[:s.hl])
	copy(b[s.hl:], s.pkt[s.hl+s.off:s.hl+s.off+pay])
	ip, tcp := b[:s.ihl], b[s.ihl:n]
	binary.BigEndian.PutUint16(ip[pkt.IPv4TotalLenOffset:], uint16(n))
	binary.BigEndian.PutUint16(ip[pkt.IPv4IDOffset:], pkt.IPv4(s.pkt).ID()+uint16(s.i))
	binary.BigEndian.PutUint32(tcp[pkt.TCPSeqNumOffset:], pkt.TCP(s.pkt[s.ihl:]).SequenceNumber()+uint32(s.off))
	last := s.hl+s.off+pay >= len(s.pkt)
	if !last {
		tcp[pkt.TCPFlagsOffset] &^= pkt.TCPFlagFin | pkt.TCPFlagPsh
	}
	if s.i > 0 {
		tcp[pkt.TCPFlagsOffset] &^= pkt.TCPFlagCwr
	}
	setChecksums(b[:n], s.ihl)
	s.off += pay
	s.i++
	if last {
		s.pkt = nil
	}
	return n, nil
}

// finishChecksum completes a NEEDS_CSUM packet: the field holds the pseudo-header sum,
// the sum from csum_start on gives the final value.
func finishChecksum(h *vnetHdr, b []byte) bool {
	start, at := int(h.csumStart), int(h.csumStart)+int(h.csumOffset)
	if start > len(b) || at+2 > len(b) {
		return false
	}
	binary.BigEndian.PutUint16(b[at:], pkt.Checksum(b[start:]))
	return true
}

// coalescer holds TCP segments of one flow to write them as one GSO packet.
type coalescer struct {
	buf    []byte // vnet header + IPv4 + TCP + payload
	n      int    // used octets of buf (0: nothing held)
	hl     int    // IP+TCP header length of the held packet
	mss    int    // payload length of the first segment (gso_size)
	segs   int
	closed bool // a short or PSH segment ended it: nothing more may be appended
	next   uint32
}

// tcpSegment checks b is a plain IPv4 TCP data segment that may be merged (no IP
// options or fragments, DF, only ACK and maybe PSH, payload, valid checksums) and
// returns its header length.
func tcpSegment(b []byte) (hl int, ok bool) {
	ip := pkt.IPv4(b)
	if len(b) < tcpAt+pkt.TCPMinimumSize+1 || !ip.IsValid(len(b)) || ip.HeaderLength() != tcpAt ||
		int(ip.TotalLength()) != len(b) || ip.Protocol() != pkt.IPv4ProtocolTCP {
		return 0, false
	}
	if frag := binary.BigEndian.Uint16(b[pkt.IPv4FlagsFragOffset:]); frag != pkt.IPv4FlagDontFrag {
		return 0, false
	}
	tcp := pkt.TCP(b[tcpAt:])
	if !tcp.IsValid() || tcpAt+tcp.DataOffset() >= len(b) {
		return 0, false
	}
	if f := tcp.Flags(); f&^pkt.TCPFlagPsh != pkt.TCPFlagAck {
		return 0, false
	}
	// Merging drops the individual checksums: a corrupted segment must not be covered.
	if !ip.IsChecksumValid() || !tcp.IsChecksumValid(ip.SourceAddress(), ip.DestinationAddress()) {
		return 0, false
	}
	return tcpAt + tcp.DataOffset(), true
}

// mergeable reports whether the segment b (header length hl) continues the held one.
func (c *coalescer) mergeable(b []byte, hl int) bool {
	if c.n == 0 || c.closed || hl != c.hl || c.segs >= maxGROSegs {
		return false
	}
	h := c.buf[vnetHdrLen : vnetHdrLen+c.hl]
	pay := len(b) - hl
	if pay > c.mss || c.n+pay > vnetHdrLen+65535 || pkt.TCP(b[tcpAt:]).SequenceNumber() != c.next {
		return false
	}
	// Same TOS, TTL, addresses, ports, ack, window, options; flags differ at most in PSH.
	const (
		ack     = tcpAt + pkt.TCPAckNumOffset
		flags   = tcpAt + pkt.TCPFlagsOffset
		win     = tcpAt + pkt.TCPWindowOffset
		csum    = tcpAt + pkt.TCPChecksumOffset
		tcpOpts = tcpAt + pkt.TCPMinimumSize
		ttl     = pkt.IPv4TTLOffset
		tos     = pkt.IPv4TOSOffset
		src     = pkt.IPv4SrcAddrOffset
		ports   = tcpAt + pkt.TCPSeqNumOffset // addresses and ports: src .. the TCP sequence number
	)
	return b[tos] == h[tos] && b[ttl] == h[ttl] && string(b[src:ports]) == string(h[src:ports]) &&
		string(b[ack:flags]) == string(h[ack:flags]) &&
		string(b[win:csum]) == string(h[win:csum]) &&
		string(b[tcpOpts:hl]) == string(h[tcpOpts:hl])
}

func (c *coalescer) hold(b []byte, hl int) {
	if len(c.buf) < vnetHdrLen+65535 {
		c.buf = make([]byte, vnetHdrLen+65535)
	}
	tcp := pkt.TCP(b[tcpAt:])
	c.n = vnetHdrLen + copy(c.buf[vnetHdrLen:], b)
	c.hl, c.mss, c.segs = hl, len(b)-hl, 1
	c.next = tcp.SequenceNumber() + uint32(len(b)-hl)
	c.closed = tcp.Flags()&pkt.TCPFlagPsh != 0
}

func (c *coalescer) add(b []byte, hl int) {
	pay := b[hl:]
	c.n += copy(c.buf[c.n:], pay)
	c.segs++
	c.next += uint32(len(pay))
	if pkt.TCP(b[tcpAt:]).Flags()&pkt.TCPFlagPsh != 0 {
		c.buf[vnetHdrLen+tcpAt+pkt.TCPFlagsOffset] |= pkt.TCPFlagPsh
		c.closed = true
	}
	if len(pay) < c.mss {
		c.closed = true
	}
}

// take finalises the held packet (vnet header, lengths, checksums) and returns it for
// writing; the coalescer is empty after.
func (c *coalescer) take() []byte {
	b := c.buf[:c.n]
	c.n = 0
	p := b[vnetHdrLen:]
	if c.segs == 1 { // unchanged packet, its own checksums
		clear(b[:vnetHdrLen])
		return b
	}
	ip := pkt.IPv4(p)
	binary.BigEndian.PutUint16(p[pkt.IPv4TotalLenOffset:], uint16(len(p)))
	ip.SetChecksum(ip.CalculateChecksum())
	// NEEDS_CSUM: the field holds the pseudo-header sum, the kernel adds the rest.
	tcpLen := uint16(len(p) - tcpAt)
	pkt.TCP(p[tcpAt:]).SetChecksum(pkt.PseudoHeaderSum(ip.SourceAddress(), ip.DestinationAddress(), pkt.IPv4ProtocolTCP, tcpLen))
	h := vnetHdr{flags: unix.VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: unix.VIRTIO_NET_HDR_GSO_TCPV4,
		hdrLen: uint16(c.hl), gsoSize: uint16(c.mss), csumStart: tcpAt, csumOffset: pkt.TCPChecksumOffset}
	h.encode(b)
	return b
}

// writeSegments cuts a merged packet (vnet header + GSO packet, as take returns it) back
// into its segments and writes each with an empty vnet header: the fallback when the
// kernel refuses the GSO packet.
func writeSegments(b []byte, write func([]byte) error) error {
	var h vnetHdr
	h.decode(b)
	var s segmenter
	if err := s.start(&h, b[vnetHdrLen:]); err != nil {
		return err
	}
	seg := make([]byte, vnetHdrLen+65535) // rare path
	for s.pending() {
		n, err := s.next(seg[vnetHdrLen:])
		if err != nil {
			return err
		}
		if err := write(seg[:vnetHdrLen+n]); err != nil {
			return err
		}
	}
	return nil
}
